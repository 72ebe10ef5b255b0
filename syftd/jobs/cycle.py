"""One training cycle of one job, from the accepted decision to its one ``CycleRecord``; its only owner.

Owns the order of the protocol steps (authenticate → [speed test, reused per job] → cycle-request →
get-model and get-plan at once → train → spool → report, all through one client and its
connections), the cycle's expiration flag (created
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
import contextlib
import dataclasses
import hashlib
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

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
from syftd.identity import Identity
from syftd.jobs.files import PROBE_AFTER_S, Begun, begin, clear_work_dir, settle
from syftd.jobs.ports import GridSession, Trainers
from syftd.jobs.report import Aborted, ReportOutcome, ReportRun, race, report_unspooled
from syftd.jobs.states import (
    CycleRecord,
    CycleState,
    TrainerPhase,
    check_transition,
    ended_without_diff,
    terminal_state,
)
from syftd.log import get_logger
from syftd.outcomes import CycleOutcome, Ended, ExpiryReason, Failure, Rejection
from syftd.spool import Spool, file_sha256
from syftd.spoolentry import SpoolEntry
from syftd.trainer.flag import ExpiryFlag
from syftd.trainer.messages import Outcome, Progress, TrainerStage

__all__ = ["CycleRun"]

_log = get_logger("syftd.jobs.cycle")
T = TypeVar("T")
_SPAWN_BOUND_S = 10.0


class CycleRun:
    """Runs one cycle; ``await run()`` returns its record and never raises for a grid or trainer problem."""

    def __init__(
        self,
        job: JobConfig,
        *,
        cycle_id: str,
        client: Callable[[], AbstractAsyncContextManager[GridSession]],
        pool: Trainers,
        spool: Spool,
        identity: Identity,
        on_change: Callable[[bool], None] = lambda _is_phase: None,
        tidy_later: Callable[[SpoolEntry], None] | None = None,
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
        self._tidy_later = tidy_later
        self._abort_report = asyncio.Event()
        self._warming: asyncio.Future[None] | None = None
        self._marking: asyncio.Future[None] | None = None
        self._cleared = False
        self._commit_error: str | None = None
        self._accepted = False
        self._trained = False
        self._started = time.monotonic()
        self._requested_at = self._started

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
        check_transition(self.state, to)
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
        except asyncio.CancelledError:
            # cancelled past the stop deadline: the record still says what became of the work
            if not self.state.is_terminal:
                reason = self.flag.reason or ExpiryReason.SHUTDOWN
                ended = Ended(CycleOutcome.SPOOLED) if self.state.has_diff else Ended.expired(reason)
                self._end(ended, error="cancelled at the stop deadline")
            raise
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
        except OSError as exc:  # the work directory or a download's file (the state directory's disk)
            self._end(Ended.failed(Failure.STORAGE), error=f"the cycle's files could not be written: {exc}")
        if self._accepted and self.record.ended.outcome in (CycleOutcome.EXPIRED, CycleOutcome.FAILED):
            # the node assigned this worker id to a cycle it will not report into: never ask with it again
            await asyncio.to_thread(self._identity.forget_worker, self.job.name)

    def _end(self, ended: Ended, *, error: str | None = None) -> None:
        if not self.state.is_terminal:
            self._transition(terminal_state(ended.outcome))
            self.record.ended = dataclasses.replace(ended, accepted=self._accepted)
        if error is not None:
            self.record.error = error

    async def _run(self) -> None:
        # one client, so one set of connections, from the cycle request to the report (issue 15);
        # model and plan stream into the job's work directory, never into the daemon's memory
        # the files' set-up and the saved worker id in one trip to a worker thread (each trip costs);
        # a worker id the last cycle left reusable is known without it: the request goes out while
        # the files are set up (issue 15)
        job, known = self.job, self._identity.known_worker(self.job.name, self.job.grid.url)
        setup = asyncio.ensure_future(
            asyncio.to_thread(begin, self._spool, self._identity, job, self.cycle_id, with_worker=known is None)
        )
        begun: Begun | None = None
        try:
            if known is None:
                begun = await setup
                known = (begun.worker_id, begun.needs_speed_test) if begun.worker_id is not None else None
            async with self._client_factory() as client:
                try:
                    plan_id, worker_id, accepted = await self._download(client, known, setup)
                except BaseException:
                    await self._marked(quiet=True)
                    raise
                await self._marked()
                if self._warming is not None:
                    await self._guarded(asyncio.shield(self._warming))
                self._check_flag()
                begun = await setup
                await self._train(client, begun, plan_id, worker_id, accepted)
        finally:
            if begun is None:
                begun = await _result_or_none(setup)
            if begun is not None and not self._cleared:
                await asyncio.to_thread(clear_work_dir, begun.work)

    async def _marked(self, *, quiet: bool = False) -> None:
        """Wait for the worker id's in-cycle mark; its OSError ends the cycle ``storage`` (``quiet``:
        another error is already ending it)."""
        marking, self._marking = self._marking, None
        if marking is None:
            return
        if not quiet:
            await marking
            return
        with contextlib.suppress(OSError):
            await asyncio.shield(marking)

    async def _download(
        self, client: GridSession, known: tuple[str, bool] | None, setup: asyncio.Future[Begun]
    ) -> tuple[int, str, Accepted]:
        """Request the cycle (authenticating first without a ``known`` worker id and whether it owes
        speed tests), then download into the files ``setup`` makes ready."""
        job, record = self.job, self.record
        worker_id, needs_speed_test = known if known is not None else (None, False)
        if worker_id is None:
            self._transition(CycleState.AUTHENTICATING)
            worker_id, needs_speed_test = await self._authenticate(client)
        self._transition(CycleState.REQUESTING)
        try:
            accepted = await self._guarded(self._request(client, worker_id, needs_speed_test))
        except GridWorkerUnknown:
            # the node forgot this worker (restart, new process): authenticate afresh, once
            await asyncio.to_thread(self._identity.forget_worker, job.name)
            self._transition(CycleState.AUTHENTICATING)
            worker_id, needs_speed_test = await self._authenticate(client)
            self._transition(CycleState.REQUESTING)
            accepted = await self._guarded(self._request(client, worker_id, needs_speed_test))
        self._accepted = True
        self._requested_at = time.monotonic()
        # durable before the trainer starts, written while the cycle downloads (issue 15)
        self._marking = asyncio.ensure_future(asyncio.to_thread(self._identity.mark_in_cycle, job.name, True))
        # accepted: the trainer process starts (and imports torch) while the cycle downloads; not
        # before, so that a node rejecting or down does not cost a torch import per attempt
        self._warming = asyncio.ensure_future(self._pool.prepare(job))
        self._transition(CycleState.DOWNLOADING)
        plan_id = accepted.plans.get(job.grid.plan)
        if not isinstance(plan_id, int):
            raise GridProtocolError(
                f"the node offers no plan named {job.grid.plan!r} (grid.plan); it has {sorted(accepted.plans)}"
            )
        begun = await setup
        download = client.download_cycle_to(begun.model, begun.plan, worker_id, accepted)
        record.bytes_down = await self._guarded(download)
        return plan_id, worker_id, accepted

    async def _train(self, client: GridSession, begun: Begun, plan_id: int, worker_id: str, accepted: Accepted) -> None:
        job, record = self.job, self.record
        self._transition(CycleState.TRAINING)
        self._trained = True
        train_started = time.monotonic()
        # the trainer writes the diff into the spool itself (the commit makes it durable); only its size comes back
        result = await self._pool.train(
            job,
            model=b"",
            plan=b"",
            client_config=dict(accepted.client_config),
            flag=self.flag,
            on_progress=self._progress,
            cycle_id=self.cycle_id,
            on_stage=self._stage,
            files=(begun.model, begun.plan, begun.diff),
        )
        record.train_s = round(time.monotonic() - train_started, 3)
        record.steps = result.steps
        record.step_time_s = round(result.step_time_s, 4)
        record.trainer_cpu_s = result.cpu_s
        if result.losses:
            record.loss = round(result.losses[-1], 5)
        if result.accuracies:
            record.accuracy = round(result.accuracies[-1], 5)
        if result.outcome is Outcome.COMPLETED and result.diff is not None and not result.diff_written:
            await self._report_unspooled(client, result.diff, result.error, worker_id, accepted)
            return
        if result.outcome is not Outcome.COMPLETED or not result.diff_written:
            ended, error = ended_without_diff(result, self.flag.reason)
            self._end(ended, error=error)
            return
        self._transition(CycleState.SPOOLING)
        entry = self._spool.entry(
            job.name,
            self.cycle_id,
            size=result.diff_size,
            worker_id=worker_id,
            request_key=accepted.request_key,
            plan_id=plan_id,
            model_id=accepted.model_id,
        )
        # the commit's fsyncs run while the diff goes out: the node needs the bytes, not their
        # durability, and the reported marker is written only after the commit (issue 15)
        committing = asyncio.ensure_future(self._commit(begun, entry))
        record.bytes_up = result.diff_size
        self._transition(CycleState.REPORTING)
        # the cycle's own client, lent to the report path as it is (not closed after the report)
        reporter = ReportRun(
            job.name, self._spool, lambda: contextlib.nullcontext(client), self._abort_report, self._tidy_later
        )
        # a fresh diff of a cycle requested moments ago needs no "is my cycle open?" probe
        is_fresh = time.monotonic() - self._requested_at < PROBE_AFTER_S
        try:
            outcome = await reporter.report(entry, own=begun.diff, probe=not is_fresh, committed=committing)
        finally:
            is_committed = await asyncio.shield(committing) is not None
        if outcome is ReportOutcome.REPORTED:
            self._end(Ended(CycleOutcome.DONE), error=self._commit_error)
        elif outcome is ReportOutcome.DISCARDED:
            self._end(Ended(CycleOutcome.DISCARDED), error=self._commit_error)
        elif not is_committed:
            self._end(Ended.failed(Failure.STORAGE), error=self._commit_error)
        else:
            self._end(Ended(CycleOutcome.SPOOLED))

    async def _commit(self, begun: Begun, entry: SpoolEntry) -> SpoolEntry | None:
        """Commit the diff (``files.settle``): the committed entry (hashed), or None, with ``_commit_error``
        set, when the disk refused."""
        try:
            committed = await asyncio.to_thread(settle, self._spool, self._identity, self.job, begun, entry)
        except OSError as exc:
            self._commit_error = f"the diff could not be spooled: {exc}"
            # the report may have sent the file: its hash names the diff (as spool.added would have)
            try:
                sha256: str | None = (await asyncio.to_thread(file_sha256, begun.diff))[:16]
            except OSError:
                sha256 = None  # no file to hash, so none was sent either
            _log.error(
                events.CYCLE_DIFF_UNCOMMITTED,
                job=self.job.name,
                cycle=self.cycle_id,
                error=str(exc),
                sha256=sha256,
            )
            return None
        self._cleared = True
        return committed

    async def _report_unspooled(
        self, client: GridSession, diff: bytes, why: str | None, worker_id: str, accepted: Accepted
    ) -> None:
        """The disk refused the diff's file (full, read-only): report it from memory rather than lose it;
        if that report fails too, the diff is lost and the cycle fails ``storage``."""
        sha256 = (await asyncio.to_thread(hashlib.sha256, diff)).hexdigest()[:16]  # as spool.added logs it
        job, cycle = self.job.name, self.cycle_id
        _log.warning(events.CYCLE_DIFF_UNSPOOLED, job=job, cycle=cycle, error=why, size=len(diff), sha256=sha256)
        self._transition(CycleState.SPOOLING)
        self._transition(CycleState.REPORTING)
        self.record.bytes_up = len(diff)
        outcome, problem = await report_unspooled(client, diff, worker_id, accepted.request_key, self._abort_report)
        note = f"the diff could not be spooled ({why}); reported from memory"
        if outcome is ReportOutcome.REPORTED:
            self._end(Ended(CycleOutcome.DONE), error=note)
        elif outcome is ReportOutcome.DISCARDED:
            self._end(Ended(CycleOutcome.DISCARDED), error=f"{note}: the node had closed the cycle ({problem})")
        else:
            self._end(Ended.failed(Failure.STORAGE), error=f"{note}, which failed, so it is lost: {problem}")

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

    async def _authenticate(self, client: GridSession) -> tuple[str, bool]:
        """A new worker id, saved; and whether the node wants a speed test with its requests."""
        auth = await self._guarded(client.authenticate())
        needs_speed_test = bool(auth.requires_speed_test)
        await asyncio.to_thread(
            self._identity.save_worker,
            self.job.name,
            auth.worker_id,
            self.job.grid.url,
            requires_speed_test=needs_speed_test,
        )
        return str(auth.worker_id), needs_speed_test

    async def _request(self, client: GridSession, worker_id: str, needs_speed_test: bool) -> Accepted:
        speed = None
        if needs_speed_test:
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

    @property
    def is_quiet(self) -> bool:
        """Whether the cycle waits on its trainer (from the trainer's first frame until the diff is being
        written): bookkeeping may run without delaying it."""
        return (
            self.state is CycleState.TRAINING
            and self.progress is not None
            and self.trainer_phase is not TrainerPhase.WRITING_DIFF
        )

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


async def _result_or_none(step: asyncio.Future[Begun]) -> Begun | None:
    """The step's result, or None when it failed (its error already ended the cycle, or it did not matter)."""
    try:
        return await step
    except Exception:  # noqa: BLE001 - reported by whoever awaited it first, or moot for a rejected cycle
        return None


class _Expired(Exception):
    def __init__(self, reason: ExpiryReason) -> None:
        self.reason = reason
