"""The states of one cycle and the record it ends with: the vocabulary of ``cycle`` and ``view``.

Owns ``CycleState`` and the table of allowed transitions (``check_transition``), ``TrainerPhase``
(what the trainer is doing while a cycle trains), ``CycleRecord`` (the ``cycle.finished`` line and the
history entry, written from the typed ``Ended``), ``ended_without_diff`` (what a trainer's result that
brought no spooled diff means for the cycle) and cycle ids. Pure. Does not own running a cycle
(``cycle``) nor the words for a state (``view``).
"""

from __future__ import annotations

import enum
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from syftd.outcomes import CycleOutcome, Ended, ExpiryReason, Failure, Rejection
from syftd.trainer.messages import Outcome, TrainingResult

__all__ = [
    "CycleRecord",
    "CycleState",
    "InvalidTransition",
    "TrainerPhase",
    "check_transition",
    "ended_without_diff",
    "new_cycle_id",
    "terminal_state",
]


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
    _S.REPORTING: frozenset({_S.DONE, _S.SPOOLED, _S.DISCARDED, _S.FAILED}),  # FAILED: an unspooled diff
    **{terminal: frozenset() for terminal in _TERMINAL},
}


class InvalidTransition(RuntimeError):
    """A transition the table does not allow: a bug in this module."""

    def __init__(self, from_: CycleState, to: CycleState) -> None:
        super().__init__(f"cycle cannot go from {from_.value} to {to.value}")


def check_transition(from_: CycleState, to: CycleState) -> None:
    """Raises InvalidTransition unless the table allows ``from_`` → ``to``."""
    if to not in _ALLOWED[from_]:
        raise InvalidTransition(from_, to)


def ended_without_diff(result: TrainingResult, flag_reason: ExpiryReason | None) -> tuple[Ended, str | None]:
    """How a cycle ends whose trainer brought no spooled diff, and the error its record says.

    A failure the trainer named (the disk, the diff's check) keeps its kind; a flag that was set
    explains a stop; a trainer that failed or died by itself failed ``trainer``.
    """
    reason = result.reason if result.reason is not None else flag_reason
    if result.outcome is Outcome.FAILED and result.failure is not None:
        return Ended.failed(result.failure), result.error
    if result.outcome is Outcome.FAILED or reason is None:
        return Ended.failed(Failure.TRAINER), result.error
    if result.outcome in (Outcome.TERMINATED, Outcome.KILLED):
        return Ended.expired(reason), f"trainer {result.outcome.value} after the grace period"
    return Ended.expired(reason), None


def terminal_state(outcome: CycleOutcome) -> CycleState:
    """The state a cycle ends in with ``outcome``."""
    return _TERMINAL_OF[outcome]


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
