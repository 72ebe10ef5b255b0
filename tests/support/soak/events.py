"""The one place the soak reads the daemon's external behaviour: which JSON log lines mean what for the
ledger, which node answers say a cycle is gone, and which spool files are pending.

Everything else in the soak works on the ``Fact`` values made here, so when the daemon renames an
event or a field (or spools differently) only this module changes. Does not own deciding what the facts
add up to (``ledger``) or collecting the lines (``world``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["GONE_ANSWERS", "Fact", "facts", "is_gone", "pending_spool", "when"]

# daemon log event -> the soak's fact kind
_KINDS = {
    "cycle.started": "cycle_started",
    "cycle.finished": "cycle_finished",
    "spool.added": "diff_finished",  # the diff is durable: from here on it must reach the node or be discarded
    "cycle.diff_unspooled": "diff_unspooled",  # the disk refused it: reported from memory, never spooled
    "cycle.diff_uncommitted": "diff_unspooled",  # the disk refused its commit: reported from its file, never spooled
    "spool.reported": "diff_reported",
    "spool.discarded": "diff_discarded",
    "spool.quarantined": "diff_quarantined",
    "daemon.ready": "ready",
}

GONE_ANSWERS = (
    "Cycle not found!",
    "Invalid request key!",
    "Model ID not found!",
    "Worker ID not found!",  # the node forgot the worker (a restart): its rows went with it
    "no worker cycle for this worker_id and request_key",  # the local node's report answer for the same
)
"""The node's words for "this worker's cycle is gone": the only answers after which a diff may be discarded."""


@dataclass(frozen=True, slots=True)
class Fact:
    """One thing the daemon said, as the ledger needs it. ``at`` is wall-clock seconds (the line's timestamp)."""

    kind: str
    at: float
    pid: int
    cycle_id: str | None = None
    sha: str | None = None
    """A prefix of the diff's sha256 (as logged), for matching the node's rows."""
    outcome: str | None = None
    reason: str | None = None
    retry_in_s: float | None = None
    """How long a finished cycle said the job now waits (``cycle.finished``'s ``retry_in_s``)."""


def when(entry: dict[str, Any]) -> float:
    """A log line's wall-clock time in seconds."""
    return dt.datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()


def facts(entries: Iterable[dict[str, Any]], pid: int) -> Iterator[Fact]:
    """The ledger's facts among one daemon's JSON log lines, in order."""
    for entry in entries:
        kind = _KINDS.get(str(entry.get("event")))
        if kind is None or "timestamp" not in entry:
            continue
        cycle_id = entry.get("cycle_id") or entry.get("cycle")
        sha = entry.get("sha256")
        yield Fact(
            kind=kind,
            at=when(entry),
            pid=pid,
            cycle_id=str(cycle_id) if cycle_id is not None else None,
            sha=str(sha) if sha else None,
            outcome=entry.get("outcome"),
            reason=_text(entry.get("reason") or entry.get("problem")),
            retry_in_s=_number(entry.get("retry_in_s")),
        )


def is_gone(text: str | None) -> bool:
    """True if a node answer (or a discard reason quoting one) says the worker's cycle is gone."""
    return text is not None and any(words in text for words in GONE_ANSWERS)


def pending_spool(state_dir: Path, job: str) -> set[str] | None:
    """Cycle ids of the diffs spooled and neither reported nor discarded; None if the spool cannot be read."""
    spool = state_dir / "jobs" / job / "spool"
    try:
        names = {p.name for p in spool.iterdir()}
    except FileNotFoundError:
        return set()
    except OSError:
        return None
    pending = set()
    for name in names:
        stem, dot, suffix = name.rpartition(".")
        if dot and suffix == "json" and not any(f"{stem}.{m}" in names for m in ("reported", "discarded")):
            pending.add(stem)
    return pending


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)
