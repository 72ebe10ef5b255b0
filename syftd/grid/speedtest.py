"""The speed test a node asks for with ``requires_speed_test`` (docs/protocol.md §4): ping, download, upload.

Owns the three bounded measurements against ``/<prefix>/speed-test``, the unit conversion
(``grid.speed_unit``: the node defines none; ``mbps`` follows syft.js), the bytes they cost, and
:class:`SpeedCache`, which lets one measurement serve the cycle requests of a reuse window
(``grid.speed_test_reuse_s``) instead of running up to 2 × ``speed_test_max_mb`` before each.
Every answer is capped and bounded in time (syftd.grid.transfer): a ping answer at 64 KiB and
``timeout_s``, the download at ``speed_test_max_mb`` and ``speed_test_max_s``; no redirect is
followed. Does not own the HTTP session, TLS or the translation of transport errors into
GridError: GridClient does that.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from syftd.config import GridConfig
from syftd.grid.transfer import BoundedBody, read_capped, within

__all__ = ["Speed", "SpeedCache", "measure_speed"]

_MIB = 1024 * 1024
_CHUNK = 64 * 1024
_PINGS = 3
_ANSWER_CAP = 64 * 1024
_PER_SECOND = {"mbps": 8 / _MIB, "kbps": 1 / 1024, "mibps": 1 / _MIB}


@dataclass(frozen=True, slots=True)
class Speed:
    """What a cycle request reports: ping in ms, download and upload in ``unit`` (all finite, >= 0).

    ``bytes_down`` / ``bytes_up``: what measuring it cost (answers read, bytes sent).
    """

    ping_ms: float
    download: float
    upload: float
    unit: str = "mbps"
    bytes_down: int = 0
    bytes_up: int = 0

    def fields(self) -> dict[str, float]:
        """The cycle-request fields ``ping``, ``download``, ``upload``."""
        return {"ping": self.ping_ms, "download": self.download, "upload": self.upload}

    @property
    def bytes_spent(self) -> int:
        """Bytes the measurement moved, both ways."""
        return self.bytes_down + self.bytes_up


class SpeedCache:
    """One node's last measurement, reused for ``max_age_s`` (pure: the caller passes ``now``).

    ``spent_bytes`` counts the bytes of every measurement stored since the last :meth:`take_spent`,
    so a cycle's log line can say what its speed tests cost (0 when it reused one).
    """

    def __init__(self, max_age_s: float = 3600.0) -> None:
        self.max_age_s = max_age_s
        self._speed: Speed | None = None
        self._measured_at = 0.0
        self.spent_bytes = 0

    def fresh(self, now: float) -> Speed | None:
        """The stored measurement if it is younger than ``max_age_s`` (monotonic ``now``), else None."""
        if self._speed is None or not 0 <= now - self._measured_at < self.max_age_s:
            return None
        return self._speed

    def store(self, speed: Speed, now: float) -> None:
        """Remember a new measurement taken at ``now`` and count its bytes."""
        self._speed, self._measured_at = speed, now
        self.spent_bytes += speed.bytes_spent

    def take_spent(self) -> int:
        """The bytes counted since the last call, and reset the count."""
        spent, self.spent_bytes = self.spent_bytes, 0
        return spent

    def clear(self) -> None:
        """Forget the measurement (a node refused the speed it reported, say)."""
        self._speed = None


async def measure_speed(session: aiohttp.ClientSession, url: str, worker_id: str, grid: GridConfig, ssl: Any) -> Speed:
    """Median of three pings, then a download and an upload each capped by speed_test_max_mb/_max_s.

    Raises:
        GridUnavailable: a step took longer than its bound, or its answer stalled.
        GridProtocolError: a ping or upload answer above 64 KiB.
        aiohttp.ClientError: the node failed a request (status >= 400) or refused a redirect.
    """
    params = {"worker_id": worker_id, "random": secrets.token_hex(16)}
    timeout_s = grid.timeout_s
    first_byte = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
    pings, bytes_down = [], 0
    for _ in range(_PINGS):
        start = time.perf_counter()
        request = session.get(
            url, params={**params, "is_ping": "1"}, timeout=first_byte, ssl=ssl, allow_redirects=False
        )
        async with await within(request, timeout_s, "speed-test ping") as resp:
            resp.raise_for_status()
            bytes_down += len(await read_capped(resp, _ANSWER_CAP, "speed-test ping", timeout_s))
        pings.append((time.perf_counter() - start) * 1000)
    cap = int(grid.speed_test_max_mb * _MIB)
    start = time.perf_counter()
    request = session.get(url, params=params, timeout=first_byte, ssl=ssl, allow_redirects=False)
    async with await within(request, timeout_s, "speed-test download") as resp:
        resp.raise_for_status()
        received = await _download(BoundedBody(resp, None, "speed-test download", timeout_s), cap, start, grid)
        resp.close()  # the node sends 64 MiB; stop here, the connection is not reused
    down_s = time.perf_counter() - start
    sent = [0]
    start = time.perf_counter()
    body = _bounded_body(cap, grid.speed_test_max_s, sent)
    request = session.post(url, params=params, data=body, timeout=first_byte, ssl=ssl, allow_redirects=False)
    async with await within(request, grid.speed_test_max_s + timeout_s, "speed-test upload") as resp:
        resp.raise_for_status()
        bytes_down += len(await read_capped(resp, _ANSWER_CAP, "speed-test upload", timeout_s))
    up_s = time.perf_counter() - start
    factor = _PER_SECOND[grid.speed_unit]
    return Speed(
        ping_ms=statistics.median(pings),
        download=received * factor / max(down_s, 1e-6),
        upload=sent[0] * factor / max(up_s, 1e-6),
        unit=grid.speed_unit,
        bytes_down=bytes_down + received,
        bytes_up=sent[0],
    )


async def _download(body: BoundedBody, cap: int, start: float, grid: GridConfig) -> int:
    """Read until ``cap`` bytes, the end, or ``speed_test_max_s``; a stall fails (BoundedBody)."""
    while body.total < cap:
        remaining = grid.speed_test_max_s - (time.perf_counter() - start)
        if remaining <= 0:
            break
        try:
            chunk = await asyncio.wait_for(body.next(), remaining)
        except (asyncio.TimeoutError, TimeoutError):
            break
        if not chunk:
            break
    return body.total


async def _bounded_body(cap: int, max_s: float, sent: list[int]) -> AsyncIterator[bytes]:
    """Random bytes until ``cap`` bytes or ``max_s`` seconds, counting what was handed to the socket."""
    chunk = os.urandom(_CHUNK)
    start = time.perf_counter()
    while sent[0] < cap and time.perf_counter() - start < max_s:
        piece = chunk[: cap - sent[0]]
        sent[0] += len(piece)
        yield piece
