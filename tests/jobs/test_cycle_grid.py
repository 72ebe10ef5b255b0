"""The cycle and the report path read the client's typed answers (issue 14, items 1–2) and reuse one
speed test (issue 12): against the node (behind the proxy), a real spool and the stand-in trainer,
and a hostile node on 127.0.0.1 for the answers the local node never gives."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from jobs.conftest import World, tiny_model

from syftd.config import GridConfig, JobConfig
from syftd.grid import syft_pb2 as pb
from syftd.grid.client import GridClient, SpeedCache
from syftd.jobs.cycle import CycleRun
from syftd.jobs.report import ReportRun
from syftd.jobs.states import new_cycle_id
from syftd.outcomes import CycleOutcome, Ended, ReportOutcome

pytestmark = pytest.mark.timeout(90)


def _run(world: World, job: JobConfig, cache: SpeedCache | None = None) -> CycleRun:
    return CycleRun(
        job,
        cycle_id=new_cycle_id(),
        client=lambda: GridClient(job.grid, speed_cache=cache),
        pool=world.pool,
        spool=world.spool,
        identity=world.identity,
    )


async def test_a_spooled_diff_of_a_worker_the_node_forgot_is_discarded_then_a_new_worker_is_made(
    world: World,
) -> None:
    """After a node restart the probe says "Worker ID not found!": the diff is discarded (it used to stay
    pending with backoff growing to hours, issue 14.1) and the next cycle authenticates afresh, DONE."""
    world.host()
    job = world.job()
    stranger = str(uuid.uuid4())
    entry = await asyncio.to_thread(
        world.spool.add, "tiny", new_cycle_id(), tiny_model(), worker_id=stranger, request_key="k" * 64,
        plan_id=1, model_id=1,
    )  # fmt: skip
    reporter = ReportRun("tiny", world.spool, lambda: GridClient(job.grid), asyncio.Event())
    assert await reporter.report(entry) is ReportOutcome.DISCARDED
    assert await asyncio.to_thread(world.spool.pending, "tiny") == []
    await asyncio.to_thread(world.identity.save_worker, "tiny", stranger, job.grid.url)
    record = await asyncio.wait_for(_run(world, job).run(), 60)
    assert dataclasses.replace(record.ended, accepted=False) == Ended(CycleOutcome.DONE), record
    assert await asyncio.to_thread(world.identity.load_worker, "tiny", job.grid.url) not in (None, stranger)


@pytest.fixture
async def locked_node() -> AsyncIterator[str]:
    """A node whose probe succeeds and whose every report fails with SQLite's "database is locked"."""
    plan = bytes(pb.Plan(torchscript=b"stand-in").SerializeToString())

    async def get_plan(_request: web.Request) -> web.Response:
        return web.Response(body=plan, content_type="application/octet-stream")

    async def report(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"error": "(sqlite3.OperationalError) database is locked\nTraceback ..."})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/model-centric/get-plan", get_plan)
    app.router.add_post("/model-centric/report", report)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    await runner.cleanup()


async def test_a_locked_database_on_report_keeps_the_diff_pending(world: World, locked_node: str) -> None:
    """A transient report error (issue 14.2) leaves the diff PENDING in the spool, never discarded."""
    grid = GridConfig(url=locked_node, model="tiny", version="1.0", transport="http", timeout_s=10.0)
    entry = await asyncio.to_thread(
        world.spool.add, "tiny", new_cycle_id(), tiny_model(), worker_id="w", request_key="k", plan_id=1,
        model_id=1,
    )  # fmt: skip
    reporter = ReportRun("tiny", world.spool, lambda: GridClient(grid), asyncio.Event())
    assert await reporter.report(entry) is ReportOutcome.PENDING
    assert [e.cycle_id for e in await asyncio.to_thread(world.spool.pending, "tiny")] == [entry.cycle_id]


async def test_one_speed_test_serves_the_next_cycle_and_its_bytes_are_in_the_record(world: World) -> None:
    """The node asks for a speed test: the first cycle measures (its record and log line carry the bytes),
    the second reuses the measurement within grid.speed_test_reuse_s (0 bytes) and is still accepted."""
    world.host(minimum_download_speed=0.0)
    job = world.job()
    job = dataclasses.replace(job, grid=dataclasses.replace(job.grid, speed_test_max_mb=0.25))
    cache = SpeedCache(job.grid.speed_test_reuse_s)
    first = await asyncio.wait_for(_run(world, job, cache).run(), 60)
    await world.node.settled()  # the node averages after answering the report, as a real one does
    second = await asyncio.wait_for(_run(world, job, cache).run(), 60)
    assert (
        dataclasses.replace(first.ended, accepted=False)
        == dataclasses.replace(second.ended, accepted=False)
        == Ended(CycleOutcome.DONE)
    ), (first, second)
    assert first.speed_test_bytes > 0.25 * 2**20
    assert second.speed_test_bytes == 0
    assert first.as_dict()["speed_test_bytes"] == first.speed_test_bytes
