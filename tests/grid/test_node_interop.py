"""The project's GridClient against the local node: one full cycle per node revision and transport,
with the speed test and JWT, and the typed errors the node's refusals map to. Torch-free."""

from __future__ import annotations

import pytest
from support.gridnode import running_node, small_process

from syftd.config import GridConfig
from syftd.errors import GridAuthFailed, GridCycleGone, GridFinished, GridRejected, GridUnavailable
from syftd.grid import wire
from syftd.grid.client import GridClient

SECRET = "a-test-secret-that-is-32-bytes-long!"


def grid(url: str, transport: str) -> GridConfig:
    return GridConfig(url=url, model="mnist", version="1.0", transport=transport, timeout_s=10.0, speed_test_max_mb=0.2)


def diff_like(model: bytes) -> bytes:
    """A diff equal to the model itself (any values do; the node checks shapes and dtypes)."""
    return wire.encode_state(wire.parse_state(model))


@pytest.mark.parametrize(
    ("revision", "transport"),
    [("pg-dev", "ws"), ("pg-dev", "http"), ("pg-master", "ws"), ("pg-master", "http"), ("0914", "ws")],
)
async def test_client_runs_a_full_cycle_with_speed_test_against_each_revision(revision, transport):
    model, plans, client_config, server = small_process(
        server_config={"minimum_upload_speed": 0, "minimum_download_speed": 0}
    )
    async with running_node(revision, speed_test_bytes=50_000) as node:
        node.host("mnist", "1.0", model, plans, client_config, server)
        async with GridClient(grid(node.url, transport)) as client:
            auth = await client.authenticate()
            assert auth.requires_speed_test
            speed = await client.speed_test(auth.worker_id)
            accepted = await client.cycle_request(auth.worker_id, speed=speed)
            assert await client.get_model(auth.worker_id, accepted.request_key, accepted.model_id) == model
            plan = await client.get_plan(auth.worker_id, accepted.request_key, accepted.plans["training_plan"])
            assert wire.plan_torchscript(plan)
            with pytest.raises(GridRejected):
                await client.cycle_request(auth.worker_id, speed=speed)
            await client.report(auth.worker_id, accepted.request_key, diff_like(model))
        await node.settled()
        assert node.checkpoint_number("mnist") == 2
        assert [r.transport for r in node.reports] == [transport]


async def test_client_errors_map_from_the_nodes_refusals():
    model, plans, client_config, server = small_process(
        server_config={"num_cycles": 1, "authentication": {"type": "jwt", "secret": SECRET}}
    )
    import jwt

    async with running_node() as node:
        node.host("mnist", "1.0", model, plans, client_config, server)
        async with GridClient(grid(node.url, "ws"), token="bad") as client:
            with pytest.raises(GridAuthFailed):
                await client.authenticate()
        async with GridClient(grid(node.url, "ws"), token=jwt.encode({}, SECRET, algorithm="HS256")) as client:
            auth = await client.authenticate()
            accepted = await client.cycle_request(auth.worker_id)
            node.fail_next(1)
            with pytest.raises(GridUnavailable):
                await client.get_model(auth.worker_id, accepted.request_key, accepted.model_id)
            await node.close_cycle()
            with pytest.raises(GridCycleGone):
                await client.get_plan(auth.worker_id, accepted.request_key, accepted.plans["training_plan"])
            with pytest.raises(GridFinished):
                await client.cycle_request(auth.worker_id)
