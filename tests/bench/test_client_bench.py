"""Benchmark (issue 15, client side): the per-step cost of one cycle's exchanges with the local node,
the old way and the new way, measured in the same run on the recorded 1.25 MB MNIST model.

- **before** (the call pattern of the cycle before issue 15): a client per phase, so a new TCP
  connection and WebSocket handshake for the request phase and again for the report; the WebSocket
  closed after cycle-request; get-model then get-plan one after the other; the report frame built
  with ``json.dumps`` over the 1.67 MB base64 string.
- **after**: one client (one kept WebSocket, kept-alive HTTP connections) across cycles; get-model and
  get-plan at once; the report frame spliced around the base64 (syftd.grid.frames).

The node answers in-process on 127.0.0.1 (its decoding of the report is inside the "report" step)
and its averaging is waited for outside the timed steps. Both variants send the report through
today's client, so the old frame building is timed apart (pure CPU) and added to the "before" total
on the last line. "to files" is "after" with the downloads streamed into files and the report
streamed from one. Figures are medians over ``CYCLES - 1`` warm cycles; ratios are after / before.
"""

from __future__ import annotations

import base64
import json
import statistics
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from conftest import FIXTURES
from support.gridnode import running_node

from syftd.config import GridConfig
from syftd.grid import frames, wire
from syftd.grid.client import GridClient

GOLDEN = FIXTURES / "golden-cycle"
MODEL = (GOLDEN / "012-http-GET-model-centric_get-model.response.bin").read_bytes()
PLAN = (GOLDEN / "013-http-GET-model-centric_get-plan.response.bin").read_bytes()
CYCLES = 21
STEPS = ("cycle-request", "downloads", "probe", "report", "total")
T = TypeVar("T")


