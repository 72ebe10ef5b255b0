"""How a cycle can end, as types: the expiry reasons, the outcomes and the one ``Ended`` value.

Owns ``ExpiryReason`` (stable integer values: they cross the process boundary in shared memory and in
the trainer's frames), ``CycleOutcome``, ``Failure``, ``Rejection`` and ``Ended``, the typed account
of one cycle's end that travels from the cycle to the scheduler (``policy.after_cycle``), the log
line and the history, where it is written as its values. Pure: imports nothing of syftd. Does not
own what happens after an outcome (``policy``) nor the flag that carries a reason (``trainer.flag``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["CycleOutcome", "Ended", "ExpiryReason", "Failure", "Rejection", "ReportOutcome"]


class ExpiryReason(enum.IntEnum):
    """One reason per thing that can end a cycle early; 0 is reserved for "not expired"."""

    POWER_LOST = 1
    NETWORK_LOST = 2
    METERED = 3
    BATTERY_LOW = 4
    IDLE_LOST = 5
    THERMAL = 6
    MEMORY = 7
    BUDGET = 8
    SLEEP = 9
    SHUTDOWN = 10
    MANUAL = 11
    CONFIG_CHANGED = 12
    DISK_LOW = 13

    @property
    def label(self) -> str:
        """The lowercase name used in logs, history and ``syftd status`` (``power_lost``)."""
        return self.name.lower()


class CycleOutcome(enum.Enum):
    """What a cycle ended with; exactly one per cycle."""

    DONE = "done"
    """The diff was reported."""
    SPOOLED = "spooled"
    """A finished diff is kept on disk and will be reported later."""
    DISCARDED = "discarded"
    """A finished diff was dropped: the node said its cycle is gone."""
    EXPIRED = "expired"
    """Stopped before a finished diff existed; ``Ended.expiry`` says why."""
    REJECTED = "rejected"
    """The node did not give this worker a cycle; ``Ended.rejection`` says how."""
    FAILED = "failed"
    """Something went wrong; ``Ended.failure`` says what."""


class Failure(enum.Enum):
    """Why a cycle FAILED."""

    UNAVAILABLE = "unavailable"
    """The node could not be reached, failed on its side, or timed out."""
    PROTOCOL = "protocol"
    """The node answered something this worker cannot use."""
    AUTH = "auth"
    """The node refused this worker."""
    WIRE = "wire"
    """Bytes that are not a valid State, Plan or diff."""
    NON_FINITE = "non_finite"
    """The trained diff holds NaN or infinite values: never reported."""
    TRAINER = "trainer"
    """The trainer failed or died on its own."""
    SUPERNODE = "supernode"
    """A flower job's SuperNode exited on its own (flwr's exit message is the record's error)."""
    STORAGE = "storage"
    """The state directory refused a write."""
    INTERNAL = "internal"
    """A bug in the daemon."""


class Rejection(enum.Enum):
    """How the node declined a cycle request."""

    TIMEOUT = "rejected"
    """Rejected with a timeout: retry after it."""
    FINISHED = "finished"
    """Rejected without a timeout: the process looks finished."""


@dataclass(frozen=True, slots=True)
class Ended:
    """The typed end of one cycle: the outcome and the one detail that goes with it."""

    outcome: CycleOutcome
    expiry: ExpiryReason | None = None
    failure: Failure | None = None
    rejection: Rejection | None = None
    timeout_s: float | None = None
    """The node's rejection timeout in seconds, as it sent it (may be negative: its cycle's end has passed)."""
    accepted: bool = False
    """Whether the node had accepted the cycle request (this worker was assigned to a cycle)."""

    @property
    def reason(self) -> str | None:
        """The detail as the word written to the log and the history (``power_lost``, ``unavailable``)."""
        if self.expiry is not None:
            return self.expiry.label
        if self.failure is not None:
            return self.failure.value
        if self.rejection is not None:
            return self.rejection.value
        return None

    @classmethod
    def expired(cls, reason: ExpiryReason) -> Ended:
        """Expired with ``reason``."""
        return cls(CycleOutcome.EXPIRED, expiry=reason)

    @classmethod
    def failed(cls, failure: Failure) -> Ended:
        """Failed with ``failure``."""
        return cls(CycleOutcome.FAILED, failure=failure)


class ReportOutcome(enum.Enum):
    """How reporting one spooled diff ended."""

    REPORTED = "reported"
    """The node has it; the entry is marked and never sent again."""
    DISCARDED = "discarded"
    """Its cycle is gone on the node (or it was damaged on disk); the entry is dropped."""
    PENDING = "pending"
    """Not settled (the node failed or could not be reached): the diff stays spooled for later."""
    ABORTED = "aborted"
    """Stopped on purpose (network lost, daemon stopping): the diff stays spooled for later."""

    @property
    def is_settled(self) -> bool:
        """True when the entry left the spool."""
        return self in (ReportOutcome.REPORTED, ReportOutcome.DISCARDED)
