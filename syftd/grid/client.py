"""The worker side of PyGrid's model-centric protocol (docs/protocol.md §1–§4, §10).

Owns the exchanges with one node: authenticate, speed test, cycle-request, get-model, get-plan and
report, over WebSocket (default; text frames, a ``request_id`` on every request) or HTTP, tolerant
of the node revisions of docs/protocol.md §0.2 (the ``{"type", "data"}`` envelope is unwrapped wherever it
appears, a top-level ``error`` is a failure). Every failure leaves as a typed GridError, classified
by the table in syftd.grid.answers; every call is bounded by ``grid.timeout_s``, every answer by a
size cap, and no redirect is followed (syftd.grid.transfer).

Connections are reused (syftd.grid.connection): one HTTP session with keep-alive, and one WebSocket
kept until :meth:`GridClient.close_connections` or ``stop()``. One client may serve many cycles;
``close_connections()`` holds nothing during training. get-model and get-plan can run at once, and
stream into files; a report can stream from a file, its base64 spliced into the JSON text
(syftd.grid.frames). A plan of up to ``PLAN_CACHE_MAX`` bytes is fetched once per model id and plan
id (a node serves a hosted process's plan unchanged) and written from memory for the cycles after,
until the client authenticates again (a node that forgot this worker may have been reset, its ids
reused) or is replaced.

Does not own the bytes inside downloads and diffs (syftd.grid.wire), the order of the calls or any
retry policy (the daemon's), or where the token comes from (``read_token``). The token is sent
only in the authenticate request, only to the configured origin, and never logged; ``worker_id``
and ``request_key`` act as credentials afterwards and are not logged either.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from syftd import events
from syftd.config import GridConfig
from syftd.errors import (
    GridFinished,
    GridRejected,
    GridUnavailable,
)
from syftd.grid import frames
from syftd.grid.answers import (
    Accepted,
    Auth,
    auth_of,
    cycle_outcome,
    error_of,
    expect_status,
    node_error,
    unwrap,
)
from syftd.grid.connection import JSON_CAP, NodeConnection
from syftd.grid.speedtest import Speed, SpeedCache, measure_speed
from syftd.grid.timeout import RejectionTimeout, parse_timeout
from syftd.grid.token import read_token
from syftd.grid.transfer import (
    read_capped,
    stream_to_file,
    within,
)
from syftd.log import get_logger
from syftd.service import ServiceContext
from syftd.statedir import rewrite

__all__ = [
    "PLAN_CACHE_MAX",
    "Accepted",
    "Auth",
    "GridClient",
    "RejectionTimeout",
    "Speed",
    "SpeedCache",
    "parse_timeout",
    "read_token",
]

_MIB = 1024 * 1024
PLAN_CACHE_MAX = _MIB
"""A plan up to this size is kept in memory for the next cycles of its model and plan ids."""

T = TypeVar("T")
log = get_logger("grid")


class GridClient(ServiceContext):
    """One node, one FL process (``grid.model``/``grid.version``); an async context manager.

    ``speed_cache``: shared across clients of one job so a measurement outlives a client; by default
    the client keeps its own, reused for ``grid.speed_test_reuse_s``.
    """

    def __init__(self, grid: GridConfig, *, token: str | None = None, speed_cache: SpeedCache | None = None) -> None:
        self._grid = grid
        self._token = token
        self.speed_cache = speed_cache if speed_cache is not None else SpeedCache(grid.speed_test_reuse_s)
        self.connection = NodeConnection(grid, token)
        self._plan: tuple[tuple[int, int], bytes] | None = None  # ((model id, plan id), the plan's bytes)

    async def start(self) -> None:
        """Build the TLS context and the HTTP session.

        Raises:
            ConfigError: ``grid.ca_file`` cannot be loaded.
        """
        self.connection.open()

    async def stop(self) -> None:
        """Close the WebSocket and the session. Idempotent."""
        await self.connection.close()

    async def close_connections(self) -> None:
        """Close the kept WebSocket (HTTP connections idle out by themselves); the next call reconnects."""
        await self.connection.close_ws()

    async def authenticate(self) -> Auth:
        """Join the FL process; each call yields a new worker id.

        Raises:
            GridAuthFailed: the node refused (no/invalid token, unknown model or version).
            GridUnavailable, GridProtocolError: see the module docstring.
        """
        payload = {"auth_token": self._token, "model_name": self._grid.model, "model_version": self._grid.version}
        self._plan = None  # a new worker id: the node may have been reset and reuse its ids
        async with self.connection.errors("authenticate"):
            auth = auth_of(await self._json_call("authenticate", payload), self.connection.node_text)
        log.info(events.GRID_AUTHENTICATED, model=self._grid.model, requires_speed_test=auth.requires_speed_test)
        return auth

    async def speed_test(self, worker_id: str) -> Speed:
        """Measure ping (ms), download and upload (``grid.speed_unit``), each bounded in bytes and time.

        Always measures, and stores the result in :attr:`speed_cache`; :meth:`speed` reuses one.

        Raises:
            GridUnavailable: the node failed the speed-test route, stalled, or the transfer broke off.
            GridProtocolError: an answer above its cap, or a redirect.
        """
        async with self.connection.errors("speed-test"):
            conn = self.connection
            url = f"{conn.http_base}/speed-test"
            speed = await measure_speed(conn.session(), url, worker_id, self._grid, conn.tls)
        self.speed_cache.store(speed, time.monotonic())
        log.info(
            events.GRID_SPEED_MEASURED,
            ping_ms=round(speed.ping_ms, 2),
            download=round(speed.download, 3),
            upload=round(speed.upload, 3),
            unit=speed.unit,
            bytes=speed.bytes_spent,
        )
        return speed

    async def speed(self, worker_id: str) -> Speed:
        """The cached measurement while it is younger than ``grid.speed_test_reuse_s``, else a new one.

        ``speed_cache.take_spent()`` then tells the bytes spent on speed tests since it was last asked.

        Raises:
            GridUnavailable, GridProtocolError: as :meth:`speed_test`.
        """
        cached = self.speed_cache.fresh(time.monotonic())
        return cached if cached is not None else await self.speed_test(worker_id)

    def speed_test_bytes(self) -> int:
        """Bytes spent on speed tests since this was last asked (0 when a measurement was reused)."""
        return self.speed_cache.take_spent()

    async def cycle_request(self, worker_id: str, *, speed: Speed | None = None) -> Accepted:
        """Ask for a place in the current cycle.

        Raises:
            GridRejected: not now; ``timeout_s`` is the node's hint, negative once the cycle's end passed.
            GridFinished: rejected without a timeout (process finished, or num_cycles = 0).
            GridWorkerUnknown: the node does not know this worker id (authenticate afresh).
            GridUnavailable: the node refused with another error (back off), or cannot be reached.
            GridProtocolError: an answer of the wrong shape, or without the plan ``grid.plan``.
        """
        payload: dict[str, Any] = {"worker_id": worker_id, "model": self._grid.model, "version": self._grid.version}
        if speed is not None:
            payload.update(speed.fields())
        async with self.connection.errors("cycle-request"):
            answer = await self._json_call("cycle-request", payload)
            try:
                accepted = cycle_outcome(answer, self._grid.plan, self.connection.node_text)
            except GridRejected as exc:
                log.info(events.GRID_CYCLE_REJECTED, timeout_s=round(exc.timeout_s, 3))
                raise
            except GridFinished:
                log.info(events.GRID_CYCLE_FINISHED, model=self._grid.model)
                raise
        log.info(events.GRID_CYCLE_ACCEPTED, model_id=accepted.model_id, version=accepted.version)
        return accepted

    async def get_model(self, worker_id: str, request_key: str, model_id: int) -> bytes:
        """The model State bytes of the accepted cycle, under ``grid.max_download_mb``.

        Raises:
            GridCycleGone: "Cycle not found!", "Invalid request key!", "Model ID not found!".
            GridWorkerUnknown: "Worker ID not found!".
            GridUnavailable: 5xx, another error, a stall or a timeout. GridProtocolError: see above.
        """
        return _as(bytes, await self._download("get-model", self._model_query(worker_id, request_key, model_id), None))

    async def get_plan(self, worker_id: str, request_key: str, plan_id: int) -> bytes:
        """The Plan bytes (``receive_operations_as=torchscript``); also the "is my cycle open?" probe.

        Raises:
            GridCycleGone, GridWorkerUnknown, GridUnavailable, GridProtocolError: as :meth:`get_model`.
        """
        return _as(bytes, await self._download("get-plan", self._plan_query(worker_id, request_key, plan_id), None))

    async def get_model_and_plan(self, worker_id: str, accepted: Accepted) -> tuple[bytes, bytes]:
        """Both downloads of an accepted cycle at once (plan ``grid.plan``).

        Raises:
            GridError: as :meth:`get_model`; the first failure cancels the other download.
        """
        plan_id = accepted.plans[self._grid.plan]
        return await _both(
            self.get_model(worker_id, accepted.request_key, accepted.model_id),
            self.get_plan(worker_id, accepted.request_key, plan_id),
        )

    async def download_model_to(self, path: Path, worker_id: str, request_key: str, model_id: int) -> int:
        """Stream the model into ``path`` (the cap enforced while streaming); its size in bytes.

        Raises:
            GridError: as :meth:`get_model` (no file is left behind). OSError: ``path`` cannot be written.
        """
        return _as(int, await self._download("get-model", self._model_query(worker_id, request_key, model_id), path))

    async def download_plan_to(self, path: Path, worker_id: str, request_key: str, plan_id: int) -> int:
        """Stream the plan into ``path``; its size in bytes.

        Raises:
            GridError: as :meth:`get_plan` (no file is left behind). OSError: ``path`` cannot be written.
        """
        return _as(int, await self._download("get-plan", self._plan_query(worker_id, request_key, plan_id), path))

    async def download_cycle_to(self, model_path: Path, plan_path: Path, worker_id: str, accepted: Accepted) -> int:
        """Stream model and plan of an accepted cycle into files at once; the bytes downloaded. The plan
        fetched for the same model id and plan id since this client last authenticated is written from
        memory instead (issue 15: one request less per cycle).

        Raises:
            GridError, OSError: as :meth:`download_model_to`; the first failure cancels the other.
        """
        key, plan_id = accepted.request_key, accepted.plans[self._grid.plan]
        ids = (accepted.model_id, plan_id)
        plan: Awaitable[int]
        if self._plan is not None and self._plan[0] == ids:
            plan = _write_plan(plan_path, self._plan[1])
        else:
            plan = self._download_plan_kept(plan_path, worker_id, key, ids)
        sizes = await _both(self.download_model_to(model_path, worker_id, key, accepted.model_id), plan)
        return sum(sizes)

    async def _download_plan_kept(self, path: Path, worker_id: str, request_key: str, ids: tuple[int, int]) -> int:
        """get-plan into ``path``, the bytes kept for the next cycles when at most ``PLAN_CACHE_MAX``."""
        self._plan = None
        size = await self.download_plan_to(path, worker_id, request_key, ids[1])
        if size <= PLAN_CACHE_MAX:
            self._plan = (ids, await asyncio.to_thread(path.read_bytes))
        return size

    async def report(self, worker_id: str, request_key: str, diff: bytes) -> None:
        """Send the diff (standard padded base64); ``success`` only means "stored" (docs/protocol.md §7).

        Raises:
            GridCycleGone: the node said the cycle is gone. GridWorkerUnknown: it forgot the worker.
            GridUnavailable: any other refusal (the diff stays; retry), a stall or a timeout.
            GridProtocolError: an answer of the wrong shape.
        """
        await self._report(worker_id, request_key, diff)

    async def report_file(self, worker_id: str, request_key: str, path: Path, *, size: int | None = None) -> None:
        """Send the diff stored in ``path`` (``size`` bytes, when the caller knows it): over HTTP one body
        built from the file up to ``frames.WHOLE_BODY_MAX``, streamed above it; one frame over WS.

        Raises:
            GridError: as :meth:`report`. OSError: the file cannot be read, or is not ``size`` bytes.
        """
        await self._report(worker_id, request_key, path, size)

    # ------------------------------------------------------------------------------------ private

    async def _report(self, worker_id: str, request_key: str, diff: bytes | Path, size: int | None = None) -> None:
        """The diff's base64 is spliced into the JSON text (syftd.grid.frames), never re-serialised."""
        if isinstance(diff, bytes):
            size = len(diff)
        elif size is None:
            size = (await asyncio.to_thread(diff.stat)).st_size
        async with self.connection.errors("report"):
            if self._grid.transport == "ws":
                request_id = uuid.uuid4().hex
                ws_type = f"{self._grid.prefix}/report"
                head, tail = frames.report_parts(worker_id, request_key, ws_type=ws_type, request_id=request_id)
                frame = await frames.whole_report(head, diff, tail, size)
                answer = unwrap(await self.connection.ws_exchange("report", frame, request_id), "report")
            else:
                head, tail = frames.report_parts(worker_id, request_key)
                body: bytes | bytearray | Callable[[], AsyncIterator[bytes]]
                if isinstance(diff, bytes) or size <= frames.WHOLE_BODY_MAX:
                    body = await frames.whole_report(head, diff, tail, size)
                else:
                    path = diff  # streamed from the file, afresh if it must be sent again
                    body = lambda: frames.streamed_report(head, path, tail, size)  # noqa: E731
                length = len(head) + frames.b64_length(size) + len(tail)
                answer = unwrap(await self.connection.http_post("report", body, length), "report")
            if "error" in answer:
                node_error("report", self.connection.node_text(answer["error"]))
            expect_status(answer, "success", "report")
        log.info(events.GRID_REPORTED, bytes=size)

    async def _json_call(self, op: str, payload: dict[str, Any]) -> dict[str, Any]:
        if self._grid.transport == "ws":
            request_id = uuid.uuid4().hex
            message = {"type": f"{self._grid.prefix}/{op}", "data": payload, "request_id": request_id}
            return unwrap(await self.connection.ws_exchange(op, json.dumps(message).encode(), request_id), op)
        body = json.dumps(payload).encode()
        return unwrap(await self.connection.http_post(op, body, len(body)), op)

    async def _download(self, op: str, params: dict[str, str], path: Path | None) -> bytes | int:
        timeout_s = self._grid.timeout_s
        cap = int(self._grid.max_download_mb * _MIB)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
        async with self.connection.errors(op):
            start = time.perf_counter()
            request = self.connection.session().get(
                f"{self.connection.http_base}/{op}", params=params, timeout=timeout, ssl=self.connection.tls
            )
            async with await within(request, timeout_s, op) as resp:
                if resp.status != 200:
                    status, raw = resp.status, await read_capped(resp, JSON_CAP, op, timeout_s)
                    text = self.connection.node_text(error_of(raw))
                    if status >= 500:
                        raise GridUnavailable(f"{op}: node failed with HTTP {status} {text}")
                    node_error(op, text, status)
                result: bytes | int
                if path is None:
                    result = await read_capped(resp, cap, op, timeout_s)
                    size = len(result)
                else:
                    result = size = await stream_to_file(resp, path, cap, op, timeout_s)
        log.info(events.GRID_DOWNLOADED, what=op, bytes=size, seconds=round(time.perf_counter() - start, 4))
        return result

    def _model_query(self, worker_id: str, request_key: str, model_id: int) -> dict[str, str]:
        return {"worker_id": worker_id, "request_key": request_key, "model_id": str(model_id)}

    def _plan_query(self, worker_id: str, request_key: str, plan_id: int) -> dict[str, str]:
        return {
            "worker_id": worker_id,
            "request_key": request_key,
            "plan_id": str(plan_id),
            "receive_operations_as": "torchscript",
        }


async def _write_plan(path: Path, plan: bytes) -> int:
    """A kept plan written into the cycle's file (over its last bytes); 0 bytes downloaded."""
    await asyncio.to_thread(rewrite, path, plan)
    return 0


def _as(kind: type[T], value: object) -> T:
    assert isinstance(value, kind)
    return value


async def _both(first: Awaitable[T], second: Awaitable[T]) -> tuple[T, T]:
    """Run two steps at once; the first failure cancels the other and is raised."""
    tasks = [asyncio.ensure_future(first), asyncio.ensure_future(second)]
    try:
        a, b = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return a, b
