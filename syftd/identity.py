"""The worker identity: the worker id a node gave this machine, kept per job across restarts.

Owns ``<state_dir>/jobs/<job>/worker.json`` (the worker id, the node it belongs to, and whether it is
assigned to a cycle this machine has no diff for yet). Reusing one worker id lets the node's "already
assigned to this cycle" rule keep one machine from putting two diffs into one cycle; a worker id left
in a cycle without a diff (the daemon killed mid-training) is not reused: the node would reject it for
that assignment until the cycle closes, so ``load_worker`` gives none and the cycle authenticates
afresh. Does not own when to authenticate afresh (the cycle forgets the id after an
expiration, ``Worker ID not found`` or an auth error). A ``worker.json`` that is not a regular file (a
directory, symlink, FIFO) is moved aside with a log line and the job authenticates afresh. What this
process last read or wrote is remembered per job, so ``known_worker`` answers without I/O for a
cycle that follows another (the daemon's cycles are the file's only writer). Blocking file I/O
elsewhere: call through ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from syftd import events
from syftd.log import get_logger
from syftd.spool import job_dir
from syftd.statedir import ForeignEntry, atomic_write, move_aside, read_regular

__all__ = ["Identity"]

_log = get_logger("syftd.identity")

_FILE = "worker.json"


class Identity:
    """Per-job worker ids in the state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._forgotten: set[str] = set()  # forgotten while the file could not be removed (read-only disk)
        # per job, what this process last read or wrote: (worker id, node, requires speed test, in cycle)
        self._known: dict[str, tuple[str, str | None, bool, bool]] = {}

    def known_worker(self, job: str, node: str | None = None) -> tuple[str, bool] | None:
        """The worker id ``load_worker`` would give, and whether it owes speed tests, from what this
        process last read or wrote (no I/O: the daemon's cycles are the file's only writer); None when
        not known here, so the caller reads the file (issue 15: a trip to a worker thread less per cycle)."""
        known = self._known.get(job)  # forget_worker drops it, so a forgotten id is never known
        if known is None:
            return None
        worker_id, saved_for, requires_speed_test, in_cycle = known
        if in_cycle or (node is not None and saved_for not in (None, node)):
            return None
        return worker_id, requires_speed_test

    def load_worker(self, job: str, node: str | None = None) -> str | None:
        """The saved worker id of ``job``; None when there is none, it is unreadable, or it was saved
        for another ``node`` (a worker id means nothing to a different node)."""
        if job in self._forgotten:
            return None
        self._known.pop(job, None)  # what the file says now
        document = self._read(job)
        if document is None:
            return None
        worker_id = document.get("worker_id") if isinstance(document, dict) else None
        if not isinstance(worker_id, str) or not worker_id:
            _log.warning(events.IDENTITY_UNREADABLE, job=job, problem="no worker_id string")
            return None
        saved_for = document.get("node")
        in_cycle = document.get("in_cycle") is True
        self._known[job] = (worker_id, saved_for, document.get("requires_speed_test") is True, in_cycle)
        if node is not None and saved_for not in (None, node):
            return None
        if in_cycle:
            _log.info(events.IDENTITY_RENEWED, job=job, note="the last cycle of this worker id ended without a diff")
            return None
        return worker_id

    def mark_in_cycle(self, job: str, in_cycle: bool) -> None:
        """Record that the saved worker id is (True) or is no longer (False, its diff is spooled) assigned
        to a cycle without a diff from this machine; no-op without a saved id.

        Only True is written durably: a False lost in a crash leaves the mark set, and the next cycle
        authenticates afresh (one request more), which is the safe side; so no fsync on the cycle's path.
        """
        path = job_dir(self.state_dir, job) / _FILE
        known = self._known.pop(job, None)  # unknown here until the file is written
        try:
            document = json.loads(path.read_bytes())
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            return
        if not isinstance(document, dict):
            return
        if document.get("in_cycle", False) is not in_cycle:
            document["in_cycle"] = in_cycle
            atomic_write(path, json.dumps(document).encode() + b"\n", durable=in_cycle)
        if known is not None and document.get("worker_id") == known[0]:
            self._known[job] = (known[0], known[1], known[2], in_cycle)

    def _read(self, job: str, *, quiet: bool = False) -> Any:
        """The parsed ``worker.json``, or None (missing, unreadable: logged unless ``quiet``; foreign: moved aside)."""
        path = job_dir(self.state_dir, job) / _FILE
        try:
            return json.loads(read_regular(path, max_bytes=1 << 20))
        except FileNotFoundError:
            return None
        except ForeignEntry as exc:
            aside = move_aside(path, "foreign")
            _log.warning(events.IDENTITY_UNREADABLE, job=job, problem=str(exc), moved_to=str(aside))
            return None
        except (ValueError, UnicodeDecodeError) as exc:
            if not quiet:
                _log.warning(events.IDENTITY_UNREADABLE, job=job, problem=str(exc))
            return None

    def save_worker(
        self, job: str, worker_id: str, node: str | None = None, *, requires_speed_test: bool = False
    ) -> None:
        """Keep ``worker_id`` for ``job`` (given by ``node``), atomically, owner-only.

        Raises:
            ValueError: an empty worker id.
        """
        if not worker_id:
            raise ValueError("worker_id must not be empty")
        document = {
            "worker_id": worker_id,
            "node": node,
            "saved_at": time.time(),
            "requires_speed_test": requires_speed_test,
        }
        self._known.pop(job, None)
        atomic_write(job_dir(self.state_dir, job) / _FILE, json.dumps(document).encode() + b"\n")
        self._forgotten.discard(job)
        self._known[job] = (worker_id, node, requires_speed_test, False)

    def forget_worker(self, job: str) -> None:
        """Drop the saved worker id (the next cycle authenticates afresh); idempotent. On a disk that refuses
        the removal (read-only) the id is forgotten in memory, logged, until the next ``save_worker``."""
        self._forgotten.add(job)
        self._known.pop(job, None)
        path = job_dir(self.state_dir, job) / _FILE
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except IsADirectoryError:
            move_aside(path, "foreign")
        except OSError as exc:
            _log.warning(events.IDENTITY_FORGOTTEN, job=job, kept_on_disk=True, problem=exc.strerror or str(exc))
            return
        self._forgotten.discard(job)
        _log.info(events.IDENTITY_FORGOTTEN, job=job)
