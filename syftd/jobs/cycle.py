"""One training cycle of one job, from the accepted decision to its one ``CycleRecord``; its only owner.

Owns the cycle's states and allowed transitions, the order of the protocol steps (authenticate →
[speed test, reused per job] → cycle-request → get-model and get-plan at once → train → spool →
report, all through one client and its connections), the cycle's expiration flag (created
here, expired through ``expire``, closed when the cycle ends), its ``max_cycle_s`` deadline, the abort
of its report, and the typed ``Ended`` it ends with. Does not own deciding when a cycle starts or why
it expires (the manager and ``policy``), the wire protocol (``grid``), training (``trainer``) or the
report steps (``report``).

Expiration: before a finished diff exists, ``expire`` sets the flag. Network steps in flight are
cancelled at once; from the moment the trainer is involved, the trainer pool watches the flag (the
trainer stops at its next checkpoint, or gets SIGTERM at the flag's SIGTERM moment and SIGKILL 2 s
later, whatever it is doing); a trainer prepared for this cycle that never got its request is let go
by the same moment. Once the trainer has returned a finished diff the flag no longer matters: a
lost network or a stopping daemon aborts the report instead (``abort_report``), and the diff stays
SPOOLED for later.
"""

from __future__ import annotations

import asyncio
import enum
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from syftd import events
from syftd.config import JobConfig
from syftd.errors import (
    GridAuthFailed,
    GridError,
    GridFinished,
    GridProtocolError,
    GridRejected,
    GridUnavailable,
    GridWorkerUnknown,
    WireError,
)
from syftd.grid.answers import Accepted
from syftd.grid.wire import check_diff
from syftd.identity import Identity
from syftd.jobs.ports import GridSession, Trainers
from syftd.jobs.report import Aborted, ReportOutcome, ReportRun, race
from syftd.log import get_logger
from syftd.outcomes import CycleOutcome, Ended, ExpiryReason, Failure, Rejection
from syftd.spool import Spool
from syftd.trainer.flag import ExpiryFlag
from syftd.trainer.messages import Outcome, Progress, TrainerStage

__all__ = ["CycleRecord", "CycleRun", "CycleState", "InvalidTransition", "TrainerPhase", "new_cycle_id"]

_log = get_logger("syftd.jobs.cycle")
T = TypeVar("T")
_SPAWN_BOUND_S = 10.0


class CycleState(enum.Enum):
    """Where a cycle is; the last six are terminal."""

    PENDING = "pending"
    AUTHENTICATING = "authenticating"
    REQUESTING = "requesting"
    DOWNLOADING = "downloading"
    TRAINING = "training"
    SPOOLING = "spooling"
    REPORTING = "reporting"
    DONE = "done"
    EXPIRED = "expired"
    REJECTED = "rejected"
    FAILED = "failed"
    SPOOLED = "spooled"
    DISCARDED = "discarded"

    @property
    def is_terminal(self) -> bool:
        """True for the states a cycle ends in."""
        return self in _TERMINAL

    @property
    def has_diff(self) -> bool:
        """True once a finished diff exists (the flag no longer ends the cycle)."""
        return self in (CycleState.SPOOLING, CycleState.REPORTING)


class TrainerPhase(enum.Enum):
    """What the trainer is doing while the cycle is TRAINING."""

    STARTING = "starting trainer"
    LOADING_DATA = "loading data"
    TRAINING = "training"
    WRITING_DIFF = "writing the diff"


_TERMINAL_OF = {
    CycleOutcome.DONE: CycleState.DONE,
    CycleOutcome.EXPIRED: CycleState.EXPIRED,
    CycleOutcome.REJECTED: CycleState.REJECTED,
    CycleOutcome.FAILED: CycleState.FAILED,
    CycleOutcome.SPOOLED: CycleState.SPOOLED,
    CycleOutcome.DISCARDED: CycleState.DISCARDED,
}
_TERMINAL = frozenset(_TERMINAL_OF.values())
_S = CycleState
_ALLOWED: dict[CycleState, frozenset[CycleState]] = {
    _S.PENDING: frozenset({_S.AUTHENTICATING, _S.REQUESTING, _S.EXPIRED, _S.FAILED}),
    _S.AUTHENTICATING: frozenset({_S.REQUESTING, _S.EXPIRED, _S.FAILED, _S.REJECTED}),
    _S.REQUESTING: frozenset({_S.AUTHENTICATING, _S.DOWNLOADING, _S.REJECTED, _S.EXPIRED, _S.FAILED}),
    _S.DOWNLOADING: frozenset({_S.TRAINING, _S.REJECTED, _S.EXPIRED, _S.FAILED}),
    _S.TRAINING: frozenset({_S.SPOOLING, _S.EXPIRED, _S.FAILED}),
    _S.SPOOLING: frozenset({_S.REPORTING, _S.FAILED, _S.SPOOLED}),
    _S.REPORTING: frozenset({_S.DONE, _S.SPOOLED, _S.DISCARDED}),
    **{terminal: frozenset() for terminal in _TERMINAL},
}


