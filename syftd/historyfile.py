"""``syftd history`` without a daemon: the kept history read straight from the state directory.

Owns finding the files (``daemon.state_dir`` and the job names, read leniently from the configuration,
as ``configfile.runtime_dir_of`` reads the runtime directory: the token files and the rest need not load)
and reading them strictly read-only: no lock is taken, no directory created, nothing moved aside nor
rewritten, so a daemon starting meanwhile is never held up and a damaged file stays as it is. A damaged
or partial file is a ``StateFileError`` naming the file and the line. The daemon writes the file
atomically (``statedir.atomic_write``), so a reader never sees one half written by a live daemon.

Does not own the file's format (``syftd.history`` writes it), the answer's rendering
(``control.VERBS["history"]``) nor the daemon's own answer (it reads its in-memory copy).
Blocking file I/O: the CLI calls it directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from syftd.configfile import daemon_path, read_document
from syftd.errors import ConfigError, StateFileError, UnknownJobError
from syftd.history import FILE_NAME
from syftd.statedir import ForeignEntry, read_regular

__all__ = ["history_path", "read_history", "state_dir_and_jobs"]


def state_dir_and_jobs(config_path: Path) -> tuple[Path, list[str]]:
    """``daemon.state_dir`` and the configured job names of the file at ``config_path``, leniently.

    Raises:
        ConfigError: the file cannot be read or is not TOML, or its ``daemon.state_dir`` is unusable.
    """
    document = read_document(config_path)
    state_dir = daemon_path(document, "state_dir")
    if state_dir is None:
        value = document["daemon"]["state_dir"]
        raise ConfigError(config_path, [f"daemon.state_dir: not a usable path, got {value!r}"])
    jobs = document.get("job")
    names = [job["name"] for job in jobs if isinstance(job.get("name"), str)] if isinstance(jobs, list) else []
    return state_dir, names


def history_path(state_dir: Path, job: str) -> Path:
    """Where the daemon keeps the history of ``job`` (``syftd.history``); creates nothing."""
    return state_dir / "jobs" / job / FILE_NAME


def read_history(config_path: Path, job: str | None = None, limit: int | None = None) -> dict[str, Any]:
    """The answer the daemon's ``history`` verb gives (``jobs``, ``entries``, oldest first), from the files.

    Adds ``source`` (``"state_dir"``) and ``files`` (the files read; a job without one has no entries).

    Raises:
        ConfigError: the configuration cannot be read (see ``state_dir_and_jobs``).
        UnknownJobError: ``job`` is not a configured job.
        StateFileError: a history file is damaged, partial or unreadable (the message names file and line).
    """
    state_dir, names = state_dir_and_jobs(config_path)
    if job is not None:
        if job not in names:
            known = ", ".join(sorted(names)) or "none"
            raise UnknownJobError(f"no job named {job!r} in {config_path}; configured: {known}")
        names = [job]
    entries: list[dict[str, Any]] = []
    files: list[str] = []
    for name in names:
        path = history_path(state_dir, name)
        kept = _read_file(path)
        if kept is None:
            continue
        files.append(str(path))
        for entry in kept[-limit:] if limit else kept:
            entry.setdefault("job", name)
            entries.append(entry)
    entries.sort(key=_time_of)
    return {"jobs": names, "entries": entries, "source": "state_dir", "files": files}


def _time_of(entry: dict[str, Any]) -> float:
    at = entry.get("time")
    return float(at) if isinstance(at, int | float) else 0.0


def _read_file(path: Path) -> list[dict[str, Any]] | None:
    """The entries of one history file, None when there is none."""
    try:
        raw = read_regular(path)
    except FileNotFoundError:
        return None
    except ForeignEntry as exc:
        raise StateFileError(path, None, f"{exc}; not followed") from None
    except OSError as exc:
        hint = ": run as the daemon's user or root" if isinstance(exc, PermissionError) else ""
        raise StateFileError(path, None, f"cannot be read ({exc.strerror or exc}){hint}") from None
    if not raw.strip():
        raise StateFileError(path, 1, "is empty (a write cut short?)")
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise StateFileError(path, line, f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        ending = " (the file ends there: cut short?)" if exc.pos >= len(raw.rstrip()) else ""
        raise StateFileError(path, exc.lineno, f"is not valid JSON, column {exc.colno}: {exc.msg}{ending}") from None
    entries = document.get("entries") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise StateFileError(path, 1, 'is not a syftd history: no "entries" list')
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problem = f"entry {index} is not an object, got {json.dumps(entry)[:40]}"
            raise StateFileError(path, _line_of_entry(raw, index), problem)
    return entries


def _line_of_entry(raw: bytes, index: int) -> int | None:
    """The line of entry ``index`` in a file written as ``syftd.history`` writes it (one level per line)."""
    lines = raw.decode("utf-8").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.lstrip().startswith('"entries"'))
    except StopIteration:
        return None
    # each entry opens on a line indented by exactly two spaces; its closing bracket is indented the same
    top = [
        i
        for i, line in enumerate(lines[start + 1 :], start + 1)
        if line[:2] == "  " and line[2:3] not in ("", " ", "}", "]")
    ]
    return top[index] + 1 if index < len(top) else None
