"""The composition root: builds the services, starts them in order, handles signals, stops in reverse.

Owns the process lifecycle and the service-manager protocol: ``READY=1`` once every service has
started, ``RELOADING=1``/``READY=1`` around SIGHUP, ``STOPPING=1``, ``WATCHDOG=1`` from the event loop,
and the ``STATUS=`` line. Signal handlers only queue an action for the main loop (an action already
queued is not queued twice; ``signals`` keeps a flood of one signal from hiding another). Computes
the one stop deadline (``shutdown_grace_s`` from the stop request: a trainer still running then gets
SIGTERM, SIGKILL 2 s later) and passes it down; every service's stop is bounded by it. One daemon
per state directory: the lock is taken before anything reads it; a refusal (another daemon, an
unusable state or runtime directory) is one log line and an exit status, never a traceback. Does not
own any decision about jobs (``jobs``) or how conditions are read (``conditions``).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from syftd import __version__, capability, configfile, events
from syftd.conditions.monitor import ConditionsMonitor
from syftd.config import Config
from syftd.control import ControlServer
from syftd.energy import EnergyMeter
from syftd.errors import ConfigError, ControlError
from syftd.grid.kept import KeptClients
from syftd.history import History
from syftd.identity import Identity
from syftd.jobs import JobManager
from syftd.log import get_logger
from syftd.outcomes import ExpiryReason
from syftd.sdnotify import Notifier
from syftd.signals import OperatorSignals
from syftd.spool import Spool
from syftd.statedir import StateDir, StateDirError, StateLock
from syftd.trainer.flag import remove_orphan_flags
from syftd.trainer.process import KILL_AFTER_TERM_S, TrainerPool

__all__ = ["Daemon"]

_log = get_logger("syftd.daemon")
_STOP_MARGIN_S = 3.0
"""Beyond the SIGKILL moment: bookkeeping (history, spool, log lines) and the other services' stops."""


class _Named:
    """A service with a name for logs, built from two coroutine functions."""

    def __init__(self, name: str, start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]):
        self.name, self.start, self.stop = name, start, stop


