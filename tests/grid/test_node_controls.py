"""The local grid node's test controls (in-process methods and loopback-only /_test/ endpoints), its
checkpoint directory, and ``syftd node serve`` (alias ``syftd grid serve``) as a child process stopped by
SIGTERM or refusing to start. Torch-free."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from unittest import mock

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request
from support.gridnode import NodeControl, NodeProcess, RawWorker, host_over_ws, running_node, small_process

from syftd.grid import wire
from syftd.node.routes import build_app


def zero_diff(model: bytes) -> bytes:
    return wire.encode_state([wire.Tensor(t.dtype, t.shape, bytes(len(t.data))) for t in wire.parse_state(model)])


@pytest.mark.parametrize("transport", ["ws", "http"])
async def test_held_report_waits_until_released_then_is_stored(transport):
    model, plans, client, server = small_process()
    async with running_node() as node, RawWorker(node.url, transport) as worker:
        node.host("mnist", "1.0", model, plans, client, server)
        await worker.authenticate()
        await worker.cycle_request()
        node.hold_reports()
        report = asyncio.create_task(worker.report(zero_diff(model)))
        assert await node.wait_until(lambda: node.held_reports == 1, 10)
        assert not report.done() and node.reports == []
        node.release_reports()
        assert await asyncio.wait_for(report, 10) == {"status": "success"}
        assert len(node.reports) == 1 and node.held_reports == 0
        await node.settled()
        assert node.checkpoint_number("mnist") == 2


async def test_fail_next_answers_the_next_requests_503_including_the_websocket_handshake():
    async with running_node() as node, RawWorker(node.url, "http") as worker:
        node.host("mnist", "1.0", *small_process())
        node.fail_next(2)
        status, body = await worker.op("authenticate", {"model_name": "mnist", "model_version": "1.0"})
        assert status == 503 and "injected" in body["error"]
        assert worker.session is not None
        with pytest.raises(aiohttp.WSServerHandshakeError) as handshake:
            await worker.session.ws_connect(node.ws_url)
        assert handshake.value.status == 503
        assert (await worker.authenticate())["status"] == "success"
        node.fail_next(1, status=502)
        assert (await worker.get("retrieve-model", name="mnist"))[0] == 502


async def test_close_cycle_averages_what_was_reported_or_only_moves_on_when_nothing_was():
    model, plans, client, server = small_process(server_config={"min_diffs": 3, "max_diffs": 3, "num_cycles": 2})
    async with running_node() as node, RawWorker(node.url) as worker:
        node.host("mnist", "1.0", model, plans, client, server)
        assert await node.close_cycle("mnist", "1.0") is True
        await node.settled()
        assert node.checkpoint_number("mnist") == 1
        assert node.snapshot()["processes"][0]["cycle"] == 2
        await worker.authenticate()
        await worker.cycle_request()
        await worker.report(zero_diff(model))
        await node.settled()
        assert node.checkpoint_number("mnist") == 1
        assert await node.close_cycle() is True
        await node.settled()
        assert node.checkpoint_number("mnist") == 2
        assert await node.close_cycle() is False
        assert await worker.cycle_request() == {"status": "rejected"}


async def test_http_controls_hold_wait_close_and_state():
    model, plans, client, server = small_process(server_config={"min_diffs": 2, "max_diffs": 2})
    async with running_node() as node, RawWorker(node.url) as worker:
        node.host("mnist", "1.0", model, plans, client, server)
        control = NodeControl(node.url)
        try:
            await worker.authenticate()
            await worker.cycle_request()
            await control.hold_reports()
            report = asyncio.create_task(worker.report(zero_diff(model)))
            state = await control.wait(held=1, timeout=10)
            assert state["held"] == 1 and state["holding"] is True
            await control.release_reports()
            await asyncio.wait_for(report, 10)
            state = await control.wait(reports=1, timeout=10)
            assert state["reports"][0]["worker_id"] == worker.worker_id
            assert state["reports"][0]["diff_size"] == len(zero_diff(model))
            with pytest.raises(TimeoutError):
                await control.wait(checkpoint=2, timeout=0.2)
            assert await control.close_cycle("mnist") is True
            state = await control.wait(checkpoint=2, name="mnist", version="1.0", timeout=10)
            assert state["processes"][0]["checkpoint"] == 2
            await control.fail_next(1)
            assert (await control.state())["failing"] == 1
            assert (await worker.get("retrieve-model", name="mnist"))[0] == 503
        finally:
            await control.close()


async def test_controls_refuse_a_non_loopback_peer_with_403():
    """A peer address other than loopback cannot exist in this sandbox, so the request is a mocked one."""
    async with running_node() as node:
        app = build_app(node)
        for remote, status in (("10.1.2.3", 403), ("::ffff:192.0.2.1", 403), ("127.0.0.1", 200), ("::1", 200)):
            transport = mock.Mock()
            transport.get_extra_info.side_effect = lambda name, default=None, r=remote: (
                (r, 40000) if name == "peername" else default
            )
            request = make_mocked_request("GET", "/_test/state", app=app, transport=transport)
            match = await app.router.resolve(request)
            response = await match.handler(request)
            assert response.status == status, remote


async def test_controls_are_absent_when_disabled():
    async with running_node(test_controls=False) as node, aiohttp.ClientSession() as session:
        async with session.get(f"{node.url}/_test/state") as response:
            assert response.status == 404


async def test_the_store_directory_keeps_every_checkpoint_and_diff_and_a_temporary_one_is_removed_at_stop(tmp_path):
    model, plans, client, server = small_process()
    diff = zero_diff(model)
    async with running_node(checkpoint_dir=tmp_path) as node, RawWorker(node.url) as worker:
        node.host("mnist", "1.0", model, plans, client, server)
        await worker.authenticate()
        await worker.cycle_request()
        await worker.report(diff)
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["mnist/1.0/checkpoint-1.pb", "mnist/1.0/checkpoint-2.pb", "mnist/1.0/diffs/cycle-1-1.pb"]
    assert (tmp_path / "mnist" / "1.0" / "checkpoint-1.pb").read_bytes() == model
    assert (tmp_path / "mnist" / "1.0" / "diffs" / "cycle-1-1.pb").read_bytes() == diff
    async with running_node() as node:
        node.host("../..", "1.0", model, plans, client, server)
        root = node.store.root
        assert [p.name for p in root.iterdir()] == ["..%2F.."]  # one component inside the store
    assert not root.exists()


async def test_serve_as_a_child_process_hosts_over_ws_runs_a_cycle_and_exits_0_on_sigterm():
    model, plans, client, server = small_process()
    proc = NodeProcess("--revision", "pg-master", "--speed-test-mb", "0.01")
    await proc.start()
    try:
        answer = await host_over_ws(proc.ws_url, model, plans, {"name": "mnist", "version": "1.0", **client}, server)
        assert answer == {"type": "model-centric/host-training", "data": {"status": "success"}}
        async with RawWorker(proc.url, "http") as worker:
            await worker.authenticate()
            assert (await worker.cycle_request())["status"] == "accepted"
            await proc.control.hold_reports()
            report = asyncio.create_task(worker.report(zero_diff(model)))
            await proc.control.wait(held=1, timeout=10)
            await proc.control.release_reports()
            assert await asyncio.wait_for(report, 10) == {"status": "success"}
            state = await proc.control.wait(checkpoint=2, timeout=10)
            assert state["revision"] == "pg-master" and len(state["reports"]) == 1
    finally:
        status = await proc.stop()
    assert status == 0
    events = [json.loads(line)["event"] for line in proc.output if line.startswith("{")]
    assert "grid_node.cycle_completed" in events and events[-1] == "grid_node.stopped"


async def grid_serve(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[int, bytes, bytes]:
    """``python -m syftd grid serve ARGS`` (the alias of ``node serve``) run to its end within 60 s:
    its exit status, stdout and stderr."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syftd", "grid", "serve", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=cwd,
    )  # fmt: skip
    out, err = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode is not None
    return child.returncode, out, err


