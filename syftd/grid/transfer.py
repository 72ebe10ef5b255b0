"""Bounded byte transfers with a node: the HTTP session, TLS, and every read of a node's bytes.

Owns three rules every request to a node follows (issue "hostile nodes"):

- **no redirect is ever followed**, WebSocket handshakes included: the session's middleware turns a
  3xx answer into :class:`RedirectRefused` before aiohttp could follow it, so the token, the worker
  id and the diff go only to the configured origin (never from ``wss://`` down to ``ws://``);
- **every byte read is capped**: a body larger than its cap fails as it streams in (and at once when
  ``Content-Length`` announces it);
- **every read is bounded in time**: the answer's first byte within ``timeout_s``, then each window
  of ``timeout_s`` must bring at least :data:`PROGRESS_BYTES` or the end of the body, so a node
  dripping a byte every few seconds fails within ``timeout_s`` instead of holding the cycle; an
  upload (a report) must keep moving, and its answer start within ``timeout_s`` of its last piece.

Does not own what is asked or what the answers mean (syftd.grid.client, syftd.grid.answers).
Downloads written to a file are not fsynced: they can be fetched again, only diffs need durability.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import aiohttp

from syftd.errors import ConfigError, GridProtocolError, GridUnavailable
from syftd.statedir import open_rewrite

__all__ = [
    "PROGRESS_BYTES",
    "BoundedBody",
    "RedirectRefused",
    "new_session",
    "read_capped",
    "ssl_context",
    "stream_to_file",
    "upload_pieces",
    "while_moving",
    "within",
]

PROGRESS_BYTES = 64 * 1024
_PIECE = 256 * 1024
T = TypeVar("T")
_KEEPALIVE_S = 60.0


class RedirectRefused(aiohttp.ClientError):
    """The node answered a request with a redirect; syftd never follows one."""

    def __init__(self, status: int, location: str) -> None:
        self.status = status
        self.location = location
        super().__init__(f"HTTP {status} redirect to {location[:120]!r} refused (redirects are never followed)")


async def _refuse_redirects(
    request: aiohttp.ClientRequest, handler: Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]]
) -> aiohttp.ClientResponse:
    response = await handler(request)
    if 300 <= response.status < 400:
        location = response.headers.get("Location", "")
        response.close()
        raise RedirectRefused(response.status, location)
    return response


def new_session() -> aiohttp.ClientSession:
    """A session that refuses redirects, ignores proxy variables and keeps connections alive for reuse."""
    connector = aiohttp.TCPConnector(keepalive_timeout=_KEEPALIVE_S, limit_per_host=8)
    return aiohttp.ClientSession(connector=connector, middlewares=(_refuse_redirects,), trust_env=False)


@functools.lru_cache(maxsize=1)
def _system_context() -> ssl.SSLContext:
    """The system trust store context; loading it costs ~70 ms, so one is shared by all clients."""
    return ssl.create_default_context()


def ssl_context(ca_file: Any) -> ssl.SSLContext:
    """The TLS context: the system trust store, or one that also trusts ``ca_file``.

    Raises:
        ConfigError: ``ca_file`` cannot be loaded.
    """
    if ca_file is None:
        return _system_context()
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(None, [f"grid.ca_file: cannot be loaded ({exc}), got {str(ca_file)!r}"]) from None
    return context


async def within(step: Awaitable[Any], timeout_s: float, op: str, what: str = "no answer") -> Any:
    """``await step`` bounded by ``timeout_s``.

    Raises:
        GridUnavailable: it took longer ("<op>: no answer within <timeout_s> s").
    """
    try:
        return await asyncio.wait_for(step, timeout_s)
    except (asyncio.TimeoutError, TimeoutError):
        raise GridUnavailable(f"{op}: {what} within {timeout_s:g} s") from None


class BoundedBody:
    """The chunks of one answer's body, under a byte cap and the progress rule of the module docstring.

    ``cap`` None: no cap (the caller stops reading by itself, as the speed test does).

    Raises:
        GridProtocolError: ``Content-Length`` announces more than ``cap``.
    """

    def __init__(self, response: aiohttp.ClientResponse, cap: int | None, op: str, timeout_s: float) -> None:
        if cap is not None and response.content_length is not None and response.content_length > cap:
            raise GridProtocolError(f"{op}: answer of {response.content_length} bytes exceeds the cap of {cap}")
        self._content = response.content
        self._cap, self._op, self._timeout_s = cap, op, timeout_s
        self._loop = asyncio.get_running_loop()
        self._window_end = self._loop.time() + timeout_s
        self._window_bytes = 0
        self.total = 0

    async def next(self) -> bytes:
        """The next chunk, b"" at the end of the body.

        Raises:
            GridProtocolError: the body passed the cap. GridUnavailable: it stalled.
        """
        remaining = self._window_end - self._loop.time()
        try:
            if remaining <= 0:
                raise TimeoutError
            chunk = await asyncio.wait_for(self._content.readany(), remaining)
        except (asyncio.TimeoutError, TimeoutError):
            raise GridUnavailable(
                f"{self._op}: the node sent fewer than {PROGRESS_BYTES // 1024} KiB in {self._timeout_s:g} s "
                f"({self.total} bytes so far): stalled"
            ) from None
        self.total += len(chunk)
        if self._cap is not None and self.total > self._cap:
            raise GridProtocolError(f"{self._op}: answer exceeds the cap of {self._cap} bytes")
        self._window_bytes += len(chunk)
        if self._window_bytes >= PROGRESS_BYTES:
            self._window_end = self._loop.time() + self._timeout_s
            self._window_bytes = 0
        return chunk


async def read_capped(response: aiohttp.ClientResponse, cap: int, op: str, timeout_s: float) -> bytes:
    """The whole body, at most ``cap`` bytes, under the progress rule.

    Raises:
        GridProtocolError: larger than ``cap``. GridUnavailable: the body stalled.
    """
    body = BoundedBody(response, cap, op, timeout_s)
    buffer = bytearray()
    while chunk := await body.next():
        buffer += chunk
    return bytes(buffer)


async def stream_to_file(response: aiohttp.ClientResponse, path: Path, cap: int, op: str, timeout_s: float) -> int:
    """Write the body to ``path`` as it arrives, over the bytes a file there has (its pages are in the page
    cache: no new ones to allocate, issue 15), cut to what came; the byte count.

    The cap is enforced while streaming; a failed or oversized download leaves no file behind (not
    even the one it would have written over).

    Raises:
        GridProtocolError: larger than ``cap``. GridUnavailable: the body stalled.
        OSError: the file cannot be written.
    """
    try:
        body = BoundedBody(response, cap, op, timeout_s)
        sink: BinaryIO = await asyncio.to_thread(_rewrite, path)
        with sink:
            while chunk := await body.next():
                sink.write(chunk)  # into the page cache: tens of microseconds, on the loop
            sink.flush()
            os.ftruncate(sink.fileno(), body.total)
    except BaseException:
        await asyncio.to_thread(path.unlink, missing_ok=True)
        raise
    return body.total


def _rewrite(path: Path) -> BinaryIO:
    return os.fdopen(open_rewrite(path), "wb")


def upload_pieces(body: bytes | bytearray | AsyncIterator[bytes], moved: list[float]) -> AsyncIterator[bytes]:
    """``body`` as an async iterator of pieces of at most 256 KiB (bytes are sliced, not copied),
    noting in ``moved[0]`` when the writer last asked for more, for :func:`while_moving`."""
    source = body if not isinstance(body, bytes | bytearray) else _slices(body)
    return _pieces(source, moved, asyncio.get_running_loop())


async def _slices(body: bytes | bytearray) -> AsyncIterator[bytes]:
    view = memoryview(body)
    for at in range(0, len(view), _PIECE):
        yield view[at : at + _PIECE]  # type: ignore[misc]


async def _pieces(
    body: AsyncIterator[bytes], moved: list[float], loop: asyncio.AbstractEventLoop
) -> AsyncIterator[bytes]:
    """``body``, noting in ``moved`` when the writer last asked for more (the previous piece left)."""
    async for piece in body:
        yield piece
        moved[0] = loop.time()
    moved[0] = loop.time()


async def while_moving(request: Awaitable[T], moved: list[float], timeout_s: float, op: str) -> T:
    """``await request`` while the upload keeps moving; fail ``timeout_s`` after it last moved.

    Raises:
        GridUnavailable: no progress, or no answer, for ``timeout_s``.
    """
    task = asyncio.ensure_future(request)
    loop = asyncio.get_running_loop()
    try:
        while True:
            left = moved[0] + timeout_s - loop.time()
            if left <= 0:
                raise GridUnavailable(f"{op}: no answer within {timeout_s:g} s")
            done, _ = await asyncio.wait({task}, timeout=left)
            if done:
                return task.result()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
