"""Cycle overhead on the client (issue 15) and speed-test reuse (issue 12), against the project's node
over real loopback sockets: spliced report frames equal json.dumps byte for byte, downloads stream
to files under the cap, reports stream from files, one client serves many cycles on kept
connections, one plan download serves the cycles of one worker id, and one speed test serves the
requests of its reuse window."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.gridnode import diff_of, running_node, small_process

from syftd.config import GridConfig
from syftd.errors import GridProtocolError
from syftd.grid import client as client_module
from syftd.grid import frames, wire
from syftd.grid.client import GridClient, Speed, SpeedCache


def grid_for(url: str, **changes: Any) -> GridConfig:
    base = GridConfig(url=url, model="mnist", version="1.0", timeout_s=10.0, speed_test_max_mb=0.25)
    return dataclasses.replace(base, **changes)


ids = st.text(max_size=40)  # any text, quotes, backslashes and non-ASCII included


@settings(max_examples=200, deadline=None)
@given(worker_id=ids, request_key=ids, request_id=ids, diff=st.binary(max_size=3000), ws=st.booleans())
def test_spliced_report_frame_is_byte_identical_to_json_dumps(
    worker_id: str, request_key: str, request_id: str, diff: bytes, ws: bool
) -> None:
    """report_frame (base64 spliced into the JSON text) gives exactly json.dumps of the same object."""
    data = {"worker_id": worker_id, "request_key": request_key, "diff": base64.b64encode(diff).decode()}
    if ws:
        want = json.dumps({"type": "model-centric/report", "data": data, "request_id": request_id}).encode()
        got = frames.report_frame(worker_id, request_key, diff, ws_type="model-centric/report", request_id=request_id)
    else:
        want, got = json.dumps(data).encode(), frames.report_frame(worker_id, request_key, diff)
    assert got == want


@pytest.mark.parametrize("size", [0, 1, 2, 3, 196_607, 196_608, 196_609, 2_500_001])
def test_a_diff_file_encodes_like_the_whole_diff(tmp_path: Path, size: int) -> None:
    """Chunked base64 of a file (streamed, or filled into one buffer) equals the one-piece encoding."""
    raw = bytes(i * 7 % 251 for i in range(size))
    path = tmp_path / "diff"
    path.write_bytes(raw)
    whole = base64.b64encode(raw)
    assert b"".join(frames.file_b64_chunks(path)) == whole
    assert frames.b64_length(size) == len(whole)
    assert frames.encode_file_into(path, b"<", b">") == b"<" + whole + b">"


@pytest.mark.parametrize("announced", [999_999, 1_000_001])
async def test_a_diff_file_of_another_size_than_announced_is_refused_before_its_tail(
    tmp_path: Path, announced: int
) -> None:
    """The report's length is announced from the trainer's size while the spool commit that checks the
    file still runs: a file shorter or longer than announced raises OSError naming it, and the JSON's
    tail is never sent (the node sees a broken request, not a diff of the wrong size)."""
    path = tmp_path / "c1.diff"
    path.write_bytes(b"\x01" * 1_000_000)
    pieces: list[bytes] = []

    async def stream() -> None:
        async for piece in frames.streamed_report(b"<", path, b">", announced):
            pieces.append(piece)

    with pytest.raises(OSError, match=r"c1\.diff has (more|fewer) than"):
        await stream()
    assert pieces and pieces[-1] != b">"
    with pytest.raises(OSError, match=r"c1\.diff has 1000000 bytes, not the"):
        frames.encode_file_into(path, b"<", b">", announced)
    assert b"".join([p async for p in frames.streamed_report(b"<", path, b">", 1_000_000)]).endswith(b">")


def test_speed_cache_reuses_a_measurement_for_its_window_and_counts_bytes() -> None:
    """fresh() within max_age_s, None after it (or for a clock gone backwards); bytes counted once."""
    cache = SpeedCache(max_age_s=3600)
    assert cache.fresh(100.0) is None
    speed = Speed(5.0, 10.0, 2.0, bytes_down=1000, bytes_up=500)
    cache.store(speed, 100.0)
    assert cache.fresh(100.0) is speed and cache.fresh(3699.0) is speed
    assert cache.fresh(3700.0) is None and cache.fresh(99.0) is None
    assert cache.take_spent() == 1500 and cache.take_spent() == 0
    assert SpeedCache(max_age_s=0).fresh(0.0) is None


@pytest.mark.parametrize("transport", ["ws", "http"])
async def test_files_in_files_out_cycle_on_the_node(tmp_path: Path, transport: str) -> None:
    """download_cycle_to streams model and plan into files (at once), report_file sends the diff from a
    file; the node stores exactly the diff and averages it."""
    async with running_node() as node:
        node.host("mnist", "1.0", *small_process())
        async with GridClient(grid_for(node.url, transport=transport)) as client:
            auth = await client.authenticate()
            accepted = await client.cycle_request(auth.worker_id)
            model_path, plan_path = tmp_path / "model", tmp_path / "plan"
            size = await client.download_cycle_to(model_path, plan_path, auth.worker_id, accepted)
            model = model_path.read_bytes()
            assert size == len(model) + plan_path.stat().st_size
            assert model == await client.get_model(auth.worker_id, accepted.request_key, accepted.model_id)
            assert wire.plan_torchscript(plan_path.read_bytes())[:2] == b"PK"
            diff = wire.encode_state([dataclasses.replace(t) for t in wire.parse_state(model)])
            (tmp_path / "diff").write_bytes(diff)
            await client.report_file(auth.worker_id, accepted.request_key, tmp_path / "diff")
        await node.settled()
        [report] = node.reports
        assert report.diff == diff and report.transport == transport


async def test_concurrent_downloads_give_the_same_bytes_and_fail_together(tmp_path: Path) -> None:
    """get_model_and_plan equals the two sequential downloads; a cap breach in one fails the pair."""
    async with running_node() as node:
        node.host("mnist", "1.0", *small_process())
        async with GridClient(grid_for(node.url)) as client:
            auth = await client.authenticate()
            accepted = await client.cycle_request(auth.worker_id)
            model, plan = await client.get_model_and_plan(auth.worker_id, accepted)
            assert model == await client.get_model(auth.worker_id, accepted.request_key, accepted.model_id)
            assert plan == await client.get_plan(auth.worker_id, accepted.request_key, accepted.plans["training_plan"])
        async with GridClient(grid_for(node.url, max_download_mb=len(plan) / 2**20 / 2)) as client:
            with pytest.raises(GridProtocolError, match="exceeds the cap"):
                await client.get_model_and_plan(auth.worker_id, accepted)


async def test_one_client_serves_many_cycles_on_one_websocket() -> None:
    """Three back-to-back cycles through one client use one WebSocket handshake in all (was 2 per cycle)."""
    async with running_node() as node:
        node.host("mnist", "1.0", *small_process())
        handshakes = 0
        async with GridClient(grid_for(node.url)) as client:
            session = client.connection.session()  # the test counts WS handshakes on the client's session
            original = session.ws_connect

            def counting(*args: Any, **kwargs: Any) -> Any:
                nonlocal handshakes
                handshakes += 1
                return original(*args, **kwargs)

            session.ws_connect = counting  # type: ignore[method-assign]
            for _ in range(3):
                auth = await client.authenticate()
                accepted = await client.cycle_request(auth.worker_id)
                model, _plan = await client.get_model_and_plan(auth.worker_id, accepted)
                await client.report(auth.worker_id, accepted.request_key, wire.encode_state(wire.parse_state(model)))
                await node.settled()
    assert handshakes == 1
    assert len(node.reports) == 3


async def test_one_speed_test_serves_the_requests_of_its_window() -> None:
    """speed() measures once, then reuses the result while it is fresh; the bytes are told once; with a
    reuse window of 0 it measures every time (the old behaviour)."""
    async with running_node() as node:
        node.host("mnist", "1.0", *small_process(server_config={"minimum_download_speed": 0.0}))
        async with GridClient(grid_for(node.url)) as client:
            auth = await client.authenticate()
            assert auth.requires_speed_test
            first = await client.speed(auth.worker_id)
            assert first.bytes_spent > 0.25 * 2**20
            assert await client.speed(auth.worker_id) is first
            assert client.speed_cache.take_spent() == first.bytes_spent
            await client.cycle_request(auth.worker_id, speed=await client.speed(auth.worker_id))
            assert client.speed_cache.take_spent() == 0
        async with GridClient(grid_for(node.url, speed_test_reuse_s=0)) as client:
            again = await client.speed(auth.worker_id)
            assert await client.speed(auth.worker_id) is not again
            assert client.speed_cache.take_spent() > again.bytes_spent


async def _one_cycle(client: GridClient, node: Any, worker_id: str, work: Path) -> tuple[int, bytes]:
    """Request, download into ``work``, report a diff; the bytes downloaded and the plan file's bytes."""
    accepted = await client.cycle_request(worker_id)
    size = await client.download_cycle_to(work / "model", work / "plan", worker_id, accepted)
    model = (work / "model").read_bytes()
    (work / "diff").write_bytes(diff_of(model))
    await client.report_file(worker_id, accepted.request_key, work / "diff")
    await node.settled()
    return size, (work / "plan").read_bytes()


