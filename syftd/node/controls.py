"""The local node's test machinery: a hold point for reports, injected HTTP failures, change notification.

Owns the state behind the ``/_test/`` controls that tests use to hold the node still at a known point
(reports wait at the hold point until released; the next N requests fail with a given status) and the
event that wakes anyone waiting for a change of the node (``wait_until``). Does not own what the node
does once a report passes the hold point (``node``) nor the HTTP endpoints (``routes``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from syftd.node.operations import NodeStopping

__all__ = ["Controls"]


class Controls:
    """Hold point, injected failures and change notification of one node."""

    def __init__(self) -> None:
        self.holding = False
        self.held = 0
        """How many reports are waiting at the hold point now."""
        self._release = asyncio.Event()
        self._failures: list[int] = []
        self._changed = asyncio.Event()
        self._stopping = False

    @property
    def failing(self) -> int:
        """How many injected failures are pending."""
        return len(self._failures)

    def hold(self) -> None:
        """From now on, reports wait at the hold point until ``release``."""
        if not self.holding:
            self.holding = True
            self._release = asyncio.Event()

    def release(self) -> None:
        """Stop holding; the held reports proceed."""
        self.holding = False
        self._release.set()

    def stop(self) -> None:
        """Release the held reports, which then raise ``NodeStopping``; idempotent."""
        self._stopping = True
        self.release()

    async def hold_point(self) -> None:
        """Wait here while holding.

        Raises:
            NodeStopping: the node stopped while this report was held.
        """
        if not self.holding:
            return
        self.held += 1
        self.notify()
        try:
            await self._release.wait()
        finally:
            self.held -= 1
            self.notify()
        if self._stopping:
            raise NodeStopping("the node stopped while this report was held; it was not stored")

    def fail_next(self, count: int, status: int) -> None:
        """Answer the next ``count`` HTTP requests with ``status``."""
        self._failures.extend([status] * count)
        self.notify()

    def take_failure(self) -> int | None:
        """The status to fail the current request with, if a failure is pending."""
        return self._failures.pop(0) if self._failures else None

    def notify(self) -> None:
        """Wake everyone waiting in ``wait_until`` to re-check their predicate."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds (re-checked on every change); False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                return predicate()
        return True
