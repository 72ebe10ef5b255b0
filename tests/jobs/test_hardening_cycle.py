"""Phase two of the hardening in-process, under blockbuster: a diff holding NaN (finite losses) ends the
cycle failed ``non_finite`` and is never spooled nor reported; a diff spooled by an older version that
holds NaN is discarded, not reported; a spooled diff older than ``schedule.spool_max_age_s`` is discarded
with a log line and no longer holds the job's new cycles."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import struct
import time

import pytest
from jobs.conftest import World
from jobs.test_manager import _finished, _until, manager
from structlog.testing import capture_logs

from syftd.config import ScheduleConfig
from syftd.grid import wire
from syftd.jobs.report import ReportRun
from syftd.outcomes import CycleOutcome, ExpiryReason, Failure, ReportOutcome

pytestmark = pytest.mark.timeout(90)


async def test_a_nan_diff_with_finite_losses_fails_the_cycle_and_is_never_reported(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stand-in returns a diff of NaN after steps with finite losses: FAILED non_finite naming the
    tensor, nothing spooled, nothing on the node."""
    monkeypatch.setenv("SYFTD_STANDIN_DIFF_VALUE", "nan")
    world.host()
    record = await asyncio.wait_for(world.cycle(world.job()).run(), 60)
    assert (record.ended.outcome, record.ended.failure) == (CycleOutcome.FAILED, Failure.NON_FINITE), record
    assert "NaN or infinite" in (record.error or "")
    assert record.steps == 5
    assert world.reports() == []
    assert await asyncio.to_thread(world.spool.pending, "tiny") == []


async def test_a_spooled_diff_past_its_age_limit_is_discarded_and_the_job_runs_again(world: World) -> None:
    """A diff spooled two days ago for an open cycle: with spool_max_age_s = 1 day the manager discards it
    (spool.discarded naming the limit) instead of reporting it, and the job's next cycle runs."""
    world.host()
    diff = bytes.fromhex("0a00")  # never sent: the limit comes before the probe
    await asyncio.to_thread(
        world.spool.add,
        "tiny",
        "c-old",
        diff,
        worker_id="w-gone",
        request_key="k-gone",
        plan_id=1,
        model_id=1,
        created=time.time() - 2 * 86400,
    )
    job = world.job(schedule=ScheduleConfig(interval_s=0, backoff_initial_s=0.2, spool_max_age_s=86400))
    with world.logs() as logs:
        async with manager(world, job):
            done = lambda: any(e.get("outcome") == "done" for e in _finished(logs))  # noqa: E731
            await _until(world, done, "a cycle.finished line with outcome done", timeout=60)
    [discarded] = [e for e in logs if e["event"] == "spool.discarded"]
    assert discarded["cycle_id"] == "c-old" and "spool_max_age_s" in discarded["reason"]
    assert len(world.reports()) == 1  # the new cycle's diff only
    assert await asyncio.to_thread(world.spool.pending, "tiny") == []


async def test_a_nan_diff_spooled_by_an_older_version_is_discarded_not_reported(world: World) -> None:
    """A real spooled diff of an open cycle, rewritten as an older syftd without the check could have spooled
    it (NaN values, size and sha256 matching, the first spool format): the report path discards it naming
    the NaN, the node gets nothing."""
    world.host()
    job = world.job()
    world.proxy.hold("report")
    run = world.cycle(job)
    running = asyncio.ensure_future(run.run())
    try:
        await world.proxy.entered("report")
        run.expire(ExpiryReason.NETWORK_LOST)
        record = await asyncio.wait_for(running, 10)
    finally:
        world.proxy.release()
    assert record.ended.outcome is CycleOutcome.SPOOLED, record
    [entry] = await asyncio.to_thread(world.spool.pending, "tiny")
    spool = world.base / "state" / "jobs" / "tiny" / "spool"
    nan = wire.encode_state(
        [
            wire.Tensor(t.dtype, t.shape, struct.pack(f"<{t.numel}f", *([math.nan] * t.numel)))
            for t in wire.parse_state(await asyncio.to_thread((spool / f"{entry.cycle_id}.diff").read_bytes))
        ]
    )
    meta = json.loads(await asyncio.to_thread((spool / f"{entry.cycle_id}.json").read_bytes))
    meta |= {"size": len(nan), "sha256": hashlib.sha256(nan).hexdigest()}
    del meta["format"]  # the first spool format, which an older syftd without the check wrote
    await asyncio.to_thread((spool / f"{entry.cycle_id}.diff").write_bytes, nan)
    await asyncio.to_thread((spool / f"{entry.cycle_id}.json").write_text, json.dumps(meta))
    [entry] = await asyncio.to_thread(world.spool.pending, "tiny")
    reporter = ReportRun("tiny", world.spool, lambda: world.session(job), asyncio.Event())
    with capture_logs() as logs:
        assert await reporter.report_all([entry]) == [(entry, ReportOutcome.DISCARDED)]
    [discarded] = [e for e in logs if e["event"] == "spool.discarded"]
    assert "NaN or infinite" in discarded["reason"]
    assert world.reports() == []
