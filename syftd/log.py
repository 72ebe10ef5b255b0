"""Logging: structlog to stdout, JSON lines off a terminal, console rendering on one.

Owns the one ``configure()`` call, the redaction of secrets, and how a line reaches the stream:
each line is written whole, in one ``write(2)``, so that lines of processes sharing a stream (or a
pipe the daemon reads) never run together; under journald (``JOURNAL_STREAM`` naming this very
stream, sd-daemon(3)) each line starts with its syslog priority ``<N>``, which journald strips and
keeps, so ``journalctl -p err`` works. Does not own what is logged where, nor the event names
(``syftd.events``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

__all__ = ["PRIORITY", "REDACTED", "LineLogger", "configure", "get_logger", "journal_priority_wanted"]

REDACTED = "<redacted>"
_SECRET_KEYS = frozenset({"token", "auth_token", "password", "secret", "authorization"})

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
"""syslog priority of each level name (sd-daemon(3): ``<3>`` error … ``<7>`` debug)."""


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace the values of secret-looking keys, whatever a caller passed."""
    for key in event.keys() & _SECRET_KEYS:
        event[key] = REDACTED
    return event


def journal_priority_wanted(stream: Any, environ: MutableMapping[str, str] | None = None) -> bool:
    """True when ``stream`` is the journal stream systemd connected (``JOURNAL_STREAM=dev:inode``)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        info = os.fstat(stream.fileno())
        return (int(device), int(inode)) == (info.st_dev, info.st_ino)
    except (ValueError, OSError, AttributeError):
        return False


class LineLogger:
    """A structlog logger that writes each rendered line whole, optionally with its ``<N>`` priority.

    A stream with a file descriptor is written with ``os.write`` (repeated only if the kernel takes
    part of a long line); one without (``io.StringIO`` in tests) gets one ``write`` call.
    """

    def __init__(self, stream: Any, *, priority: bool = False) -> None:
        self._stream = stream
        self._priority = priority
        try:
            stream.flush()
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None

    def write_line(self, text: str, level: str = "info") -> None:
        """Write ``text`` and its newline in one call."""
        prefix = f"<{PRIORITY.get(level, 6)}>" if self._priority else ""
        line = f"{prefix}{text}\n"
        if self._fd is None:
            self._stream.write(line)
            return
        data = line.encode("utf-8", "replace")
        while data:
            try:
                written = os.write(self._fd, data)
            except InterruptedError:
                continue
            except BlockingIOError:
                os.set_blocking(self._fd, True)  # a non-blocking pipe: wait rather than lose the line
                continue
            data = data[written:]

    def msg(self, message: str) -> None:
        self.write_line(message)

    def debug(self, message: str) -> None:
        self.write_line(message, "debug")

    def info(self, message: str) -> None:
        self.write_line(message, "info")

    def warning(self, message: str) -> None:
        self.write_line(message, "warning")

    def error(self, message: str) -> None:
        self.write_line(message, "error")

    def critical(self, message: str) -> None:
        self.write_line(message, "critical")

    log = msg
    warn = warning
    exception = error
    fatal = critical
    failure = error


class _LineHandler(logging.Handler):
    """stdlib logging (libraries) through the same whole-line writer."""

    def __init__(self, writer: LineLogger) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.write_line(self.format(record), record.levelname.lower())
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


def configure(
    fmt: Literal["auto", "json", "console"] = "auto",
    level: str = "info",
    *,
    stream: Any = None,
) -> None:
    """Set up structlog (and stdlib logging of libraries) once per process; safe to call again."""
    stream = stream if stream is not None else sys.stdout
    is_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    writer = LineLogger(stream, priority=journal_priority_wanted(stream))
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if is_json else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer] if is_json else [*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=lambda *_args: writer,
        cache_logger_on_first_use=False,
    )
    handler = _LineHandler(writer)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer], foreign_pre_chain=shared
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    """A structlog logger carrying ``component=name``."""
    return structlog.get_logger(component=name)
