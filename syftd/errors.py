"""The exceptions syftd raises, as one tree; callers branch on types and reason enums, never on text.

::

    SyftdError
    ├── ConfigError            the configuration file is invalid (exit status 78)
    ├── AlreadyRunningError    another syftd holds the state directory (exit status 75)
    ├── StateFileError         a file in the state directory is damaged or unreadable (exit status 65)
    ├── ControlError           the control socket: a bad answer (exit status 69)
    │   ├── NoDaemonError      no daemon listens or answers (69)
    │   ├── UnknownJobError    the daemon has no job of that name (67)
    │   └── PeerRefusedError   the daemon refused this user (77)
    ├── ConditionSourceError   a condition monitor cannot run (the daemon falls back)
    ├── WireError              bytes that are not a valid PyGrid State / Plan / diff
    │   └── NonFiniteDiff      a diff holding NaN or infinity: never reported (the cycle fails)
    ├── TokenError             the auth token file is missing, unreadable or too open
    ├── TrainerError           the plan, model or data cannot be trained on (a FAILED result)
    │   └── DiffUnwritable     the disk refused the trainer's diff file (the cycle fails ``storage``)
    └── GridError              talking to a PyGrid node
        ├── GridUnavailable    transient: unreachable, lost, 5xx, timeout, any unknown node error: retry later
        │   └── GridTLSError   the node's certificate failed verification (grid.ca_file?)
        ├── GridRejected       cycle-request rejected with the node's timeout (negative: the end passed)
        ├── GridFinished       rejected without timeout: process finished (or num_cycles = 0)
        ├── GridAuthFailed     authentication refused (token, model, version)
        ├── GridCycleGone      the cycle is gone: "Cycle not found!", "Invalid request key!", "… ID not found!"
        │   └── GridWorkerUnknown  "Worker ID not found!": the node forgot the worker (also a GridAuthFailed)
        └── GridProtocolError  an answer of an unexpected shape or size, or a redirect

Also owns the one table of exit statuses (``ExitStatus``, ``EXIT_TABLE``), printed by ``--help``
and copied into the README; ``exit_status_of`` maps an error to its status.

Does not own: the error *handling* policy (backoff, retries): that is the scheduler's.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "EXIT_ALREADY_RUNNING",
    "EXIT_TABLE",
    "AlreadyRunningError",
    "ConditionSourceError",
    "ConfigError",
    "ControlError",
    "DiffUnwritable",
    "ExitStatus",
    "GridAuthFailed",
    "GridCycleGone",
    "GridError",
    "GridFinished",
    "GridProtocolError",
    "GridRejected",
    "GridTLSError",
    "GridUnavailable",
    "GridWorkerUnknown",
    "NoDaemonError",
    "NonFiniteDiff",
    "PeerRefusedError",
    "StateFileError",
    "SyftdError",
    "TokenError",
    "TrainerError",
    "UnknownJobError",
    "WireError",
    "exit_status_of",
]

EXIT_ALREADY_RUNNING = 75
"""Exit status of a daemon refused because another one holds its state directory (``os.EX_TEMPFAIL``)."""


class ExitStatus(enum.IntEnum):
    """Every exit status of the ``syftd`` command; scripts branch on these, never on text."""

    OK = 0
    INTERNAL = 1  # a bug: the traceback is in the log or on stderr
    USAGE = os.EX_USAGE  # 64: bad arguments on the command line
    DAMAGED_FILE = os.EX_DATAERR  # 65: a state-directory file read without a daemon is damaged (file and line named)
    UNKNOWN_JOB = os.EX_NOUSER  # 67: the daemon has no job of that name
    NO_DAEMON = os.EX_UNAVAILABLE  # 69: no daemon listens on the control socket, or it did not answer
    STATE_DIR = os.EX_CANTCREAT  # 73: the state directory cannot be written (read-only, not a directory, no permission)
    ALREADY_RUNNING = os.EX_TEMPFAIL  # 75: another syftd holds the state directory; retry once it stopped
    PERMISSION = os.EX_NOPERM  # 77: the daemon refused this user (only its own user and root)
    CONFIG = os.EX_CONFIG  # 78: the configuration is invalid; systemd's RestartPreventExitStatus= stops on it
    INTERRUPTED = 130  # a second Ctrl-C forced the exit during shutdown


_MEANING = {
    ExitStatus.OK: "success",
    ExitStatus.INTERNAL: "unexpected internal error (a bug; please report it with the log)",
    ExitStatus.USAGE: "bad command-line usage",
    ExitStatus.DAMAGED_FILE: "a state file is damaged or unreadable (file and line named)",
    ExitStatus.UNKNOWN_JOB: "no job of that name in the running daemon",
    ExitStatus.NO_DAEMON: "no daemon is running (or it did not answer) on the control socket",
    ExitStatus.STATE_DIR: "the state directory cannot be written (read-only?)",
    ExitStatus.ALREADY_RUNNING: "another syftd is already running on this state directory",
    ExitStatus.PERMISSION: "the daemon refused this user (run as its user or root)",
    ExitStatus.CONFIG: "invalid configuration (every problem is printed, one per line)",
    ExitStatus.INTERRUPTED: "forced exit by a second Ctrl-C while stopping",
}

EXIT_TABLE = "exit statuses:\n" + "\n".join(f"  {int(s):>3}  {_MEANING[s]}" for s in ExitStatus)
"""The table as ``--help`` prints it (its epilog) and the README shows it."""


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


class AlreadyRunningError(SyftdError):
    """Another syftd holds the state directory's lock (or answers on the control socket); ``pid`` if known."""

    def __init__(self, where: Path, pid: int | None = None, *, what: str = "state directory") -> None:
        self.where = where
        self.pid = pid
        holder = f" (pid {pid})" if pid is not None else ""
        key = "daemon.state_dir" if what == "state directory" else "daemon.runtime_dir"
        super().__init__(
            f"another syftd is already running on {what} {where}{holder}; stop it first, or give this one another {key}"
        )


