"""GridClient against the project's PyGrid-compatible node (syftd.node.node) over real loopback sockets.

Every node revision of docs/protocol.md §0.2 with both transports, JWT on and off, and the error paths a worker
meets in practice. Torch-free: the hosted process is ``small_process`` (a tiny float32 model).
"""

from __future__ import annotations

import asyncio
import dataclasses
import struct
from typing import Any

import jwt
import pytest
from support.gridnode import running_node, small_process

from syftd.config import GridConfig
from syftd.errors import (
    GridAuthFailed,
    GridCycleGone,
    GridFinished,
    GridProtocolError,
    GridRejected,
    GridUnavailable,
    GridWorkerUnknown,
)
from syftd.grid import wire
from syftd.grid.client import GridClient

SECRET = "a-test-secret-that-is-32-bytes-long!"


def grid_for(url: str, **changes: Any) -> GridConfig:
    base = GridConfig(url=url, model="mnist", version="1.0", timeout_s=10.0, speed_test_max_mb=0.25)
    return dataclasses.replace(base, **changes)


def negated(model: bytes) -> bytes:
    """A diff (original − trained) that moves every parameter to twice its value: new = old − (−old)."""
    tensors = wire.parse_state(model)
    flipped = []
    for t in tensors:
        data = bytearray(t.data)
        for i in range(3, len(data), 4):
            data[i] ^= 0x80
        flipped.append(wire.Tensor(t.dtype, t.shape, bytes(data)))
    return wire.encode_state(flipped)


def _floats(tensor: wire.Tensor) -> list[float]:
    return [round(v, 5) for v in struct.unpack(f"<{tensor.numel}f", tensor.data)]


async def full_cycle(client: GridClient) -> tuple[bytes, bytes]:
    """authenticate → [speed test] → cycle-request → get-model → get-plan → probe → report; (model, diff)."""
    auth = await client.authenticate()
    speed = await client.speed_test(auth.worker_id) if auth.requires_speed_test else None
    accepted = await client.cycle_request(auth.worker_id, speed=speed)
    model = await client.get_model(auth.worker_id, accepted.request_key, accepted.model_id)
    plan = await client.get_plan(auth.worker_id, accepted.request_key, accepted.plans["training_plan"])
    assert wire.plan_torchscript(plan)[:2] == b"PK"
    diff = negated(model)
    wire.check_diff(diff, model)
    await client.get_plan(auth.worker_id, accepted.request_key, accepted.plans["training_plan"])
    await client.report(auth.worker_id, accepted.request_key, diff)
    return model, diff


@pytest.mark.parametrize(
    ("revision", "transport"),
    [("pg-dev", "ws"), ("pg-dev", "http"), ("pg-master", "ws"), ("pg-master", "http"), ("0914", "ws")],
)
async def test_full_cycle_on_each_node_revision(revision: str, transport: str) -> None:
    """A whole cycle succeeds on PG-dev, PG-master and the 09-14 node (WS needs request_id there)."""
    model, plans, client_config, server = small_process()
    async with running_node(revision=revision) as node:
        node.host("mnist", "1.0", model, plans, client_config, server)
        async with GridClient(grid_for(node.url, transport=transport)) as client:
            got_model, diff = await full_cycle(client)
        assert got_model == model
        assert [(r.diff, r.transport) for r in node.reports] == [(diff, transport)]
        await node.settled()
        assert node.checkpoint_number("mnist") == 2
        averaged = wire.parse_state(await node.retrieve("mnist", "1.0", "latest"))
        assert [_floats(t) for t in averaged] == [[2 * v for v in _floats(t)] for t in wire.parse_state(model)]


async def test_0914_node_over_http_is_unavailable_as_pygrid_was() -> None:
    """The 09-14…09-27 node answers HTTP cycle-request with 500 'request_id': the client says unavailable."""
    async with running_node(revision="0914") as node:
        node.host("mnist", "1.0", *small_process())
        async with GridClient(grid_for(node.url, transport="http")) as client:
            auth = await client.authenticate()
            with pytest.raises(GridUnavailable, match="HTTP 500"):
                await client.cycle_request(auth.worker_id)


@pytest.mark.parametrize("transport", ["ws", "http"])
async def test_jwt_process_accepts_the_signed_token_and_refuses_others(transport: str) -> None:
    """With authentication.secret: a HS256 token passes; none or a wrong one → GridAuthFailed."""
    auth_config = {"authentication": {"type": "jwt", "secret": SECRET}}
    async with running_node() as node:
        node.host("mnist", "1.0", *small_process(server_config=auth_config))
        good = jwt.encode({}, SECRET, algorithm="HS256")
        bad = jwt.encode({}, "another-secret-of-at-least-32-bytes!", algorithm="HS256")
        async with GridClient(grid_for(node.url, transport=transport), token=good) as client:
            await full_cycle(client)
            await node.settled()
        for token, text in [(None, "Authentication is required"), (bad, "is invalid")]:
            async with GridClient(grid_for(node.url, transport=transport), token=token) as client:
                with pytest.raises(GridAuthFailed, match=text):
                    await client.authenticate()


async def test_unknown_model_is_auth_failed() -> None:
    """Authenticating for a process the node does not host → GridAuthFailed (PyGrid's 'Not found any process')."""
    async with running_node() as node:
        node.host("mnist", "1.0", *small_process())
        for transport in ("ws", "http"):
            async with GridClient(grid_for(node.url, transport=transport, model="nope")) as client:
                with pytest.raises(GridAuthFailed, match="Not found any process"):
                    await client.authenticate()