class Daemon:
    """One daemon run: ``await Daemon(config).run()`` returns the exit status."""

    def __init__(self, config: Config, notifier: Notifier | None = None) -> None:
        self.config = config
        self.notifier = notifier if notifier is not None else Notifier()
        state = StateDir(config.daemon.state_dir)
        self._state = state
        self._lock = StateLock(config.daemon.state_dir)
        self._refusal: StateDirError | None = None
        try:
            self._lock.acquire()  # before anything reads the state directory
        except StateDirError as exc:
            self._refusal = exc
        self.monitor = ConditionsMonitor(config.daemon.conditions, config.daemon.state_dir)
        self.metrics: Any = None  # syftd.metrics.Metrics when [daemon] metrics_listen is set
        if config.daemon.metrics_listen is not None:
            from syftd.metrics import Metrics  # imported only when on: no cost to the idle daemon

            self.metrics = Metrics()
        self.pool = TrainerPool(
            log_format="json" if config.daemon.log_format == "auto" else config.daemon.log_format,
            log_level=config.daemon.log_level,
            on_trainer_start=self._on_trainer_start if self.metrics is not None else None,
        )
        # RAPL under the same sysfs root the condition monitors read (tests point both at a fake tree)
        self.energy = EnergyMeter(config.daemon.conditions.sysfs_root / "class" / "powercap")
        self.history = History(
            config.daemon.state_dir, on_record=self.metrics.observe_cycle if self.metrics is not None else None
        )
        # one client per job kept across back-to-back cycles (issue 15); closed after the jobs stop
        self.clients = KeptClients()
        self.jobs = JobManager(
            config,
            monitor=self.monitor,
            pool=self.pool,
            spool=Spool(config.daemon.state_dir),
            history=self.history,
            identity=Identity(config.daemon.state_dir),
            client_factory=self.clients,
            status=self.notifier.status,
            energy=self.energy,
        )
        self._actions: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._stop_deadline: float | None = None
        self._sigint_count = 0
        self._signals: OperatorSignals | None = None
        self._reloads = 0

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, stop; returns the process exit status."""
        if self._refusal is not None:
            _log.error(events.STATE_REFUSED, error=str(self._refusal), exit_status=self._refusal.status)
            return self._refusal.status
        removed = remove_orphan_flags()
        if removed:
            _log.info(events.STATE_ORPHAN_FLAGS_REMOVED, names=removed)
        loop = asyncio.get_running_loop()
        self._install_signals(loop)
        started: list[_Named] = []
        watchdog: asyncio.Task[None] | None = None
        status = 0
        try:
            for service in self._services():
                try:
                    await service.start()
                except (ControlError, StateDirError) as exc:
                    status = getattr(exc, "status", os.EX_SOFTWARE)
                    _log.error(events.STATE_REFUSED, service=service.name, error=str(exc), exit_status=status)
                    return status
                started.append(service)
                _log.debug(events.DAEMON_SERVICE_STARTED, service=service.name)
            self.notifier.ready(self.jobs.status_line())
            trains_here = any(job.kind == "pygrid" for job in self.config.job)  # flower jobs: their own venv
            if trains_here and (cannot_train := capability.training_unavailable()) is not None:
                _log.error(events.TRAINER_UNAVAILABLE, reason=cannot_train)
            _log.info(
                events.DAEMON_READY,
                version=__version__,
                pid=os.getpid(),
                config=str(self.config.path),
                jobs=[job.name for job in self.config.job],
                energy=self.energy.status,
            )
            if self.notifier.watchdog_interval_s is not None:
                watchdog = asyncio.create_task(self._watchdog(self.notifier.watchdog_interval_s))
            await self._serve()
        finally:
            self._stop_deadline = loop.time() + self.config.daemon.shutdown_grace_s
            self.notifier.stopping("stopping: expiring running cycles")
            # a trainer may take the whole grace, then SIGTERM + 2 s: ask the manager for that much
            self.notifier.extend_timeout(self._stop_bound(loop))
            _log.info(events.DAEMON_STOPPING)
            for service in reversed(started):
                began = loop.time()
                try:
                    await asyncio.wait_for(service.stop(), timeout=self._stop_bound(loop))
                except Exception as exc:  # noqa: BLE001 - one failing stop must not skip the others
                    _log.error(events.DAEMON_SERVICE_STOP_FAILED, service=service.name, error=repr(exc))
                _log.debug(events.DAEMON_SERVICE_STOPPED, service=service.name, seconds=round(loop.time() - began, 3))
            if watchdog is not None:
                watchdog.cancel()
            self._remove_signals()
            self._lock.release()
            _log.info(events.DAEMON_STOPPED)
        return status

    def _services(self) -> list[_Named]:
        async def ensure_state() -> None:
            await asyncio.to_thread(self._state.ensure)

        async def nothing() -> None:
            return None

        control = ControlServer(self.config.daemon.runtime_dir, self._handlers())
        services = [
            _Named("state_dir", ensure_state, nothing),
            _Named("conditions", self.monitor.start, self.monitor.stop),
            _Named("trainers", self.pool.start, self.pool.stop),
            _Named("grid clients", nothing, self.clients.close),
            _Named("jobs", self.jobs.start, lambda: self.jobs.stop(self._stop_deadline)),
            _Named("control", control.start, control.stop),
        ]
        if self.metrics is not None and self.config.daemon.metrics_listen is not None:
            from syftd.metrics import MetricsServer, status_gauges

            self.metrics.add_collector(lambda: status_gauges(self.jobs.status(), self.monitor.current.as_dict()))
            server = MetricsServer(self.config.daemon.metrics_listen, self.metrics)
            services.append(_Named("metrics", server.start, server.stop))
        return services

    def _on_trainer_start(self, job: str, warm: bool) -> None:
        self.metrics.observe_trainer_start(job, warm=warm)

    def _stop_bound(self, loop: asyncio.AbstractEventLoop) -> float:
        """Seconds left until the SIGKILL moment plus a margin: no stop may take longer."""
        assert self._stop_deadline is not None
        return max(_STOP_MARGIN_S, self._stop_deadline + KILL_AFTER_TERM_S + _STOP_MARGIN_S - loop.time())

    async def _serve(self) -> None:
        while True:
            action = await self._actions.get()
            self._queued.discard(action)
            if action == "stop":
                return
            if action == "reload":
                await self.reload()
            elif action == "trigger":
                self.jobs.trigger()
            elif action == "expire":
                self.jobs.expire(reason=ExpiryReason.MANUAL)

    async def _watchdog(self, interval_s: float) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval_s)

    # ------------------------------------------------------------------ signals

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        self._signals = OperatorSignals(
            loop,
            {
                signal.SIGTERM: lambda: self._queue("stop"),
                signal.SIGINT: self._on_sigint,
                signal.SIGHUP: lambda: self._queue("reload"),
                signal.SIGUSR1: lambda: self._queue("trigger"),
                signal.SIGUSR2: lambda: self._queue("expire"),
            },
        )
        self._signals.install()

    def _queue(self, action: str) -> None:
        """Queue ``action`` for the main loop unless it is already waiting there (signals coalesce)."""
        if action not in self._queued:
            self._queued.add(action)
            self._actions.put_nowait(action)

    def _remove_signals(self) -> None:
        if self._signals is not None:
            # SIGINT stays: a second Ctrl-C during shutdown must still force the exit
            self._signals.release(signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)

    def _on_sigint(self) -> None:
        self._sigint_count += 1
        if self._sigint_count == 1:
            self._queue("stop")
            return
        _log.warning(events.DAEMON_FORCED_EXIT, signal="SIGINT")
        os._exit(130)

    # ------------------------------------------------------------------ reload

    async def reload(self) -> bool:
        """Re-read the configuration file; a bad file keeps the running config. True if applied."""
        self.notifier.reloading()
        path = self.config.path
        try:
            if path is None:
                raise ConfigError(None, ["<file>: the daemon was started without a configuration file"])
            new = configfile.load(path)
        except ConfigError as exc:
            _log.error(events.CONFIG_RELOAD_FAILED, path=str(path), problems=list(exc.problems))
            self.notifier.ready(f"reload failed, running config kept: {exc.problems[0]}")
            return False
        except Exception as exc:  # noqa: BLE001 - a reload that fails for any reason keeps the running config
            problem = f"<file>: {type(exc).__name__}: {exc}"
            _log.error(events.CONFIG_RELOAD_FAILED, path=str(path), problems=[problem])
            self.notifier.ready(f"reload failed, running config kept: {problem}")
            return False
        try:
            changes = self.jobs.reconfigure(new)
        except Exception as exc:  # noqa: BLE001 - the daemon outlives a reload it cannot apply
            problem = f"<reconfigure>: {type(exc).__name__}: {exc}"
            _log.error(events.CONFIG_RELOAD_FAILED, path=str(path), problems=[problem])
            self.notifier.ready(f"reload failed, running config kept: {problem}")
            return False
        if new.daemon != self.config.daemon:
            _log.warning(events.CONFIG_DAEMON_TABLE_CHANGED, note="[daemon] changes take effect at the next start")
        self.config = new
        self._reloads += 1
        _log.info(events.CONFIG_RELOADED, path=str(path), reloads=self._reloads, **changes)
        self.notifier.ready(self.jobs.status_line())
        return True

    # ------------------------------------------------------------------ control verbs

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]:
        async def status(_params: dict[str, Any]) -> Any:
            return {
                "version": __version__,
                "pid": os.getpid(),
                "status": self.jobs.status_line(),
                "jobs": self.jobs.status(),
            }

        async def why(params: dict[str, Any]) -> Any:
            if not params.get("job"):
                raise ValueError("why needs a job name")
            return self.jobs.why(str(params["job"]))

        async def trigger(params: dict[str, Any]) -> Any:
            names = self.jobs.trigger(params.get("job"), force=bool(params.get("force")))
            return {"jobs": names, "message": f"triggered: {', '.join(names) or 'no enabled job'}"}

        async def expire(params: dict[str, Any]) -> Any:
            names = self.jobs.expire(params.get("job"), reason=ExpiryReason.MANUAL)
            return {"jobs": names, "message": f"expire requested: {', '.join(names) or 'no enabled job'}"}

        async def simulate(params: dict[str, Any]) -> Any:
            event = params.get("event")
            if event not in ("power-loss", "network-loss", "clear"):
                raise ValueError("event must be power-loss, network-loss or clear")
            for_s = params.get("for_s")
            if for_s is not None and (not isinstance(for_s, int | float) or for_s <= 0):
                raise ValueError("for_s must be a positive number of seconds")
            names = self.jobs.simulate(event, for_s, params.get("job"))
            return {"jobs": names, "message": f"simulating {event} for {', '.join(names) or 'no job'}"}

        async def history(params: dict[str, Any]) -> Any:
            names = [job.name for job in self.config.job]
            if params.get("job"):
                if params["job"] not in names:
                    known = ", ".join(sorted(names)) or "none"
                    raise LookupError(f"no job named {params['job']!r}; configured: {known}")
                names = [str(params["job"])]
            limit = _positive_int(params.get("limit"), "limit")
            kept = [await asyncio.to_thread(self.history.entries, name) for name in names]
            entries = [e for job_entries in kept for e in job_entries[-(limit or self.history.limit) :]]
            entries.sort(key=lambda e: e.get("time") or 0)
            return {"jobs": names, "entries": entries}

        return {
            "status": status,
            "why": why,
            "trigger": trigger,
            "expire": expire,
            "simulate": simulate,
            "history": history,
        }


def _positive_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if number < 1 or number != int(number):
        raise ValueError(f"{name} must be a positive whole number, got {value!r}")
    return int(number)