async def test_serve_refuses_a_port_in_use_with_a_clear_message_and_status_1():
    async with running_node() as node:
        status, _out, err = await grid_serve("--port", str(node.port))
    assert status == 1
    assert f"cannot listen on 127.0.0.1:{node.port}" in err.decode()


async def test_serve_without_the_node_extra_prints_one_line_naming_it_and_exits_69(tmp_path):
    """numpy is hidden from the child by a ``sitecustomize`` on PYTHONPATH that sets ``sys.modules["numpy"]``
    to None, so ``import numpy`` raises ModuleNotFoundError as in an installation without the extra."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['numpy'] = None\n")
    repo = Path(__file__).resolve().parents[2]
    path = os.pathsep.join(p for p in (str(tmp_path), str(repo), os.environ.get("PYTHONPATH", "")) if p)
    status, out, err = await grid_serve("--port", "0", env={**os.environ, "PYTHONPATH": path}, cwd=repo)
    assert status == 69
    assert out == b""
    assert err.decode().splitlines() == [
        "syftd node: the local node needs the 'node' extra (numpy): pip install 'syftd[node]'"
    ]


async def test_stopping_the_node_drops_held_reports_without_storing_them():
    model, plans, client, server = small_process(server_config={"min_diffs": 2, "max_diffs": 2})
    async with running_node() as node:
        node.host("mnist", "1.0", model, plans, client, server)
        async with RawWorker(node.url, "ws") as ws_worker, RawWorker(node.url, "http") as http_worker:
            for worker in (ws_worker, http_worker):
                await worker.authenticate()
                await worker.cycle_request()
            node.hold_reports()
            reports = [asyncio.create_task(w.report(zero_diff(model))) for w in (ws_worker, http_worker)]
            assert await node.wait_until(lambda: node.held_reports == 2, 10)
            await node.stop()
            results = await asyncio.gather(*reports, return_exceptions=True)
            assert isinstance(results[0], TypeError)  # receive_str() got the close frame
            assert "not stored" in results[1]["error"]
            assert node.reports == []


async def test_restart_cuts_connections_forgets_workers_and_their_open_rows_then_listens_on_the_same_port():
    """A restarted node answers on the same port, but a worker of before is unknown ("Worker ID not found!")
    and its unreported row is gone; a reported diff stays stored."""
    model, plans, client, server = small_process()
    async with running_node() as node:
        node.host("mnist", "1.0", model, plans, {**client}, {**server, "max_diffs": 2, "min_diffs": 2})
        async with RawWorker(node.url, "http") as reporter, RawWorker(node.url, "http") as waiting:
            for worker in (reporter, waiting):
                await worker.authenticate()
                assert (await worker.cycle_request())["status"] == "accepted"
            assert await reporter.report(zero_diff(model)) == {"status": "success"}
            port = node.port
            await node.restart(down_s=0.1)
            assert node.port == port
            status, body = await waiting.get_plan()
            assert (status, json.loads(body)["error"]) == (400, "Worker ID not found!")
            answer = await waiting.report(zero_diff(model))
            assert "no worker cycle" in answer["error"]
            assert len(node.reports) == 1
            await waiting.authenticate()
            assert (await waiting.cycle_request())["status"] == "accepted"
