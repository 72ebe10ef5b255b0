"""The cycle's files (issue 15): downloads streamed to the job's work directory, the diff written by the
trainer into the spool and committed, a fresh diff reported from its file without a probe, a spooled
one probed and verified in bounded reads first."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from jobs.conftest import World

from syftd.errors import WireError
from syftd.jobs.report import ReportRun
from syftd.outcomes import CycleOutcome, ReportOutcome
from syftd.spool import Spool

pytestmark = pytest.mark.timeout(90)


async def test_a_fresh_diff_is_reported_from_its_file_without_a_probe(world: World) -> None:
    """DONE with one get-plan (the download, no probe) and one report; the node holds the spooled bytes;
    the work directory is emptied (kept for the next cycle) and nothing is pending."""
    world.host()
    run = world.cycle(world.job())
    record = await asyncio.wait_for(run.run(), 60)
    assert record.ended.outcome is CycleOutcome.DONE, record
    assert (world.proxy.seen["get-plan"], world.proxy.seen["report"]) == (1, 1)
    assert record.bytes_up == world.reports()[0].diff_size
    assert list((world.spool.state_dir / "jobs" / "tiny" / "work").iterdir()) == []
    assert await asyncio.to_thread(world.spool.pending, "tiny") == []


async def test_a_spooled_diff_is_probed_before_its_report(world: World) -> None:
    """A diff reported later (after a restart, a failure) is probed first: the node said its cycle is
    gone (an unknown worker), so it is discarded unsent."""
    world.host()
    diff = b"\x0a\x00"
    diff_path = await asyncio.to_thread(world.spool.diff_file, "tiny", "c1")
    await asyncio.to_thread(diff_path.write_bytes, diff)
    entry = await asyncio.to_thread(
        lambda: world.spool.commit(
            "tiny", "c1", size=2, sha256=hashlib.sha256(diff).hexdigest(),
            worker_id="stranger", request_key="k" * 64, plan_id=1, model_id=1,
        )
    )  # fmt: skip
    reporter = ReportRun("tiny", world.spool, lambda: world.session(world.job()), asyncio.Event())
    assert await reporter.report(entry) is ReportOutcome.DISCARDED
    assert (world.proxy.seen["get-plan"], world.proxy.seen["report"]) == (1, 0)


def test_a_damaged_spooled_file_is_quarantined_before_it_is_sent(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """verified_file reads in bounded pieces; a flipped byte quarantines the entry with a clear error."""
    spool = Spool(tmp_path)
    path = spool.diff_file("tiny", "c1")
    path.write_bytes(b"x" * 3_000_000)
    entry = spool.commit(
        "tiny", "c1", size=3_000_000, sha256=hashlib.sha256(b"x" * 3_000_000).hexdigest(),
        worker_id="w", request_key="k", plan_id=1, model_id=1,
    )  # fmt: skip
    assert spool.verified_file(entry) == path
    path.write_bytes(b"y" + b"x" * 2_999_999)
    with pytest.raises(WireError, match="cycle c1: diff damaged"):
        spool.verified_file(entry)
    assert spool.pending("tiny") == []


def test_commit_refuses_a_diff_file_of_the_wrong_size(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The trainer said N bytes, the file has fewer: OSError naming the file, nothing pending."""
    spool = Spool(tmp_path)
    spool.diff_file("tiny", "c1").write_bytes(b"abc")
    with pytest.raises(OSError, match=r"c1\.diff has 3 bytes, the trainer wrote 4"):
        spool.commit("tiny", "c1", size=4, sha256="0" * 64, worker_id="w", request_key="k", plan_id=1, model_id=1)
    assert spool.pending("tiny") == []
