"""The reports the local node stored, in arrival order, each with its raw diff on disk.

Owns ``ReportRecord`` (who reported, for which process and cycle, over which transport, where the diff
is in the node's store, its size and sha256) and ``ReportLog``, which numbers each report node-wide,
writes its diff to the store (off the event loop) and keeps the records for the test controls and
``wait_for``. Does not own whether a report is accepted (``state``), the hold point before it is
stored (``controls``), completing the cycle it belongs to (``cycles``) or the files' layout (``store``).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from syftd.node.records import Cycle
from syftd.node.store import Store

__all__ = ["ReportLog", "ReportRecord"]


@dataclass(frozen=True, slots=True)
class ReportRecord:
    """A report the node stored: who, for which process and cycle, over which transport, and where its
    raw diff is on disk (``diff`` reads it back while the node's store exists)."""

    worker_id: str
    request_key: str
    model: str
    version: str
    cycle: int
    diff_path: Path
    diff_size: int
    diff_sha256: str
    transport: Literal["ws", "http"]
    number: int
    """The node-wide sequence number of the report (1, 2, ...), which names its diff file."""

    @property
    def diff(self) -> bytes:
        """The raw diff bytes as reported (read from the node's store)."""
        return self.diff_path.read_bytes()

    def summary(self) -> dict[str, Any]:
        """The record as JSON-able values (the diff as size and sha256)."""
        return {
            "worker_id": self.worker_id,
            "request_key": self.request_key,
            "model": self.model,
            "version": self.version,
            "cycle": self.cycle,
            "diff_size": self.diff_size,
            "diff_sha256": self.diff_sha256,
            "transport": self.transport,
        }


class ReportLog:
    """The stored reports of one node, in arrival order."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._records: list[ReportRecord] = []
        self._numbers = itertools.count(1)

    def __len__(self) -> int:
        return len(self._records)

    @property
    def records(self) -> list[ReportRecord]:
        """Every report stored so far, in arrival order (a copy)."""
        return list(self._records)

    async def keep(
        self, worker_id: str, request_key: str, cycle: Cycle, diff: bytes, transport: Literal["ws", "http"]
    ) -> ReportRecord:
        """Write ``diff`` to the store (whole or not at all) and record the report.

        Raises:
            OSError: the store refused the write (nothing is recorded then).
        """
        process, number = cycle.process, next(self._numbers)
        path = self._store.diff_path(process.name, process.version, cycle.number, number)
        digest = await asyncio.to_thread(self._write, path, diff)
        record = ReportRecord(
            worker_id, request_key, process.name, process.version, cycle.number, path, len(diff), digest, transport,
            number,
        )  # fmt: skip
        self._records.append(record)
        return record

    def _write(self, path: Path, diff: bytes) -> str:
        self._store.write(path, diff, cache=False)
        return hashlib.sha256(diff).hexdigest()
