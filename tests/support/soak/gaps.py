"""The soak's wedge measure: the longest time the job went without a cycle while it could have run one.

Pure: takes the daemon's ``cycle_started``/``cycle_finished`` facts, the daemons' deaths and the
intervals in which the job's conditions did not hold (on battery, offline, preparing for sleep, daemon
down, the drain), and returns the longest idle gap and the longest cycle. Idle time accumulates while
the conditions hold and no cycle runs, and starts again from zero at each cycle; a job that only retries a
spooled report counts as idle. A cycle whose daemon starts another before its ``cycle.finished``
ends there and is counted as unfinished; a cycle that starts before the wait the daemon announced
(``retry_in_s``) is over is counted as early (a hot loop). Does no I/O and reads no clock. Does not
own the thresholds (``run``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from support.soak.events import Fact

__all__ = ["Gaps", "measure"]

_ROUNDING_S = 0.1
"""``retry_in_s`` is logged rounded, and the two timestamps are read apart: this much early is on time."""


@dataclass(frozen=True, slots=True)
class Gaps:
    """The longest idle gap (seconds, and when it ended), the longest cycle (seconds), how many cycles
    ended with no ``cycle.finished`` line although their daemon lived on (it started another), and how
    many started before the wait announced by the one before (``retry_in_s``) was over."""

    longest_idle_s: float
    idle_ended_at: float
    longest_cycle_s: float
    unfinished: int
    early_starts: int
    """Cycles started before the wait their daemon announced at the end of the one before was over."""
    worst_early_s: float
    """The most any of those started too early, in seconds."""


def measure(
    facts: Iterable[Fact],
    deaths: dict[int, float],
    not_holding: Sequence[tuple[float, float]],
    start: float,
    end: float,
) -> Gaps:
    """Measure over [``start``, ``end``]; ``deaths`` maps a daemon's pid to when it was killed."""
    running: list[tuple[float, float]] = []
    open_cycles: dict[int, float] = {}
    unfinished, early, worst = 0, 0, 0.0
    announced: dict[int, Fact] = {}
    for fact in sorted(facts, key=lambda f: f.at):
        if fact.kind == "cycle_started":
            before = announced.pop(fact.pid, None)
            if before is not None and before.retry_in_s is not None:
                waited = fact.at - before.at
                if waited < before.retry_in_s - _ROUNDING_S:
                    early, worst = early + 1, max(worst, before.retry_in_s - waited)
            if fact.pid in open_cycles:  # the same daemon started another: the last one never logged its end
                running.append((open_cycles.pop(fact.pid), fact.at))
                unfinished += 1
            open_cycles[fact.pid] = fact.at
        elif fact.kind == "cycle_finished":
            announced[fact.pid] = fact
            if fact.pid in open_cycles:
                running.append((open_cycles.pop(fact.pid), fact.at))
    for pid, began in open_cycles.items():
        running.append((began, deaths.get(pid, end)))
    longest_cycle = max((b - a for a, b in running), default=0.0)

    points = sorted({start, end, *(t for span in (*running, *not_holding) for t in span if start < t < end)})
    idle, longest, ended = 0.0, 0.0, start
    for a, b in itertools.pairwise(points):
        middle = (a + b) / 2
        if any(s <= middle < e for s, e in running):
            idle = 0.0
        elif not any(s <= middle < e for s, e in not_holding):
            idle += b - a
            if idle > longest:
                longest, ended = idle, b
    return Gaps(round(longest, 3), ended, round(longest_cycle, 3), unfinished, early, round(worst, 3))
