"""A cycle's files: the work directory its model and plan stream into, and the diff's commit.

Owns ``<state_dir>/jobs/<job>/work/`` (one cycle of a job at a time: emptied when a cycle begins and
when it ends but for ``model.pb`` and ``plan.pb``, which the next cycle's downloads write over in place,
so a crash leaves at most one cycle's downloads behind), ``PROBE_AFTER_S``, and the two
trips to a worker thread that bracket the training (each trip costs a thread hand-off, so one per
side, issue 15): ``begin`` (the work directory, the saved worker id unless the cycle knows it already,
the diff's spool path; beside the cycle-request when the id is known) and
``settle`` (commit the diff, clear the worker id's in-cycle mark, empty the work directory; it runs
while the report is on its way, the cycle's reported marker waiting for it). The diff is read
here only by the commit, which hashes it (the trainer checked its tensors before it wrote it, and
hashes nothing, issue 15). Blocking: call through ``asyncio.to_thread``.
Does not own the spool's files (``syftd.spool``) nor the wire format (``syftd.grid.wire``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from pathlib import Path

from syftd.config import JobConfig
from syftd.identity import Identity
from syftd.spool import Spool, job_dir
from syftd.spoolentry import SpoolEntry
from syftd.statedir import ensure_dir

__all__ = ["PROBE_AFTER_S", "Begun", "begin", "clear_work_dir", "settle", "work_dir"]

MODEL_FILE, PLAN_FILE = "model.pb", "plan.pb"
REUSED = (MODEL_FILE, PLAN_FILE)
"""The work directory's files kept from one cycle to the next, written over by the next downloads."""
PROBE_AFTER_S = 60.0
"""A fresh diff is reported without a get-plan probe when its cycle was requested less than this ago."""


def work_dir(state_dir: Path, job: str) -> Path:
    """The job's work directory (0700), kept from one cycle to the next and emptied: a crash may have left
    a cycle's downloads in it. Something else under its name is moved aside (``statedir.ensure_dir``)."""
    path = ensure_dir(job_dir(state_dir, job), "work")
    clear_work_dir(path)
    return path


def clear_work_dir(path: Path) -> None:
    """Remove what is not the next cycle's, keeping the directory and the regular ``model.pb`` and
    ``plan.pb`` (the next downloads are written over their cached pages, issue 15); best effort (a
    directory already gone, or a disk turned read-only, leaves them for the next cycle's ``work_dir``)."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        return
    for entry in entries:
        if entry.name in REUSED and entry.is_file(follow_symlinks=False):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


@dataclasses.dataclass(frozen=True, slots=True)
class Begun:
    """What a cycle sets up before its first request: its files and the saved worker id."""

    cycle_id: str
    work: Path
    model: Path
    plan: Path
    diff: Path
    worker_id: str | None
    needs_speed_test: bool


def begin(spool: Spool, identity: Identity, job: JobConfig, cycle_id: str, *, with_worker: bool = True) -> Begun:
    """The emptied work directory, the saved worker id (and whether it owes speed tests), the diff's path.

    ``with_worker=False``: the files only (the cycle knows its worker id already); no worker id then.

    Raises:
        OSError: the state directory refused the work directory.
    """
    work = work_dir(spool.state_dir, job.name)
    worker_id, needs_speed_test = None, False
    if with_worker and identity.load_worker(job.name, job.grid.url) is not None:
        # the file was just read: whether the id owes speed tests is known with it
        worker_id, needs_speed_test = identity.known_worker(job.name, job.grid.url) or (None, False)
    diff = spool.diff_file(job.name, cycle_id)
    return Begun(cycle_id, work, work / MODEL_FILE, work / PLAN_FILE, diff, worker_id, needs_speed_test)


def settle(spool: Spool, identity: Identity, job: JobConfig, begun: Begun, entry: SpoolEntry) -> SpoolEntry:
    """Commit the diff the trainer wrote (durably: from here no crash loses it), clear the worker id's
    in-cycle mark (its diff is in that cycle now, so it may be reused), empty the work directory;
    the committed entry (with the file's sha256).

    The trainer checked the diff it wrote (docs/protocol.md §7: a diff the node could not parse would
    stall its process); the commit checks the file's size and hashes it.

    Raises:
        OSError: the diff file is missing or of another size, or the disk refused the commit.
    """
    committed = spool.commit_entry(entry)
    identity.mark_in_cycle(job.name, False)
    clear_work_dir(begun.work)
    return committed
