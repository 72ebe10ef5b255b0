"""Operator signals delivered to the event loop without losing one kind to a flood of another.

asyncio's ``loop.add_signal_handler`` learns *which* signal arrived from one byte per signal written
to its wakeup socket. A flood fills that socket and every later byte is dropped; measured on Linux
with 3,000 alternating SIGUSR1/SIGUSR2 sent to an idle loop, asyncio ran the SIGUSR2 handler 278
times and the SIGUSR1 handler not once in 32 of 40 runs: an operator's trigger was lost.

CPython also keeps one "tripped" flag per signal, which a flood cannot drop, and runs Python-level
handlers (``signal.signal``) from those flags in the main thread. Here those handlers only hand the
action to the loop with ``call_soon_threadsafe``. A wakeup socket is still set, because a signal
caught by another thread does not interrupt the main thread's wait; its bytes only wake the loop and
are read and thrown away.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any


class OperatorSignals:
    """Python-level handlers that run ``actions[signum]`` on ``loop``, at least once per burst."""

    def __init__(self, loop: asyncio.AbstractEventLoop, actions: Mapping[signal.Signals, Callable[[], None]]) -> None:
        self._loop = loop
        self._actions = dict(actions)
        self._previous: dict[signal.Signals, Any] = {}
        self._wake_read: socket.socket | None = None
        self._wake_write: socket.socket | None = None
        self._previous_wakeup_fd = -1

    def install(self) -> None:
        """Take over the signals in ``actions``; the main thread only (CPython's rule for handlers)."""
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self._loop.add_reader(self._wake_read.fileno(), self._drain)
        # the flood that fills the socket is expected: no "Exception ignored ... wakeup fd" lines
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._wake_write.fileno(), warn_on_full_buffer=False)
        for signum in self._actions:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def release(self, *signums: signal.Signals) -> None:
        """Give ``signums`` back to the handlers they had before ``install``."""
        for signum in signums:
            if signum in self._previous:
                signal.signal(signum, self._previous.pop(signum))
                self._actions.pop(signum, None)

    def close(self) -> None:
        """Give every signal back and stop listening on the wakeup socket."""
        self.release(*list(self._previous))
        if self._wake_read is None or self._wake_write is None:
            return
        signal.set_wakeup_fd(self._previous_wakeup_fd, warn_on_full_buffer=False)
        self._loop.remove_reader(self._wake_read.fileno())
        self._wake_read.close()
        self._wake_write.close()
        self._wake_read = self._wake_write = None

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        action = self._actions.get(signal.Signals(signum))
        if action is None:
            return
        # the handler runs between two bytecodes of whatever the main thread was doing, maybe inside
        # the loop itself: the action runs from the loop's queue, never here
        with contextlib.suppress(RuntimeError):  # the loop is closed: the process is on its way out
            self._loop.call_soon_threadsafe(action)

    def _drain(self) -> None:
        assert self._wake_read is not None
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while self._wake_read.recv(4096):
                pass
