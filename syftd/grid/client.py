"""The worker side of PyGrid's model-centric protocol (spec pygrid-protocol.md §1–§4, §10).

Owns the exchanges with one node: authenticate, speed test, cycle-request, get-model, get-plan and
report, over WebSocket (default; text frames, a ``request_id`` on every request) or HTTP, tolerant
of the node revisions of spec §0.2 (the ``{"type", "data"}`` envelope is unwrapped wherever it
appears, a top-level ``error`` is a failure). Every failure leaves as a typed GridError; every call
is bounded by ``grid.timeout_s`` and every answer by a size cap. The WebSocket is opened by
``authenticate`` and closed after ``cycle_request``; ``report`` opens a fresh one, so nothing is
held during training.

Does not own the bytes inside downloads and diffs (syftd.grid.wire), the order of the calls or any
retry policy (the daemon's), or where the token comes from (``read_token``). The token is sent
only in the authenticate request and never logged; ``worker_id`` and ``request_key`` act as
credentials afterwards and are not logged either.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import ssl
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from syftd import events
from syftd.config import GridConfig
from syftd.errors import (
    ConfigError,
    GridAuthFailed,
    GridCycleGone,
    GridError,
    GridFinished,
    GridProtocolError,
    GridRejected,
    GridTLSError,
    GridUnavailable,
)
from syftd.grid.answers import (
    WORKER_UNKNOWN,
    Accepted,
    Auth,
    auth_of,
    cycle_outcome,
    error_of,
    expect_status,
    first_line,
    loads,
    unwrap,
)
from syftd.grid.speedtest import Speed, measure_speed
from syftd.grid.timeout import parse_timeout
from syftd.grid.token import read_token
from syftd.log import REDACTED, get_logger
from syftd.service import ServiceContext

__all__ = ["Accepted", "Auth", "GridClient", "Speed", "parse_timeout", "read_token"]

_MIB = 1024 * 1024
_JSON_CAP = 4 * _MIB

log = get_logger("grid")


class GridClient(ServiceContext):
    """One node, one FL process (``grid.model``/``grid.version``); an async context manager."""

    def __init__(
        self, grid: GridConfig, *, token: str | None = None, session: aiohttp.ClientSession | None = None
    ) -> None:
        self._grid = grid
        self._token = token
        self._given_session = session
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | bool = True
        self._ws: aiohttp.ClientWebSocketResponse[bool] | None = None
        self._ws_lock = asyncio.Lock()
        self._http_base, self._ws_url = _urls(grid.url, grid.prefix)

    async def start(self) -> None:
        """Build the TLS context and the HTTP session.

        Raises:
            ConfigError: ``grid.ca_file`` cannot be loaded.
        """
        if self._session is not None:
            raise RuntimeError("GridClient.start() called twice; create one client per job run")
        self._ssl = _ssl_context(self._grid.ca_file)
        self._session = self._given_session or aiohttp.ClientSession()

    async def stop(self) -> None:
        """Close the WebSocket and, if this client created it, the session. Idempotent."""
        await self._close_ws()
        session, self._session = self._session, None
        if session is not None and session is not self._given_session:
            await session.close()

    async def authenticate(self) -> Auth:
        """Join the FL process; each call yields a new worker id.

        Raises:
            GridAuthFailed: the node refused (no/invalid token, unknown model or version).
            GridUnavailable, GridProtocolError: see the module docstring.
        """
        payload = {"auth_token": self._token, "model_name": self._grid.model, "model_version": self._grid.version}
        async with self._errors("authenticate"):
            auth = auth_of(await self._json_call("authenticate", payload, keep_ws=True), self._node_text)
        log.info(events.GRID_AUTHENTICATED, model=self._grid.model, requires_speed_test=auth.requires_speed_test)
        return auth

    async def speed_test(self, worker_id: str) -> Speed:
        """Measure ping (ms), download and upload (``grid.speed_unit``), each bounded in bytes and time.

        Raises:
            GridUnavailable: the node failed the speed-test route or the transfer broke off.
        """
        async with self._errors("speed-test"):
            speed = await measure_speed(
                self._require_session(), f"{self._http_base}/speed-test", worker_id, self._grid, self._ssl
            )
        log.info(
            events.GRID_SPEED_MEASURED,
            ping_ms=round(speed.ping_ms, 2),
            download=round(speed.download, 3),
            upload=round(speed.upload, 3),
            unit=speed.unit,
        )
        return speed

    async def cycle_request(self, worker_id: str, *, speed: Speed | None = None) -> Accepted:
        """Ask for a place in the current cycle (closes the WebSocket afterwards).

        Raises:
            GridRejected: not now; ``timeout_s`` is the node's hint.
            GridFinished: rejected without a timeout (process finished, or num_cycles = 0).
            GridAuthFailed: the node does not know this worker id.
            GridUnavailable: the node refused with an error (back off), or cannot be reached.
            GridProtocolError: an answer of the wrong shape, or without the plan ``grid.plan``.
        """
        payload: dict[str, Any] = {"worker_id": worker_id, "model": self._grid.model, "version": self._grid.version}
        if speed is not None:
            payload.update(speed.fields())
        async with self._errors("cycle-request"):
            try:
                answer = await self._json_call("cycle-request", payload, keep_ws=False)
            finally:
                await self._close_ws()
            try:
                accepted = cycle_outcome(answer, self._grid.plan, self._node_text)
            except GridRejected as exc:
                log.info(events.GRID_CYCLE_REJECTED, timeout_s=round(exc.timeout_s, 3))
                raise
            except GridFinished:
                log.info(events.GRID_CYCLE_FINISHED, model=self._grid.model)
                raise
        log.info(events.GRID_CYCLE_ACCEPTED, model_id=accepted.model_id, version=accepted.version)
        return accepted

    async def get_model(self, worker_id: str, request_key: str, model_id: int) -> bytes:
        """The model State bytes of the accepted cycle, streamed under ``grid.max_download_mb``.

        Raises:
            GridCycleGone: the cycle closed or the request key is no longer valid (400/401).
            GridAuthFailed, GridUnavailable, GridProtocolError: see the module docstring.
        """
        params = {"worker_id": worker_id, "request_key": request_key, "model_id": str(model_id)}
        return await self._download("get-model", params)

    async def get_plan(self, worker_id: str, request_key: str, plan_id: int) -> bytes:
        """The Plan bytes (``receive_operations_as=torchscript``); also the "is my cycle open?" probe.

        Raises:
            GridCycleGone: the cycle closed or the request key is no longer valid (400/401).
            GridAuthFailed, GridUnavailable, GridProtocolError: see the module docstring.
        """
        params = {
            "worker_id": worker_id,
            "request_key": request_key,
            "plan_id": str(plan_id),
            "receive_operations_as": "torchscript",
        }
        return await self._download("get-plan", params)

    async def report(self, worker_id: str, request_key: str, diff: bytes) -> None:
        """Send the diff (standard padded base64) over a fresh WebSocket or HTTP; ``success`` = stored.

        Raises:
            GridCycleGone: the node has no such worker-cycle (refused the key).
            GridAuthFailed, GridUnavailable, GridProtocolError: see the module docstring.
        """
        payload = {"worker_id": worker_id, "request_key": request_key, "diff": base64.b64encode(diff).decode()}
        async with self._errors("report"):
            try:
                answer = await self._json_call("report", payload, keep_ws=False)
            finally:
                await self._close_ws()
            if "error" in answer:
                text = self._node_text(answer["error"])
                raise (GridAuthFailed if WORKER_UNKNOWN in text else GridCycleGone)(f"report refused: {text}")
            expect_status(answer, "success", "report")
        log.info(events.GRID_REPORTED, bytes=len(diff))

    # ------------------------------------------------------------------------------------ private

    async def _json_call(self, op: str, payload: dict[str, Any], *, keep_ws: bool) -> dict[str, Any]:
        if self._grid.transport == "ws":
            return unwrap(await self._ws_call(op, payload, keep_ws), op)
        return unwrap(await self._http_call(op, payload), op)

    async def _ws_call(self, op: str, payload: dict[str, Any], keep: bool) -> Any:
        request_id = uuid.uuid4().hex
        message = json.dumps({"type": f"{self._grid.prefix}/{op}", "data": payload, "request_id": request_id})
        async with self._ws_lock:
            ws = self._ws
            if ws is None or ws.closed:
                connecting = self._require_session().ws_connect(
                    self._ws_url,
                    ssl=self._ssl,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=min(self._grid.timeout_s, 5.0)),
                    max_msg_size=_JSON_CAP,
                )
                ws = self._ws = await asyncio.wait_for(connecting, self._grid.timeout_s)
            try:
                await asyncio.wait_for(ws.send_str(message), self._grid.timeout_s)
                reply = await asyncio.wait_for(ws.receive(), self._grid.timeout_s)
            except BaseException:
                await self._close_ws()
                raise
            if not keep:
                await self._close_ws()
        if reply.type == aiohttp.WSMsgType.TEXT:
            body = loads(reply.data, op)
        elif reply.type == aiohttp.WSMsgType.BINARY:
            raise GridProtocolError(f"{op}: the node answered with a binary frame")
        elif reply.type == aiohttp.WSMsgType.ERROR and getattr(reply.data, "code", None) == 1009:
            raise GridProtocolError(f"{op}: answer larger than {_JSON_CAP} bytes")
        else:
            raise GridUnavailable(f"{op}: the node closed the WebSocket without answering")
        echo = body.get("request_id") if isinstance(body, dict) else None
        if echo is not None and echo != request_id:
            raise GridProtocolError(f"{op}: answer carries request_id {str(echo)[:40]!r}, not ours")
        return body

    async def _http_call(self, op: str, payload: dict[str, Any]) -> Any:
        url = f"{self._http_base}/{op}"
        timeout = aiohttp.ClientTimeout(total=self._grid.timeout_s)
        async with self._require_session().post(
            url, json=payload, timeout=timeout, ssl=self._ssl, allow_redirects=False
        ) as resp:
            raw = await _read_capped(resp, _JSON_CAP, op)
            status = resp.status
        self._check_status(op, status, raw)
        body = loads(raw, op)
        if status != 200 and not (isinstance(body, dict) and "error" in body):
            raise GridProtocolError(f"{op}: HTTP {status} without an error message")
        return body

    async def _download(self, op: str, params: dict[str, str]) -> bytes:
        cap = int(self._grid.max_download_mb * _MIB)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._grid.timeout_s, sock_read=self._grid.timeout_s)
        async with self._errors(op):
            start = time.perf_counter()
            async with self._require_session().get(
                f"{self._http_base}/{op}", params=params, timeout=timeout, ssl=self._ssl, allow_redirects=False
            ) as resp:
                status = resp.status
                raw = await _read_capped(resp, cap if status == 200 else _JSON_CAP, op)
            if status != 200:
                self._check_status(op, status, raw)
                text = self._node_text(error_of(raw))
                if WORKER_UNKNOWN in text:
                    raise GridAuthFailed(f"{op}: {text}")
                if status in (400, 401):
                    raise GridCycleGone(f"{op}: HTTP {status} {text}")
                raise GridProtocolError(f"{op}: HTTP {status} {text}")
        log.info(events.GRID_DOWNLOADED, what=op, bytes=len(raw), seconds=round(time.perf_counter() - start, 4))
        return raw

    def _check_status(self, op: str, status: int, raw: bytes) -> None:
        if status >= 500:
            raise GridUnavailable(f"{op}: node failed with HTTP {status} {self._node_text(error_of(raw))}".rstrip())
        if status == 404:
            raise GridProtocolError(f"{op}: HTTP 404 at {self._http_base}/{op} (is grid.prefix right?)")
        if 300 <= status < 400:
            raise GridProtocolError(f"{op}: unexpected redirect (HTTP {status})")

    @asynccontextmanager
    async def _errors(self, op: str) -> AsyncIterator[None]:
        """Turn transport exceptions into GridError subclasses and log each failure once."""
        try:
            try:
                yield
            except GridError:
                raise
            except (asyncio.TimeoutError, TimeoutError):
                raise GridUnavailable(f"{op}: no answer within {self._grid.timeout_s:g} s") from None
            except aiohttp.ClientConnectorCertificateError as exc:
                raise GridTLSError(f"{op}: certificate of {exc.host} not trusted (set grid.ca_file?)") from None
            except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
                raise GridTLSError(f"{op}: TLS failed ({exc})") from None
            except aiohttp.WSServerHandshakeError as exc:
                kind = GridUnavailable if exc.status >= 500 else GridProtocolError
                raise kind(f"{op}: WebSocket handshake refused with HTTP {exc.status} at {self._ws_url}") from None
            except aiohttp.ClientResponseError as exc:
                kind = GridUnavailable if exc.status >= 500 else GridProtocolError
                raise kind(f"{op}: HTTP {exc.status} {exc.message}") from None
            except (aiohttp.ClientError, OSError) as exc:
                raise GridUnavailable(f"{op}: {type(exc).__name__}: {exc}") from None
        except (GridRejected, GridFinished):
            raise
        except GridError as exc:
            log.warning(events.GRID_REQUEST_FAILED, op=op, error=type(exc).__name__, reason=self._scrub(str(exc)))
            raise

    async def _close_ws(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            try:
                await asyncio.wait_for(ws.close(), min(self._grid.timeout_s, 5.0))
            except (asyncio.TimeoutError, TimeoutError, aiohttp.ClientError, OSError):
                pass

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("GridClient is not started; use `async with GridClient(...)` or await start()")
        return self._session

    def _node_text(self, value: object) -> str:
        """The first line of a node's error message (PyGrid appends tracebacks), token removed."""
        return self._scrub(first_line(value))

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, REDACTED) if self._token else text


def _urls(url: str, prefix: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    http_scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    ws_scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    prefix = prefix.strip("/")
    return f"{http_scheme}://{parts.netloc}{path}/{prefix}", f"{ws_scheme}://{parts.netloc}{path or '/'}"


@functools.lru_cache(maxsize=1)
def _system_context() -> ssl.SSLContext:
    """The system trust store context; loading it costs ~70 ms, so one is shared by all clients."""
    return ssl.create_default_context()


def _ssl_context(ca_file: Any) -> ssl.SSLContext:
    if ca_file is None:
        return _system_context()
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(None, [f"grid.ca_file: cannot be loaded ({exc}), got {str(ca_file)!r}"]) from None
    return context


async def _read_capped(resp: aiohttp.ClientResponse, cap: int, op: str) -> bytes:
    if resp.content_length is not None and resp.content_length > cap:
        raise GridProtocolError(f"{op}: answer of {resp.content_length} bytes exceeds the cap of {cap}")
    buffer = bytearray()
    async for chunk in resp.content.iter_chunked(256 * 1024):
        buffer += chunk
        if len(buffer) > cap:
            raise GridProtocolError(f"{op}: answer exceeds the cap of {cap} bytes")
    return bytes(buffer)
