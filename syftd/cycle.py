"""One training cycle of one job, as an explicit state machine driven by the grid client and the trainer.

Owns the cycle's states and allowed transitions, the order of the protocol steps (authenticate →
cycle-request → get-model, get-plan → train → spool → report), where an expiration takes effect, and
the one ``CycleRecord`` every cycle ends with. Does not own deciding when a cycle starts or why it
expires (``jobs`` and ``policy``), the wire protocol (``grid``) or training (``trainer``).

Expiration: the job manager sets the cycle's ``ExpiryFlag``. Before the trainer has returned, that ends
the cycle as EXPIRED and throws away only what the trainer had not returned; network steps in flight
are cancelled. Once a completed diff is spooled, the flag no longer matters: reporting needs only the
network, and the manager aborts a report in flight (``abort_report``) when the network goes or the
daemon stops, leaving the diff SPOOLED for later.
"""

from __future__ import annotations

import asyncio
import enum
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from syftd import events
from syftd.config import JobConfig
from syftd.errors import (
    GridAuthFailed,
    GridCycleGone,
    GridError,
    GridFinished,
    GridProtocolError,
    GridRejected,
    GridUnavailable,
    WireError,
)
from syftd.expiry import ExpiryReason
from syftd.grid.wire import check_diff
from syftd.log import get_logger

__all__ = ["CycleRecord", "CycleRun", "CycleState", "InvalidTransition", "new_cycle_id"]

_log = get_logger("syftd.cycle")
T = TypeVar("T")


class CycleState(enum.Enum):
    """Where a cycle is; the last five are terminal."""

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

    @property
    def is_terminal(self) -> bool:
        """True for the states a cycle ends in."""
        return self in _TERMINAL


_TERMINAL = frozenset({CycleState.DONE, CycleState.EXPIRED, CycleState.REJECTED, CycleState.FAILED, CycleState.SPOOLED})
_S = CycleState
_ALLOWED: dict[CycleState, frozenset[CycleState]] = {
    _S.PENDING: frozenset({_S.AUTHENTICATING, _S.REQUESTING, _S.EXPIRED, _S.FAILED}),
    _S.AUTHENTICATING: frozenset({_S.REQUESTING, _S.EXPIRED, _S.FAILED, _S.REJECTED}),
    _S.REQUESTING: frozenset({_S.AUTHENTICATING, _S.DOWNLOADING, _S.REJECTED, _S.EXPIRED, _S.FAILED}),
    _S.DOWNLOADING: frozenset({_S.TRAINING, _S.REJECTED, _S.EXPIRED, _S.FAILED}),
    _S.TRAINING: frozenset({_S.SPOOLING, _S.EXPIRED, _S.FAILED}),
    _S.SPOOLING: frozenset({_S.REPORTING, _S.FAILED}),
    _S.REPORTING: frozenset({_S.DONE, _S.SPOOLED, _S.REJECTED}),
    **{terminal: frozenset() for terminal in _TERMINAL},
}


class InvalidTransition(RuntimeError):
    """A transition the table does not allow: a bug in this module."""

    def __init__(self, from_: CycleState, to: CycleState) -> None:
        super().__init__(f"cycle cannot go from {from_.value} to {to.value}")


def new_cycle_id() -> str:
    """A short random id naming one cycle in logs, history and the spool."""
    return secrets.token_hex(6)


class GridClientLike(Protocol):
    """The part of ``syftd.grid.client.GridClient`` a cycle uses."""

    async def authenticate(self) -> Any: ...
    async def speed_test(self, worker_id: str) -> Any: ...
    async def cycle_request(self, worker_id: str, *, speed: Any = None) -> Any: ...
    async def get_model(self, worker_id: str, request_key: str, model_id: int) -> bytes: ...
    async def get_plan(self, worker_id: str, request_key: str, plan_id: int) -> bytes: ...
    async def report(self, worker_id: str, request_key: str, diff: bytes) -> None: ...