async def test_wrong_request_key_is_cycle_gone_and_unknown_worker_is_worker_unknown() -> None:
    """get-model with a foreign key → GridCycleGone (401); a cycle-request or probe for a worker the node
    does not know → GridWorkerUnknown (a GridCycleGone: discard; also a GridAuthFailed: authenticate afresh)."""
    async with running_node() as node:
        node.host("mnist", "1.0", *small_process())
        async with GridClient(grid_for(node.url)) as client:
            auth = await client.authenticate()
            accepted = await client.cycle_request(auth.worker_id)
            with pytest.raises(GridCycleGone):
                await client.get_model(auth.worker_id, "0" * 64, accepted.model_id)
            stranger = "00000000-0000-0000-0000-000000000000"
            with pytest.raises(GridWorkerUnknown, match="Worker ID not found"):
                await client.cycle_request(stranger)
            with pytest.raises(GridWorkerUnknown, match="Worker ID not found"):
                await client.get_plan(stranger, accepted.request_key, accepted.plans["training_plan"])


async def test_cycle_already_taken_is_rejected_with_the_node_timeout() -> None:
    """The same worker asking twice in one cycle → GridRejected with ≈ the cycle's remaining time."""
    async with running_node() as node:
        node.host("mnist", "1.0", *small_process(server_config={"cycle_length": 120}))
        async with GridClient(grid_for(node.url)) as client:
            auth = await client.authenticate()
            await client.cycle_request(auth.worker_id)
            with pytest.raises(GridRejected) as caught:
                await client.cycle_request(auth.worker_id)
    assert 100 < caught.value.timeout_s <= 120


async def test_finished_process_is_grid_finished() -> None:
    """After the last cycle (num_cycles = 1) completes, a cycle request → GridFinished."""
    async with running_node() as node:
        node.host("mnist", "1.0", *small_process(server_config={"num_cycles": 1}))
        async with GridClient(grid_for(node.url, transport="http")) as client:
            await full_cycle(client)
            await node.settled()
            auth = await client.authenticate()
            with pytest.raises(GridFinished):
                await client.cycle_request(auth.worker_id)


async def test_cycle_closed_between_download_and_report_is_cycle_gone() -> None:
    """The get-plan probe before reporting → GridCycleGone once the node closed the cycle."""
    model, plans, client_config, server = small_process(server_config={"min_diffs": 2, "max_diffs": 2})
    async with running_node() as node:
        node.host("mnist", "1.0", model, plans, client_config, server)
        async with GridClient(grid_for(node.url)) as client:
            auth = await client.authenticate()
            accepted = await client.cycle_request(auth.worker_id)
            await client.get_model(auth.worker_id, accepted.request_key, accepted.model_id)
            assert await node.close_cycle("mnist", "1.0") is True
            with pytest.raises(GridCycleGone, match="Cycle not found"):
                await client.get_plan(auth.worker_id, accepted.request_key, accepted.plans["training_plan"])
            with pytest.raises(GridCycleGone):
                await client.get_model(auth.worker_id, accepted.request_key, accepted.model_id)


@pytest.mark.parametrize("transport", ["ws", "http"])
async def test_injected_503_is_unavailable_and_the_next_call_succeeds(transport: str) -> None:
    """The node failing requests with 503 (WS handshake included) → GridUnavailable; then it recovers."""
    async with running_node() as node:
        node.host("mnist", "1.0", *small_process())
        async with GridClient(grid_for(node.url, transport=transport)) as client:
            node.fail_next(1, 503)
            with pytest.raises(GridUnavailable, match="503"):
                await client.authenticate()
            await client.authenticate()


async def test_report_held_past_the_timeout_is_unavailable() -> None:
    """A node that sits on the report longer than grid.timeout_s → GridUnavailable, never a hang."""
    model, plans, client_config, server = small_process()
    async with running_node() as node:
        node.host("mnist", "1.0", model, plans, client_config, server)
        async with GridClient(grid_for(node.url, timeout_s=0.5)) as client:
            auth = await client.authenticate()
            accepted = await client.cycle_request(auth.worker_id)
            node.hold_reports()
            with pytest.raises(GridUnavailable, match="no answer within"):
                await client.report(auth.worker_id, accepted.request_key, negated(model))
            node.release_reports()
            assert await node.wait_until(lambda: node.held_reports == 0, 5)


async def test_speed_test_is_run_when_the_node_asks_and_its_numbers_are_accepted() -> None:
    """With minimum speeds configured the node asks for a speed test; the measured values pass its check."""
    server = {"minimum_download_speed": 0.001, "minimum_upload_speed": 0.001}
    async with running_node() as node:
        node.host("mnist", "1.0", *small_process(server_config=server))
        async with GridClient(grid_for(node.url)) as client:
            auth = await client.authenticate()
            assert auth.requires_speed_test
            speed = await asyncio.wait_for(client.speed_test(auth.worker_id), 30)
            accepted = await client.cycle_request(auth.worker_id, speed=speed)
    assert accepted.model_id >= 1 and speed.download > 0.001 and speed.upload > 0.001


@pytest.mark.parametrize("prefix", ["model_centric", "federated"])
async def test_older_route_prefixes_work_when_configured(prefix: str) -> None:
    """A node with a pre-2020-07-29 prefix serves a whole cycle to a client with the same grid.prefix."""
    model, plans, client_config, server = small_process()
    async with running_node(prefix=prefix) as node:
        node.host("mnist", "1.0", model, plans, client_config, server)
        for transport in ("ws", "http"):
            async with GridClient(grid_for(node.url, transport=transport, prefix=prefix)) as client:
                await full_cycle(client)
                await node.settled()
        assert [r.transport for r in node.reports] == ["ws", "http"]
        async with GridClient(grid_for(node.url, transport="http")) as client:
            with pytest.raises(GridProtocolError, match=r"grid\.prefix"):
                await client.authenticate()
