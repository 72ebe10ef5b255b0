"""The values that cross the daemon/trainer boundary, and how they are framed on the socket.

Owns ``Outcome``, ``Stage``, ``Progress``, ``TrainingResult`` (what the daemon gets back), ``Request`` and
``Preload`` (what the trainer gets), ``failure_of`` (the kind of a FAILED run that is not the trainer's
own: storage, a non-finite or misfitting diff) and the frame codec: a 4-byte big-endian length, then a pickle.
The daemon reads frames with an unpickler that only admits this module's values, so a trainer cannot
make it build anything else. Exceptions never cross: the trainer turns them into a FAILED result. Torch-free.
Does not own the socket or the processes (``process``) nor what the trainer does (``worker``).
"""

from __future__ import annotations

import enum
import io
import pickle
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from syftd.config import DataConfig, JobConfig
from syftd.errors import DiffUnwritable, NonFiniteDiff, WireError
from syftd.outcomes import ExpiryReason, Failure

__all__ = [
    "DIFF_UNWRITABLE",
    "HEADER",
    "Outcome",
    "Preload",
    "Progress",
    "Request",
    "Stage",
    "TrainerStage",
    "TrainingResult",
    "decode_from_trainer",
    "encode",
    "failure_of",
    "receive_from_daemon",
]

HEADER = struct.Struct(">I")
"""The frame header: the pickle's length."""
DIFF_UNWRITABLE = "the diff could not be written"
"""How a FAILED result's error begins when the disk refused the diff file (a storage failure)."""


class Outcome(enum.Enum):
    """How a training run ended; exactly one per run."""

    COMPLETED = "completed"
    EXPIRED = "expired"
    FAILED = "failed"
    TERMINATED = "terminated"
    KILLED = "killed"


class TrainerStage(enum.Enum):
    """What the trainer is doing before and after its steps, for the status words."""

    LOADING_DATA = "loading_data"
    WRITING_DIFF = "writing_diff"


@dataclass(frozen=True, slots=True)
class Stage:
    """Sent when the trainer begins a stage: loading data (its imports are done), writing the diff."""

    stage: TrainerStage


@dataclass(frozen=True, slots=True)
class Progress:
    """One report from the trainer: step 0 once model, plan and data are loaded, then one per step."""

    step: int
    steps_total: int
    loss: float | None
    accuracy: float | None
    rss_bytes: int
    step_time_s: float


@dataclass(frozen=True, slots=True)
class TrainingResult:
    """What one run produced; ``diff`` only when COMPLETED, ``reason`` when expired, terminated or killed."""

    outcome: Outcome
    reason: ExpiryReason | None = None
    diff: bytes | None = None
    steps: int = 0
    losses: tuple[float, ...] = ()
    accuracies: tuple[float, ...] = ()
    error: str | None = None
    step_time_s: float = 0.0
    duration_s: float = 0.0
    cpu_s: float | None = None  # the trainer's CPU seconds for this run (the energy share); None if unknown
    diff_size: int = 0
    diff_written: bool = False
    """True when the diff is in the request's ``diff_path``, ``diff_size`` bytes (then ``diff`` is None);
    the daemon's commit hashes it."""
    failure: Failure | None = None
    """A FAILED run's kind when it is not the trainer's own: ``STORAGE`` (the disk refused the diff
    file), ``NON_FINITE`` (the diff holds NaN or infinity), ``WIRE`` (the diff does not fit the model)."""


@dataclass(frozen=True, slots=True)
class Request:
    """One cycle's work for the trainer: the job, the downloaded bytes and the flag's name.

    With ``model_path`` and ``plan_path`` the trainer reads model and plan from those files (the
    daemon streamed them there; ``model`` and ``plan`` are empty); with ``diff_path`` it writes the
    diff there (the daemon's commit makes it durable) and returns only its size and sha256, so no
    large bytes cross the socket.
    """

    job: JobConfig
    model: bytes = field(repr=False)
    plan: bytes = field(repr=False)
    client_config: dict[str, Any]
    flag_name: str
    cycle_id: str
    model_path: str | None = None
    plan_path: str | None = None
    diff_path: str | None = None


@dataclass(frozen=True, slots=True)
class Preload:
    """Sent by ``prepare()``: load this data source now, while the daemon downloads; no answer."""

    data: DataConfig


def failure_of(exc: Exception) -> Failure | None:
    """A FAILED run's ``failure`` for the exception that ended it; None when it is the trainer's own."""
    if isinstance(exc, NonFiniteDiff):
        return Failure.NON_FINITE
    if isinstance(exc, DiffUnwritable):
        return Failure.STORAGE
    if isinstance(exc, WireError):
        return Failure.WIRE
    return None


def receive_from_daemon(sock: socket.socket, *, timeout_s: float) -> Any | None:
    """In the trainer: the next frame's message from the daemon, or None after ``timeout_s`` idle or when
    the daemon closed the socket. The daemon is trusted: its frames are plain pickles."""
    sock.settimeout(timeout_s)
    try:
        header = _read_exactly(sock, HEADER.size)
    except TimeoutError:
        return None
    finally:
        sock.settimeout(None)
    if header is None:
        return None
    body = _read_exactly(sock, HEADER.unpack(header)[0])
    return None if body is None else pickle.loads(body)


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


def encode(message: Any) -> bytes:
    """One frame: header and pickle."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


_FROM_TRAINER = {
    (__name__, "Outcome"): Outcome,
    (__name__, "Progress"): Progress,
    (__name__, "Stage"): Stage,
    (__name__, "TrainerStage"): TrainerStage,
    (__name__, "TrainingResult"): TrainingResult,
    ("syftd.outcomes", "ExpiryReason"): ExpiryReason,
    ("syftd.outcomes", "Failure"): Failure,
}


class _TrainerUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _FROM_TRAINER[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"trainer sent a {module}.{name}, which is not a message") from None


def decode_from_trainer(body: bytes) -> Progress | Stage | TrainingResult:
    """The trainer's message in one frame body.

    Raises:
        pickle.UnpicklingError: the body is not one of this module's values.
    """
    message = _TrainerUnpickler(io.BytesIO(body)).load()
    if not isinstance(message, Progress | Stage | TrainingResult):
        raise pickle.UnpicklingError(f"trainer sent a {type(message).__name__}, which is not a message")
    return message
