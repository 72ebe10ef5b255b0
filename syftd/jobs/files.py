"""A cycle's files: the work directory its model and plan stream into.

Owns ``<state_dir>/jobs/<job>/work/`` (one cycle of a job at a time: emptied when a cycle begins and
when it ends, so a crash leaves at most one cycle's downloads behind) and ``PROBE_AFTER_S``. The diff
is not read here: the trainer checks it with ``wire.check_diff`` on the bytes it writes and hashes,
and the daemon reads it only to send it (issue 15). Blocking: call through ``asyncio.to_thread``.
Does not own the spool's files (``syftd.spool``) nor the wire format (``syftd.grid.wire``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from syftd.spool import job_dir

__all__ = ["PROBE_AFTER_S", "clear_work_dir", "work_dir"]

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
