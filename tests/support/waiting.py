"""The one way tests wait: for an event, with a timeout, or (only where the thing waited for sends no
event) by a bounded poll. Every wait fails with an ``AssertionError`` that names what it waited for.

``Changes`` is event-driven: whatever can change the awaited state calls ``notify`` (a cycle's
``on_change``, a structlog line, a datagram from a child process); ``until`` re-checks its predicate on
each notification and on nothing else, so a change that is never notified fails the wait at its
timeout instead of being found by a lucky poll.

``poll_until`` / ``poll_until_blocking`` look repeatedly, bounded by a timeout, for state that announces
nothing: the process table, files written by a child process, an HTTP endpoint, the inhibitor list on
the bus. A caller says in a comment why it polls. This module holds the only sleeps of tests/ that are
not the behaviour under test.

Does not own what is waited for (the harnesses and fixtures do).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["Changes", "notify_on_log", "poll_until", "poll_until_blocking"]

T = TypeVar("T")


class Changes:
    """A notification that something may have changed, and waiters that re-check on each one.

    ``notify`` takes and ignores any arguments so it can be passed as a callback directly
    (``on_change=changes.notify``). Call it on the loop's thread (``notify_threadsafe`` otherwise).
    """

    def __init__(self) -> None:
        self.count = 0
        self._waiters: list[asyncio.Future[None]] = []

    def notify(self, *_args: Any, **_kwargs: Any) -> None:
        """Wake every waiter to re-check its predicate."""
        self.count += 1
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def notify_threadsafe(self, loop: asyncio.AbstractEventLoop) -> None:
        """``notify`` from another thread."""
        loop.call_soon_threadsafe(self.notify)

    async def until(self, predicate: Callable[[], T], *, what: str, timeout: float) -> T:
        """The first truthy ``predicate()``, checked now and after each notification within ``timeout`` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"not within {timeout} s ({self.count} changes seen): {what}")
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except asyncio.TimeoutError:
                # no last look: a change nobody notified is a missing event, not a slow one
                raise AssertionError(f"not within {timeout} s ({self.count} changes seen): {what}") from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)


def notify_on_log(changes: Changes, loop: asyncio.AbstractEventLoop) -> Callable[[Any, str, Any], Any]:
    """A structlog processor that notifies ``changes`` of each line (from any thread; deferred to the
    loop so the line is captured before a waiter looks): ``capture_logs(processors=[...])``."""

    def processor(_logger: Any, _method: str, event_dict: Any) -> Any:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(changes.notify)
        return event_dict

    return processor


async def poll_until(
    predicate: Callable[[], T | Awaitable[T]],
    *,
    what: str,
    timeout: float,
    every: float = 0.05,
    off_loop: bool = False,
) -> T:
    """The first truthy ``predicate()`` within ``timeout`` s, looked at every ``every`` s.

    Only for state that sends no event. ``predicate`` may be a coroutine function (a D-Bus or HTTP
    round trip); ``off_loop`` runs a plain one in a thread (file system, psutil).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        looked = await asyncio.to_thread(predicate) if off_loop else predicate()
        value = await looked if inspect.isawaitable(looked) else looked
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(every)


def poll_until_blocking(predicate: Callable[[], T], *, what: str, timeout: float, every: float = 0.05) -> T:
    """``poll_until`` for a thread or process without an event loop (blocks the caller)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(every)
