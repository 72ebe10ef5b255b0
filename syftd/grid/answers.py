"""What a PyGrid node's JSON answers mean (docs/protocol.md §0.2, §1.2, §2): pure, no I/O.

Owns the envelope rule (``{"type", "data"}`` → ``data``; a top-level ``error`` is a failure),
the shape checks of the authenticate and cycle-request answers, the mapping of a cycle-request
answer to :class:`Accepted` or a typed GridError, the first line of a node's error text (PyGrid
appends tracebacks), and the classification of every node error (:func:`classify`). Does not own
transports, logging or retries (syftd.grid.client and the daemon).

How a node's answer is classified (the first line of its ``error``, then the HTTP status; the same
rule for every operation):

| the node says | kind → error | the caller |
|---|---|---|
| ``Cycle not found!`` | cycle gone → GridCycleGone | discards the diff |
| ``Invalid request key!`` | cycle gone → GridCycleGone | discards (the worker holds a newer cycle) |
| ``Model ID not found!``, ``Plan ID not found!`` | cycle gone → GridCycleGone | discards (the process is gone) |
| ``Worker ID not found!`` | worker unknown → GridWorkerUnknown | discards, authenticates afresh |
| ``rejected`` with a ``timeout`` | rejection → GridRejected | waits; < 0: the cycle's end passed |
| ``rejected`` without a ``timeout`` | finished → GridFinished | the finished rule |
| ``Authentication is…``, ``The 'auth_token'…``, ``Not found any process…`` | refused → GridAuthFailed | stops |
| any other error, 5xx, 408, 429, a stall, a timeout, a lost connection | transient → GridUnavailable | retries |
| a wrong shape, an answer above its cap, a redirect, 404, another 4xx | protocol → GridProtocolError | backs off |

"Any other error" includes ``(sqlite3.OperationalError) database is locked`` and the empty
``ProcessLookupError`` a real node answers a report for an unknown worker-cycle. GridWorkerUnknown
is not a refused token: the node restarted or forgot the worker; it subclasses GridCycleGone (what
the worker held there is gone) and, for callers that re-authenticate on it, GridAuthFailed.

A diff is discarded only on "cycle gone" (GridCycleGone, GridWorkerUnknown included): the node
said so. The empty ``ProcessLookupError`` cannot tell why; the get-plan probe can.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from syftd.errors import (
    GridAuthFailed,
    GridCycleGone,
    GridError,
    GridFinished,
    GridProtocolError,
    GridRejected,
    GridUnavailable,
    GridWorkerUnknown,
)
from syftd.grid.timeout import parse_timeout

__all__ = [
    "AUTH_REFUSED",
    "CYCLE_GONE",
    "WORKER_UNKNOWN",
    "Accepted",
    "Auth",
    "Kind",
    "auth_of",
    "classify",
    "cycle_outcome",
    "error_of",
    "expect_status",
    "first_line",
    "loads",
    "node_error",
    "unwrap",
]

WORKER_UNKNOWN = "Worker ID not found"
CYCLE_GONE = ("Cycle not found", "Invalid request key", "Model ID not found", "Plan ID not found")
AUTH_REFUSED = ("Authentication is required", "The 'auth_token' you sent", "Not found any process")


class Kind(enum.Enum):
    """What a node's error means for the caller (the table in the module docstring)."""

    CYCLE_GONE = "cycle-gone"
    WORKER_UNKNOWN = "worker-unknown"
    TRANSIENT = "transient"
    PROTOCOL = "protocol"


def classify(text: str, status: int | None = None) -> Kind:
    """The kind of a node error from its first line and, for HTTP, its status (None: a JSON error)."""
    line = text.strip()
    if line.startswith(WORKER_UNKNOWN):
        return Kind.WORKER_UNKNOWN
    if line.startswith(CYCLE_GONE):
        return Kind.CYCLE_GONE
    if status is None or status >= 500 or status in (200, 400, 401, 408, 429):
        return Kind.TRANSIENT
    return Kind.PROTOCOL


_ERRORS: dict[Kind, type[GridError]] = {
    Kind.CYCLE_GONE: GridCycleGone,
    Kind.WORKER_UNKNOWN: GridWorkerUnknown,
    Kind.TRANSIENT: GridUnavailable,
    Kind.PROTOCOL: GridProtocolError,
}


def node_error(op: str, text: str, status: int | None = None) -> NoReturn:
    """Raise the GridError the table gives for a node's error ``text`` (first line, scrubbed).

    Raises:
        GridCycleGone, GridWorkerUnknown, GridUnavailable or GridProtocolError, naming ``op``.
    """
    shown = f"HTTP {status} {text}" if status not in (None, 200) else text
    raise _ERRORS[classify(text, status)](f"{op} refused: {shown}")


@dataclass(frozen=True, slots=True)
class Auth:
    """A successful authenticate: the node's new worker id, and whether it wants a speed test."""

    worker_id: str
    requires_speed_test: bool


@dataclass(frozen=True, slots=True)
class Accepted:
    """An accepted cycle request: the key and ids to download with, and the training settings."""

    request_key: str
    model_id: int
    plans: dict[str, int]
    client_config: dict[str, Any]
    version: str
    model: str