class InvalidTransition(RuntimeError):
    """A transition the table does not allow: a bug in this module."""

    def __init__(self, from_: CycleState, to: CycleState) -> None:
        super().__init__(f"cycle cannot go from {from_.value} to {to.value}")


def new_cycle_id() -> str:
    """A short random id naming one cycle in logs, history and the spool."""
    return secrets.token_hex(6)


@dataclass(slots=True)
class CycleRecord:
    """How one cycle ended: the canonical ``cycle.finished`` line and the history entry."""

    job: str
    cycle_id: str
    ended: Ended = field(default_factory=lambda: Ended.failed(Failure.INTERNAL))
    error: str | None = None
    steps: int = 0
    loss: float | None = None
    accuracy: float | None = None
    bytes_down: int = 0
    bytes_up: int = 0
    speed_test_bytes: int = 0
    started_wall: float = field(default_factory=time.time)
    duration_s: float = 0.0
    train_s: float = 0.0
    step_time_s: float = 0.0
    trainer_cpu_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, for the history and the log line: the typed end written as its values."""
        ended = self.ended
        return {
            "job": self.job,
            "cycle_id": self.cycle_id,
            "outcome": ended.outcome.value,
            "reason": ended.reason,
            "error": self.error,
            "steps": self.steps,
            "loss": self.loss,
            "accuracy": self.accuracy,
            "bytes_down": self.bytes_down,
            "bytes_up": self.bytes_up,
            "speed_test_bytes": self.speed_test_bytes,
            "started_wall": self.started_wall,
            "duration_s": self.duration_s,
            "train_s": self.train_s,
            "step_time_s": self.step_time_s,
            "trainer_cpu_s": self.trainer_cpu_s,
            "rejected_timeout_s": ended.timeout_s,
            "finished": ended.rejection is Rejection.FINISHED,
        }


class CycleRun:
    """Runs one cycle; ``await run()`` returns its record and never raises for a grid or trainer problem."""

    def __init__(
        self,
        job: JobConfig,
        *,
        cycle_id: str,
        client: Callable[[], GridSession],
        pool: Trainers,
        spool: Spool,
        identity: Identity,
        on_change: Callable[[bool], None] = lambda _is_phase: None,
    ) -> None:
        self.job = job
        self.cycle_id = cycle_id
        self.flag = ExpiryFlag()
        self.state = CycleState.PENDING
        self.trainer_phase = TrainerPhase.STARTING
        self.progress: Progress | None = None
        self.record = CycleRecord(job=job.name, cycle_id=cycle_id)
        self._client_factory = client
        self._pool = pool
        self._spool = spool
        self._identity = identity
        self._on_change = on_change
        self._abort_report = asyncio.Event()
        self._warming: asyncio.Future[None] | None = None
        self._accepted = False
        self._trained = False
        self._started = time.monotonic()

    # ------------------------------------------------------------------ control

    def expire(self, reason: ExpiryReason, *, term_by: float | None = None) -> bool:
        """End the cycle early with ``reason`` if no finished diff exists yet; True if it took effect.

        A trainer still running gets SIGTERM ``expiry_grace_s`` after the first reason, or at
        ``term_by`` (monotonic) if that is sooner. Once a finished diff exists, a lost network, sleep
        or shutdown aborts its report instead (the diff stays spooled).
        """
        if self.state.is_terminal:
            return False
        if self.state.has_diff:
            if reason in (ExpiryReason.SHUTDOWN, ExpiryReason.NETWORK_LOST, ExpiryReason.SLEEP):
                self.abort_report()
            return False
        took = self.flag.expire(reason, self.job.budget.expiry_grace_s)
        if term_by is not None:
            self.flag.hasten(term_by)
        if took:
            _log.info(
                events.CYCLE_EXPIRING,
                job=self.job.name,
                cycle=self.cycle_id,
                reason=reason.label,
                state=self.state.value,
            )
        return True

    def abort_report(self) -> None:
        """Stop a report in flight (network lost, daemon stopping): the diff stays spooled."""
        self._abort_report.set()

    def _transition(self, to: CycleState) -> None:
        if to not in _ALLOWED[self.state]:
            raise InvalidTransition(self.state, to)
        _log.debug(
            events.CYCLE_STATE_CHANGED,
            job=self.job.name,
            cycle=self.cycle_id,
            from_state=self.state.value,
            to_state=to.value,
        )
        self.state = to
        self._on_change(True)

    # ------------------------------------------------------------------ the cycle

    async def run(self) -> CycleRecord:
        """Run to a terminal state; the record is complete when this returns. The flag is closed after."""
        budget = asyncio.get_running_loop().call_later(self.job.budget.max_cycle_s, self.expire, ExpiryReason.BUDGET)
        try:
            await self._run_ending()
        except BaseException as exc:
            if not self.state.is_terminal:
                self._end(Ended.failed(Failure.INTERNAL), error=repr(exc))
            raise
        finally:
            budget.cancel()
            await self._let_prepared_go()
            self.flag.close()
            self.record.duration_s = round(time.monotonic() - self._started, 3)
        return self.record

    async def _run_ending(self) -> None:
        try:
            await self._run()
        except _Expired as exc:
            self._end(Ended.expired(exc.reason))
        except GridRejected as exc:
            self._end(Ended(CycleOutcome.REJECTED, rejection=Rejection.TIMEOUT, timeout_s=exc.timeout_s))
        except GridFinished:
            self._end(Ended(CycleOutcome.REJECTED, rejection=Rejection.FINISHED))
        except GridUnavailable as exc:
            self._end(Ended.failed(Failure.UNAVAILABLE), error=str(exc))
        except GridAuthFailed as exc:
            self._end(Ended.failed(Failure.AUTH), error=str(exc))
        except GridError as exc:
            self._end(Ended.failed(Failure.PROTOCOL), error=f"{type(exc).__name__}: {exc}")
        except WireError as exc:
            self._end(Ended.failed(Failure.WIRE), error=str(exc))
        if self._accepted and self.record.ended.outcome in (CycleOutcome.EXPIRED, CycleOutcome.FAILED):
            # the node assigned this worker id to a cycle it will not report into: never ask with it again
            await asyncio.to_thread(self._identity.forget_worker, self.job.name)

    def _end(self, ended: Ended, *, error: str | None = None) -> None:
        if not self.state.is_terminal:
            self._transition(_TERMINAL_OF[ended.outcome])
            self.record.ended = ended
        if error is not None:
            self.record.error = error

    async def _run(self) -> None:
        # one client, so one set of connections, from the cycle request to the report (issue 15)
        async with self._client_factory() as client:
            model, plan, plan_id, worker_id, accepted = await self._download(client)
            if self._warming is not None:
                await self._guarded(asyncio.shield(self._warming))
            self._check_flag()
            await self._train(client, model, plan, plan_id, worker_id, accepted)

    async def _download(self, client: GridSession) -> tuple[bytes, bytes, int, str, Accepted]:
        job, record = self.job, self.record
        worker_id = await asyncio.to_thread(self._identity.load_worker, job.name, job.grid.url)
        if worker_id is None:
            self._transition(CycleState.AUTHENTICATING)
            worker_id = await self._authenticate(client)
        self._transition(CycleState.REQUESTING)
        try:
            accepted = await self._guarded(self._request(client, worker_id))
        except GridWorkerUnknown:
            # the node forgot this worker (restart, new process): authenticate afresh, once
            await asyncio.to_thread(self._identity.forget_worker, job.name)
            self._transition(CycleState.AUTHENTICATING)
            worker_id = await self._authenticate(client)
            self._transition(CycleState.REQUESTING)
            accepted = await self._guarded(self._request(client, worker_id))
        self._accepted = True
        # accepted: the trainer process starts (and imports torch) while the cycle downloads; not
        # before, so that a node rejecting or down does not cost a torch import per attempt
        self._warming = asyncio.ensure_future(self._pool.prepare(job))
        self._transition(CycleState.DOWNLOADING)
        plan_id = accepted.plans.get(job.grid.plan)
        if not isinstance(plan_id, int):
            raise GridProtocolError(
                f"the node offers no plan named {job.grid.plan!r} (grid.plan); it has {sorted(accepted.plans)}"
            )
        model, plan = await self._guarded(client.get_model_and_plan(worker_id, accepted))
        record.bytes_down = len(model) + len(plan)
        return model, plan, plan_id, worker_id, accepted

    async def _train(
        self, client: GridSession, model: bytes, plan: bytes, plan_id: int, worker_id: str, accepted: Accepted
    ) -> None:
        job, record = self.job, self.record
        self._transition(CycleState.TRAINING)
        self._trained = True
        train_started = time.monotonic()
        result = await self._pool.train(
            job,
            model=model,
            plan=plan,
            client_config=dict(accepted.client_config),
            flag=self.flag,
            on_progress=self._progress,
            cycle_id=self.cycle_id,
            on_stage=self._stage,
        )
        record.train_s = round(time.monotonic() - train_started, 3)
        record.steps = result.steps
        record.step_time_s = round(result.step_time_s, 4)
        record.trainer_cpu_s = result.cpu_s
        if result.losses:
            record.loss = round(result.losses[-1], 5)
        if result.accuracies:
            record.accuracy = round(result.accuracies[-1], 5)
        if result.outcome is not Outcome.COMPLETED or result.diff is None:
            # a flag that was set explains the stop; a trainer that failed or died by itself failed
            reason = result.reason if result.reason is not None else self.flag.reason
            if result.outcome is Outcome.FAILED or reason is None:
                self._end(Ended.failed(Failure.TRAINER), error=result.error)
            else:
                self._end(Ended.expired(reason))
                if result.outcome in (Outcome.TERMINATED, Outcome.KILLED):
                    record.error = f"trainer {result.outcome.value} after the grace period"
            return
        diff = result.diff
        self._transition(CycleState.SPOOLING)
        try:
            # a diff the node could not parse would stall its process (spec §7): check, then make it durable
            await asyncio.to_thread(check_diff, diff, model)
            entry = await asyncio.to_thread(
                self._spool.add,
                job.name,
                self.cycle_id,
                diff,
                worker_id=worker_id,
                request_key=accepted.request_key,
                plan_id=plan_id,
                model_id=accepted.model_id,
            )
        except OSError as exc:
            self._end(Ended.failed(Failure.STORAGE), error=f"the diff could not be spooled: {exc}")
            return
        record.bytes_up = len(diff)
        self._transition(CycleState.REPORTING)
        reporter = ReportRun(job.name, self._spool, lambda: _Borrowed(client), self._abort_report)
        outcome = await reporter.report(entry)
        if outcome is ReportOutcome.REPORTED:
            self._end(Ended(CycleOutcome.DONE))
        elif outcome is ReportOutcome.DISCARDED:
            self._end(Ended(CycleOutcome.DISCARDED))
        else:
            self._end(Ended(CycleOutcome.SPOOLED))

    async def _let_prepared_go(self) -> None:
        """A trainer prepared for this cycle that never got its request leaves by the flag's SIGTERM moment."""
        warming = self._warming
        if warming is None or self._trained:
            return
        if not warming.done():
            await asyncio.wait({warming}, timeout=_SPAWN_BOUND_S)
        if warming.done() and not warming.cancelled() and warming.exception() is not None:
            _log.warning(events.TRAINER_PREPARE_FAILED, job=self.job.name, error=repr(warming.exception()))
        self._pool.discard_prepared(self.job, self.flag.term_at)

    # ------------------------------------------------------------------ helpers

    async def _authenticate(self, client: GridSession) -> str:
        auth = await self._guarded(client.authenticate())
        await asyncio.to_thread(
            self._identity.save_worker,
            self.job.name,
            auth.worker_id,
            self.job.grid.url,
            requires_speed_test=bool(auth.requires_speed_test),
        )
        return str(auth.worker_id)

    async def _request(self, client: GridSession, worker_id: str) -> Accepted:
        speed = None
        if await asyncio.to_thread(self._identity.requires_speed_test, self.job.name):
            # one measurement serves the requests of grid.speed_test_reuse_s (the client's cache)
            try:
                speed = await client.speed(worker_id)
            finally:
                self.record.speed_test_bytes += client.speed_test_bytes()
        return await client.cycle_request(worker_id, speed=speed)

    def _progress(self, progress: Progress) -> None:
        self.progress = progress
        is_phase = progress.step > 0 and self.trainer_phase is not TrainerPhase.TRAINING
        if progress.step > 0:
            self.trainer_phase = TrainerPhase.TRAINING
        self._on_change(is_phase)

    def _stage(self, stage: TrainerStage) -> None:
        if stage is TrainerStage.LOADING_DATA:
            self.trainer_phase = TrainerPhase.LOADING_DATA
        elif stage is TrainerStage.WRITING_DIFF:
            self.trainer_phase = TrainerPhase.WRITING_DIFF
        self._on_change(True)

    def _check_flag(self) -> None:
        reason = self.flag.reason
        if reason is not None:
            raise _Expired(reason)

    async def _guarded(self, step: Awaitable[T]) -> T:
        """Run a network step, cancelled at once if the flag is set meanwhile."""
        if self.flag.reason is not None and asyncio.iscoroutine(step):
            step.close()
        self._check_flag()
        try:
            return await race(step, self.flag.wait())
        except Aborted:
            raise _Expired(self.flag.reason or ExpiryReason.MANUAL) from None


class _Borrowed:
    """The cycle's client lent to the report path for the fresh diff: entered and left without closing it."""

    def __init__(self, client: GridSession) -> None:
        self._client = client

    async def __aenter__(self) -> GridSession:
        return self._client

    async def __aexit__(self, *_exc: object) -> None:
        return None


class _Expired(Exception):
    def __init__(self, reason: ExpiryReason) -> None:
        self.reason = reason