class StateFileError(SyftdError):
    """A state-directory file read without a daemon (``syftd history``) is damaged, partial or unreadable;
    ``line`` is where (1-based) when known. The file is left as it is."""

    def __init__(self, path: Path, line: int | None, problem: str) -> None:
        self.path = path
        self.line = line
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}; the file was left untouched")


class ControlError(SyftdError):
    """The control socket could not be used (no daemon running, refused, or a bad answer)."""


class NoDaemonError(ControlError):
    """No daemon listens on the control socket, or it did not answer in time."""


class UnknownJobError(ControlError):
    """The daemon answered that it has no job of the name asked for."""


class PeerRefusedError(ControlError):
    """The daemon (or the socket's permissions) refused this user."""


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


class DiffUnwritable(TrainerError):
    """The disk refused the trainer's diff file: a storage failure, not the trainer's."""


class GridError(SyftdError):
    """Talking to a PyGrid node failed."""


class GridUnavailable(GridError):
    """The node cannot be reached or failed on its side (refused, reset, 5xx, timeout): retry later."""


class GridTLSError(GridUnavailable):
    """The node's TLS certificate failed verification; a private CA belongs in grid.ca_file."""


class GridRejected(GridError):
    """The node rejected the cycle request; ``timeout_s`` is its hint: seconds until the cycle's end,
    negative once that end has passed (the cycle is overdue, not "retry now")."""

    def __init__(self, timeout_s: float, message: str = "cycle request rejected") -> None:
        self.timeout_s = timeout_s
        hint = f"retry in {timeout_s:.0f} s" if timeout_s >= 0 else f"the cycle's end passed {-timeout_s:.1f} s ago"
        super().__init__(f"{message} ({hint})")

    @property
    def cycle_end_passed(self) -> bool:
        """The node's timeout was negative: the cycle's end time lies in the past."""
        return self.timeout_s < 0


class GridFinished(GridError):
    """Rejected without a timeout: the FL process finished, or it has num_cycles = 0 (docs/protocol.md §2.2)."""


class GridAuthFailed(GridError):
    """Authentication was refused, or the node no longer knows this worker id."""


class GridCycleGone(GridError):
    """The node says the cycle this worker joined is gone: a diff for it can be discarded."""


class GridWorkerUnknown(GridCycleGone, GridAuthFailed):
    """The node does not know this worker id ("Worker ID not found!": restarted, or forgot it).

    Not a refused token: whatever the worker held for that node is gone (a GridCycleGone), and it
    must authenticate afresh for a new id (a GridAuthFailed, for callers that re-authenticate on it).
    """


class GridProtocolError(GridError):
    """The node answered with something of an unexpected shape, type or size."""


_STATUS_OF: tuple[tuple[type[BaseException], ExitStatus], ...] = (
    (ConfigError, ExitStatus.CONFIG),
    (AlreadyRunningError, ExitStatus.ALREADY_RUNNING),
    (StateFileError, ExitStatus.DAMAGED_FILE),
    (UnknownJobError, ExitStatus.UNKNOWN_JOB),
    (PeerRefusedError, ExitStatus.PERMISSION),
    (ControlError, ExitStatus.NO_DAEMON),
)


def exit_status_of(exc: BaseException) -> ExitStatus:
    """The exit status for an error (``INTERNAL`` for anything unexpected)."""
    return next((status for kind, status in _STATUS_OF if isinstance(exc, kind)), ExitStatus.INTERNAL)
