"""Writes that guard nothing, kept off the cycle's path: the history, removing a reported entry's files.

Owns ``Bookkeeping``: a cycle's history entry and the removal of a reported spool entry's files guard
nothing (the spool's ``.json`` and markers do), so no cycle waits for them (issue 15). They are
queued in order and run, in one trip to a worker thread per batch, only while the manager says it is
``quiet`` (no cycle is between its start and its trainer's first frame, or past its training), or
once they have waited ``MAX_WAIT_S`` (a long download must not hold them for minutes). On two
cores, the same writes running beside the next cycle's first requests held the GIL and delayed them
by 1.5–2.5 ms a cycle. Writes keep their order (a spooled cycle's ``update`` never runs before its
``record``); a failing write is logged and does not stop the ones after it; ``flush`` runs and waits
for all of them whatever the manager says: the daemon calls it before it exits (and a crash before
that loses only bookkeeping: ``Spool.pending`` removes a marked entry's files, the history misses
entries). Reads (``last``, ``entries``) go to ``History`` itself, updated when its write runs. Does
not own the history's file or what an entry says (``syftd.history``), nor the spool's files.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from syftd import events
from syftd.history import History
from syftd.log import get_logger
from syftd.spool import Spool
from syftd.spoolentry import SpoolEntry

__all__ = ["MAX_WAIT_S", "Bookkeeping", "tidy_entry"]

MAX_WAIT_S = 5.0
"""The longest a queued write waits for a quiet moment."""

_log = get_logger("syftd.jobs")

_Write = tuple[str, str, Callable[[], object]]  # job, what (for the log), the blocking write


class Bookkeeping:
    """Ordered writes, run in batches off the loop while ``quiet``; every method is called on the loop."""

    def __init__(self, history: History) -> None:
        self.history = history
        self._queued: list[_Write] = []
        self._quiet = True
        self._running: asyncio.Future[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._is_overdue = False

    def record(self, job: str, entry: dict[str, Any]) -> None:
        """Queue ``History.record``."""
        self._queue(job, "history", lambda: self.history.record(job, entry))

    def update(self, job: str, cycle_id: str, **fields: Any) -> None:
        """Queue ``History.update``."""
        self._queue(job, "history", lambda: self.history.update(job, cycle_id, **fields))

    def tidy(self, spool: Spool, entry: SpoolEntry) -> None:
        """Queue ``Spool.tidy`` of a reported or discarded entry."""
        self._queue(entry.job, "spool", lambda: tidy_entry(spool, entry))

    def set_quiet(self, quiet: bool) -> None:
        """Whether queued writes may run now (no cycle on its latency-sensitive path)."""
        self._quiet = quiet
        self._start()

    async def flush(self) -> None:
        """Run every queued write, quiet or not, and wait until all are done (or have failed, logged)."""
        while self._queued or self._running is not None:
            if self._running is None:
                self._start(force=True)
            if self._running is not None:
                await asyncio.shield(self._running)

    def _queue(self, job: str, what: str, write: Callable[[], object]) -> None:
        self._queued.append((job, what, write))
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().call_later(MAX_WAIT_S, self._overdue)
        self._start()

    def _overdue(self) -> None:
        self._deadline, self._is_overdue = None, True
        self._start()

    def _start(self, *, force: bool = False) -> None:
        if self._running is not None or not self._queued or not (self._quiet or force or self._is_overdue):
            return
        batch, self._queued, self._is_overdue = self._queued, [], False
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._running = asyncio.ensure_future(self._run(batch))

    async def _run(self, batch: list[_Write]) -> None:
        try:
            await asyncio.to_thread(_write_all, batch)
        finally:
            self._running = None
            self._start()


def _write_all(batch: list[_Write]) -> None:
    for job, what, write in batch:
        try:
            write()
        except Exception as exc:  # noqa: BLE001 - bookkeeping must never stop a job
            if what == "history":
                _log.error(events.HISTORY_WRITE_FAILED, job=job, problem=repr(exc), kept_in_memory=False)
            else:
                _log.error(events.SPOOL_TIDY_FAILED, job=job, error=repr(exc))


def tidy_entry(spool: Spool, entry: SpoolEntry) -> None:
    """``Spool.tidy``, a refusal of the disk logged (blocking: from a worker thread)."""
    try:
        spool.tidy(entry)
    except OSError as exc:  # a read-only disk: the next ``pending`` finishes it
        _log.warning(events.SPOOL_TIDY_FAILED, job=entry.job, cycle=entry.cycle_id, error=str(exc))
