"""What a crash left in a job's spool is cleared when the daemon starts (issue 14's ``Spool.recover``,
called by the job manager at start, when no cycle can be writing): temp files and diffs never
committed go; the job then runs its cycle as usual."""

from __future__ import annotations

import asyncio

import pytest
from jobs.conftest import World
from jobs.test_manager import manager
from structlog.testing import capture_logs
from support.harness import eventually

from syftd import events
from syftd.spool import SPARE_DIFF

pytestmark = pytest.mark.timeout(90)


async def test_start_removes_temp_files_and_uncommitted_diffs_and_keeps_committed_ones(world: World) -> None:
    """A temp file of an interrupted write and a diff whose ``.json`` was never written are removed at start
    (one ``spool.recovered`` line naming them), and the job's cycle runs and leaves nothing in the spool
    but its reported diff's file, kept as the spare the next diff is written over."""
    world.host()
    spool_dir = (await asyncio.to_thread(world.spool.diff_file, "tiny", "c-orphan")).parent
    await asyncio.to_thread((spool_dir / ".c-crash.diff.abc123.tmp").write_bytes, b"half a diff")
    await asyncio.to_thread((spool_dir / "c-orphan.diff").write_bytes, b"never committed")
    job = world.job()
    with capture_logs() as logs:
        async with manager(world, job) as jobs:
            await eventually(lambda: jobs.status()[0]["last_outcome"] is not None, timeout=60)
    recovered = [e for e in logs if e["event"] == events.SPOOL_RECOVERED]
    assert len(recovered) == 1 and set(recovered[0]["removed"]) == {".c-crash.diff.abc123.tmp", "c-orphan.diff"}
    left = sorted(p.name for p in await asyncio.to_thread(list, spool_dir.iterdir()) if p.name != "quarantine")
    assert left == [SPARE_DIFF], left
    assert await asyncio.to_thread(world.spool.pending, "tiny") == []


async def test_a_diff_the_disk_refuses_is_reported_from_memory_not_lost(world: World) -> None:
    """The spool directory disappears while the trainer trains (as a full or read-only disk refuses the
    file): the trainer returns the diff in memory and the cycle reports it from there: DONE, the node has
    it, one ``cycle.diff_unspooled`` line, the record says it was not spooled."""
    world.host()
    spool_dir = (await asyncio.to_thread(world.spool.diff_file, "tiny", "c-probe")).parent
    await world.gate("diff")
    try:
        with capture_logs() as logs:
            run = world.cycle(world.job())
            task = asyncio.ensure_future(run.run())
            await world.entered("diff")
            await asyncio.to_thread(spool_dir.rename, spool_dir.with_name("spool-away"))
            await world.open_gate("diff")
            record = await asyncio.wait_for(task, 60)
    finally:
        await world.open_gate("diff")
    assert record.ended.outcome.value == "done", record
    assert "not be spooled" in (record.error or "") and "reported from memory" in (record.error or "")
    assert len(world.reports()) == 1
    assert [e["event"] for e in logs].count(events.CYCLE_DIFF_UNSPOOLED) == 1
