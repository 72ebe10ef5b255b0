"""The trainer's output, captured by the daemon and re-emitted as structured events in its own log.

Owns turning a trainer's stderr into log events: its JSON lines are re-emitted with their own event
name and fields (plus ``job``, ``cycle`` and ``trainer_pid`` when missing), a Python traceback becomes
one ``trainer.traceback`` event (error) holding the whole text, and any other text (a warning printed by
a library, a C extension's message) becomes ``trainer.output`` (warning when it looks like one). The
daemon then writes every line itself, whole: trainers never write into the daemon's stream.

Also owns bounding that output, so a trainer printing in a tight loop cannot flood the journal:
``OutputLimiter`` gives each cycle a token bucket of ``OutputLimit.burst_lines`` lines refilled at
``lines_per_s``; text over it is dropped and counted, and one ``trainer.output_dropped`` event (warning)
gives the exact count once the output is back under the limit (the bucket full again), at the next
cycle, at the stream's end, and at most every ``summary_every_s`` during a flood that never stops.
Tracebacks do not draw on the bucket: the first ``max_tracebacks`` of a cycle always pass. The trainer's
own log lines (events named in ``syftd.events``) are never limited.

``OutputParser`` and ``OutputLimiter`` are the pure parts (lines in, events out; ``now`` passed in);
``relay()`` reads a stream into them. Does not own starting trainers (``trainer.process``) or which
job and cycle a trainer is serving (the caller's ``context()``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from syftd import events

__all__ = ["Emitted", "OutputLimit", "OutputLimiter", "OutputParser", "log_to", "relay"]

_MAX_TRACEBACK_LINES = 400
_IDLE_FLUSH_S = 0.3
_LEVELS = frozenset({"debug", "info", "warning", "error", "critical"})
_DROPPED = frozenset({"level", "timestamp"})
_TRACEBACK = "Traceback (most recent call last):"
_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")
_OWN_EVENTS = frozenset(v for k, v in vars(events).items() if k.isupper() and isinstance(v, str))


@dataclass(frozen=True, slots=True)
class Emitted:
    """One event to log: its name, level and fields."""

    event: str
    level: str
    fields: Mapping[str, Any] = field(default_factory=dict)


class OutputParser:
    """Lines of a trainer's stderr in, events out; call ``flush()`` at the end (or after a pause)."""

    def __init__(self) -> None:
        self._traceback: list[str] = []
        self._traceback_ended = False
        self._text: list[str] = []

    def feed(self, line: str) -> list[Emitted]:
        """The events complete after ``line`` (without its newline)."""
        out: list[Emitted] = []
        if self._traceback:
            if not self._traceback_ended:
                self._traceback.append(line)
                is_body = line.startswith((" ", "\t")) or line.startswith(_CHAINED) or line in ("", _TRACEBACK)
                self._traceback_ended = not is_body  # the exception line ends a block; a chained one may follow
                if len(self._traceback) >= _MAX_TRACEBACK_LINES:
                    out += self._end_traceback()
                return out
            if line == "" or line.startswith(_CHAINED):
                self._traceback.append(line)
                return out
            if line == _TRACEBACK and any(ln.startswith(_CHAINED) for ln in self._traceback[-3:]):
                self._traceback.append(line)
                self._traceback_ended = False
                return out
            out += self._end_traceback()
        parsed = _json_event(line)
        if parsed is not None:
            return [*out, *self._end_text(), parsed]
        if line.startswith(_TRACEBACK):
            out += self._end_text()
            self._traceback = [line]
            return out
        if self._text and line.startswith((" ", "\t")):
            self._text.append(line)  # a warning's source line, a wrapped message
            return out
        out += self._end_text()
        if line.strip():
            self._text = [line]
        return out

    @property
    def pending(self) -> bool:
        """True while lines are held that a pause should flush."""
        return bool(self._text or self._traceback)

    def flush(self) -> list[Emitted]:
        """Whatever is pending, as events."""
        return self._end_traceback() + self._end_text()

    def _end_traceback(self) -> list[Emitted]:
        lines, self._traceback, self._traceback_ended = self._traceback, [], False
        while lines and not lines[-1]:
            lines.pop()
        if not lines:
            return []
        heads = (" ", "\t", _TRACEBACK, *_CHAINED)
        last = next((ln for ln in reversed(lines) if ln and not ln.startswith(heads)), lines[-1])
        exc_type, _, message = last.partition(": ")
        fields = {"exception": "\n".join(lines), "error_type": exc_type.strip(), "error": message.strip()}
        return [Emitted(events.TRAINER_TRACEBACK, "error", fields)]

    def _end_text(self) -> list[Emitted]:
        lines, self._text = self._text, []
        if not lines:
            return []
        text = "\n".join(lines)
        level = "warning" if "Warning" in lines[0] or "warning" in lines[0] else "info"
        return [Emitted(events.TRAINER_OUTPUT, level, {"text": text})]


