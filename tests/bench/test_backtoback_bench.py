"""Benchmark (make bench): back-to-back cycles against the local node in its default revision, which
answers a report at once and averages 0.2 s later (as a real PyGrid node does), with ``interval_s = 0``.

Prints cycles per minute, and splits the span into the worker's own time (its done cycles, from
cycle.started to cycle.finished) and the time between a report and the next accepted cycle, which is
the wait for the node's averaging (the rejected attempts and their short retries fall in it).
"""

from __future__ import annotations

import datetime as dt
import itertools
import statistics

import pytest
from support.harness import Harness, eventually

pytestmark = [pytest.mark.torch, pytest.mark.dbus, pytest.mark.timeout(900)]

CYCLES = 20


def _when(entry: dict) -> float:
    return dt.datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()


async def test_back_to_back_cycles_per_minute_against_a_node_averaging_after_its_answer(harness: Harness) -> None:
    """Prints cycles/min and the averaging wait apart from the worker's own time."""
    harness.host(max_updates=5)
    harness.write_config().write_text(harness.config_path.read_text().replace("interval_s = 3600", "interval_s = 0"))
    daemon = await harness.start()

    def done() -> list[dict]:
        return [f for f in daemon.events("cycle.finished") if f["outcome"] == "done"]

    await eventually(lambda: len(done()) >= CYCLES + 1, timeout=600)
    await harness.stop()
    started = {e["cycle"]: _when(e) for e in daemon.events("cycle.started")}
    finished = daemon.events("cycle.finished")
    rejected = [f for f in finished if f["outcome"] == "rejected"]
    cycles = done()[: CYCLES + 1]
    own = [_when(f) - started[f["cycle"]] for f in cycles[1:]]
    gaps = [started[current["cycle"]] - _when(previous) for previous, current in itertools.pairwise(cycles)]
    span = _when(cycles[-1]) - _when(cycles[0])
    print()
    print(
        f"{CYCLES} back-to-back 5-step MNIST cycles, node averaging 0.2 s after its answer: "
        f"{CYCLES / span * 60:.1f} cycles/min over {span:.1f} s; worker's own time per cycle median "
        f"{statistics.median(own) * 1000:.0f} ms (max {max(own) * 1000:.0f}); wait for the node's averaging "
        f"per cycle median {statistics.median(gaps) * 1000:.0f} ms (max {max(gaps) * 1000:.0f}), "
        f"{len(rejected)} rejections ({len(rejected) / CYCLES:.1f} per cycle); total {sum(own):.1f} s own, "
        f"{sum(gaps):.1f} s waiting"
    )