def loads(raw: str | bytes, op: str) -> Any:
    """JSON text to a value.

    Raises:
        GridProtocolError: the text is not JSON.
    """
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise GridProtocolError(f"{op}: answer is not JSON") from None


def unwrap(body: Any, op: str) -> dict[str, Any]:
    """The payload of an answer: ``data`` of an envelope, else the object; ``{"error": …}`` kept as is.

    Raises:
        GridProtocolError: the answer (or its ``data``) is not a JSON object.
    """
    if not isinstance(body, dict):
        raise GridProtocolError(f"{op}: answer is a JSON {type(body).__name__}, not an object")
    if "error" in body:
        return {"error": body["error"]}
    if "type" in body and "data" in body:
        body = body["data"]
        if not isinstance(body, dict):
            raise GridProtocolError(f"{op}: envelope data is a JSON {type(body).__name__}, not an object")
    return body


def error_of(raw: bytes) -> object:
    """The ``error`` of an HTTP error body (enveloped or not), or its first bytes when not JSON."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return raw[:200].decode("utf-8", "replace")
    if isinstance(body, Mapping):
        inner = body.get("data")
        if "error" not in body and isinstance(inner, Mapping):
            body = inner
        return body.get("error", "")
    return ""


def first_line(value: object) -> str:
    """The first line of a node's error message, at most 300 characters."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = text.strip()
    return text.splitlines()[0][:300] if text else "(empty error message)"


def expect_status(answer: Mapping[str, Any], wanted: str, op: str, *, required: bool = True) -> None:
    """Raises GridProtocolError unless ``status`` is ``wanted`` (or absent where not ``required``)."""
    status = answer.get("status", None if required else wanted)
    if status != wanted:
        raise GridProtocolError(f"{op}: unexpected status {str(status)[:40]!r}")


def auth_of(answer: Mapping[str, Any], text: Callable[[object], str]) -> Auth:
    """An authenticate answer as Auth; ``requires_speed_test`` absent (nodes before PyGrid #606) = false.

    Raises:
        GridAuthFailed: the node refused the token, or knows no such model/version (:data:`AUTH_REFUSED`).
        GridUnavailable: any other error (``database is locked``): transient. GridProtocolError: a wrong shape.
    """
    if "error" in answer:
        message = text(answer["error"])
        if message.strip().startswith(AUTH_REFUSED):
            raise GridAuthFailed(f"authenticate refused: {message}")
        node_error("authenticate", message)
    expect_status(answer, "success", "authenticate", required=False)
    worker_id = _field(answer, "worker_id", str, "authenticate")
    speed = answer.get("requires_speed_test", False)
    if not worker_id or not isinstance(speed, bool):
        raise GridProtocolError("authenticate: worker_id empty or requires_speed_test not a boolean")
    return Auth(worker_id=worker_id, requires_speed_test=speed)


def cycle_outcome(answer: Mapping[str, Any], plan: str, text: Callable[[object], str]) -> Accepted:
    """A cycle-request answer as Accepted, or the typed error it means (docs/protocol.md §2.2).

    Raises:
        GridRejected: rejected with a timeout (``timeout_s`` negative once the cycle's end passed).
        GridFinished: rejected without one. GridWorkerUnknown: "Worker ID not found!".
        GridUnavailable: any other node error (back off); see :func:`classify`.
        GridProtocolError: a wrong shape, or no plan called ``plan``.
    """
    if "error" in answer:
        node_error("cycle-request", text(answer["error"]))
    if answer.get("status") == "rejected":
        timeout = answer.get("timeout")
        if timeout is None:
            raise GridFinished("cycle request rejected without a timeout: the process finished")
        raise GridRejected(parse_timeout(timeout).seconds)
    expect_status(answer, "accepted", "cycle-request")
    plans = _field(answer, "plans", dict, "cycle-request")
    if not all(isinstance(k, str) and _is_int(v) for k, v in plans.items()):
        raise GridProtocolError("cycle-request: plans must map names to integer ids")
    if plan not in plans:
        raise GridProtocolError(f"cycle-request: the node offers plans {sorted(plans)}, not {plan!r} (grid.plan)")
    model_id = answer.get("model_id")
    if not _is_int(model_id):
        raise GridProtocolError(f"cycle-request: model_id must be an integer, got {type(model_id).__name__}")
    request_key = _field(answer, "request_key", str, "cycle-request")
    if not request_key:
        raise GridProtocolError("cycle-request: request_key is empty")
    return Accepted(
        request_key=request_key,
        model_id=int(model_id),  # type: ignore[arg-type]
        plans={k: int(v) for k, v in plans.items()},
        client_config=_field(answer, "client_config", dict, "cycle-request"),
        version=_field(answer, "version", str, "cycle-request"),
        model=_field(answer, "model", str, "cycle-request"),
    )


def _field(answer: Mapping[str, Any], key: str, kind: type, op: str) -> Any:
    value = answer.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise GridProtocolError(f"{op}: {key} must be a JSON {kind.__name__}, got {type(value).__name__}")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
