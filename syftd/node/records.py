"""The local node's records: FL processes with their plans, cycles, workers and worker-cycle rows.

Owns the row types of the node's in-memory tables and what each row says of itself (a cycle's
reported rows, a process's current cycle, completed-cycle count, summary, whether it needs a speed
test). Does not own the tables, nor the decisions PyGrid takes over them (``state``), transport
(``node``) or the checkpoint and diff bytes (``store``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["SPEED_MINIMUMS", "Assignment", "Cycle", "PlanRecord", "Process", "Worker"]

SPEED_MINIMUMS = {"minimum_upload_speed": "upload", "minimum_download_speed": "download"}
"""server_config keys of a minimum speed, and the worker speed each bounds (docs/protocol.md §2.1)."""


@dataclass(frozen=True, slots=True)
class PlanRecord:
    """A hosted plan: its integer id (as in cycle-request ``plans``), name and Plan bytes."""

    id: int
    name: str
    data: bytes


@dataclass(slots=True)
class Worker:
    """A worker row: a fresh one per authenticate; speeds overwritten by each cycle-request."""

    id: str
    ping: float | None = None
    download: float | None = None
    upload: float | None = None


@dataclass(slots=True)
class Assignment:
    """A worker-cycle row: the request key, and once reported the node-wide number of the report
    that holds its diff (a double report replaces it).

    ``valid`` is None until the node checked the diff against the model, then True or False.
    """

    worker_id: str
    request_key: str
    cycle: Cycle
    report: int | None = None
    completed: bool = False
    valid: bool | None = None


@dataclass(slots=True, eq=False)
class Cycle:
    """One cycle of a process: number (1, 2, …), start, end (None if ``cycle_length`` is null)."""

    process: Process
    number: int
    start: datetime
    end: datetime | None
    completed: bool = False
    assignments: dict[str, Assignment] = field(default_factory=dict)

    def reported(self) -> list[Assignment]:
        """Completed assignments whose diff is not known to be bad, in report order."""
        return [a for a in self.assignments.values() if a.completed and a.valid is not False]


@dataclass(slots=True, eq=False)
class Process:
    """A hosted FL process: identity, configs, plans and the number of its latest checkpoint."""

    id: int
    name: str
    version: str
    model_id: int
    client_config: dict[str, Any]
    server_config: dict[str, Any]
    plans: dict[str, PlanRecord]
    protocols: dict[str, bytes]
    averaging_plan: bytes | None
    checkpoint_number: int = 1
    """The number of the latest checkpoint (1 after hosting, +1 per cycle completed with diffs)."""
    cycles: list[Cycle] = field(default_factory=list)

    @property
    def completed_cycles(self) -> int:
        """How many cycles have completed."""
        return sum(1 for c in self.cycles if c.completed)

    def current_cycle(self) -> Cycle | None:
        """The last cycle that has not completed, if any."""
        return next((c for c in reversed(self.cycles) if not c.completed), None)

    def summary(self) -> dict[str, Any]:
        """Identity, checkpoint and current-cycle figures as JSON-able values (for the test controls)."""
        cycle = self.current_cycle()
        return {
            "name": self.name,
            "version": self.version,
            "model_id": self.model_id,
            "checkpoint": self.checkpoint_number,
            "completed_cycles": self.completed_cycles,
            "cycle": cycle.number if cycle is not None else None,
            "finished": cycle is None,
            "assigned": len(cycle.assignments) if cycle is not None else 0,
            "reported": len(cycle.reported()) if cycle is not None else 0,
        }

    @property
    def requires_speed_test(self) -> bool:
        """True iff a minimum speed is configured with a non-null value (docs/protocol.md §2.1)."""
        return any(self.server_config.get(key) is not None for key in SPEED_MINIMUMS)
