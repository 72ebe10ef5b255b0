"""The per-job history: the last outcomes of a job's cycles, kept in the state directory.

Owns ``<state_dir>/jobs/<job>/history.json``: a bounded list (the newest ``limit`` entries, 200 by
default), rewritten atomically on each change, oldest first, one entry per line (each entry's text
is kept with it, so a change renders only the entry it adds or updates). Does not own what an entry
says (the cycle writes the outcome, reason, steps, loss, bytes and durations) nor the worker id
(``syftd.identity``).

An entry is a JSON object; enums are stored by value, paths and date-times as text, and ``time`` (epoch
seconds) is added when absent. A spooled cycle's entry later gains ``reported`` or ``discarded`` through
``update``. A damaged file is moved aside (``history.json.corrupt``), logged, and the history starts
empty: losing history must never stop a job. A write the disk refuses (read-only, full) is logged
and the entries stay in memory, written with the next change once the disk takes them. Something
else under the name (a directory, a symlink, a FIFO) is moved aside the same way
(``history.json.foreign-<ns>``), never followed nor waited on.
Blocking file I/O: call through ``asyncio.to_thread``.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from syftd import events
from syftd.log import get_logger
from syftd.spool import job_dir
from syftd.statedir import ForeignEntry, atomic_write, move_aside, read_regular

__all__ = ["FILE_NAME", "History"]

_log = get_logger("syftd.history")

FILE_NAME = "history.json"
"""Each job's history file, in its directory of the state directory."""


class History:
    """Bounded per-job outcome lists, cached in memory, written through to disk."""

    def __init__(
        self, state_dir: Path, limit: int = 200, on_record: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        if limit < 1:
            raise ValueError(f"History limit must be at least 1, got {limit}")
        self.state_dir = state_dir
        self.limit = limit
        self._on_record = on_record  # told each new entry as stored (the metrics count cycles from it)
        self._cache: dict[str, list[dict[str, Any]]] = {}
        self._lines: dict[str, list[str]] = {}  # each cached entry's JSON text, so a write renders one entry

    def record(self, job: str, entry: Mapping[str, Any]) -> dict[str, Any]:
        """Append ``entry`` (dropping the oldest beyond ``limit``); returns it as stored.

        Raises:
            TypeError: a value that cannot be stored as JSON.
        """
        stored: dict[str, Any] = json.loads(json.dumps(dict(entry), default=_jsonable))
        stored.setdefault("time", time.time())
        entries = [*self._load(job), stored][-self.limit :]
        self._save(job, entries, [*self._lines[job], _line(stored)][-self.limit :])
        if self._on_record is not None:
            self._on_record(dict(stored))
        return dict(stored)

    def update(self, job: str, cycle_id: str, **fields: Any) -> bool:
        """Merge ``fields`` into the newest entry with ``cycle_id``; False when there is none.

        Raises:
            TypeError: a value that cannot be stored as JSON.
        """
        added = json.loads(json.dumps(fields, default=_jsonable))
        entries = [dict(e) for e in self._load(job)]
        for at in range(len(entries) - 1, -1, -1):
            if entries[at].get("cycle_id") == cycle_id:
                entries[at].update(added)
                lines = list(self._lines[job])
                lines[at] = _line(entries[at])
                self._save(job, entries, lines)
                return True
        return False

    def last(self, job: str) -> dict[str, Any] | None:
        """The newest entry, or None."""
        entries = self._load(job)
        return dict(entries[-1]) if entries else None

    def entries(self, job: str) -> list[dict[str, Any]]:
        """Every kept entry, oldest first (copies)."""
        return [dict(e) for e in self._load(job)]

    def _path(self, job: str) -> Path:
        return job_dir(self.state_dir, job) / FILE_NAME

    def _load(self, job: str) -> list[dict[str, Any]]:
        cached = self._cache.get(job)
        if cached is not None:
            return cached
        path = self._path(job)
        try:
            document = json.loads(read_regular(path))
            entries = document["entries"]
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                raise ValueError("entries is not a list of objects")
        except FileNotFoundError:
            entries = []
        except ForeignEntry as exc:
            aside = move_aside(path, "foreign")
            _log.error(events.HISTORY_CORRUPTED, job=job, problem=str(exc), moved_to=str(aside))
            entries = []
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            aside = path.with_name(f"{FILE_NAME}.corrupt")
            os.replace(path, aside)
            _log.error(events.HISTORY_CORRUPTED, job=job, problem=str(exc) or type(exc).__name__, moved_to=str(aside))
            entries = []
        self._cache[job] = entries[-self.limit :]
        self._lines[job] = [_line(entry) for entry in self._cache[job]]
        return self._cache[job]

    def _save(self, job: str, entries: list[dict[str, Any]], lines: list[str]) -> None:
        # kept in memory even when the disk refuses it: written with the next change
        self._cache[job], self._lines[job] = entries, lines
        # one entry per line, each rendered once by the C encoder: json.dumps(indent=...) runs the
        # pure-Python encoder, 2.3 ms of held GIL for 200 entries, beside the next cycle (issue 15)
        text = f'{{"version": 1, "job": {json.dumps(job)}, "entries": [\n' + ",\n".join(lines) + "\n]}\n"
        try:
            # bookkeeping, not a guarantee: no fsync on the path to the next cycle (issue 15)
            atomic_write(self._path(job), text.encode(), durable=False)
        except OSError as exc:
            _log.warning(events.HISTORY_WRITE_FAILED, job=job, problem=exc.strerror or str(exc), kept_in_memory=True)


def _line(entry: Mapping[str, Any]) -> str:
    return json.dumps(entry, separators=(", ", ": "))


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"history values must be JSON-able, got {type(value).__name__}: {value!r}")
