"""Reading a configuration file: TOML text parsed, built into ``syftd.config``'s dataclasses, and checked.

Owns ``load``/``loads`` (every problem reported at once, sorted by key), the checks that need more
than one key or the file system (job names unique, grace and backoff bounds, a grid URL's scheme and
host, TLS off loopback, ``grid.ca_file`` holding PEM, the data a source needs, a flower job's table,
absolute directories and a control socket path that fits ``sun_path``), the lenient pass that still
reports those beside per-key problems, and ``runtime_dir_of`` for the control verbs. Does not own
the keys, their defaults and per-key checks (``syftd.config``) or the generic walk (``syftd.tomlschema``).

A problem is one line, ``<dotted.key>: <what is wrong>[, got <value>]``, e.g.
``job[0].grid.url: required key is missing``. ``load``/``loads`` raise nothing but ``ConfigError``:
not for a document nested too deeply, not for a number out of any range (every number has bounds),
nor for paths that expand to nothing or a control socket path longer than ``sun_path``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import typing
import urllib.parse
from pathlib import Path
from typing import Any

from syftd.config import NO_GRID, Config, DaemonConfig, JobConfig
from syftd.errors import ConfigError
from syftd.flower.command import is_loopback_address
from syftd.flower.config import flower_problems
from syftd.tomlschema import build, describe, too_deep

if sys.version_info >= (3, 11):
    import tomllib
else:  # exercised by make test-compat on 3.10
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = ["ca_file_problem", "daemon_path", "load", "loads", "read_document", "runtime_dir_of", "url_problem"]

_MAX_DEPTH = 32  # the schema nests 4 levels; a deeper document is an attack or a mistake
_SOCKET_NAME = "control.sock"  # syftd.control.SOCKET_NAME (not imported: check-config must not load aiohttp)
_SUN_PATH_MAX = 104 if sys.platform == "darwin" else 108  # sockaddr_un.sun_path, its NUL included


def load(path: Path | str) -> Config:
    """Read and check the file at ``path``, and the files it names (``grid.ca_file``).

    Raises:
        ConfigError: with every problem found, each naming its dotted key.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, [f"<file>: cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [f"<file>: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from exc
    config = loads(text, path=path)
    problems = []
    for i, job in enumerate(config.job):  # the files the configuration names (``loads`` does no I/O)
        if job.grid.ca_file is not None and (message := ca_file_problem(job.grid.ca_file)) is not None:
            problems.append(f"job[{i}].grid.ca_file: {message}, got {describe(str(job.grid.ca_file))}")
    if problems:
        raise ConfigError(path, problems)
    return config


def read_document(path: Path) -> dict[str, Any]:
    """The TOML document of the file at ``path``, unchecked: for the lenient readers of one key or two.

    Raises:
        ConfigError: the file cannot be read or is not TOML.
    """
    try:
        document: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(path, [f"<file>: cannot read: {exc.strerror or exc}"]) from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(path, [f"<file>: not valid TOML: {exc}"]) from None
    return document


def daemon_path(document: dict[str, Any], key: str) -> Path | None:
    """``daemon.<key>`` of an unchecked document as a path (``$VARS`` expanded), its default when absent;
    None when it is not a usable path (not a string, empty, or naming an unset variable)."""
    daemon = document.get("daemon")
    value = daemon.get(key) if isinstance(daemon, dict) else None
    if value is None:
        default: Path = getattr(DaemonConfig(), key)
        return default
    expanded = os.path.expandvars(value) if isinstance(value, str) else ""
    return Path(expanded) if expanded and "$" not in expanded else None


def runtime_dir_of(path: Path) -> Path:
    """Only ``daemon.runtime_dir`` of the file at ``path``, leniently: the control verbs need nothing else,
    and must work where the rest would not load (e.g. ``${CREDENTIALS_DIRECTORY}`` unset outside the unit).
    Falls back to the default when the file or the key is unusable."""
    default = DaemonConfig().runtime_dir
    try:
        document = read_document(path)
    except ConfigError:
        return default
    return daemon_path(document, "runtime_dir") or default


def loads(text: str, *, path: Path | None = None) -> Config:
    """Check TOML text; ``path`` only names the file in errors.

    Raises:
        ConfigError: with every problem found, each naming its dotted key.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [f"<toml>: {exc}"]) from exc
    except RecursionError:
        raise ConfigError(path, [f"<toml>: arrays or tables nested more than {_MAX_DEPTH} levels deep"]) from None
    if (where := too_deep(document, _MAX_DEPTH)) is not None:
        raise ConfigError(path, [f"{where}: arrays or tables nested more than {_MAX_DEPTH} levels deep"])
    problems: list[str] = []
    try:
        config = build(Config, document, "", problems)
        if config is not None:
            _check_across(config, problems)
        else:
            problems += _check_across_leniently(document, problems)
    except (RecursionError, ValueError, TypeError, OverflowError) as exc:  # a gap in the checks: still one error
        problems.append(f"<config>: cannot be checked ({type(exc).__name__}: {exc})")
        config = None
    if problems or config is None:
        raise ConfigError(path, sorted(set(problems)))
    return typing.cast(Config, dataclasses.replace(config, path=path))


def _check_across_leniently(document: dict[str, Any], problems: list[str]) -> list[str]:
    """The cross-key problems of a document that has per-key problems too (reported side by side).

    The keys with a problem are left out and the rest rebuilt (a job that still fails, or whose choice
    key such as ``kind`` is invalid, is skipped); a cross-key problem that names a key with its own
    problem is dropped, its cause already shown.
    """
    bad = {p.split(":", 1)[0] for p in problems}
    bad |= {re.sub(r"\[\d+\]$", "", key) for key in bad}
    # a bad choice (kind, data.source, ...) decides which other keys a job needs: skip that job here
    unsure = {m.group(1) for p in problems if ": must be one of" in p and (m := re.match(r"(job\[\d+\])", p))}
    scratch: list[str] = []
    daemon_table = document.get("daemon")
    daemon = None
    if isinstance(daemon_table, dict) and "daemon" not in bad:
        daemon = build(DaemonConfig, _without(daemon_table, "daemon.", bad), "daemon.", scratch)
    jobs, index = [], []
    tables = document.get("job")
    for i, table in enumerate(tables if isinstance(tables, list) and "job" not in bad else []):
        if isinstance(table, dict) and f"job[{i}]" not in bad | unsure:
            built = build(JobConfig, _without(table, f"job[{i}].", bad), f"job[{i}].", scratch)
            if built is not None:
                jobs.append(built)
                index.append(i)
    found: list[str] = []
    _check_across(Config(daemon=daemon or DaemonConfig(), job=tuple(jobs)), found)
    renumbered = [re.sub(r"job\[(\d+)\]", lambda m: f"job[{index[int(m.group(1))]}]", p) for p in found]
    return [p for p in renumbered if not any(re.search(rf"(^|\W){re.escape(key)}(\W|$)", p) for key in bad)]


def _without(table: dict[str, Any], prefix: str, bad: set[str]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in table.items():
        if f"{prefix}{key}" in bad:
            continue
        kept[key] = _without(value, f"{prefix}{key}.", bad) if isinstance(value, dict) else value
    return kept


def _check_paths(daemon: DaemonConfig, problems: list[str]) -> None:
    """The state and runtime directories: absolute, and a control socket path that fits ``sun_path``."""
    for key in ("state_dir", "runtime_dir"):
        value: Path = getattr(daemon, key)
        if not value.is_absolute():
            problems.append(f"daemon.{key}: must be an absolute path, got {describe(str(value))}")
    sock = os.fsencode(daemon.runtime_dir / _SOCKET_NAME)
    if len(sock) >= _SUN_PATH_MAX:
        problems.append(
            f"daemon.runtime_dir: the control socket path would be {len(sock)} bytes, above the "
            f"{_SUN_PATH_MAX - 1}-byte limit of a Unix socket path, got {describe(str(daemon.runtime_dir))}"
        )


def ca_file_problem(path: Path) -> str | None:
    """What is wrong with a ``grid.ca_file``, or None: it must hold at least one PEM certificate."""
    try:
        head = path.read_bytes()[: 1 << 24]
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if b"-----BEGIN CERTIFICATE-----" not in head:
        return "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    import ssl  # here: ssl loads socket, and only a ca_file needs it

    try:
        ssl.create_default_context().load_verify_locations(cafile=str(path))
    except (ssl.SSLError, ValueError) as exc:
        return f"is not a valid PEM CA bundle ({exc})"
    return None


def _check_across(config: Config, problems: list[str]) -> None:
    """Checks that need more than one key."""
    _check_paths(config.daemon, problems)
    grace = config.daemon.shutdown_grace_s
    seen: dict[str, int] = {}
    for i, job in enumerate(config.job):
        where = f"job[{i}]"
        if job.name in seen:
            problems.append(f"{where}.name: duplicate job name (also job[{seen[job.name]}]), got {job.name!r}")
        seen.setdefault(job.name, i)
        if job.budget.expiry_grace_s > grace:
            problems.append(
                f"{where}.budget.expiry_grace_s: must be at most daemon.shutdown_grace_s ({grace:g}), "
                f"got {job.budget.expiry_grace_s:g}"
            )
        if job.schedule.backoff_initial_s > job.schedule.backoff_max_s:
            problems.append(f"{where}.schedule.backoff_initial_s: must be at most schedule.backoff_max_s")
        if job.kind == "flower" or job.flower is not None:
            problems.extend(_flower_job_problems(job, where))
        elif job.grid is NO_GRID:
            problems.append(f"{where}.grid: required key is missing")
        elif (message := url_problem(job.grid.url, allow_insecure=job.grid.allow_insecure)) is not None:
            problems.append(f"{where}.grid.url: {message}, got {describe(job.grid.url)}")
        source, data = job.data.source, job.data
        if source in ("mnist", "imagefolder") and data.path is None:
            problems.append(f"{where}.data.path: required when data.source is {source!r}")
        if source == "python" and data.callable is None:
            problems.append(f"{where}.data.callable: required when data.source is 'python'")


def _flower_job_problems(job: JobConfig, where: str) -> list[str]:
    if job.kind != "flower":
        return [f'{where}.flower: only for kind = "flower"']
    if job.grid is not NO_GRID:
        return [f'{where}.grid: not used by kind = "flower"']
    if job.flower is None:
        return [f'{where}.flower: required when kind = "flower"']
    return flower_problems(job.flower, f"{where}.flower")


def url_problem(url: str, *, allow_insecure: bool) -> str | None:
    """What is wrong with a grid URL, or None: a scheme of http/https/ws/wss, a host, TLS off loopback."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme not in ("http", "https", "ws", "wss"):
        return "scheme must be http, https, ws or wss"
    host = parts.hostname
    if not host:
        return "has no host"
    if parts.scheme in ("http", "ws") and not allow_insecure and not is_loopback_address(host):
        return "plain http/ws is allowed only to a loopback host unless grid.allow_insecure = true"
    return None
