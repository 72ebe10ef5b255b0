"""One supervised SuperNode session, as values: its phase, what its output says, how it ended.

Owns the reading of ``flower-supernode``'s log lines (node id, messages received, replies sent,
flwr's exit message naming what failed), the outcome rules (done once it pushed a reply, expired
when syftd stopped it before any, failed with its exit status when it ended on its own), the grace
left before sleep, and the restart delay.
Pure: no I/O, no clock (callers pass times in).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

__all__ = [
    "LEAVE_S",
    "REPLY_PICKUP_S",
    "OutputReader",
    "Phase",
    "SessionOutcome",
    "SessionResult",
    "classify",
    "restart_delay",
    "sleep_grace",
]

LEAVE_S = 1.25
"""Time allowed from SIGTERM to the SuperNode having deactivated at the SuperLink: 0.1–0.75 s
measured here on an idle machine, with room for a loaded one."""

REPLY_PICKUP_S = 4.0
"""How long a leaving SuperNode stays online after its last reply, grace permitting. A flwr 1.42
ServerApp pulls replies every 3 s, and the SuperLink answers NODE_UNAVAILABLE instead of a reply
whose node went offline before that pull: the update would be lost (seen in tests/flower)."""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NODE_ID = re.compile(r"SuperNode ID: (\d+)")
_LEVEL = re.compile(r"^(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL)\s*:\s*")


class Phase(enum.Enum):
    """What the supervisor is doing; the values are what ``status`` and ``why`` show."""

    WAITING = "waiting for conditions"
    STARTING = "starting"
    JOINED = "joined"
    LEAVING = "leaving"
    RESTARTING = "restarting"


class SessionOutcome(enum.Enum):
    """How one session ended."""

    DONE = "done"
    EXPIRED = "expired"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SessionResult:
    """One session: from spawning the SuperNode to its process group being gone."""

    outcome: SessionOutcome
    reason: str | None
    """Why syftd stopped it (expired/done after a stop), or what failed."""
    exit_status: int | None
    """The SuperNode's return code (negative: killed by that signal)."""
    node_id: int | None
    replies: int
    seconds: float
    leave_s: float | None = None
    """From the stop request to the SuperNode's exit (it has deactivated); None when it ended on its own."""
    gone_s: float | None = None
    """From the stop request to its whole process group being gone."""
    killed: bool = False
    """SIGKILL was needed."""
    output_tail: tuple[str, ...] = ()
    exit_message: tuple[str, ...] = ()
    """flwr's own words when it exited with an error (``OutputReader.exit_message``)."""


@dataclass(slots=True)
class OutputReader:
    """Follows the SuperNode's (and its children's) output lines; flwr 1.42's wording."""

    node_id: int | None = None
    received: int = 0
    replies: int = 0
    tail: list[str] = field(default_factory=list)
    exit_message: list[str] = field(default_factory=list)
    """flwr's exit message ("Exit Code: N", what failed, its short help) and the error logged just
    before it, e.g. "SSL/TLS handshake error detected." then "[SSL: CERTIFICATE_VERIFY_FAILED] …":
    what a failed session reports, since the process's own status is 1 for every error."""
    _lines: int = 0
    _last_error: tuple[int, str] | None = None  # (line number, text) of the latest ERROR line
    _in_exit_message: bool = False

    def feed(self, raw: str) -> str | None:
        """Take one line; returns ``"joined"``, ``"received"`` or ``"replied"`` when it says so."""
        line = _ANSI.sub("", raw).rstrip()
        self.tail = [*self.tail[-19:], line]
        self._follow_exit_message(line)
        if self.node_id is None and (match := _NODE_ID.search(line)):
            self.node_id = int(match.group(1))
            return "joined"
        if "Received successfully" in line:
            self.received += 1
            return "received"
        if "Sent successfully" in line:
            self.replies += 1
            return "replied"
        return None

    def _follow_exit_message(self, line: str) -> None:
        self._lines += 1
        text = _LEVEL.sub("", line).strip()
        if self._in_exit_message:
            if not text or text.startswith("For more information"):
                self._in_exit_message = False
            elif len(self.exit_message) < 8:
                self.exit_message.append(text[:300])
        elif text.startswith("Exit Code: "):
            before = self._last_error
            self.exit_message = [before[1]] if before is not None and self._lines - before[0] <= 3 else []
            self.exit_message.append(text)
            self._in_exit_message = True
        elif (level := _LEVEL.match(line)) is not None and level["level"] in ("ERROR", "CRITICAL"):
            self._last_error = (self._lines, text[:300])

    @property
    def busy(self) -> bool:
        """A message was received and no reply has been sent for it yet: a ClientApp is working."""
        return self.received > self.replies


def classify(*, stop_reason: str | None, replies: int, exit_status: int | None) -> tuple[SessionOutcome, str | None]:
    """The outcome of a session. A SuperNode that pushed a reply contributed: done. One that syftd
    stopped before any reply: expired with syftd's reason. One that ended on its own: failed."""
    if stop_reason is None:
        return SessionOutcome.FAILED, f"flower-supernode exited on its own with status {exit_status}"
    if replies > 0:
        return SessionOutcome.DONE, stop_reason
    return SessionOutcome.EXPIRED, stop_reason


def sleep_grace(expiry_grace_s: float, inhibit_delay_s: float | None) -> float:
    """The grace before SIGTERM when the machine is about to sleep: so much that SIGTERM and the
    SuperNode's leave (``LEAVE_S``) still fit within logind's ``InhibitDelayMaxUSec`` − 1 s."""
    if inhibit_delay_s is None:
        return expiry_grace_s
    return max(0.0, min(expiry_grace_s, inhibit_delay_s - 1.0 - LEAVE_S))


def restart_delay(failures: int, *, initial_s: float, max_s: float) -> float:
    """Seconds before the next start after ``failures`` (≥ 1) exits in a row: doubling, capped."""
    return float(min(max_s, initial_s * 2 ** min(max(failures - 1, 0), 40)))
