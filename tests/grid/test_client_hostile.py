"""Hostile nodes (issue 14, items 2–5): real aiohttp servers on 127.0.0.1 that redirect, drip, send
huge answers or fail with a locked database. GridClient must refuse every redirect (WS handshake,
wss → ws and speed tests included) so nothing reaches another origin, cap every answer, and fail
each step within grid.timeout_s."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

from syftd.config import GridConfig
from syftd.errors import GridCycleGone, GridError, GridProtocolError, GridUnavailable
from syftd.grid.client import GridClient
from syftd.grid.transfer import PROGRESS_BYTES

TOKEN = "secret-token-0123456789"
TIMEOUT_S = 1.0
# the bound a test allows for a step: the design's timeout_s plus a margin for a loaded 2-core machine
BOUND_S = TIMEOUT_S + 3.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Server:
    """An aiohttp app on 127.0.0.1 (TLS when given a context) answering every path with ``handler``;
    ``seen`` lists (method, path, body) of every request that reached it."""

    def __init__(self, handler: Handler, context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.context = context
        self.seen: list[tuple[str, str, bytes]] = []
        self.written = 0
        self.port = 0
        self.closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def origin(self) -> str:
        return f"{'https' if self.context else 'http'}://127.0.0.1:{self.port}"

    async def _any(self, request: web.Request) -> web.StreamResponse:
        body = await request.read() if request.can_read_body else b""
        self.seen.append((request.method, request.path_qs, body))
        return await self.handler(request)

    async def __aenter__(self) -> Server:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._any)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._runner is not None
        self.closing.set()
        await self._runner.cleanup()


def grid_for(url: str, **changes: Any) -> GridConfig:
    base = GridConfig(url=url, model="mnist", version="1.0", timeout_s=TIMEOUT_S, speed_test_max_s=10.0)
    return dataclasses.replace(base, **changes)


async def _ok(_request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "success", "worker_id": "w", "requires_speed_test": False})


def redirect_to(target: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"{target}{request.path_qs}")

    return handler


def every_step(client: GridClient) -> dict[str, Callable[[], Awaitable[object]]]:
    return {
        "authenticate": client.authenticate,
        "cycle-request": lambda: client.cycle_request("w"),
        "get-model": lambda: client.get_model("w", "k", 1),
        "get-plan": lambda: client.get_plan("w", "k", 2),
        "report": lambda: client.report("w", "k", b"\x01" * 1000),
        "speed-test": lambda: client.speed_test("w"),
    }


@pytest.mark.parametrize("transport", ["ws", "http"])
@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_no_redirect_is_followed_and_nothing_reaches_the_other_origin(transport: str, status: int) -> None:
    """Every request (the WS handshake and the speed test included) answered by a redirect to another
    server fails as a protocol error; that server never sees a request, so the token stays home."""
    async with Server(_ok) as thief:

        async def redirect(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, headers={"Location": f"{thief.origin}{request.path_qs}"})

        async with Server(redirect) as node:
            async with GridClient(grid_for(node.origin, transport=transport), token=TOKEN) as client:
                for op, step in every_step(client).items():
                    with pytest.raises(GridProtocolError, match="redirect") as caught:
                        await step()
                    assert TOKEN not in str(caught.value), op
            assert node.seen, "the node saw the requests"
    assert thief.seen == []


async def test_wss_handshake_redirected_to_plain_ws_is_refused(tmp_path: Path) -> None:
    """A wss:// node answering the handshake with a 302 to ws:// (clear text, another port): refused,
    the plain server sees no connection and the token is never sent."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with Server(_ok) as plain:
        async with Server(redirect_to(f"ws://127.0.0.1:{plain.port}"), context) as node:
            grid = grid_for(f"wss://127.0.0.1:{node.port}", ca_file=ca_file)
            async with GridClient(grid, token=TOKEN) as client:
                with pytest.raises(GridProtocolError, match="redirect"):
                    await client.authenticate()
            [(method, path, body)] = node.seen
            assert (method, path, body) == ("GET", "/", b"")
    assert plain.seen == []