def _count_plan_downloads(node: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    fetched: list[str] = []
    real = node.download

    async def download(kind: str, query: Any) -> bytes:
        fetched.append(kind)
        return await real(kind, query)

    monkeypatch.setattr(node, "download", download)
    return fetched


@pytest.mark.parametrize("transport", ["ws", "http"])
async def test_the_plan_is_fetched_once_per_worker_id_and_written_from_memory_after(
    tmp_path: Path, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three cycles of one worker id: get-plan once, each cycle's plan file the same bytes, the later
    cycles' downloaded bytes the model's alone; after a new authenticate the plan is fetched again."""
    async with running_node(averaging_delay_s=0) as node:
        node.host("mnist", "1.0", *small_process())
        fetched = _count_plan_downloads(node, monkeypatch)
        async with GridClient(grid_for(node.url, transport=transport)) as client:
            auth = await client.authenticate()
            sizes, plans = [], []
            for _ in range(3):
                size, plan = await _one_cycle(client, node, auth.worker_id, tmp_path)
                sizes.append(size)
                plans.append(plan)
            assert fetched.count("plan") == 1 and fetched.count("model") == 3
            assert plans[0] == plans[1] == plans[2] and wire.plan_torchscript(plans[0])[:2] == b"PK"
            model_size = (tmp_path / "model").stat().st_size
            assert sizes == [model_size + len(plans[0]), model_size, model_size]
            again = await client.authenticate()
            await _one_cycle(client, node, again.worker_id, tmp_path)
            assert fetched.count("plan") == 2


async def test_a_plan_above_the_cap_is_fetched_every_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan larger than PLAN_CACHE_MAX is not kept: two cycles, two get-plan."""
    monkeypatch.setattr(client_module, "PLAN_CACHE_MAX", 16)
    async with running_node(averaging_delay_s=0) as node:
        node.host("mnist", "1.0", *small_process())
        fetched = _count_plan_downloads(node, monkeypatch)
        async with GridClient(grid_for(node.url, transport="http")) as client:
            auth = await client.authenticate()
            for _ in range(2):
                await _one_cycle(client, node, auth.worker_id, tmp_path)
        assert fetched.count("plan") == 2