@dataclass(frozen=True, slots=True)
class OutputLimit:
    """How much relayed output a cycle may log (README "Logs"): a burst, then a steady rate."""

    burst_lines: int = 200
    lines_per_s: float = 20.0
    max_tracebacks: int = 100
    summary_every_s: float = 60.0


def _lines_of(item: Emitted) -> int:
    """How many output lines an event carries (its ``text``; one when it has none)."""
    text = item.fields.get("text")
    return text.count("\n") + 1 if isinstance(text, str) else 1


class OutputLimiter:
    """Decides, per cycle, which relayed events are logged; counts the rest and says so. Pure."""

    def __init__(self, limit: OutputLimit = OutputLimit()) -> None:
        self.limit = limit
        self._cycle: Any = None
        self._tokens = float(limit.burst_lines)
        self._at: float | None = None
        self._tracebacks = 0
        self._dropped_lines = 0
        self._dropped_events = 0
        self._dropped_tracebacks = 0
        self._dropping_since: float | None = None

    def start_cycle(self, cycle: Any, now: float) -> list[Emitted]:
        """Enter ``cycle`` (a no-op when it is the current one): the summary of the previous one, if due."""
        if cycle == self._cycle:
            return []
        out = self._summary()
        self._cycle, self._tokens, self._at, self._tracebacks = cycle, float(self.limit.burst_lines), now, 0
        return out

    def admit(self, item: Emitted, now: float) -> list[Emitted]:
        """What to log for ``item``: nothing (dropped and counted), or the item after any summary due."""
        self._refill(now)
        if item.event in _OWN_EVENTS and item.event not in (events.TRAINER_OUTPUT, events.TRAINER_TRACEBACK):
            return [item]
        if item.event == events.TRAINER_TRACEBACK:
            if self._tracebacks >= self.limit.max_tracebacks:
                self._drop(now, tracebacks=1)
                return []
            self._tracebacks += 1
            return [*self._summary_if_due(now), item]
        lines = _lines_of(item)
        if self._tokens < 1:
            self._drop(now, lines=lines)
            return []
        out = self._summary_if_due(now)
        self._tokens -= lines
        return [*out, item]

    def until_quiet(self, now: float) -> float | None:
        """Seconds until ``quiet()`` would give the summary (the bucket full again); None: nothing dropped."""
        if self._dropping_since is None:
            return None
        self._refill(now)
        return max(0.0, (self.limit.burst_lines - self._tokens) / self.limit.lines_per_s)

    def quiet(self, now: float) -> list[Emitted]:
        """No output for a while: the summary, if the output is back under the limit."""
        self._refill(now)
        return self._summary() if self._tokens >= self.limit.burst_lines else []

    def end(self) -> list[Emitted]:
        """The stream ended (or its reader stops): the summary of whatever was dropped."""
        return self._summary()

    def _refill(self, now: float) -> None:
        if self._at is not None:
            gained = (now - self._at) * self.limit.lines_per_s
            self._tokens = min(float(self.limit.burst_lines), self._tokens + gained)
        self._at = now

    def _drop(self, now: float, *, lines: int = 0, tracebacks: int = 0) -> None:
        if self._dropping_since is None:
            self._dropping_since = now
        self._dropped_lines += lines
        self._dropped_events += 1 if lines else 0
        self._dropped_tracebacks += tracebacks

    def _summary_if_due(self, now: float) -> list[Emitted]:
        if self._dropping_since is None:
            return []
        back_under = self._tokens >= self.limit.burst_lines
        return self._summary() if back_under or now - self._dropping_since >= self.limit.summary_every_s else []

    def _summary(self) -> list[Emitted]:
        if self._dropping_since is None:
            return []
        fields: dict[str, Any] = {
            "cycle": self._cycle,
            "dropped_lines": self._dropped_lines,
            "dropped_events": self._dropped_events,
            "burst_lines": self.limit.burst_lines,
            "lines_per_s": self.limit.lines_per_s,
        }
        if self._dropped_tracebacks:
            fields["dropped_tracebacks"] = self._dropped_tracebacks
        self._dropped_lines = self._dropped_events = self._dropped_tracebacks = 0
        self._dropping_since = None
        return [Emitted(events.TRAINER_OUTPUT_DROPPED, "warning", fields)]


