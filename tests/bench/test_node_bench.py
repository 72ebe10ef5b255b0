"""Benchmark: the local grid node's cost per cycle on the recorded 1.25 MB MNIST model (run with -s).

Figures: averaging time for 1 and 10 diffs (check + mean + encode), one worker's full protocol
exchange over WebSocket (authenticate → cycle-request → get-model → get-plan → report, averaged
into checkpoint 2), and the node's RSS over 500 cycles. Baselines measured in the same run: parsing
the model once (the wire floor), a bare aiohttp server answering the same get-model bytes (the
transport floor), and the node's RSS after its first cycle.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import aiohttp
import psutil
from aiohttp import web
from conftest import FIXTURES
from support.gridnode import NodeProcess, RawWorker, host_over_ws, running_node, small_process

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
    async with running_node(averaging_delay_s=0) as node:
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


async def test_node_rss_stays_flat_over_500_cycles():
    """The node as a child process (``syftd node serve``, averaging delay 0) and a minimal synthetic worker
    over real sockets: per cycle cycle-request, get-model, get-plan, report of the recorded 1.25 MB diff,
    then the node's checkpoint n+1. Prints the node's RSS after 1, 100 and 500 cycles and the ratios to
    cycle 1 (target: flat within 10 %; the node kept every checkpoint in memory before, +1.25 MB a cycle)."""
    marks = {1, 100, 500}
    rss: dict[int, int] = {}
    plans = small_process()[1]
    server = {"cycle_length": 3600, "num_cycles": 0, "min_diffs": 1, "max_diffs": 1}
    started = time.perf_counter()
    async with NodeProcess("--averaging-delay", "0", "--log-format", "json") as proc:
        answer = await host_over_ws(proc.ws_url, MODEL, plans, {"name": "mnist", "version": "1.0"}, server)
        assert answer["data"] == {"status": "success"}
        node = psutil.Process(proc.pid)
        async with RawWorker(proc.url, "ws") as worker:
            await worker.authenticate()
            for cycle in range(1, max(marks) + 1):
                assert (await worker.cycle_request())["status"] == "accepted", cycle
                assert (await worker.get_model())[0] == 200
                assert (await worker.get_plan())[0] == 200
                assert await worker.report(DIFF) == {"status": "success"}
                await proc.control.wait(checkpoint=cycle + 1, timeout=60)
                if cycle in marks:
                    rss[cycle] = node.memory_info().rss
    elapsed = time.perf_counter() - started
    mib = {k: v / 2**20 for k, v in rss.items()}
    print(
        f"\nnode RSS after 1 / 100 / 500 cycles: {mib[1]:.1f} / {mib[100]:.1f} / {mib[500]:.1f} MiB"
        f" | ratio to cycle 1: {rss[100] / rss[1]:.3f} / {rss[500] / rss[1]:.3f} (target ≤ 1.10)"
        f" | 500 checkpoints of {len(MODEL) / 2**20:.2f} MiB kept on disk | {elapsed:.0f} s"
    )
    assert rss[500] / rss[1] <= 1.10 and rss[100] / rss[1] <= 1.10
