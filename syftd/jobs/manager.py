"""The jobs of the running daemon: when each cycle starts, which events expire it, what follows its end.

Owns ``JobManager``: the per-job runtime (``runtime.JobRuntime``), the event-driven loop that asks
``policy.decide`` afresh on every conditions change, timer, trigger or cycle end (it sleeps until the
earliest time a decision names; nothing ticks), the routing of expiring events to the running cycle
(a lost constraint, sleep, a config change, the operator, shutdown), the report of spooled diffs
(``report.ReportRun``), the sleep lock held while cycles run, the canonical ``cycle.finished`` line
and the history. Does not own the decision rules (``policy``), a cycle's steps, its flag or its
budget (``cycle``), reading conditions (``conditions``), training (``trainer``), the operator's verbs
(``verbs``) or words (``view``).
Blocking file I/O (token, spool, history) runs off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import random
import time
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import structlog

from syftd import capability, events, policy
from syftd.conditions.value import Conditions
from syftd.config import Config, JobConfig
from syftd.grid.token import read_job_token
from syftd.history import History
from syftd.identity import Identity
from syftd.jobs import view
from syftd.jobs.bookkeeping import Bookkeeping
from syftd.jobs.cycle import CycleRun
from syftd.jobs.ports import ClientFactory, ConditionsSource, GridSession, Trainers
from syftd.jobs.report import ReportRun
from syftd.jobs.runtime import JobRuntime
from syftd.jobs.states import CycleRecord, new_cycle_id
from syftd.jobs.verbs import OperatorVerbs
from syftd.log import get_logger
from syftd.outcomes import CycleOutcome, ExpiryReason, ReportOutcome
from syftd.spool import Spool

if TYPE_CHECKING:
    from syftd.flower.run import FlowerRun

__all__ = ["JobManager"]

_log = get_logger("syftd.jobs")
_STATUS_MIN_INTERVAL_S = 1.0
_SETTLE_S = 1.0


class JobManager(OperatorVerbs):
    """Runs the configured jobs; every public method is called on the event loop."""

    def __init__(
        self,
        config: Config,
        *,
        pool: Trainers,
        spool: Spool,
        history: History,
        identity: Identity,
        client_factory: ClientFactory,
        monitor: ConditionsSource | None = None,
        status: Callable[[str], None] = lambda _text: None,
        clock: Callable[[], float] = time.monotonic,
        uniform: Callable[[], float] = random.random,
        energy: Any = None,
    ) -> None:
        self._config = config
        self._energy = energy  # syftd.energy.EnergyMeter: joules per cycle; None = not measured
        self._monitor = monitor
        self._pool = pool
        self._spool = spool
        self._books = Bookkeeping(history)
        self._identity = identity
        self._client_factory = client_factory
        self._status = status
        self._clock = clock
        self._uniform = uniform
        self._jobs: dict[str, JobRuntime] = {}
        self._conditions = monitor.current if monitor is not None else Conditions()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._stopping = False
        self._background: set[asyncio.Future[None]] = set()
        self._last_status = ("", 0.0)
        self._apply(config)

    # ------------------------------------------------------------------ service

    async def start(self) -> None:
        """Read every job's token and spool (off the loop), subscribe to conditions, start deciding."""
        await asyncio.gather(*(self._make_ready(job, recover=True) for job in self._jobs.values()))
        started = self._clock()  # the monitor has published its first snapshot: conditions seen from here
        for job in self._jobs.values():
            job.state = dataclasses.replace(job.state, started_at=started)
        if self._monitor is not None:
            self._unsubscribe = self._monitor.subscribe(self._on_conditions)
            self._on_conditions(self._monitor.current)
        self._loop_task = asyncio.create_task(self._loop(), name="syftd.jobs")

    async def stop(self, deadline: float | None = None) -> None:
        """Expire every running cycle with SHUTDOWN, abort reports, wait; idempotent.

        ``deadline`` (monotonic, the daemon's one stop deadline) is when a trainer still running gets
        SIGTERM at the latest; the wait ends ``KILL_AFTER_TERM_S`` + 1 s after it.
        """
        from syftd.trainer.process import KILL_AFTER_TERM_S

        self._stopping = True
        deadline = self._clock() if deadline is None else deadline
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        tasks = []
        for job in self._jobs.values():
            if job.run is not None:
                job.run.expire(ExpiryReason.SHUTDOWN, term_by=deadline)
                job.run.abort_report()
            if job.report is not None:
                job.report.abort()
            if job.task is not None:
                tasks.append(job.task)
        if tasks:
            bound = max(0.0, deadline + KILL_AFTER_TERM_S + _SETTLE_S - self._clock())
            _done, pending = await asyncio.wait(tasks, timeout=bound)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=_SETTLE_S)
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        if self._monitor is not None:
            self._monitor.release_sleep_lock()  # no tick follows the last cycle now
        if self._background:
            await asyncio.wait(list(self._background), timeout=_SETTLE_S)
        await self._books.flush()

    # ------------------------------------------------------------------ configuration

    def reconfigure(self, config: Config) -> dict[str, list[str]]:
        """Apply a new configuration; a removed or changed job's running cycle expires (config_changed)."""
        changes = self._apply(config)
        for name in changes["added"] + changes["changed"]:
            self._spawn_quiet(self._make_ready(self._jobs[name]))
        self._wake.set()
        return changes

    def _apply(self, config: Config) -> dict[str, list[str]]:
        old = {name: job.config for name, job in self._jobs.items()}
        new = {job.name: job for job in config.job}
        changes = {
            "added": sorted(new.keys() - old.keys()),
            "removed": sorted(old.keys() - new.keys()),
            "changed": sorted(n for n in new.keys() & old.keys() if new[n] != old[n]),
        }
        self._config = config
        for name in changes["removed"]:
            job = self._jobs.pop(name)
            self._expire(job, ExpiryReason.CONFIG_CHANGED)
        for name in changes["changed"]:
            job = self._jobs[name]
            self._expire(job, ExpiryReason.CONFIG_CHANGED)
            job.config = new[name]
            job.is_ready = False
        for name in changes["added"]:
            self._jobs[name] = JobRuntime(new[name], state=policy.JobState(started_at=self._clock()))
        self._jobs = {name: self._jobs[name] for name in new}  # keep the file's order
        return changes

    async def _make_ready(self, job: JobRuntime, *, recover: bool = False) -> None:
        """Read the job's token, pending spool and last outcome off the loop; then it may start cycles.

        ``recover`` (at start only, when no cycle of the job can be writing into its spool): remove what
        a crash left in the spool (temp files, diffs never committed, lone markers) first.
        """
        name, token_file = job.config.name, job.config.grid.token_file
        job.token, job.token_error = None, None
        if token_file is not None:
            job.token, job.token_error = await asyncio.to_thread(read_job_token, name, token_file)
        if recover and job.config.kind == "pygrid":
            with contextlib.suppress(OSError):  # a read-only state directory: the cycles will say so
                await asyncio.to_thread(self._spool.recover, name)
        pending = await asyncio.to_thread(self._pending_count, name)
        job.last = job.last or await asyncio.to_thread(self._books.history.last, name)
        if job.config.kind == "pygrid":  # a flower job trains in its SuperNode's own environment
            packages = capability.packages_for(job.config.data.source)
            job.cannot_train = await asyncio.to_thread(capability.training_unavailable, packages)
        job.state = dataclasses.replace(job.state, spool_pending=pending)
        job.is_ready = True
        self._wake.set()

    # ------------------------------------------------------------------ conditions

    def _on_conditions(self, conditions: Conditions) -> None:
        self._conditions = conditions
        now = self._clock()
        for job in self._jobs.values():
            constraints = job.config.constraints
            job.state = policy.observe(job.state, self._effective(job, now), constraints, now)
            self._check_running(job, now)
        self._wake.set()

    def _effective(self, job: JobRuntime, now: float) -> Conditions:
        if not job.overrides:
            return self._conditions
        return self._conditions.updated(now, "simulated", **job.overrides)

    def _check_running(self, job: JobRuntime, now: float) -> None:
        conditions = self._effective(job, now)
        if job.report is not None and job.config.constraints.requires_network and conditions.online is False:
            job.report.abort()
        run = job.run
        if run is None:
            return
        if run.state.has_diff:
            if job.config.constraints.requires_network and conditions.online is False:
                run.abort_report()
            return
        if job.state.forced and not conditions.sleeping:
            return
        reason = policy.expiry_reason(conditions, job.config.constraints)
        if reason is not None:
            self._expire(job, reason)

    def _expire(self, job: JobRuntime, reason: ExpiryReason) -> bool:
        if job.report is not None and reason in (ExpiryReason.SHUTDOWN, ExpiryReason.NETWORK_LOST, ExpiryReason.SLEEP):
            job.report.abort()
        return job.run is not None and job.run.expire(reason)

    # ------------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            next_at = self._tick()
            timeout = None if next_at is None else max(0.0, next_at - self._clock())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _tick(self) -> float | None:
        now = self._clock()
        wall = dt.datetime.now().astimezone()
        next_at: float | None = None
        running = sum(1 for job in self._jobs.values() if job.task is not None)
        needs_thermal = False
        for job in self._jobs.values():
            if job.token_error is not None or not job.is_ready:
                continue
            busy = job.task is not None
            state = dataclasses.replace(job.state, running=busy)
            decision = policy.decide(
                self._effective(job, now),
                state,
                now,
                wall,
                job.config,
                running=running - (1 if busy else 0),
                max_running=self._config.daemon.max_concurrent_jobs,
            )
            job.decision = decision
            if job.config.constraints.max_temperature_c is not None and decision.action in (
                policy.Action.START,
                policy.Action.RUNNING,
                policy.Action.WAIT_FOR,
                policy.Action.WAIT_UNTIL,
            ):
                needs_thermal = True
            if decision.action is policy.Action.START and not self._stopping and job.cannot_train is None:
                self._start_cycle(job, decision)
                running += 1
            elif decision.action is policy.Action.REPORT and not self._stopping:
                self._start_report(job)
                running += 1
            elif decision.action is policy.Action.WAIT_UNTIL and decision.at is not None:
                next_at = decision.at if next_at is None else min(next_at, decision.at)
        if self._monitor is not None:
            self._monitor.set_thermal_active(needs_thermal)
            if not any(j.run is not None for j in self._jobs.values()):
                # no trainer runs: logind may suspend now (the delay inhibitor); kept, not released
                # and taken again, from one cycle to a cycle starting within seconds of it (issue 15)
                self._monitor.release_sleep_lock_soon()
        self._books.set_quiet(self._is_quiet())
        self._publish_status()
        return next_at

    # ------------------------------------------------------------------ cycles

    def _start_cycle(self, job: JobRuntime, decision: policy.Decision) -> None:
        cfg = job.config
        cycle_id = new_cycle_id()
        run: CycleRun | FlowerRun
        if cfg.kind == "flower":
            run = self._flower_run(cfg, cycle_id)
        else:
            run = CycleRun(
                cfg,
                cycle_id=cycle_id,
                client=self._session_of(job),
                pool=self._pool,
                spool=self._spool,
                identity=self._identity,
                on_change=self._on_cycle_change,
                tidy_later=lambda entry: self._books.tidy(self._spool, entry),
            )
        job.run = run
        job.cycles += 1
        if job.state.forced:
            _log.warning(events.JOB_FORCED, job=cfg.name, cycle=cycle_id, note="constraints ignored for this cycle")
        job.state = dataclasses.replace(job.state, triggered=False, running=True, running_since=self._clock())
        if self._monitor is not None:
            self._spawn_quiet(self._monitor.hold_sleep_lock())
        _log.info(events.CYCLE_STARTED, job=cfg.name, cycle=cycle_id, decision=decision.reason.value)
        job.task = asyncio.create_task(self._run_cycle(job, run), name=f"syftd.cycle.{cfg.name}")

    def _flower_run(self, cfg: JobConfig, cycle_id: str) -> FlowerRun:
        """A flower job's run: one supervised SuperNode session (``syftd.flower.run``, loaded only here)."""
        from syftd.flower.run import FlowerRun

        monitor = self._monitor
        return FlowerRun(
            cfg,
            cycle_id=cycle_id,
            state_dir=self._config.daemon.state_dir,
            inhibit_delay_s=lambda: getattr(monitor, "inhibit_delay_s", None),
            on_change=self._on_cycle_change,
        )

    async def _run_cycle(self, job: JobRuntime, run: CycleRun | FlowerRun) -> None:
        # every line logged by this cycle's task (grid client, spool, identity) carries job and cycle
        structlog.contextvars.bind_contextvars(job=job.config.name, cycle=run.cycle_id)
        is_cancelled = False
        energy_at_start = await self._read_energy()
        try:
            record = await run.run()
        except asyncio.CancelledError:
            record, is_cancelled = run.record, True  # past the stop deadline: still one line, one entry
        except Exception:  # noqa: BLE001 - a bug in one cycle must not take the daemon down
            _log.exception(events.CYCLE_CRASHED, job=job.config.name, cycle=run.cycle_id)
            record = run.record
        try:
            await self._finish(job, record, energy_at_start)
        finally:
            job.run, job.task = None, None
            self._wake.set()  # the next tick releases the sleep lock unless a cycle starts in it
            self._publish_status(force=True)
        if is_cancelled:
            raise asyncio.CancelledError

    async def _finish(self, job: JobRuntime, record: CycleRecord, energy_at_start: Any = None) -> None:
        name = job.config.name
        entry = record.as_dict()
        if self._energy is not None:
            energy_at_end = await self._read_energy()
            entry.update(self._energy.measure(energy_at_start, energy_at_end, record.trainer_cpu_s))
        # from here to the assignment below nothing awaits: the state is not changed under us
        now = self._clock()
        state = dataclasses.replace(job.state, running=False, running_since=None, forced=False)
        state = policy.after_cycle(state, record.ended, now, job.config.schedule, self._uniform())
        waits = [t for t in (state.backoff_until, state.rejected_until, state.finished_until) if t is not None]
        if waits and max(waits) > now:
            entry["retry_in_s"] = round(max(waits) - now, 3)
        job.last = entry
        # job and cycle come from the task's contextvars; the history keeps cycle_id
        logged = {k: v for k, v in entry.items() if v is not None and k not in ("job", "cycle_id")}
        _log.info(events.CYCLE_FINISHED, **logged)
        # the cycle left its diff spooled, or none: the count follows without reading the spool
        spooled = 1 if record.ended.outcome is CycleOutcome.SPOOLED else 0
        job.state = dataclasses.replace(state, spool_pending=state.spool_pending + spooled)
        # bookkeeping that guards nothing: written once no cycle is on its path (issue 15)
        self._books.record(name, entry)

    async def _read_energy(self) -> Any:
        """The energy counters now (off the loop), or None without a trip to a worker thread where there
        are none to read (no RAPL: most machines, and every cycle would pay the hand-off)."""
        if self._energy is None or not self._energy.zones:
            return None
        return await asyncio.to_thread(self._energy.read)

    # ------------------------------------------------------------------ spooled reports

    def _start_report(self, job: JobRuntime) -> None:
        job.state = dataclasses.replace(job.state, running=True)
        job.report = ReportRun(
            job.config.name,
            self._spool,
            self._session_of(job),
            asyncio.Event(),
            lambda entry: self._books.tidy(self._spool, entry),
        )
        job.task = asyncio.create_task(self._report_pending(job, job.report), name=f"syftd.report.{job.config.name}")

    async def _report_pending(self, job: JobRuntime, report: ReportRun) -> None:
        name = job.config.name
        structlog.contextvars.bind_contextvars(job=name)
        outcomes: tuple[Any, ...] = ()
        try:
            max_age_s = job.config.schedule.spool_max_age_s
            aged = await asyncio.to_thread(self._spool.discard_aged, name, max_age_s)
            entries = await asyncio.to_thread(self._spool.pending, name)
            done = [(entry, ReportOutcome.DISCARDED) for entry in aged] + await report.report_all(entries)
            outcomes = tuple(outcome for _entry, outcome in done)
            for entry, outcome in done:
                if outcome.is_settled:
                    self._books.update(name, entry.cycle_id, outcome=outcome.value)
        finally:
            now = self._clock()
            state = dataclasses.replace(job.state, running=False)
            job.state = policy.after_report(state, outcomes, now, job.config.schedule, self._uniform())
            pending = await asyncio.to_thread(self._pending_count, name)
            job.state = dataclasses.replace(job.state, spool_pending=pending)
            job.task, job.report = None, None
            self._wake.set()

    def _pending_count(self, name: str) -> int:
        return len(self._spool.pending(name))

    def _session_of(self, job: JobRuntime) -> Callable[[], AbstractAsyncContextManager[GridSession]]:
        config, token = job.config, job.token
        return lambda: self._client_factory(config, token)

    def _spawn_quiet(self, awaitable: Coroutine[Any, Any, Any]) -> None:
        async def guarded() -> None:
            try:
                await awaitable
            except Exception as exc:  # noqa: BLE001 - a sleep lock or a job's set-up is never fatal
                _log.warning(events.CONDITIONS_SLEEP_LOCK_FAILED, error=repr(exc))

        task = asyncio.ensure_future(guarded())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ status

    def _on_cycle_change(self, is_phase: bool) -> None:
        """A new phase is published at once; progress within a phase at most once a second."""
        self._books.set_quiet(self._is_quiet())
        self._publish_status(force=is_phase)

    def _is_quiet(self) -> bool:
        """No pygrid cycle on its latency-sensitive path (bookkeeping may run; a Flower session's is its own)."""
        return all(not isinstance(job.run, CycleRun) or job.run.is_quiet for job in self._jobs.values())

    def _publish_status(self, *, force: bool = False) -> None:
        text = self.status_line()
        now = self._clock()
        last_text, last_at = self._last_status
        if text != last_text and (force or now - last_at >= _STATUS_MIN_INTERVAL_S):
            self._last_status = (text, now)
            self._status(text)

    def status_line(self) -> str:
        """One line for ``STATUS=``, e.g. ``mnist: training 340/1000, loss 0.41``."""
        return view.status_line(self._jobs, self._clock())
