"""A cycle's files: the work directory its model and plan stream into, and the check of its diff on disk.

Owns ``<state_dir>/jobs/<job>/work/`` (one cycle of a job at a time: emptied when a cycle begins and
when it ends, so a crash leaves at most one cycle's downloads behind) and ``check_diff_file``: the
daemon's own check of the diff the trainer wrote, against the downloaded model, without holding
either in the heap for long. Up to ``CHECK_MAX_BYTES`` the files are read and checked with
``wire.check_diff``; a larger diff was checked by the trainer (the same function, on the bytes it
wrote) and only its size is checked here, so the daemon's memory does not grow with the model
(issue 15). Blocking: call through ``asyncio.to_thread``. Does not own the spool's files
(``syftd.spool``) nor the wire format (``syftd.grid.wire``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from syftd.errors import WireError
from syftd.grid.wire import check_diff
from syftd.spool import job_dir

__all__ = ["CHECK_MAX_BYTES", "PROBE_AFTER_S", "check_diff_file", "clear_work_dir", "work_dir"]

CHECK_MAX_BYTES = 4 * 1024 * 1024
"""The largest diff the daemon parses itself (parsing copies it: a bounded cost in memory)."""
PROBE_AFTER_S = 60.0
"""A fresh diff is reported without a get-plan probe when its cycle was requested less than this ago."""


def work_dir(state_dir: Path, job: str) -> Path:
    """The job's work directory, emptied (a crash may have left a cycle's downloads): 0700."""
    path = job_dir(state_dir, job) / "work"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700)
    return path


def clear_work_dir(path: Path) -> None:
    """Remove the cycle's downloads; a directory already gone is fine."""
    shutil.rmtree(path, ignore_errors=True)


def check_diff_file(diff: Path, model: Path) -> bool:
    """Check the diff in ``diff`` against the model in ``model``; True if parsed here, False if too large.

    Raises:
        WireError: the diff does not fit the model (as ``wire.check_diff``); its file was removed,
            as it will never be committed.
        OSError: a file cannot be read.
    """
    if diff.stat().st_size > CHECK_MAX_BYTES:
        return False
    try:
        check_diff(diff.read_bytes(), model.read_bytes())
    except WireError:
        diff.unlink(missing_ok=True)
        raise
    return True
