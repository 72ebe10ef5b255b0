"""The speed test a node asks for with ``requires_speed_test`` (spec §4): ping, download, upload.

Owns the three bounded measurements against ``/<prefix>/speed-test`` and the unit conversion
(``grid.speed_unit``: the node defines none; ``mbps`` follows syft.js). Does not own the HTTP
session, TLS or the translation of transport errors into GridError: GridClient does that.
"""

from __future__ import annotations

import os
import secrets
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from syftd.config import GridConfig

__all__ = ["Speed", "measure_speed"]

_MIB = 1024 * 1024
_CHUNK = 64 * 1024
_PINGS = 3
_PER_SECOND = {"mbps": 8 / _MIB, "kbps": 1 / 1024, "mibps": 1 / _MIB}


@dataclass(frozen=True, slots=True)
class Speed:
    """What a cycle request reports: ping in ms, download and upload in ``unit`` (all finite, >= 0)."""

    ping_ms: float
    download: float
    upload: float
    unit: str = "mbps"

    def fields(self) -> dict[str, float]:
        """The cycle-request fields ``ping``, ``download``, ``upload``."""
        return {"ping": self.ping_ms, "download": self.download, "upload": self.upload}


async def measure_speed(session: aiohttp.ClientSession, url: str, worker_id: str, grid: GridConfig, ssl: Any) -> Speed:
    """Median of three pings, then a download and an upload each capped by speed_test_max_mb/_max_s."""
    params = {"worker_id": worker_id, "random": secrets.token_hex(16)}
    connect = aiohttp.ClientTimeout(total=grid.timeout_s)
    pings = []
    for _ in range(_PINGS):
        start = time.perf_counter()
        async with session.get(url, params={**params, "is_ping": "1"}, timeout=connect, ssl=ssl) as resp:
            resp.raise_for_status()
            await resp.read()
        pings.append((time.perf_counter() - start) * 1000)
    cap = int(grid.speed_test_max_mb * _MIB)
    transfer = aiohttp.ClientTimeout(total=grid.speed_test_max_s + grid.timeout_s, sock_read=grid.timeout_s)
    received = 0
    start = time.perf_counter()
    async with session.get(url, params=params, timeout=transfer, ssl=ssl) as resp:
        resp.raise_for_status()
        async for chunk in resp.content.iter_chunked(_CHUNK):
            received += len(chunk)
            if received >= cap or time.perf_counter() - start >= grid.speed_test_max_s:
                resp.close()
                break
    down_s = time.perf_counter() - start
    sent = [0]
    start = time.perf_counter()
    body = _bounded_body(cap, grid.speed_test_max_s, sent)
    async with session.post(url, params=params, data=body, timeout=transfer, ssl=ssl) as resp:
        resp.raise_for_status()
        await resp.read()
    up_s = time.perf_counter() - start
    factor = _PER_SECOND[grid.speed_unit]
    return Speed(
        ping_ms=statistics.median(pings),
        download=received * factor / max(down_s, 1e-6),
        upload=sent[0] * factor / max(up_s, 1e-6),
        unit=grid.speed_unit,
    )


async def _bounded_body(cap: int, max_s: float, sent: list[int]) -> AsyncIterator[bytes]:
    """Random bytes until ``cap`` bytes or ``max_s`` seconds, counting what was handed to the socket."""
    chunk = os.urandom(_CHUNK)
    start = time.perf_counter()
    while sent[0] < cap and time.perf_counter() - start < max_s:
        piece = chunk[: cap - sent[0]]
        sent[0] += len(piece)
        yield piece