def endless(server: Server, length: int | None) -> Handler:
    """An answer of ``length`` announced bytes (None: chunked) that never ends; counts what it wrote."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(length)} if length else None)
        await response.prepare(request)
        block = b"x" * 65536
        try:
            while True:
                await response.write(block)
                server.written += len(block)
        except (ConnectionError, RuntimeError):
            pass
        return response

    return handler


@pytest.mark.parametrize("announced", [2 * 1024**3, None], ids=["content-length-2GiB", "chunked"])
async def test_huge_speed_test_ping_answers_are_capped(announced: int | None) -> None:
    """A 2 GiB (or endless) ping answer: a protocol error after at most 64 KiB read, not 4 GB of memory."""
    node = Server(_ok)
    node.handler = endless(node, announced)
    async with node:
        async with GridClient(grid_for(node.origin)) as client:
            with pytest.raises(GridProtocolError, match="exceeds the cap"):
                await client.speed_test("w")
    # what the node got into the socket before the client hung up: kernel buffers, not the 2 GiB
    assert node.written < 32 * 1024 * 1024


async def test_huge_json_and_download_answers_are_capped(tmp_path: Path) -> None:
    """An endless cycle-request answer and a download above max_download_mb: protocol errors, and a
    download streamed to a file leaves no file behind."""
    node = Server(_ok)
    node.handler = endless(node, None)
    async with node:
        async with GridClient(grid_for(node.origin, transport="http", max_download_mb=1.0)) as client:
            with pytest.raises(GridProtocolError, match="exceeds the cap"):
                await client.cycle_request("w")
            with pytest.raises(GridProtocolError, match="exceeds the cap"):
                await client.get_model("w", "k", 1)
            with pytest.raises(GridProtocolError, match="exceeds the cap"):
                await client.download_model_to(tmp_path / "model", "w", "k", 1)
    assert list(tmp_path.iterdir()) == []


async def test_a_download_writes_over_the_last_cycles_file_and_cuts_it_to_the_new_body(tmp_path: Path) -> None:
    """The work directory keeps the last model file (its pages are cached): the next download writes
    over it in place (same inode) and leaves exactly the new body; one above the cap removes it; a
    symlink in its place is not followed (the download fails, naming it, and the target is untouched)."""

    async def model(_request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"new model")

    kept = tmp_path / "model"
    kept.write_bytes(b"x" * 100_000)
    inode = kept.stat().st_ino
    async with Server(model) as node:
        async with GridClient(grid_for(node.origin, transport="http")) as client:
            assert await client.download_model_to(kept, "w", "k", 1) == 9
            assert (kept.read_bytes(), kept.stat().st_ino) == (b"new model", inode)
            target = tmp_path / "elsewhere"
            target.write_bytes(b"keep me")
            link = tmp_path / "link"
            link.symlink_to(target)
            with pytest.raises(GridError, match="link is a symbolic link, not a regular file"):
                await client.download_model_to(link, "w", "k", 1)
            assert target.read_bytes() == b"keep me"
        async with GridClient(grid_for(node.origin, transport="http", max_download_mb=8 / 1024 / 1024)) as client:
            with pytest.raises(GridProtocolError, match="exceeds the cap"):
                await client.download_model_to(kept, "w", "k", 1)
    assert not kept.exists()


def dripping(server: Server, before_headers: bool) -> Handler:
    """One byte every 0.3 s (the issue's "one byte every 3 s", scaled to timeout_s = 1 s), forever;
    or no answer at all until the server closes."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if before_headers:
            await server.closing.wait()
            return web.Response(status=503)
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            while True:
                await response.write(b" ")
                await asyncio.sleep(0.3)  # behaviour: a server dripping one byte every 0.3 s
        except (ConnectionError, RuntimeError):
            pass
        return response

    return handler


@pytest.mark.parametrize("before_headers", [False, True], ids=["dripping-body", "silent-headers"])
@pytest.mark.parametrize("transport", ["ws", "http"])
async def test_dripping_node_fails_every_step_within_timeout_s(transport: str, before_headers: bool) -> None:
    """Downloads, probes, reports, speed tests and JSON calls to a node that drips a byte every 0.3 s
    (or never answers) fail as unavailable within timeout_s (1 s) plus a load margin, never later."""
    node = Server(_ok)
    node.handler = dripping(node, before_headers)
    async with node:
        async with GridClient(grid_for(node.origin, transport=transport)) as client:
            steps = every_step(client)
            if transport == "ws":  # WS answers are frames; the HTTP-only steps are the ones that drip
                steps = {op: steps[op] for op in ("get-model", "get-plan", "speed-test")}
            for op, step in steps.items():
                started = time.monotonic()
                with pytest.raises(GridUnavailable):
                    await step()
                took = time.monotonic() - started
                assert took < BOUND_S, f"{op} took {took:.1f} s with timeout_s = {TIMEOUT_S}"


async def test_a_slow_but_moving_download_is_not_cut() -> None:
    """The progress rule: a body that brings 64 KiB per window is read to the end, however long it takes
    in total (a large model on a slow link), while a drip below that fails."""

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(4):
            await response.write(b"m" * PROGRESS_BYTES)
            await asyncio.sleep(TIMEOUT_S * 0.6)
        return response

    async with Server(slow) as node:
        async with GridClient(grid_for(node.origin)) as client:
            assert len(await client.get_model("w", "k", 1)) == 4 * PROGRESS_BYTES


@pytest.mark.parametrize("status", [400, 500])
@pytest.mark.parametrize("transport", ["ws", "http"])
async def test_sqlite_locked_node_is_transient_on_every_step(transport: str, status: int) -> None:
    """``{"error": "(sqlite3.OperationalError) database is locked"}`` (a 200 JSON answer on report and
    cycle-request, 400 or 500 on the probe; WS or HTTP) is a
    GridUnavailable on report, probe, cycle-request and authenticate: never cycle gone, so a diff is
    kept, and never an auth failure."""
    locked = {"error": "(sqlite3.OperationalError) database is locked\nTraceback ..."}

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for msg in ws:
                request_id = json.loads(msg.data).get("request_id")
                await ws.send_str(json.dumps({**locked, "request_id": request_id}))
            return ws
        return web.json_response(locked, status=status if request.method == "GET" else 200)

    async with Server(handler) as node:
        async with GridClient(grid_for(node.origin, transport=transport)) as client:
            for op in ("report", "get-plan", "cycle-request", "authenticate"):
                with pytest.raises(GridError) as caught:
                    await every_step(client)[op]()
                assert isinstance(caught.value, GridUnavailable), op
                assert not isinstance(caught.value, GridCycleGone), op
                assert "database is locked" in str(caught.value)
                assert "Traceback" not in str(caught.value)
