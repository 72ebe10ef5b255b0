"""One grid client per job, kept from one cycle to the next, so back-to-back cycles skip the connects.

Owns ``KeptClients``: the daemon's ``ClientFactory``. Each call lends the job's client, started on
first use; leaving the ``async with`` does not close it. A client is replaced (the old one closed)
when the job's ``[grid]`` table or its token changes, and closed by ``close()`` when the daemon
stops; a client being replaced while lent is closed when that lending ends. A client is also closed
``IDLE_CLOSE_S`` after its last lending ended (started again by the next, once that close is done),
so an idle daemon holds no socket the node might ping or close, and wakes no more. A POST that finds
a kept connection closed by the node is sent once more on a fresh one
(``connection.NodeConnection.http_post``). One job lends its client to
one cycle or report at a time (the manager runs one task per job). Each job's speed test outlives
its client (``grid.speed_test_reuse_s``). Does not own what is asked (``client``) or when (``jobs``).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from syftd.config import GridConfig, JobConfig
from syftd.grid.client import GridClient
from syftd.grid.speedtest import SpeedCache

__all__ = ["IDLE_CLOSE_S", "KeptClients"]

IDLE_CLOSE_S = 2.0
"""A kept client is closed this long after its last cycle or report ended."""


@dataclass
class _Kept:
    key: tuple[GridConfig, str | None]
    client: GridClient
    started: bool = False
    stopping: asyncio.Future[None] | None = field(default=None, repr=False)
    retired: bool = False
    lent: int = 0
    idle_close: asyncio.TimerHandle | None = field(default=None, repr=False)


class KeptClients:
    """The daemon's clients, one per job; every method is called on the event loop."""

    def __init__(self) -> None:
        self._kept: dict[str, _Kept] = {}
        self._speed_caches: dict[tuple[str, str], SpeedCache] = {}
        self._closing: set[asyncio.Future[None]] = set()

    def __call__(self, job: JobConfig, token: str | None) -> _Lent:
        """The job's client, lent for one ``async with`` (the jobs' ``ClientFactory``)."""
        key = (job.grid, token)
        kept = self._kept.get(job.name)
        if kept is None or kept.key != key:
            if kept is not None:
                self._close_later(kept)
            kept = self._kept[job.name] = _Kept(key, GridClient(job.grid, token=token, speed_cache=self._cache(job)))
        return _Lent(self, kept)

    async def close(self) -> None:
        """Close every client (the daemon stops). Idempotent."""
        for kept in self._kept.values():
            self._close_later(kept)
        self._kept.clear()
        if self._closing:
            await asyncio.wait(list(self._closing))

    def _cache(self, job: JobConfig) -> SpeedCache:
        key = (job.name, job.grid.url)
        cache = self._speed_caches.get(key)
        if cache is None or cache.max_age_s != job.grid.speed_test_reuse_s:
            cache = self._speed_caches[key] = SpeedCache(job.grid.speed_test_reuse_s)
        return cache

    def _close_later(self, kept: _Kept) -> None:
        """Close ``kept`` now, or when its lending ends (it is being replaced or the daemon stops)."""
        kept.retired = True
        if kept.lent == 0:
            self._stop(kept)

    def _stop(self, kept: _Kept) -> None:
        if kept.idle_close is not None:
            kept.idle_close.cancel()
            kept.idle_close = None
        if not kept.started:
            return
        kept.started = False
        task = kept.stopping = asyncio.ensure_future(kept.client.stop())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


class _Lent:
    """``async with`` the job's kept client: started on first use, not closed on leaving."""

    def __init__(self, owner: KeptClients, kept: _Kept) -> None:
        self._owner = owner
        self._kept = kept

    async def __aenter__(self) -> GridClient:
        kept = self._kept
        if kept.idle_close is not None:
            kept.idle_close.cancel()
            kept.idle_close = None
        kept.lent += 1  # from here an idle close cannot be scheduled under us
        try:
            if kept.stopping is not None:
                # closed after its last lending and not yet done: a client starts only once it has stopped
                with contextlib.suppress(Exception):  # a failed close leaves nothing to reuse either
                    await asyncio.shield(kept.stopping)
                kept.stopping = None
            if not kept.started:
                await kept.client.start()
                kept.started = True
        except BaseException:
            kept.lent -= 1
            raise
        return kept.client

    async def __aexit__(self, *_exc: object) -> None:
        kept = self._kept
        kept.lent -= 1
        if kept.lent > 0:
            return
        if kept.retired:
            self._owner._stop(kept)
        elif kept.started:
            kept.idle_close = asyncio.get_running_loop().call_later(IDLE_CLOSE_S, self._owner._stop, kept)
