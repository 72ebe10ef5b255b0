"""One run of a ``kind = "flower"`` job: one supervised SuperNode session, run by the job manager the
way it runs a PyGrid cycle.

Owns the translation between the manager's run interface (``expire(reason, term_by=)``, ``run()``
returning one ``CycleRecord``, ``state`` with the phase words, ``abort_report``) and the supervisor:
an expiry becomes a stop file with the reason's label, a grace of ``budget.expiry_grace_s`` (cut
before a suspend so SIGTERM and the leave fit within logind's ``InhibitDelayMaxUSec`` − 1 s, or to
``term_by``), SIGTERM, SIGKILL; the session's end becomes the run's typed outcome (done once the
SuperNode pushed a reply, expired with the reason before that, failed when it exited on its own).
Arms its own ``max_cycle_s`` deadline. Does not decide when a run starts or why it expires (the
manager and ``policy``); restarts after failures are the job's backoff.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syftd import events
from syftd.config import JobConfig
from syftd.flower.config import spec_of
from syftd.flower.session import Phase, SessionOutcome, SessionResult, sleep_grace
from syftd.flower.supervisor import SupernodeSupervisor
from syftd.jobs.states import CycleRecord
from syftd.log import get_logger
from syftd.outcomes import CycleOutcome, Ended, ExpiryReason, Failure

__all__ = ["ACTIVATION_REFUSED", "FlowerRecord", "FlowerRun", "RunPhase", "activation_hint"]

_log = get_logger("syftd.flower")


ACTIVATION_REFUSED = "Failed to activate SuperNode"
"""flwr 1.42's words when the SuperLink refuses ActivateNode (HTTP 412): an unregistered key, or a key
whose last session is still ONLINE there."""


def activation_hint(exit_message: Sequence[str], *, keyed: bool) -> str | None:
    """What an operator should know when the SuperLink refused a keyed SuperNode's activation: flwr says
    the same for a key never registered and for one whose last session ended without leaving (SIGKILL,
    crash, suspend), which the SuperLink holds until 2 × 30 s after its last heartbeat."""
    if not keyed or not any(ACTIVATION_REFUSED in line for line in exit_message):
        return None
    return (
        "the SuperLink refused this auth_private_key: it is not registered (flwr supernode register), or "
        "its last session ended without leaving and is held up to 60 s after its last heartbeat; "
        "the job retries after its backoff"
    )


@dataclass(frozen=True, slots=True)
class RunPhase:
    """What the run is doing, shaped like ``CycleState`` where the manager and the view read it."""

    value: str
    is_terminal: bool = False
    has_diff: bool = False  # a SuperNode never holds a finished diff for syftd to report


@dataclass(slots=True)
class FlowerRecord(CycleRecord):
    """A cycle record with what a SuperNode session adds: its node id, its replies, its leave time."""

    node_id: int | None = None
    replies: int = 0
    leave_s: float | None = None
    exit_status: int | None = None

    def as_dict(self) -> dict[str, Any]:
        entry = CycleRecord.as_dict(self)
        entry.update(
            kind="flower", node_id=self.node_id, replies=self.replies, leave_s=self.leave_s,
            exit_status=self.exit_status,
        )  # fmt: skip
        return entry


class FlowerRun:
    """Runs one SuperNode session for a flower job; ``await run()`` returns its record and never raises
    for a SuperNode problem."""

    def __init__(
        self,
        job: JobConfig,
        *,
        cycle_id: str,
        state_dir: Path,
        inhibit_delay_s: Callable[[], float | None] = lambda: None,
        on_change: Callable[[bool], None] = lambda _is_phase: None,
    ) -> None:
        assert job.flower is not None
        self.job = job
        self.cycle_id = cycle_id
        self.record = FlowerRecord(job=job.name, cycle_id=cycle_id)
        home = state_dir / "flower" / job.name
        self.supervisor = SupernodeSupervisor(
            spec_of(job.flower, job_dir=home, stop_file=home / "stop"),
            job=job.name,
            expiry_grace_s=job.budget.expiry_grace_s,
            on_change=lambda: on_change(True),
        )
        self._inhibit_delay_s = inhibit_delay_s
        self._expiry: ExpiryReason | None = None
        self._finished = False

    @property
    def state(self) -> RunPhase:
        """The phase in words: starting, joined as node N, leaving."""
        if self._finished:
            return RunPhase(self.record.ended.outcome.value, is_terminal=True)
        phase = self.supervisor.phase
        if phase is Phase.JOINED:
            node = self.supervisor.reader.node_id
            replies = self.supervisor.reader.replies
            return RunPhase(f"joined as node {node}" + (f", {replies} replies sent" if replies else ""))
        if phase is Phase.LEAVING:
            return RunPhase(f"leaving ({self._expiry.label})" if self._expiry else "leaving")
        return RunPhase("starting flower-supernode")

    def expire(self, reason: ExpiryReason, *, term_by: float | None = None) -> bool:
        """Leave the federation: stop file, grace, SIGTERM. Before a suspend the grace fits the
        inhibitor delay; ``term_by`` (monotonic) brings SIGTERM forward. True if it took effect."""
        if self._finished:
            return False
        grace = self.grace_for(reason, term_by=term_by, now=time.monotonic())
        if self._expiry is None:
            self._expiry = reason
            _log.info(events.CYCLE_EXPIRING, job=self.job.name, cycle=self.cycle_id, reason=reason.label, grace_s=grace)
        self.supervisor.request_stop(self._expiry.label, grace)
        return True

    def grace_for(self, reason: ExpiryReason, *, term_by: float | None, now: float) -> float:
        """Seconds from the stop file to SIGTERM: ``expiry_grace_s``, cut before a suspend so that
        SIGTERM and the leave fit within logind's inhibitor delay, and never past ``term_by``."""
        grace = self.job.budget.expiry_grace_s
        if reason is ExpiryReason.SLEEP:
            grace = sleep_grace(grace, self._inhibit_delay_s())
        if term_by is not None:
            grace = min(grace, max(0.0, term_by - now))
        return grace

    def abort_report(self) -> None:
        """A SuperNode reports by itself while it runs: nothing to abort."""

    async def run(self) -> FlowerRecord:
        """Run the session to its end; the record is complete when this returns."""
        loop = asyncio.get_running_loop()
        budget = loop.call_later(self.job.budget.max_cycle_s, self.expire, ExpiryReason.BUDGET)
        began = time.monotonic()
        try:
            if self._expiry is None:
                self._ended(await self.supervisor.run_once())
            else:
                self.record.ended = Ended.expired(self._expiry)
        except BaseException as exc:
            self.record.ended, self.record.error = Ended.failed(Failure.INTERNAL), repr(exc)
            raise
        finally:
            budget.cancel()
            self.record.duration_s = round(time.monotonic() - began, 3)
            self._finished = True
        return self.record

    def _ended(self, result: SessionResult) -> None:
        record = self.record
        record.node_id, record.replies, record.exit_status = result.node_id, result.replies, result.exit_status
        record.steps = result.replies
        record.leave_s = None if result.leave_s is None else round(result.leave_s, 3)
        if result.outcome is SessionOutcome.DONE:
            record.ended = Ended(CycleOutcome.DONE, expiry=self._expiry)
        elif result.outcome is SessionOutcome.EXPIRED and self._expiry is not None:
            record.ended = Ended.expired(self._expiry)
        else:
            record.ended = Ended.failed(Failure.SUPERNODE)
            tail = " | ".join(result.exit_message or result.output_tail[-3:])
            keyed = self.job.flower is not None and self.job.flower.auth_private_key is not None
            hint = activation_hint(result.exit_message, keyed=keyed)
            record.error = f"{result.reason}{': ' + tail if tail else ''}{' (' + hint + ')' if hint else ''}"
