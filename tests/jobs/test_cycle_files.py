"""The cycle's files (issue 15): downloads streamed to the job's work directory, the diff written by the
trainer into the spool and committed while the report goes out, a fresh diff reported from its file
without a probe, a spooled one probed and verified in bounded reads first."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from typing import Any

import pytest
from jobs.conftest import World
from structlog.testing import capture_logs

import syftd.jobs.cycle as cycle_module
from syftd import events
from syftd.errors import WireError
from syftd.jobs.report import ReportRun
from syftd.outcomes import CycleOutcome, ReportOutcome
from syftd.spool import SPARE_DIFF, Spool

pytestmark = pytest.mark.timeout(90)


async def test_a_fresh_diff_is_reported_from_its_file_without_a_probe(world: World) -> None:
    """DONE with one get-plan (the download, no probe) and one report; the node holds the spooled bytes;
    the work directory keeps only the model and plan files (the next cycle writes over them), the spool
    only the diff's file as its spare, and nothing is pending."""
    world.host()
    run = world.cycle(world.job())
    record = await asyncio.wait_for(run.run(), 60)
    assert record.ended.outcome is CycleOutcome.DONE, record
    assert (world.proxy.seen["get-plan"], world.proxy.seen["report"]) == (1, 1)
    assert record.bytes_up == world.reports()[0].diff_size
    work = world.spool.state_dir / "jobs" / "tiny" / "work"
    assert sorted(p.name for p in work.iterdir()) == ["model.pb", "plan.pb"]
    assert [p.name for p in (world.spool.state_dir / "jobs" / "tiny" / "spool").iterdir()] == [SPARE_DIFF]
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


class _CommitAfterTheReport:
    """Holds the cycle's commit (``files.settle``, in its worker thread) until the node has answered the
    report (``grid.reported`` logged), then commits for real, or refuses as a full disk would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, refuse: bool = False) -> None:
        self.reported = threading.Event()
        real_settle = cycle_module.settle

        def settle_after_report(*args: Any) -> Any:
            assert self.reported.wait(20), "the report waited for the commit"
            if refuse:
                raise OSError(28, "No space left on device")
            return real_settle(*args)

        monkeypatch.setattr(cycle_module, "settle", settle_after_report)

    def processor(self, _logger: Any, _method: str, event: Any) -> Any:
        if event.get("event") == events.GRID_REPORTED:
            self.reported.set()
        return event


async def test_a_fresh_diff_goes_out_while_its_commit_runs_and_is_marked_only_after_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report does not wait for the commit's fsyncs: the node has the diff while the commit is
    still held back. The reported marker waits for the commit: nothing is pending afterwards."""
    world.host()
    held = _CommitAfterTheReport(monkeypatch)
    with capture_logs(processors=[held.processor]):
        record = await asyncio.wait_for(world.cycle(world.job()).run(), 60)
    assert held.reported.is_set()
    assert record.ended.outcome is CycleOutcome.DONE, record
    assert record.error is None
    assert len(world.reports()) == 1
    assert await asyncio.to_thread(world.spool.pending, "tiny") == []


async def test_a_diff_reported_whose_commit_failed_is_done_with_the_commit_error(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node has the diff, then the disk refuses the commit: DONE (the diff is not lost, the node
    holds it), the record names the refused commit, cycle.diff_uncommitted is logged, nothing pending."""
    world.host()
    held = _CommitAfterTheReport(monkeypatch, refuse=True)
    with capture_logs(processors=[held.processor]) as lines:
        record = await asyncio.wait_for(world.cycle(world.job()).run(), 60)
    assert record.ended.outcome is CycleOutcome.DONE, record
    assert record.error is not None and "could not be spooled" in record.error and "No space" in record.error
    uncommitted = [line for line in lines if line["event"] == events.CYCLE_DIFF_UNCOMMITTED]
    assert [len(line["sha256"]) for line in uncommitted] == [16], uncommitted  # as spool.added logs it
    assert len(world.reports()) == 1
    assert await asyncio.to_thread(world.spool.pending, "tiny") == []


async def test_the_reported_marker_records_the_hash_the_commit_computed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trainer hashes nothing; the entry the report marks is the committed one, whose sha256 is the
    file's (the marker's record says which bytes the node has)."""
    world.host()
    marked: list[str] = []
    real_mark = world.spool.mark_reported

    def mark_reported(entry: Any, **kwargs: Any) -> None:
        marked.append(entry.sha256)
        real_mark(entry, **kwargs)

    monkeypatch.setattr(world.spool, "mark_reported", mark_reported)
    record = await asyncio.wait_for(world.cycle(world.job()).run(), 60)
    assert record.ended.outcome is CycleOutcome.DONE, record
    assert marked == [hashlib.sha256(world.reports()[0].diff).hexdigest()]
