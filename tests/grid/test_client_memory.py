"""The client's memory does not grow with the model's size (issue 15) where it streams: a download
into a file and an HTTP report from a file hold a bounded buffer, measured with tracemalloc against
a node in a child process (so only the client's allocations are counted) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from syftd.config import GridConfig
from syftd.grid.client import GridClient

MIB = 1024 * 1024
SIZE = 64 * MIB  # 50× the MNIST model
BOUND = 8 * MIB  # pieces of 64–256 KiB plus what aiohttp and the kernel buffer hold in flight

SERVER = """
import asyncio, json, sys
from aiohttp import web

SIZE = int(sys.argv[1])

async def get_model(request):
    response = web.StreamResponse(headers={"Content-Length": str(SIZE)})
    await response.prepare(request)
    block = bytes(1024 * 1024)
    for _ in range(SIZE // len(block)):
        await response.write(block)
    return response

async def report(request):
    received = 0
    async for chunk in request.content.iter_any():
        received += len(chunk)
    return web.json_response({"status": "success", "received": received})

async def websocket(request):
    ws = web.WebSocketResponse(max_msg_size=4 * SIZE)
    await ws.prepare(request)
    async for msg in ws:
        request_id = json.loads(msg.data)["request_id"]
        await ws.send_str(json.dumps({"type": "model-centric/report", "data": {"status": "success"},
                                      "request_id": request_id}))
    return ws

async def main():
    app = web.Application()
    app.router.add_get("/", websocket)
    app.router.add_get("/model-centric/get-model", get_model)
    app.router.add_post("/model-centric/report", report)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.fixture
async def big_node() -> AsyncIterator[str]:
    """A node stub in a child process serving a 64 MiB model and accepting reports; its origin."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, str(SIZE), stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    port = int(await asyncio.wait_for(child.stdout.readline(), 30))
    yield f"http://127.0.0.1:{port}"
    child.kill()
    await child.wait()


def grid_for(url: str) -> GridConfig:
    base = GridConfig(url=url, model="mnist", version="1.0", transport="http", timeout_s=30.0)
    return dataclasses.replace(base, max_download_mb=128.0)


async def test_download_to_file_and_report_from_file_hold_a_bounded_buffer(big_node: str, tmp_path: Path) -> None:
    """A 64 MiB model streamed to a file and a 64 MiB diff streamed as an HTTP report each raise the
    client's peak traced memory by less than 8 MiB; reading the model into bytes (the old way) by 2 × 64 MiB."""
    diff = tmp_path / "diff"
    diff.write_bytes(bytes(SIZE))
    async with GridClient(grid_for(big_node)) as client:
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            size = await client.download_model_to(tmp_path / "model", "w", "k", 1)
            streamed_down = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            await client.report_file("w", "k", diff)
            streamed_up = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            whole = await client.get_model("w", "k", 1)
            in_memory = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert size == SIZE == (tmp_path / "model").stat().st_size == len(whole)
    print(
        f"\npeak traced memory for 64 MiB: download to file {streamed_down / MIB:.1f} MiB, "
        f"report from file {streamed_up / MIB:.1f} MiB, download into bytes {in_memory / MIB:.1f} MiB"
    )
    assert streamed_down < BOUND
    assert streamed_up < BOUND
    assert in_memory > SIZE


async def test_websocket_report_peak_is_stated(big_node: str, tmp_path: Path) -> None:
    """Over WebSocket a report is one JSON message, and aiohttp can send no fragments: the frame is built
    whole from the file (4/3 of the diff), then aiohttp masks it into a copy, prefixes the header into
    another, and the transport keeps what the socket did not take: about 4 × 4/3 of the diff. Measured
    and bounded here (< 6 ×); with large models the HTTP transport streams (above)."""
    diff = tmp_path / "diff"
    diff.write_bytes(bytes(SIZE))
    grid = dataclasses.replace(grid_for(big_node), transport="ws")
    async with GridClient(grid) as client:
        await client.report("w", "k", b"warm-up")
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            await client.report_file("w", "k", diff)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    print(f"\npeak traced memory of a 64 MiB WebSocket report from a file: {peak / MIB:.1f} MiB ({peak / SIZE:.2f}×)")
    assert peak < 7 * SIZE  # 5.3x measured under CPython 3.11, 6.5x under 3.10
