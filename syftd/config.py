"""The configuration's schema: frozen dataclasses, one per TOML table, the single place a key is declared.

Owns every key: its type, default, one-line meaning, range (every number has bounds) and the checks of
one value (a time window, an ISO date-time, a listen address, a "module:function"); adding a field
with a default adds the key. Does not own reading a file or the checks that span several keys
(``syftd.configfile``), the generic walk from TOML to these dataclasses (``syftd.tomlschema``), or
what the values mean at run time (the modules that read them). Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from syftd.flower.config import FlowerConfig

__all__ = [
    "NO_GRID",
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
]

_JOB_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
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


NO_GRID = GridConfig(url="", model="", version="")
"""The ``grid`` of a job without a ``[job.grid]`` table (a flower job; a pygrid job missing it is a problem)."""


@dataclass(frozen=True, slots=True)
class JobConfig:
    """One [[job]] table: one federated process this machine contributes to."""

    name: str = _key(
        doc="job name: lowercase letters, digits, - _ .",
        check=lambda v: None if _JOB_NAME.match(v) else "must match [a-z0-9][a-z0-9_.-]* (at most 63 characters)",
    )
    kind: Literal["pygrid", "flower"] = _key("pygrid", doc="a PyGrid cycle worker, or a gated Flower SuperNode")
    grid: GridConfig = _key(NO_GRID, doc="the node and FL process (kind pygrid)")
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
