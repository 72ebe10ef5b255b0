"""Benchmark (make bench): phase × trigger → time to the EXPIRED result and to the trainer's exit.

The real daemon, the local node behind the hold proxy, the D-Bus mocks and real trainer processes,
held in each phase before a finished diff exists exactly as in tests/e2e/test_phases.py, then expired
by a lost constraint (OnBattery), the budget (``max_cycle_s``), SIGUSR2 and SIGTERM, ``RUNS`` times
each. Printed per cell: median and max of the time from the trigger (for the budget: the
``cycle.expiring`` line) to the ``cycle.finished`` line with outcome expired, and to the exit of the
trainer processes that existed at the trigger ("—" where none had started). The design's bounds are
``expiry_grace_s`` (2 s here) + 3 s; the baseline in the same run is the training phase, where the
trainer sees the flag at its next batch.
"""

from __future__ import annotations

import datetime as dt
import signal
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest
from support.harness import Harness, eventually
from support.holdproxy import HoldProxy
from support.phases import PHASES, alive, daemon_env, hold, trainer_processes
from support.waiting import poll_until

pytestmark = [pytest.mark.torch, pytest.mark.dbus, pytest.mark.timeout(3600)]

RUNS = 5
TRIGGERS = ("power", "budget", "sigusr2", "sigterm")
_RESULTS: dict[tuple[str, str], tuple[list[float], list[float]]] = {}


def _when(entry: dict) -> float:
    return dt.datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()


async def _wait_gone(processes: list[psutil.Process], timeout: float = 30) -> float:
    # a process's end sends this process no event: looked for every 5 ms (the figure's resolution)
    await poll_until(
        lambda: not any(alive(p) for p in processes), what="the trainers gone", timeout=timeout, every=0.005
    )
    return time.time()


async def _held_again(harness: Harness, proxy: HoldProxy, phase: str, after: int, status_after: int, seen: int) -> str:
    """Wait until the cycle after log index ``after`` is held in ``phase`` (the holds stay armed between
    runs); returns its cycle id."""
    daemon, notify = harness.daemon, harness.notify
    assert daemon is not None and notify is not None
    started = await daemon.wait_log("cycle.started", after=after, timeout=120)
    step, words = PHASES[phase]
    gates = harness.base / "gates"
    if step is not None:
        await eventually(lambda: proxy.seen[step] > seen, timeout=60)
        if phase == "downloading":
            await daemon.wait_log("trainer.spawned", after=after, timeout=60)
    elif phase == "starting trainer":
        await eventually(lambda: _entered_by_new_trainer(gates / "import.entered", harness), timeout=60)
    elif phase == "loading data":
        await eventually(lambda: _entered_by_new_trainer(gates / "load.entered", harness), timeout=120)
    else:
        await notify.wait_for(lambda m: words in m.fields.get("STATUS", ""), after=status_after, timeout=120)
    return str(started["cycle"])


def _entered_by_new_trainer(entered: Path, harness: Harness) -> bool:
    """The gate was reached by one of the daemon's live trainers (not by an earlier run's)."""
    try:
        pid = int(entered.read_text() or 0)
    except (FileNotFoundError, ValueError):
        return False
    return pid in {p.pid for p in trainer_processes(harness) if alive(p)}


@pytest.fixture
async def proxy(harness: Harness) -> AsyncIterator[HoldProxy]:
    async with HoldProxy(harness.node.node.url) as started:
        yield started


@pytest.mark.parametrize("trigger", TRIGGERS)
@pytest.mark.parametrize("phase", list(PHASES))
async def test_time_to_expired_and_to_trainer_exit(
    harness: Harness, proxy: HoldProxy, mocks, phase: str, trigger: str
) -> None:
    """Measures one cell of the table."""
    held = await hold(harness, proxy, phase, budget=trigger == "budget")
    to_expired, to_exit = [], []
    after = status_after = seen = 0
    try:
        for run in range(RUNS):
            daemon, notify = harness.daemon, harness.notify
            assert daemon is not None and notify is not None
            if run:
                cycle = await _held_again(harness, proxy, phase, after, status_after, seen)
            else:
                cycle = daemon.events("cycle.started")[-1]["cycle"]
            step = PHASES[phase][0]
            seen = proxy.seen[step] if step is not None else 0
            trainers = trainer_processes(harness)
            began = time.time()
            match trigger:
                case "power":
                    await mocks.set_on_battery(True)
                case "sigusr2":
                    daemon.signal(signal.SIGUSR2)
                case "sigterm":
                    daemon.signal(signal.SIGTERM)
                case "budget":
                    began = _when(await daemon.wait_log("cycle.expiring", cycle=cycle, timeout=120))
            finished = await daemon.wait_log("cycle.finished", cycle=cycle, timeout=60)
            assert finished["outcome"] == "expired", finished
            to_expired.append(_when(finished) - began)
            after, status_after = daemon.logs.index(finished) + 1, len(notify.messages)
            if trainers:
                to_exit.append(await _wait_gone(trainers) - began)
            match trigger:
                case "power":
                    await mocks.set_on_battery(False)
                case "sigusr2":
                    daemon.signal(signal.SIGUSR1)  # the operator's expiry pauses the job: trigger the next
                case "sigterm":
                    assert await daemon.wait_exit(30) == 0
                    if run < RUNS - 1:
                        await harness.start(env=daemon_env(harness))
                        after = status_after = 0
    finally:
        held.release()
    _RESULTS[(phase, trigger)] = (to_expired, to_exit)


@pytest.fixture(scope="module", autouse=True)
def _table() -> Iterator[None]:
    """Print the table of the cells measured once the module is done (a failed cell shows as —)."""
    yield
    if _RESULTS:
        _print_table()


def _cell(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{statistics.median(values) * 1000:.0f} / {max(values) * 1000:.0f}"


def _print_table() -> None:
    print()
    print(f"trigger → EXPIRED result | trigger → trainer exited; median / max ms of {RUNS} runs each")
    print("(expiry_grace_s = 2 s: a trainer that cannot see the flag yet gets SIGTERM at 2000 ms; bound 5000 ms)")
    header = f"{'phase':<18}" + "".join(f"{t:>28}" for t in TRIGGERS)
    print(header)
    for phase in PHASES:
        row = f"{phase:<18}"
        for trigger in TRIGGERS:
            expired, exited = _RESULTS.get((phase, trigger), ([], []))
            row += f"{_cell(expired):>15} |{_cell(exited):>11}"
        print(row)
