"""The exceptions syftd raises, as one tree; callers branch on types and reason enums, never on text.

::

    SyftdError
    ├── ConfigError            the configuration file is invalid (exit status 78)
    ├── ControlError           the control socket: no daemon, refused, bad answer
    ├── ConditionSourceError   a condition monitor cannot run (the daemon falls back)
    ├── WireError              bytes that are not a valid PyGrid State / Plan / diff
    │   └── NonFiniteDiff      a diff holding NaN or infinity: never reported (the cycle fails)
    ├── TokenError             the auth token file is missing, unreadable or too open
    ├── TrainerError           the plan, model or data cannot be trained on (a FAILED result)
    └── GridError              talking to a PyGrid node
        ├── GridUnavailable    unreachable, connection lost, 5xx, timeout: retry later
        │   └── GridTLSError   the node's certificate failed verification (grid.ca_file?)
        ├── GridRejected       cycle-request rejected with the node's timeout
        ├── GridFinished       rejected without timeout: process finished (or num_cycles = 0)
        ├── GridAuthFailed     authentication refused, or the worker id is unknown
        ├── GridCycleGone      the cycle closed under us (400 "Cycle not found!")
        └── GridProtocolError  an answer of an unexpected shape or size

Does not own: the error *handling* policy (backoff, retries): that is the scheduler's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "EXIT_ALREADY_RUNNING",
    "ConditionSourceError",
    "ConfigError",
    "ControlError",
    "GridAuthFailed",
    "GridCycleGone",
    "GridError",
    "GridFinished",
    "GridProtocolError",
    "GridRejected",
    "GridTLSError",
    "GridUnavailable",
    "NonFiniteDiff",
    "SyftdError",
    "TokenError",
    "TrainerError",
    "WireError",
]

EXIT_ALREADY_RUNNING = 75
"""Exit status of a daemon refused because another one holds its state directory (``os.EX_TEMPFAIL``)."""


class SyftdError(Exception):
    """The root of every error syftd raises on purpose."""


class ConfigError(SyftdError):
    """The configuration is invalid; ``problems`` holds one line per problem, each naming its key."""

    def __init__(self, path: Path | None, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = tuple(problems)
        where = f" in {path}" if path is not None else ""
        count = len(self.problems)
        lines = [f"invalid configuration{where} ({count} problem{'s' if count != 1 else ''})"]
        lines += [f"  {p}" for p in self.problems]
        super().__init__("\n".join(lines))

    @property
    def first_key(self) -> str:
        """The dotted key of the first problem (for one-line status texts)."""
        return self.problems[0].split(":", 1)[0] if self.problems else "<config>"


class ControlError(SyftdError):
    """The control socket could not be used (no daemon running, refused, or a bad answer)."""


class ConditionSourceError(SyftdError):
    """A condition monitor cannot run here; the daemon falls back to the next source."""


class WireError(SyftdError):
    """Bytes that are not a valid PyGrid State, Plan or diff; the message names what is wrong."""


class NonFiniteDiff(WireError):
    """A diff holding NaN or infinite values (a finite loss does not prove a finite diff): never reported."""


class TokenError(SyftdError):
    """The auth token file is missing, unreadable, empty, or readable by group or others."""


class TrainerError(SyftdError):
    """The plan, model or data cannot be trained on; the message names the problem (a FAILED result)."""


class GridError(SyftdError):
    """Talking to a PyGrid node failed."""


class GridUnavailable(GridError):
    """The node cannot be reached or failed on its side (refused, reset, 5xx, timeout): retry later."""


class GridTLSError(GridUnavailable):
    """The node's TLS certificate failed verification; a private CA belongs in grid.ca_file."""


class GridRejected(GridError):
    """The node rejected the cycle request; ``timeout_s`` is its hint of when to retry (>= 0)."""

    def __init__(self, timeout_s: float, message: str = "cycle request rejected") -> None:
        self.timeout_s = timeout_s
        super().__init__(f"{message} (retry in {timeout_s:.0f} s)")


class GridFinished(GridError):
    """Rejected without a timeout: the FL process finished, or it has num_cycles = 0 (spec §2.2)."""


class GridAuthFailed(GridError):
    """Authentication was refused, or the node no longer knows this worker id."""


class GridCycleGone(GridError):
    """The cycle this worker joined is no longer open on the node (400 "Cycle not found!")."""


class GridProtocolError(GridError):
    """The node answered with something of an unexpected shape, type or size."""