class Clock:
    """Per-step wall times of the cycles of one variant, in ms."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {step: [] for step in STEPS}

    async def step(self, name: str, call: Awaitable[T]) -> T:
        start = time.perf_counter()
        result = await call
        self.times[name].append((time.perf_counter() - start) * 1000)
        return result

    def median(self, name: str) -> float:
        return statistics.median(self.times[name][1:])


def zero_diff() -> bytes:
    return wire.encode_state([wire.Tensor(t.dtype, t.shape, bytes(len(t.data))) for t in wire.parse_state(MODEL)])


async def sequential(client: GridClient, worker_id: str, key: str, model_id: int, plan_id: int) -> None:
    await client.get_model(worker_id, key, model_id)
    await client.get_plan(worker_id, key, plan_id)


async def before_cycle(clock: Clock, grid: GridConfig, worker_id: str, diff: bytes) -> None:
    start = time.perf_counter()
    async with GridClient(grid) as client:
        accepted = await clock.step("cycle-request", client.cycle_request(worker_id))
        await client.close_connections()  # the old client closed its WebSocket after cycle-request
        plan_id = accepted.plans["training_plan"]
        downloads = sequential(client, worker_id, accepted.request_key, accepted.model_id, plan_id)
        await clock.step("downloads", downloads)
    async with GridClient(grid) as client:  # the old cycle opened a fresh client to report
        await clock.step("probe", client.get_plan(worker_id, accepted.request_key, plan_id))
        await clock.step("report", client.report(worker_id, accepted.request_key, diff))
    clock.times["total"].append((time.perf_counter() - start) * 1000)


async def after_cycle(clock: Clock, client: GridClient, worker_id: str, diff: bytes | Path, tmp: Path | None) -> None:
    start = time.perf_counter()
    accepted = await clock.step("cycle-request", client.cycle_request(worker_id))
    if tmp is None:
        await clock.step("downloads", client.get_model_and_plan(worker_id, accepted))
    else:
        await clock.step("downloads", client.download_cycle_to(tmp / "model", tmp / "plan", worker_id, accepted))
    plan_id = accepted.plans["training_plan"]
    await clock.step("probe", client.get_plan(worker_id, accepted.request_key, plan_id))
    if isinstance(diff, Path):
        await clock.step("report", client.report_file(worker_id, accepted.request_key, diff))
    else:
        await clock.step("report", client.report(worker_id, accepted.request_key, diff))
    clock.times["total"].append((time.perf_counter() - start) * 1000)


async def interleaved(node: Any, grid: GridConfig, diff: bytes, diff_path: Path, tmp: Path) -> dict[str, Clock]:
    """The three variants cycle by cycle in turn, so a change of machine load touches them alike."""
    clocks = {"before": Clock(), "after": Clock(), "files": Clock()}
    async with GridClient(grid) as client, GridClient(grid) as files_client:
        worker_id = (await client.authenticate()).worker_id
        for _ in range(CYCLES):
            await before_cycle(clocks["before"], grid, worker_id, diff)
            await node.settled()
            await after_cycle(clocks["after"], client, worker_id, diff, None)
            await node.settled()
            await after_cycle(clocks["files"], files_client, worker_id, diff_path, tmp)
            await node.settled()
    return clocks


def frame_build_ms(diff: bytes, runs: int = 30) -> tuple[float, float]:
    """Median ms to build the WS report frame: json.dumps of the object vs the spliced text (same bytes)."""
    request_id = uuid.uuid4().hex

    def dumps() -> bytes:  # the old client: base64 → str → json.dumps → UTF-8 (in send_str)
        data = {"worker_id": "w" * 36, "request_key": "k" * 64, "diff": base64.b64encode(diff).decode()}
        return json.dumps({"type": "model-centric/report", "data": data, "request_id": request_id}).encode()

    def spliced() -> bytes:
        return frames.report_frame("w" * 36, "k" * 64, diff, ws_type="model-centric/report", request_id=request_id)

    assert dumps() == spliced()
    medians = []
    for build in (dumps, spliced):
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            build()
            times.append((time.perf_counter() - start) * 1000)
        medians.append(statistics.median(times))
    return medians[0], medians[1]


async def test_cycle_exchanges_before_and_after(tmp_path: Path) -> None:
    diff = zero_diff()
    diff_path = tmp_path / "diff"
    diff_path.write_bytes(diff)
    client_config = {"batch_size": 64, "lr": 0.005, "max_updates": 1}
    server_config = {"cycle_length": 3600, "num_cycles": 0, "min_diffs": 1, "max_diffs": 1}
    results: dict[tuple[str, str], Clock] = {}
    async with running_node() as node:
        node.host("mnist", "1.0", MODEL, {"training_plan": PLAN}, client_config, server_config)
        for transport in ("ws", "http"):
            grid = GridConfig(url=node.url, model="mnist", version="1.0", transport=transport)
            for variant, clock in (await interleaved(node, grid, diff, diff_path, tmp_path)).items():
                results[(transport, variant)] = clock
        assert node.checkpoint_number("mnist") == 1 + 6 * CYCLES
    dumps_ms, splice_ms = frame_build_ms(diff)
    print(f"\none cycle's exchanges, 1.25 MB model, median of {CYCLES - 1} warm cycles, ms (ratio after/before):")
    for transport in ("ws", "http"):
        old, new, files = (results[(transport, v)] for v in ("before", "after", "files"))
        print(f"  {transport:4s} {'step':14s} {'before':>8s} {'after':>8s} {'ratio':>6s} {'to files':>9s}")
        for step in STEPS:
            b, a, f = old.median(step), new.median(step), files.median(step)
            print(f"       {step:14s} {b:8.2f} {a:8.2f} {a / b:5.2f}× {f:9.2f}")
    print(
        f"  report frame (WS, 1.67 MB base64): json.dumps {dumps_ms:.2f} ms, spliced {splice_ms:.2f} ms "
        f"({splice_ms / dumps_ms:.2f}×), identical bytes"
    )
    for transport in ("ws", "http"):
        old_total = results[(transport, "before")].median("total") + dumps_ms - splice_ms
        new_total = results[(transport, "after")].median("total")
        print(
            f"  {transport:4s} total with the old frame building: before {old_total:.2f} ms, after {new_total:.2f} ms "
            f"({new_total / old_total:.2f}×)"
        )
