"""Bookkeeping off the cycle's path (issue 15): history writes and the removal of a reported entry's
files wait for a quiet moment (or ``MAX_WAIT_S``), keep their order, and are all done by ``flush``.
Real ``History`` and ``Spool`` on a real file system, real worker threads."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import pytest

from syftd.history import History
from syftd.jobs import bookkeeping
from syftd.jobs.bookkeeping import Bookkeeping
from syftd.spool import SPARE_DIFF, Spool
from syftd.spoolentry import SpoolEntry

pytestmark = pytest.mark.timeout(30)


class _Recorded:
    """``History``'s on_record callback, from its worker thread: what was written and when."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.entries: list[tuple[float, str]] = []
        self.changed = asyncio.Event()

    def __call__(self, entry: dict[str, Any]) -> None:
        self.entries.append((time.monotonic(), entry["cycle_id"]))
        self.loop.call_soon_threadsafe(self.changed.set)

    async def next(self, timeout: float) -> None:
        await asyncio.wait_for(self.changed.wait(), timeout)
        self.changed.clear()


async def test_writes_wait_for_a_quiet_moment_then_run_in_order(tmp_path: Path) -> None:
    """Queued while a cycle is on its path: not written within 0.5 s; written in their order (the
    update after its record) as soon as the manager says quiet."""
    recorded = _Recorded()
    books = Bookkeeping(History(tmp_path, on_record=recorded))
    books.set_quiet(False)
    books.record("mnist", {"cycle_id": "c1", "outcome": "spooled"})
    books.update("mnist", "c1", outcome="reported")
    books.record("mnist", {"cycle_id": "c2", "outcome": "done"})
    with pytest.raises(asyncio.TimeoutError):
        await recorded.next(timeout=0.5)  # the window in which a write must not run
    quiet_at = time.monotonic()
    books.set_quiet(True)
    await books.flush()
    assert [cycle for _t, cycle in recorded.entries] == ["c1", "c2"]
    assert all(t >= quiet_at for t, _cycle in recorded.entries)
    assert [(e["cycle_id"], e["outcome"]) for e in books.history.entries("mnist")] == [
        ("c1", "reported"),
        ("c2", "done"),
    ]


async def test_a_write_that_waited_max_wait_s_runs_without_a_quiet_moment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long download must not hold the history for minutes: after MAX_WAIT_S it is written anyway."""
    monkeypatch.setattr(bookkeeping, "MAX_WAIT_S", 0.2)
    recorded = _Recorded()
    books = Bookkeeping(History(tmp_path, on_record=recorded))
    books.set_quiet(False)
    queued_at = time.monotonic()
    books.record("mnist", {"cycle_id": "c1", "outcome": "done"})
    await recorded.next(timeout=10)
    assert recorded.entries[0][0] - queued_at >= 0.2


async def test_flush_runs_everything_queued_even_when_not_quiet(tmp_path: Path) -> None:
    """The daemon stops mid-cycle: flush writes the history and removes a reported entry's files (its
    diff's stays as the spool's spare)."""
    spool = Spool(tmp_path)
    entry = await asyncio.to_thread(_reported_entry, spool)
    books = Bookkeeping(History(tmp_path))
    books.set_quiet(False)
    books.record("mnist", {"cycle_id": "c1", "outcome": "done"})
    books.tidy(spool, entry)
    await books.flush()
    assert [e["cycle_id"] for e in await asyncio.to_thread(History(tmp_path).entries, "mnist")] == ["c1"]
    left = await asyncio.to_thread(lambda: [p.name for p in (tmp_path / "jobs/mnist/spool").iterdir() if p.is_file()])
    assert left == [SPARE_DIFF]


def _reported_entry(spool: Spool) -> SpoolEntry:
    diff = b"\x0a\x00"
    spool.diff_file("mnist", "c1").write_bytes(diff)
    entry = spool.commit(
        "mnist", "c1", size=2, sha256=hashlib.sha256(diff).hexdigest(),
        worker_id="w", request_key="k", plan_id=1, model_id=1,
    )  # fmt: skip
    spool.mark_reported(entry, tidy=False)
    return entry


async def test_a_failing_write_is_logged_and_the_next_ones_still_run(tmp_path: Path) -> None:
    """A value the history cannot store: history.write_failed, and the entry after it is written."""
    from structlog.testing import capture_logs

    books = Bookkeeping(History(tmp_path))
    with capture_logs() as logs:
        books.record("mnist", {"cycle_id": "c1", "bad": object()})
        books.record("mnist", {"cycle_id": "c2"})
        await books.flush()
    assert [line["event"] for line in logs if line["log_level"] == "error"] == ["history.write_failed"]
    assert [e["cycle_id"] for e in books.history.entries("mnist")] == ["c2"]
