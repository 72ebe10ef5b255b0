"""The configuration: a TOML file turned into frozen dataclasses, every problem reported at once.

Owns the schema (the dataclasses below are the single place a key is declared: adding a field with a
default adds the key) and the checks that span several keys; the generic walk that turns TOML into
these dataclasses is ``syftd.tomlschema``.
Does not own what the values mean at run time; that belongs to the modules that read them.

A problem is one line, ``<dotted.key>: <what is wrong>[, got <value>]``, sorted by key, e.g.
``job[0].grid.url: required key is missing``. ``load``/``loads`` raise nothing but ``ConfigError``:
not for a document nested too deeply, not for a number out of any range (every number has bounds),
nor for paths that expand to nothing or a control socket path longer than ``sun_path``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import sys
import typing
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from syftd.errors import ConfigError
from syftd.flower.command import is_loopback_address
from syftd.flower.config import FlowerConfig, flower_problems
from syftd.tomlschema import build, describe, too_deep

if sys.version_info >= (3, 11):
    import tomllib
else:  # exercised by make test-compat on 3.10
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "BudgetConfig",
    "ConditionsConfig",
    "Config",
    "ConstraintsConfig",
    "DaemonConfig",
    "DataConfig",
    "GridConfig",
    "JobConfig",
    "ScheduleConfig",
    "TrainerConfig",
    "ca_file_problem",
    "load",
    "loads",
    "runtime_dir_of",
    "url_problem",
]

_JOB_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
_MAX_DEPTH = 32  # the schema nests 4 levels; a deeper document is an attack or a mistake
_SOCKET_NAME = "control.sock"  # syftd.control.SOCKET_NAME (not imported: check-config must not load aiohttp)
_SUN_PATH_MAX = 104 if sys.platform == "darwin" else 108  # sockaddr_un.sun_path, its NUL included
_DAY = 86400.0

Check = Callable[[Any], "str | None"]


def _key(
    default: Any = dataclasses.MISSING,
    *,
    doc: str,
    min: float | None = None,
    max: float | None = None,
    check: Check | None = None,
) -> Any:
    """Declare a config key: its default, its one-line meaning, its range and an extra check."""
    meta = {"doc": doc, "min": min, "max": max, "check": check}
    if isinstance(default, tuple | list | dict) or dataclasses.is_dataclass(default):
        frozen = default
        return field(default_factory=lambda: frozen, metadata=meta)
    return field(default=default, metadata=meta)


def _section(cls: type[Any], doc: str) -> Any:
    return field(default_factory=cls, metadata={"doc": doc})


def _check_window(value: str) -> str | None:
    match = _WINDOW.match(value)
    if match is None:
        return 'must look like "HH:MM-HH:MM" (24-hour local time)'
    if match.group(3) == "24" and match.group(4) != "00":
        return "24:00 is the latest end time"
    return None


def _check_earliest(value: str) -> str | None:
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        return 'must be an ISO 8601 date-time, e.g. "2026-12-01T22:00:00"'
    return None


def _check_listen(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        return 'must look like "127.0.0.1:9464" or "[::1]:9464"'
    return None


def _check_callable(value: str) -> str | None:
    module, sep, name = value.partition(":")
    if not sep or not module or not name.isidentifier():
        return 'must look like "package.module:function"'
    return None


# --------------------------------------------------------------------------------------------- schema


@dataclass(frozen=True, slots=True)
class ConditionsConfig:
    """Where the daemon learns about power, network, sleep and temperature."""

    power_source: Literal["auto", "upower", "sysfs", "macos", "none"] = _key(
        "auto", doc="power monitor; auto picks UPower, then sysfs (Linux), IOKit (macOS)"
    )
    network_source: Literal["auto", "networkmanager", "route", "macos", "none"] = _key(
        "auto", doc="network monitor; auto picks NetworkManager, then the routing table"
    )
    sleep_source: Literal["auto", "logind", "none"] = _key("auto", doc="sleep/idle monitor")
    bus_address: str | None = _key(None, doc="system bus address; unset = $DBUS_SYSTEM_BUS_ADDRESS or default")
    sysfs_root: Path = _key(Path("/sys"), doc="root of sysfs (tests point it at a fake tree)")
    poll_interval_s: float = _key(
        30.0, doc="fallback poll period where no events exist (sysfs power, no netlink)", min=0.05, max=3600
    )
    thermal_poll_s: float = _key(
        10.0, doc="temperature read period, only while a cycle runs or is due", min=0.05, max=3600
    )
    metered_policy: Literal["auto", "never"] = _key(
        "auto", doc="without NetworkManager: guess metered from the interface (auto) or never"
    )


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """The [daemon] table: process-wide settings."""

    state_dir: Path = _key(Path("/var/lib/syftd"), doc="worker ids, spooled diffs, history")
    runtime_dir: Path = _key(Path("/run/syftd"), doc="the control socket lives here")
    log_format: Literal["auto", "json", "console"] = _key(
        "auto", doc="auto = console on a terminal, JSON lines otherwise"
    )
    log_level: Literal["debug", "info", "warning", "error"] = _key("info", doc="lowest level logged")
    shutdown_grace_s: float = _key(
        8.0, doc="bound on every trainer stop: SIGTERM after it, SIGKILL 2 s later", min=0.1, max=600
    )
    max_concurrent_jobs: int = _key(1, doc="cycles running at once", min=1, max=64)
    metrics_listen: str | None = _key(
        None, doc='serve Prometheus metrics on "host:port"; unset = off', check=_check_listen
    )
    conditions: ConditionsConfig = _section(ConditionsConfig, "condition monitors")


@dataclass(frozen=True, slots=True)
class GridConfig:
    """The [job.grid] table: which PyGrid node and FL process, and how to talk to it."""

    url: str = _key(doc="node base URL: http(s):// or ws(s)://host[:port]")
    model: str = _key(doc="FL process name (client_config.name)")
    version: str = _key(doc='FL process version, exactly as hosted ("1.0" is not "1.0.0")')
    token_file: Path | None = _key(None, doc="file with the JWT auth token; must not be readable by others")
    transport: Literal["ws", "http"] = _key("ws", doc="WebSocket (like SwiftSyft) or plain HTTP")
    prefix: str = _key("model-centric", doc="route prefix; federated or model_centric for 2020 nodes")
    plan: str = _key("training_plan", doc="name of the plan to train with")
    allow_insecure: bool = _key(False, doc="allow http/ws to a non-loopback host")
    ca_file: Path | None = _key(None, doc="extra CA bundle for https/wss")
    timeout_s: float = _key(30.0, doc="timeout of each request", min=0.1, max=3600)
    max_download_mb: float = _key(512.0, doc="size cap for a model or plan download", min=0.001, max=65536)
    speed_unit: Literal["mbps", "kbps", "mibps"] = _key(
        "mbps", doc="unit of the speed test results (the node defines none)"
    )
    speed_test_max_s: float = _key(10.0, doc="time cap of each speed-test transfer", min=0.1, max=600)
    speed_test_max_mb: float = _key(16.0, doc="byte cap of each speed-test transfer", min=0.01, max=1024)
    speed_test_reuse_s: float = _key(3600.0, doc="how long one speed test serves the cycle requests", min=0, max=86400)


@dataclass(frozen=True, slots=True)
class DataConfig:
    """The [job.data] table: the local training data."""

    source: Literal["synthetic-digits", "mnist", "imagefolder", "python"] = _key(
        "synthetic-digits", doc="where the samples come from"
    )
    path: Path | None = _key(None, doc="data directory (mnist: raw IDX files; imagefolder: class dirs)")
    callable: str | None = _key(
        None, doc='python source: "module:function" returning a torch Dataset of (x, y)', check=_check_callable
    )
    samples: int = _key(6000, doc="synthetic-digits: number of samples", min=1, max=10_000_000)
    seed: int = _key(0, doc="seed for synthetic data and shuffling", min=0, max=2**32 - 1)
    image_size: int = _key(28, doc="imagefolder: images are resized to size x size", min=1, max=4096)
    grayscale: bool = _key(True, doc="imagefolder: convert to one channel")
    mean: float = _key(0.0, doc="normalisation mean (x - mean) / std", min=-1e6, max=1e6)
    std: float = _key(1.0, doc="normalisation std", min=1e-12, max=1e6)
    num_classes: int = _key(10, doc="classes for one-hot labels", min=1, max=100_000)


@dataclass(frozen=True, slots=True)
class ConstraintsConfig:
    """The [job.constraints] table: what must hold for a cycle to start and keep running."""

    requires_external_power: bool = _key(True, doc="on AC (connected, not necessarily charging)")
    requires_network: bool = _key(True, doc="online (NetworkManager: connected global, full connectivity)")
    requires_unmetered: bool = _key(False, doc="not on a metered link")
    min_battery_percent: float = _key(0.0, doc="battery at least this (0 = off)", min=0, max=100)
    requires_idle: bool = _key(False, doc="the session is idle (logind IdleHint)")
    max_temperature_c: float | None = _key(None, doc="hottest thermal zone at most this", min=-50, max=200)
    min_free_disk_mb: float = _key(0.0, doc="free space in the state directory at least this", min=0, max=1e9)
    stable_for_s: float = _key(30.0, doc="a regained condition counts only after holding this long", min=0, max=86400)


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    """The [job.schedule] table: when a job may run."""

    interval_s: float = _key(0.0, doc="wait after a successful cycle before the next", min=0, max=365 * 86400)
    earliest_start: str | None = _key(None, doc="no cycle before this ISO date-time", check=_check_earliest)
    windows: tuple[str, ...] = _key(
        (), doc='allowed local-time windows, e.g. ["22:00-07:00"]; empty = always', check=_check_window
    )
    backoff_initial_s: float = _key(30.0, doc="first retry delay after a failure", min=0.01, max=86400)
    backoff_max_s: float = _key(18000.0, doc="retry delay cap (full jitter below it)", min=0.01, max=7 * 86400)
    rejection_jitter_s: float = _key(5.0, doc="random delay added to the node's rejection timeout", min=0, max=_DAY)
    on_finished: Literal["retry", "stop"] = _key(
        "retry", doc='"rejected" without timeout: retry slowly (num_cycles = 0 looks the same) or stop'
    )
    finished_retry_s: float = _key(
        3600.0, doc="retry period after a finished-looking rejection", min=0.01, max=30 * _DAY
    )
    spool_max_age_s: float = _key(
        _DAY, doc="a spooled diff older than this is discarded (logged), not reported", min=60, max=365 * _DAY
    )


@dataclass(frozen=True, slots=True)
class BudgetConfig:
    """The [job.budget] table: how long a cycle may take."""

    max_cycle_s: float = _key(1800.0, doc="a cycle expires with reason budget after this", min=0.1, max=86400)
    expiry_grace_s: float = _key(
        5.0,
        doc="after expiring, wait this for the trainer before terminating it (<= shutdown_grace_s)",
        min=0,
        max=600,
    )


@dataclass(frozen=True, slots=True)
class TrainerConfig:
    """The [job.trainer] table: how the training process runs."""

    device: Literal["cpu", "cuda"] = _key("cpu", doc="cuda is used only when available")
    threads: int = _key(0, doc="torch intra-op threads (0 = torch's default)", min=0, max=1024)
    nice: int = _key(19, doc="niceness of the trainer process", min=0, max=19)
    sched_idle: bool = _key(True, doc="run the trainer under SCHED_IDLE where allowed")
    memory_max_mb: float | None = _key(
        None, doc="expire with reason memory above this resident size", min=1, max=1 << 30
    )
    idle_exit_s: float = _key(60.0, doc="a warm trainer exits after this long without a cycle", min=0, max=_DAY)
    steps: Literal["exact", "plus-one"] = _key(
        "exact", doc="max_updates steps, or max_updates + 1 as PySyft and syft.js do"
    )
    max_updates: int | None = _key(None, doc="override the node's max_updates (testing)", min=1, max=10**9)
    progress_interval_s: float = _key(
        0.25, doc="progress reports at most this often (0 = every step); each wakes the daemon", min=0, max=60
    )


_NO_GRID = GridConfig(url="", model="", version="")  # a flower job has no [job.grid]


@dataclass(frozen=True, slots=True)
class JobConfig:
    """One [[job]] table: one federated process this machine contributes to."""

    name: str = _key(
        doc="job name: lowercase letters, digits, - _ .",
        check=lambda v: None if _JOB_NAME.match(v) else "must match [a-z0-9][a-z0-9_.-]* (at most 63 characters)",
    )
    kind: Literal["pygrid", "flower"] = _key("pygrid", doc="a PyGrid cycle worker, or a gated Flower SuperNode")
    grid: GridConfig = _key(_NO_GRID, doc="the node and FL process (kind pygrid)")
    flower: FlowerConfig | None = _key(None, doc="the SuperLink and SuperNode (kind flower)")
    enabled: bool = _key(True, doc="a disabled job is kept but never runs")
    data: DataConfig = _section(DataConfig, "local training data")
    constraints: ConstraintsConfig = _section(ConstraintsConfig, "what must hold")
    schedule: ScheduleConfig = _section(ScheduleConfig, "when it may run")
    budget: BudgetConfig = _section(BudgetConfig, "time budget")
    trainer: TrainerConfig = _section(TrainerConfig, "training process")


@dataclass(frozen=True, slots=True)
class Config:
    """The whole file."""

    daemon: DaemonConfig = _section(DaemonConfig, "process-wide settings")
    job: tuple[JobConfig, ...] = _key((), doc="one [[job]] table per federated process")
    path: Path | None = field(default=None, metadata={"internal": True})

    def job_named(self, name: str) -> JobConfig | None:
        """The job called ``name``, or None."""
        return next((job for job in self.job if job.name == name), None)


# --------------------------------------------------------------------------------------------- loader


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


def runtime_dir_of(path: Path) -> Path:
    """Only ``daemon.runtime_dir`` of the file at ``path``, leniently: the control verbs need nothing else,
    and must work where the rest would not load (e.g. ``${CREDENTIALS_DIRECTORY}`` unset outside the unit).
    Falls back to the default when the file or the key is unusable."""
    default = DaemonConfig().runtime_dir
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return default
    daemon = document.get("daemon")
    value = daemon.get("runtime_dir") if isinstance(daemon, dict) else None
    if not isinstance(value, str) or not value:
        return default
    expanded = os.path.expandvars(value)
    return Path(expanded) if "$" not in expanded else default


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
    import ssl  # here: ssl loads socket, and the pure core imports this module

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
        elif job.grid is _NO_GRID:
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
    if job.grid is not _NO_GRID:
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
