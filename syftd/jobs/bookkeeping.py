"""The history's writes, off the cycle's path: queued in order, done one at a time in a worker thread.

Owns ``HistoryQueue``: a cycle's history entry guards nothing (the spool and its markers do), so the
next cycle does not wait for it (issue 15). Writes keep their order (a spooled cycle's ``update``
never runs before its ``record``), a failing write is logged and does not stop the ones after it,
and ``flush`` waits for all of them: the daemon calls it before it exits. Reads (``last``,
``entries``) go to ``History`` itself, whose in-memory copy a write updates first. Does not own the
history's file or what an entry says (``syftd.history``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from syftd import events
from syftd.history import History
from syftd.log import get_logger

__all__ = ["HistoryQueue"]

_log = get_logger("syftd.jobs")


class HistoryQueue:
    """Ordered, awaitable-later writes to a ``History``; every method is called on the event loop."""

    def __init__(self, history: History) -> None:
        self.history = history
        self._tail: asyncio.Future[None] | None = None

    def record(self, job: str, entry: dict[str, Any]) -> None:
        """Queue ``History.record``."""
        self._queue(job, self.history.record, job, entry)

    def update(self, job: str, cycle_id: str, **fields: Any) -> None:
        """Queue ``History.update``."""
        self._queue(job, lambda: self.history.update(job, cycle_id, **fields))

    async def flush(self) -> None:
        """Wait until every queued write is done (or has failed, logged)."""
        while self._tail is not None and not self._tail.done():
            await asyncio.shield(self._tail)

    def _queue(self, job: str, write: Callable[..., object], *args: Any) -> None:
        before = self._tail

        async def run() -> None:
            if before is not None:
                await asyncio.wait({before})
            try:
                await asyncio.to_thread(write, *args)
            except Exception as exc:  # noqa: BLE001 - history is bookkeeping: it must never stop a job
                _log.error(events.HISTORY_WRITE_FAILED, job=job, problem=repr(exc), kept_in_memory=False)

        self._tail = asyncio.ensure_future(run())
