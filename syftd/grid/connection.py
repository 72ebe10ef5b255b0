"""The transports to one PyGrid node: an HTTP session and a kept WebSocket, and their failures as GridErrors.

Owns the connections (one session with keep-alive; one WebSocket opened by the first WS request and
kept until :meth:`NodeConnection.close`; a request on a kept WebSocket the node closed meanwhile is
sent once more on a fresh one, the node never having read it), the exchange of one JSON request for
one answer over either transport, bounded as syftd.grid.transfer says, and the translation of
transport exceptions into GridError subclasses, each failure logged once with the token scrubbed.
Does not own what is asked or what answers mean (syftd.grid.client, syftd.grid.answers).
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import aiohttp

from syftd import events
from syftd.config import GridConfig
from syftd.errors import (
    GridError,
    GridFinished,
    GridProtocolError,
    GridRejected,
    GridTLSError,
    GridUnavailable,
)
from syftd.grid.answers import error_of, first_line, loads
from syftd.grid.transfer import (
    RedirectRefused,
    new_session,
    read_capped,
    ssl_context,
    upload_pieces,
    while_moving,
    within,
)
from syftd.log import REDACTED, get_logger

__all__ = ["JSON_CAP", "NodeConnection"]

JSON_CAP = 4 * 1024 * 1024

log = get_logger("grid")


class NodeConnection:
    """The session, TLS context and kept WebSocket for one node (``grid.url``, ``grid.prefix``)."""

    def __init__(self, grid: GridConfig, token: str | None) -> None:
        self._grid = grid
        self._token = token
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | bool = True
        self._ws: aiohttp.ClientWebSocketResponse[bool] | None = None
        self._ws_lock = asyncio.Lock()
        self._posted = False  # an earlier exchange may have left a connection kept alive
        self.http_base, self.ws_url = _urls(grid.url, grid.prefix)

    @property
    def tls(self) -> ssl.SSLContext | bool:
        """The TLS context every request uses."""
        return self._ssl

    def open(self) -> None:
        """Build the TLS context and the HTTP session.

        Raises:
            ConfigError: ``grid.ca_file`` cannot be loaded.
            RuntimeError: already open.
        """
        if self._session is not None:
            raise RuntimeError("GridClient.start() called twice; create one client per job run")
        self._ssl = ssl_context(self._grid.ca_file)
        self._session = new_session()
        self._posted = False

    async def close(self) -> None:
        """Close the WebSocket and the session. Idempotent."""
        await self.close_ws()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def close_ws(self) -> None:
        """Close the kept WebSocket; the next WS request opens a new one."""
        async with self._ws_lock:
            await self._close_ws()

    async def ws_exchange(self, op: str, frame: bytes | bytearray, request_id: str) -> Any:
        """Send one text frame and read its answer; a kept socket found closed is replaced once."""
        timeout_s = self._grid.timeout_s
        async with self._ws_lock:
            reused = self._ws is not None and not self._ws.closed
            for attempt in (1, 2):
                ws = await self._open_ws(op)
                try:
                    await within(ws.send_frame(cast(bytes, frame), aiohttp.WSMsgType.TEXT), timeout_s, op, "not sent")
                    reply = await within(ws.receive(), timeout_s, op)
                except (aiohttp.ClientError, OSError):
                    await self._close_ws()
                    if not (reused and attempt == 1):
                        raise
                    reused = False  # the kept socket broke under the send: the node never read this frame
                    continue
                except BaseException:
                    # a timeout or a cancelled step (an expired cycle, an aborted report): an answer may
                    # still come on this socket and would be out of step with the next request
                    await self._close_ws()
                    raise
                if reply.type in _CLOSED and reused and attempt == 1:
                    await self._close_ws()  # the node closed it while it was kept: it never read this frame
                    reused = False
                    continue
                break
        if reply.type == aiohttp.WSMsgType.TEXT:
            body = loads(reply.data, op)
        elif reply.type == aiohttp.WSMsgType.BINARY:
            await self.close_ws()
            raise GridProtocolError(f"{op}: the node answered with a binary frame")
        elif reply.type == aiohttp.WSMsgType.ERROR and getattr(reply.data, "code", None) == 1009:
            await self.close_ws()
            raise GridProtocolError(f"{op}: answer larger than {JSON_CAP} bytes")
        else:
            await self.close_ws()
            raise GridUnavailable(f"{op}: the node closed the WebSocket without answering")
        echo = body.get("request_id") if isinstance(body, dict) else None
        if echo is not None and echo != request_id:
            await self.close_ws()  # answers on this socket are out of step
            raise GridProtocolError(f"{op}: answer carries request_id {str(echo)[:40]!r}, not ours")
        return body

    async def _open_ws(self, op: str) -> aiohttp.ClientWebSocketResponse[bool]:
        ws = self._ws
        if ws is None or ws.closed:
            close_s = min(self._grid.timeout_s, 5.0)
            connecting = self.session().ws_connect(
                self.ws_url,
                ssl=self._ssl,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=close_s),
                max_msg_size=JSON_CAP,
            )
            ws = self._ws = await within(connecting, self._grid.timeout_s, op, "no WebSocket handshake")
        return ws

    async def http_post(
        self, op: str, body: bytes | bytearray | Callable[[], AsyncIterator[bytes]], length: int
    ) -> Any:
        """POST ``body`` (bytes, or a function giving a fresh stream of it); its answer must start within
        ``timeout_s`` of the body's last piece leaving.

        A node closes idle kept-alive connections (after its own keep-alive time, which may be shorter
        than a cycle's training); a POST that meets such a connection closed before any answer is sent
        once more on a fresh connection, the node never having read it. A failure on a fresh connection
        is not retried.
        """
        timeout_s = self._grid.timeout_s
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
        headers = {"Content-Type": "application/json", "Content-Length": str(length)}
        session = self.session()
        may_be_kept = self._posted
        while True:
            moved = [asyncio.get_running_loop().time()]
            pieces = upload_pieces(body if isinstance(body, bytes | bytearray) else body(), moved)
            url = f"{self.http_base}/{op}"
            request = session.post(url, data=pieces, headers=headers, timeout=timeout, ssl=self._ssl)
            try:
                resp = await while_moving(request, moved, timeout_s, op)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if not may_be_kept or isinstance(exc, aiohttp.ClientConnectorError):
                    raise
                may_be_kept = False
                log.info(events.GRID_CONNECTION_RENEWED, op=op, error=type(exc).__name__)
                continue
            break
        self._posted = True
        async with resp:
            raw = await read_capped(resp, JSON_CAP, op, timeout_s)
            status = resp.status
        if status >= 500:
            raise GridUnavailable(f"{op}: node failed with HTTP {status} {self.node_text(error_of(raw))}".rstrip())
        if status == 404:
            raise GridProtocolError(f"{op}: HTTP 404 at {self.http_base}/{op} (is grid.prefix right?)")
        body_json = loads(raw, op)
        if status != 200 and not (isinstance(body_json, dict) and "error" in body_json):
            raise GridProtocolError(f"{op}: HTTP {status} without an error message")
        return body_json

    @asynccontextmanager
    async def errors(self, op: str) -> AsyncIterator[None]:
        """Turn transport exceptions into GridError subclasses and log each failure once."""
        try:
            try:
                yield
            except GridError:
                raise
            except (asyncio.TimeoutError, TimeoutError):
                raise GridUnavailable(f"{op}: no answer within {self._grid.timeout_s:g} s") from None
            except RedirectRefused as exc:
                raise GridProtocolError(f"{op}: {exc}") from None
            except aiohttp.ClientConnectorCertificateError as exc:
                raise GridTLSError(f"{op}: certificate of {exc.host} not trusted (set grid.ca_file?)") from None
            except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
                raise GridTLSError(f"{op}: TLS failed ({exc})") from None
            except aiohttp.WSServerHandshakeError as exc:
                kind = GridUnavailable if exc.status >= 500 else GridProtocolError
                raise kind(f"{op}: WebSocket handshake refused with HTTP {exc.status} at {self.ws_url}") from None
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

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("GridClient is not started; use `async with GridClient(...)` or await start()")
        return self._session

    def node_text(self, value: object) -> str:
        """The first line of a node's error message (PyGrid appends tracebacks), token removed."""
        return self._scrub(first_line(value))

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, REDACTED) if self._token else text


_CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


def _urls(url: str, prefix: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    http_scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    ws_scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    prefix = prefix.strip("/")
    return f"{http_scheme}://{parts.netloc}{path}/{prefix}", f"{ws_scheme}://{parts.netloc}{path or '/'}"