def _json_event(line: str) -> Emitted | None:
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("event"), str):
        return None
    level = value.get("level")
    fields = {k: v for k, v in value.items() if k not in _DROPPED and k != "event"}
    return Emitted(value["event"], level if level in _LEVELS else "info", fields)


async def relay(
    stream: asyncio.StreamReader,
    emit: Callable[[Emitted], None],
    context: Callable[[], Mapping[str, Any]] = dict,
    limit: OutputLimit = OutputLimit(),
) -> None:
    """Read ``stream`` to its end, handing each event ``limit`` lets through to ``emit`` with ``context()``'s
    fields added where the event lacks them (``context()["cycle"]`` starts a new cycle's allowance). A pause
    of 0.3 s ends a pending warning or traceback; a line longer than the stream's limit is dropped and said
    so. Whatever the limit dropped is summed up before returning, cancelled or not."""
    parser = OutputParser()
    limiter = OutputLimiter(limit)
    loop = asyncio.get_running_loop()

    def send(items: list[Emitted], *, quiet: bool = False) -> None:
        fields = context()
        now = loop.time()
        out = limiter.start_cycle(fields.get("cycle"), now)
        for item in items:
            out += limiter.admit(item, now)
        if quiet:
            out += limiter.quiet(now)
        for item in out:
            extra = {k: v for k, v in fields.items() if k not in item.fields and v is not None}
            emit(Emitted(item.event, item.level, {**item.fields, **extra}) if extra else item)

    try:
        while True:
            waits = [_IDLE_FLUSH_S] if parser.pending else []
            if (until := limiter.until_quiet(loop.time())) is not None:
                waits.append(until + 0.01)
            try:
                raw = await asyncio.wait_for(stream.readline(), min(waits, default=None))
            except asyncio.TimeoutError:
                send(parser.flush(), quiet=True)
                continue
            except ValueError:  # longer than the stream's limit: asyncio has dropped it
                too_long = Emitted(events.TRAINER_OUTPUT, "warning", {"text": "<a line too long, dropped>"})
                send([*parser.flush(), too_long])
                continue
            if not raw:
                send(parser.flush())
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            send(parser.feed(line))
    finally:
        for item in limiter.end():
            extra = {k: v for k, v in context().items() if k not in item.fields and v is not None}
            emit(Emitted(item.event, item.level, {**item.fields, **extra}))


def log_to(logger: Any) -> Callable[[Emitted], None]:
    """An ``emit`` for ``relay()`` that logs each event through a structlog logger at its level."""

    def emit(item: Emitted) -> None:
        getattr(logger, item.level if item.level in _LEVELS else "info")(item.event, **item.fields)

    return emit
