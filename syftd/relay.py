"""The trainer's output, captured by the daemon and re-emitted as structured events in its own log.

Owns turning a trainer's stderr into log events: its JSON lines are re-emitted with their own event
name and fields (plus ``job``, ``cycle`` and ``trainer_pid`` when missing), a Python traceback becomes
one ``trainer.traceback`` event (error) holding the whole text, and any other text (a warning printed by
a library, a C extension's message) becomes ``trainer.output`` (warning when it looks like one). The
daemon then writes every line itself, whole: trainers never write into the daemon's stream.

``OutputParser`` is the pure part (lines in, events out); ``relay()`` reads a stream into it. Does not
own starting trainers (``trainer.process``) or which job and cycle a trainer is serving (the caller's
``context()``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from syftd import events

__all__ = ["Emitted", "OutputParser", "log_to", "relay"]

_MAX_TRACEBACK_LINES = 400
_IDLE_FLUSH_S = 0.3
_LEVELS = frozenset({"debug", "info", "warning", "error", "critical"})
_DROPPED = frozenset({"level", "timestamp"})
_TRACEBACK = "Traceback (most recent call last):"
_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")


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
) -> None:
    """Read ``stream`` to its end, handing each event to ``emit`` with ``context()``'s fields added
    where the event lacks them. A pause of 0.3 s ends a pending warning or traceback; a line longer than
    the stream's limit is dropped and said so."""
    parser = OutputParser()

    def send(items: list[Emitted]) -> None:
        for item in items:
            extra = {k: v for k, v in context().items() if k not in item.fields and v is not None}
            emit(Emitted(item.event, item.level, {**item.fields, **extra}) if extra else item)

    while True:
        try:
            raw = await asyncio.wait_for(stream.readline(), _IDLE_FLUSH_S if parser.pending else None)
        except asyncio.TimeoutError:
            send(parser.flush())
            continue
        except ValueError:  # longer than the stream's limit: asyncio has dropped it
            send([*parser.flush(), Emitted(events.TRAINER_OUTPUT, "warning", {"text": "<a line too long, dropped>"})])
            continue
        if not raw:
            send(parser.flush())
            return
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        send(parser.feed(line))


def log_to(logger: Any) -> Callable[[Emitted], None]:
    """An ``emit`` for ``relay()`` that logs each event through a structlog logger at its level."""

    def emit(item: Emitted) -> None:
        getattr(logger, item.level if item.level in _LEVELS else "info")(item.event, **item.fields)

    return emit
