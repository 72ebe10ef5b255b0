"""Benchmark: the wire format on the recorded 1.25 MB MNIST model, and one cycle's protocol exchanges.

Targets (issue 4): parse and encode of the recorded model ≤ 5 ms each. Baselines measured in the
same run: copying the same number of bytes (the floor), and the same schema with the contents
declared ``repeated float`` as syft-proto does (what the ``bytes`` trick saves). For the client: a
full cycle's exchanges (authenticate, cycle-request, get-model, get-plan, probe, report) against the
local node over WS and HTTP, next to the same requests made with bare aiohttp (``RawWorker``).
"""

from __future__ import annotations

import array
import statistics
import time
from collections.abc import Callable

from conftest import FIXTURES
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from support.gridnode import RawWorker, running_node

from syftd.config import GridConfig
from syftd.grid import syft_pb2, wire
from syftd.grid.client import GridClient

GOLDEN = FIXTURES / "golden-cycle"
MODEL = (GOLDEN / "012-http-GET-model-centric_get-model.response.bin").read_bytes()
PLAN = (GOLDEN / "013-http-GET-model-centric_get-plan.response.bin").read_bytes()
RUNS = 50
CYCLES = 15
TARGET_MS = 5.0


def median_ms(call: Callable[[], object], runs: int = RUNS) -> float:
    call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def repeated_float_state() -> type:
    """The State message of syft.proto with the float contents as ``repeated float`` (syft-proto's own)."""
    file = descriptor_pb2.FileDescriptorProto()
    syft_pb2.DESCRIPTOR.CopyToProto(file)
    file.name, file.package = "bench/syft_repeated.proto", "bench.repeated"
    for message in file.message_type:
        for f in message.field:
            if f.type_name.startswith(".syftd.grid.wire."):
                f.type_name = f.type_name.replace(".syftd.grid.wire.", ".bench.repeated.")
            if message.name == "TensorData" and f.name in ("contents_float32", "contents_float16", "contents_bfloat16"):
                f.type, f.label = f.TYPE_FLOAT, f.LABEL_REPEATED
            elif message.name == "TensorData" and f.name == "contents_float64":
                f.type, f.label = f.TYPE_DOUBLE, f.LABEL_REPEATED
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("bench.repeated.State"))


def test_wire_parse_and_encode_of_the_recorded_model() -> None:
    tensors = wire.parse_state(MODEL)
    naive = repeated_float_state()

    def naive_parse() -> list[bytes]:
        state = naive.FromString(MODEL)
        return [array.array("f", t.torch_tensor.contents_data.contents_float32).tobytes() for t in state.tensors]

    def naive_encode() -> bytes:
        state = naive()
        for t in tensors:
            state.placeholders.add().id.id_int = 1
            tensor = state.tensors.add().torch_tensor
            tensor.id.id_int = 2
            tensor.serializer = 4
            tensor.contents_data.dtype = "float32"
            tensor.contents_data.shape.dims.extend(t.shape)
            tensor.contents_data.contents_float32.extend(array.array("f", t.data))
        return state.SerializeToString()

    assert naive_parse() == [t.data for t in tensors]
    parse = median_ms(lambda: wire.parse_state(MODEL))
    encode = median_ms(lambda: wire.encode_state(tensors))
    check = median_ms(lambda: wire.check_diff(MODEL, MODEL))
    copy = median_ms(lambda: bytes(bytearray(MODEL)))
    slow_parse = median_ms(naive_parse, 10)
    slow_encode = median_ms(naive_encode, 10)
    print(f"\nrecorded model: {len(MODEL):,} bytes, {sum(t.numel for t in tensors):,} float32, median of {RUNS}")
    print(f"  parse_state   {parse:7.2f} ms  (target ≤ {TARGET_MS} ms; {parse / copy:5.1f}× a plain copy)")
    print(f"  encode_state  {encode:7.2f} ms  (target ≤ {TARGET_MS} ms; {encode / copy:5.1f}× a plain copy)")
    print(f"  check_diff    {check:7.2f} ms")
    print(f"  baseline copy {copy:7.2f} ms")
    print(
        f"  repeated-float schema: parse {slow_parse:.1f} ms ({slow_parse / parse:.0f}× slower), "
        f"encode {slow_encode:.1f} ms ({slow_encode / encode:.0f}× slower)"
    )


async def test_client_full_cycle_exchanges_against_the_local_node() -> None:
    zero_diff = wire.encode_state([wire.Tensor(t.dtype, t.shape, bytes(len(t.data))) for t in wire.parse_state(MODEL)])
    client_config = {"batch_size": 64, "lr": 0.005, "max_updates": 1}
    server_config = {"cycle_length": 3600, "num_cycles": 0, "min_diffs": 1, "max_diffs": 1}
    results: dict[str, float] = {}
    async with running_node(averaging_delay_s=0) as node:
        node.host("mnist", "1.0", MODEL, {"training_plan": PLAN}, client_config, server_config)
        for transport in ("ws", "http"):
            grid = GridConfig(url=node.url, model="mnist", version="1.0", transport=transport)
            times = []
            async with GridClient(grid) as client:
                for _ in range(CYCLES):
                    start = time.perf_counter()
                    auth = await client.authenticate()
                    accepted = await client.cycle_request(auth.worker_id)
                    await client.get_model(auth.worker_id, accepted.request_key, accepted.model_id)
                    plan_id = accepted.plans["training_plan"]
                    await client.get_plan(auth.worker_id, accepted.request_key, plan_id)
                    await client.get_plan(auth.worker_id, accepted.request_key, plan_id)
                    await client.report(auth.worker_id, accepted.request_key, zero_diff)
                    await node.settled()  # the node averages after answering, as PyGrid does
                    times.append((time.perf_counter() - start) * 1000)
            results[f"GridClient {transport}"] = statistics.median(times[1:])
            times = []
            for _ in range(CYCLES):
                start = time.perf_counter()
                async with RawWorker(node.url, transport) as raw:
                    await raw.authenticate()
                    await raw.cycle_request()
                    await raw.get_model()
                    await raw.get_plan()
                    await raw.get_plan()
                    await raw.report(zero_diff)
                await node.settled()
                times.append((time.perf_counter() - start) * 1000)
            results[f"bare aiohttp {transport}"] = statistics.median(times[1:])
        assert node.checkpoint_number("mnist") == 1 + 4 * CYCLES
    print(f"\none cycle's exchanges with the 1.25 MB model, median of {CYCLES - 1} (node averaging included):")
    for name, ms in results.items():
        print(f"  {name:18s} {ms:7.1f} ms")
    for transport in ("ws", "http"):
        ratio = results[f"GridClient {transport}"] / results[f"bare aiohttp {transport}"]
        print(f"  GridClient / bare aiohttp ({transport}): {ratio:.2f}×")
    print("  (GridClient keeps one WebSocket for its whole life, as RawWorker does for one cycle;")
    print("   tests/bench/test_client_bench.py compares that with the per-phase connections it replaced)")