@dataclass(slots=True)
class CycleRecord:
    """How one cycle ended: the canonical ``cycle.finished`` line and the history entry."""

    job: str
    cycle_id: str
    outcome: str = "pending"
    reason: str | None = None
    error: str | None = None
    steps: int = 0
    loss: float | None = None
    accuracy: float | None = None
    bytes_down: int = 0
    bytes_up: int = 0
    started_wall: float = field(default_factory=time.time)
    duration_s: float = 0.0
    train_s: float = 0.0
    step_time_s: float = 0.0
    rejected_timeout_s: float | None = None
    finished: bool = False
    worker_id: str | None = None
    request_key: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, for the history and the log line."""
        return {k: getattr(self, k) for k in self.__slots__ if k not in ("worker_id", "request_key")}


class CycleRun:
    """Runs one cycle; ``await run()`` returns its record and never raises for a grid or trainer problem."""

    def __init__(
        self,
        job: JobConfig,
        *,
        cycle_id: str,
        flag: Any,
        client: Callable[[], Any],
        pool: Any,
        spool: Any,
        identity: Any,
        on_state: Callable[[CycleRun], None] = lambda _run: None,
        on_progress: Callable[[CycleRun, Any], None] = lambda _run, _progress: None,
    ) -> None:
        self.job = job
        self.cycle_id = cycle_id
        self.flag = flag
        self.state = CycleState.PENDING
        self.progress: Any = None
        self.record = CycleRecord(job=job.name, cycle_id=cycle_id)
        self._client_factory = client
        self._pool = pool
        self._spool = spool
        self._identity = identity
        self._on_state = on_state
        self._on_progress = on_progress
        self._abort_report = asyncio.Event()
        self._warming: asyncio.Future[None] | None = None
        self._started = time.monotonic()

    # ------------------------------------------------------------------ control

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
        self._on_state(self)

    # ------------------------------------------------------------------ the cycle

    async def run(self) -> CycleRecord:
        """Run to a terminal state; the record is complete when this returns."""
        record = self.record
        try:
            await self._run()
        except _Expired as exc:
            self._end(CycleState.EXPIRED, reason=exc.reason.label)
        except GridRejected as exc:
            record.rejected_timeout_s = exc.timeout_s
            self._end(CycleState.REJECTED, reason="rejected")
        except GridFinished:
            record.finished = True
            self._end(CycleState.REJECTED, reason="finished")
        except GridUnavailable as exc:
            self._end(CycleState.FAILED, reason="unavailable", error=str(exc))
        except (GridError, WireError) as exc:
            self._end(CycleState.FAILED, reason=type(exc).__name__, error=str(exc))
        finally:
            record.duration_s = round(time.monotonic() - self._started, 3)
        return record

    def _end(self, state: CycleState, *, reason: str | None = None, error: str | None = None) -> None:
        if not self.state.is_terminal:
            self._transition(state)
        self.record.outcome = self.state.value
        self.record.reason = reason if self.record.reason is None else self.record.reason
        if error is not None:
            self.record.error = error

    async def _run(self) -> None:
        try:
            model, plan, plan_id, worker_id, accepted = await self._download()
        finally:
            warming = self._warming
            if warming is not None:
                if not warming.done():
                    await asyncio.wait({warming})
                if not warming.cancelled() and warming.exception() is not None:
                    _log.warning(events.TRAINER_PREPARE_FAILED, job=self.job.name, error=repr(warming.exception()))
        self._check_flag()
        await self._train(model, plan, plan_id, worker_id, accepted)

    async def _download(self) -> tuple[bytes, bytes, int, str, Any]:
        job, record = self.job, self.record
        async with self._client_factory() as client:
            worker_id = self._identity.load_worker(job.name, job.grid.url)
            if worker_id is None:
                self._transition(CycleState.AUTHENTICATING)
                worker_id = await self._authenticate(client)
            self._transition(CycleState.REQUESTING)
            try:
                accepted = await self._guarded(self._request(client, worker_id))
            except GridAuthFailed:
                # the node forgot this worker (restart, new process): authenticate afresh, once
                self._identity.forget_worker(job.name)
                self._transition(CycleState.AUTHENTICATING)
                worker_id = await self._authenticate(client)
                self._transition(CycleState.REQUESTING)
                accepted = await self._guarded(self._request(client, worker_id))
            record.worker_id, record.request_key = worker_id, accepted.request_key
            # accepted: the trainer process starts (and imports torch) while the cycle downloads; not
            # before, so that a node rejecting or down does not cost a torch import per attempt
            self._warming = asyncio.ensure_future(self._pool.prepare(job))
            self._transition(CycleState.DOWNLOADING)
            plan_id = accepted.plans.get(job.grid.plan)
            if not isinstance(plan_id, int):
                raise GridProtocolError(
                    f"the node offers no plan named {job.grid.plan!r} (grid.plan); it has {sorted(accepted.plans)}"
                )
            model = await self._guarded(client.get_model(worker_id, accepted.request_key, accepted.model_id))
            plan = await self._guarded(client.get_plan(worker_id, accepted.request_key, plan_id))
            record.bytes_down = len(model) + len(plan)
        return model, plan, plan_id, worker_id, accepted

    async def _train(self, model: bytes, plan: bytes, plan_id: int, worker_id: str, accepted: Any) -> None:
        job, record = self.job, self.record
        self._transition(CycleState.TRAINING)
        train_started = time.monotonic()
        result = await self._pool.train(
            job,
            model=model,
            plan=plan,
            client_config=dict(accepted.client_config),
            flag=self.flag,
            on_progress=self._progress,
            cycle_id=self.cycle_id,
        )
        record.train_s = round(time.monotonic() - train_started, 3)
        record.steps = result.steps
        record.step_time_s = round(result.step_time_s, 4)
        if result.losses:
            record.loss = round(result.losses[-1], 5)
        if result.accuracies:
            record.accuracy = round(result.accuracies[-1], 5)
        outcome = result.outcome.value
        if outcome != "completed":
            # a flag that was set explains the stop; a trainer that died by itself failed
            reason = result.reason if result.reason is not None else self.flag.reason
            if outcome == "failed" or reason is None:
                self._end(CycleState.FAILED, reason=outcome if outcome != "failed" else "trainer", error=result.error)
            else:
                self._end(CycleState.EXPIRED, reason=reason.label)
                if outcome in ("terminated", "killed"):
                    self.record.error = f"trainer {outcome} after the grace period"
            self._identity.forget_worker(job.name)
            return
        self._transition(CycleState.SPOOLING)
        # a diff the node could not parse would stall its process (spec §7): check, then make it durable
        check_diff(result.diff, model)
        entry = await asyncio.to_thread(
            self._spool.add,
            job.name,
            self.cycle_id,
            result.diff,
            worker_id=worker_id,
            request_key=accepted.request_key,
            plan_id=plan_id,
            model_id=accepted.model_id,
        )
        record.bytes_up = len(result.diff)
        self._transition(CycleState.REPORTING)
        outcome_text = await self.report_spooled(entry)
        self._end(
            CycleState.DONE
            if outcome_text == "reported"
            else CycleState.SPOOLED
            if outcome_text == "pending"
            else CycleState.REJECTED,
            reason=None if outcome_text == "reported" else outcome_text,
        )

    async def report_spooled(self, entry: Any) -> str:
        """Report one spool entry: ``reported``, ``discarded`` (its cycle closed) or ``pending``."""
        try:
            async with self._client_factory() as client:
                return await _race(report_entry(client, self._spool, entry), self._abort_report)
        except _Aborted:
            _log.info(events.SPOOL_REPORT_ABORTED, job=self.job.name, cycle=entry.cycle_id)
            return "pending"
        except GridError as exc:
            _log.warning(
                events.SPOOL_REPORT_FAILED,
                job=self.job.name,
                cycle=entry.cycle_id,
                error_type=type(exc).__name__,
                error=str(exc),
            )
            return "pending"

    # ------------------------------------------------------------------ helpers

    async def _authenticate(self, client: GridClientLike) -> str:
        auth = await self._guarded(client.authenticate())
        self._identity.save_worker(
            self.job.name, auth.worker_id, self.job.grid.url, requires_speed_test=bool(auth.requires_speed_test)
        )
        return str(auth.worker_id)

    async def _request(self, client: GridClientLike, worker_id: str) -> Any:
        speed = None
        if self._identity.requires_speed_test(self.job.name):
            speed = await client.speed_test(worker_id)
        return await client.cycle_request(worker_id, speed=speed)

    def _progress(self, progress: Any) -> None:
        self.progress = progress
        self._on_progress(self, progress)

    def _check_flag(self) -> None:
        reason = self.flag.reason
        if reason is not None:
            raise _Expired(reason)

    async def _guarded(self, step: Awaitable[T]) -> T:
        """Run a network step, cancelled at once if the flag is set meanwhile."""
        self._check_flag()
        try:
            return await _race(step, self.flag)
        except _Aborted:
            raise _Expired(self.flag.reason or ExpiryReason.MANUAL) from None


async def report_entry(client: GridClientLike, spool: Any, entry: Any) -> str:
    """Probe whether the entry's cycle is still open (get-plan), then report; marks the spool entry.

    Returns ``reported`` or ``discarded``. Raises ``GridError`` when it could not tell (retry later).
    """
    try:
        await client.get_plan(entry.worker_id, entry.request_key, entry.plan_id)
    except GridCycleGone as exc:
        await asyncio.to_thread(spool.discard, entry, f"cycle closed on the node: {exc}")
        return "discarded"
    try:
        diff = await asyncio.to_thread(spool.load_diff, entry)
    except WireError:
        return "discarded"  # damaged on disk: the spool quarantined it and said so
    try:
        await client.report(entry.worker_id, entry.request_key, diff)
    except GridCycleGone as exc:
        await asyncio.to_thread(spool.discard, entry, f"cycle closed on the node: {exc}")
        return "discarded"
    # marked durably right after the node's success: a resend before this only overwrites the same row
    await asyncio.to_thread(spool.mark_reported, entry)
    return "reported"


class _Expired(Exception):
    def __init__(self, reason: ExpiryReason) -> None:
        self.reason = reason


class _Aborted(Exception):
    pass


async def _race(step: Awaitable[T], stopper: Any) -> T:
    """Await ``step`` unless ``stopper`` (an asyncio.Event or an ExpiryFlag) fires first."""
    task = asyncio.ensure_future(step)
    waiter = asyncio.ensure_future(stopper.wait())
    try:
        done, _pending = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        waiter.cancel()
        raise
    if task in done:
        waiter.cancel()
        return task.result()
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the step is abandoned on purpose
        pass
    raise _Aborted
