"""Benchmark: the local grid node's cost per cycle on the recorded 1.25 MB MNIST model (run with -s).

Figures: averaging time for 1 and 10 diffs (check + mean + encode), and one worker's full protocol
exchange over WebSocket (authenticate → cycle-request → get-model → get-plan → report, averaged
into checkpoint 2). Baselines measured in the same run: parsing the model once (the wire floor),
and a bare aiohttp server answering the same get-model bytes (the transport floor).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import aiohttp
from aiohttp import web
from conftest import FIXTURES
from support.gridnode import RawWorker, running_node, small_process

from syftd.grid import wire
from syftd.node.averaging import apply_mean_diff

GOLDEN = FIXTURES / "golden-cycle"
MODEL = (GOLDEN / "012-http-GET-model-centric_get-model.response.bin").read_bytes()
DIFF = (GOLDEN / "016-ws-model-centric_report.request.diff.base64-decoded.bin").read_bytes()
ROUNDS = 10


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def _timed(fn: Callable[[], object], rounds: int = ROUNDS) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return _median_ms(samples)


def test_averaging_cost_against_a_parse_of_the_model():
    parse_ms = _timed(lambda: wire.parse_state(MODEL))
    one_ms = _timed(lambda: apply_mean_diff(MODEL, [DIFF]))
    ten_ms = _timed(lambda: apply_mean_diff(MODEL, [DIFF] * 10), rounds=5)
    print(
        f"\nparse model {parse_ms:.2f} ms | average 1 diff {one_ms:.2f} ms ({one_ms / parse_ms:.1f}x parse)"
        f" | 10 diffs {ten_ms:.2f} ms ({ten_ms / parse_ms:.1f}x parse)"
    )


async def _bare_download_ms() -> float:
    async def model(_request: web.Request) -> web.Response:
        return web.Response(body=MODEL, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/m", model)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    samples = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(ROUNDS):
                start = time.perf_counter()
                async with session.get(f"http://127.0.0.1:{port}/m") as response:
                    await response.read()
                samples.append(time.perf_counter() - start)
    finally:
        await runner.cleanup()
    return _median_ms(samples)


async def test_one_workers_protocol_exchange_against_a_bare_download():
    bare_ms = await _bare_download_ms()
    plans = small_process()[1]
    server = {"cycle_length": 60, "num_cycles": 0, "min_diffs": 1, "max_diffs": 1}
    samples = []
    async with running_node() as node:
        node.host("mnist", "1.0", MODEL, plans, {}, server)
        for round_ in range(ROUNDS):
            start = time.perf_counter()
            async with RawWorker(node.url) as worker:
                await worker.authenticate()
                await worker.cycle_request()
                status, _model = await worker.get_model()
                assert status == 200
                await worker.get_plan()
                assert await worker.report(DIFF) == {"status": "success"}
            await node.settled()  # the node averages after answering, as PyGrid does
            samples.append(time.perf_counter() - start)
            assert node.checkpoint_number("mnist") == round_ + 2
    cycle_ms = _median_ms(samples)
    print(
        f"\nfull worker exchange {cycle_ms:.1f} ms (median of {ROUNDS}) | bare 1.25 MB download "
        f"{bare_ms:.1f} ms | ratio {cycle_ms / bare_ms:.1f}x"
    )
