"""PyGrid's rejection ``timeout``: a Python ``timedelta`` string (spec §2.2), or a number from other nodes.

Owns turning that value into non-negative seconds. Does not own what the scheduler does with it
(jitter, backoff).
"""

from __future__ import annotations

import math
import re

from syftd.errors import GridProtocolError

__all__ = ["parse_timeout"]

_TIMEDELTA = re.compile(r"^(?:(?P<days>-?\d+) days?, )?(?P<h>\d+):(?P<m>[0-5]\d):(?P<s>[0-5]\d)(?P<f>\.\d{1,6})?$")
_MAX_S = 10 * 365 * 86400.0


def parse_timeout(value: object) -> float:
    """Seconds until the node wants to hear from the worker again, clamped to [0, 10 years].

    Accepts ``str(timedelta)`` forms (``"7:59:58.123456"``, ``"2 days, 1:00:00"``, and the negative
    ``"-1 day, 23:59:59.5"`` a node sends once the cycle's end has passed), plain numbers and
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
    return min(max(seconds, 0.0), _MAX_S)


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
