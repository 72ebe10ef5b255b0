"""PyGrid's rejection ``timeout``: a Python ``timedelta`` string (docs/protocol.md §2.2), or a number from other nodes.

Owns turning that value into :class:`RejectionTimeout`: signed seconds until the cycle's end, so that
"the end has passed" (a negative value, ``"-1 day, 23:59:12.266190"``) stays distinct from "now" (0).
Does not own what the scheduler does with it (jitter, backoff, the "averaging in progress" reading).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from syftd.errors import GridProtocolError

__all__ = ["RejectionTimeout", "parse_timeout"]

_TIMEDELTA = re.compile(r"^(?:(?P<days>-?\d+) days?, )?(?P<h>\d+):(?P<m>[0-5]\d):(?P<s>[0-5]\d)(?P<f>\.\d{1,6})?$")
_MAX_S = 10 * 365 * 86400.0


@dataclass(frozen=True, slots=True)
class RejectionTimeout:
    """The node's hint: ``seconds`` until the cycle's end, negative once that end has passed.

    Bounded to ±10 years. A real node keeps accepting workers into a cycle past its end time until a
    report completes it (docs/protocol.md §7), so a negative value means "the cycle is overdue", not "retry now".
    """

    seconds: float

    @property
    def cycle_end_passed(self) -> bool:
        """The cycle's end time lies in the past (the node sent a negative timedelta)."""
        return self.seconds < 0

    @property
    def wait_s(self) -> float:
        """The node's hint as a wait: ``seconds`` clamped to >= 0 (0 once the end has passed)."""
        return max(self.seconds, 0.0)


def parse_timeout(value: object) -> RejectionTimeout:
    """The rejection timeout a node sent, sign kept.

    Accepts ``str(timedelta)`` forms (``"7:59:58.123456"``, ``"2 days, 1:00:00"``, and the negative
    ``"-1 day, 23:59:59.5"`` = -0.5 s a node sends once the cycle's end has passed), plain numbers and
    numeric strings.

    Raises:
        GridProtocolError: anything else (booleans, NaN, infinities, other text).
    """
    if isinstance(value, bool):
        raise GridProtocolError(f"rejection timeout is a boolean ({value!r}), not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _from_text(value.strip())
    else:
        raise GridProtocolError(f"rejection timeout has type {type(value).__name__}, not a duration")
    if not math.isfinite(seconds):
        raise GridProtocolError(f"rejection timeout is not finite ({value!r})")
    return RejectionTimeout(min(max(seconds, -_MAX_S), _MAX_S))


def _from_text(text: str) -> float:
    match = _TIMEDELTA.match(text)
    if match is not None:
        days = int(match["days"] or 0)
        fraction = float(match["f"]) if match["f"] else 0.0
        return days * 86400.0 + int(match["h"]) * 3600.0 + int(match["m"]) * 60.0 + int(match["s"]) + fraction
    try:
        return float(text)
    except ValueError:
        raise GridProtocolError(f"rejection timeout {text[:60]!r} is neither a timedelta nor a number") from None
