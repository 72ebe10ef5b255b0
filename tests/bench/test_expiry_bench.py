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

import asyncio
import datetime as dt
import signal
import statistics
import time
from collections.abc import AsyncIterator

import psutil
import pytest
from support.harness import Harness, eventually
from support.holdproxy import HoldProxy
from support.phases import PHASES, alive, daemon_env, hold, trainer_processes

pytestmark = [pytest.mark.torch, pytest.mark.dbus, pytest.mark.timeout(3600)]

RUNS = 5
TRIGGERS = ("power", "budget", "sigusr2", "sigterm")
_RESULTS: dict[tuple[str, str], tuple[list[float], list[float]]] = {}


def _when(entry: dict) -> float:
    return dt.datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()


async def _wait_gone(processes: list[psutil.Process], timeout: float = 30) -> float:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(alive(p) for p in processes):
        assert loop.time() < deadline, "a trainer outlived its bound"
        await asyncio.sleep(0.005)
    return time.time()


async def _held_again(harness: Harness, phase: str, after_logs: int, after_status: int) -> None:
    """Wait until the next cycle is held in ``phase`` (the holds stay armed between runs)."""
    daemon, notify = harness.daemon, harness.notify
    assert daemon is not None and notify is not None
    await daemon.wait_log("cycle.started", after=after_logs, timeout=120)
    words = PHASES[phase][1]
    await notify.wait_for(lambda m: words in m.fields.get("STATUS", ""), after=after_status, timeout=120)
    gates = harness.base / "gates"
    if phase == "downloading":
        await daemon.wait_log("trainer.spawned", after=after_logs, timeout=60)
    elif phase == "starting trainer":
        await eventually(lambda: (gates / "import.entered").exists(), timeout=60)
    elif phase == "loading data":
        await eventually(lambda: (gates / "load.entered").exists(), timeout=120)


@pytest.fixture
async def proxy(harness: Harness) -> AsyncIterator[HoldProxy]:
    async with HoldProxy(harness.node.node.url) as started:
        yield started


@pytest.mark.parametrize("trigger", TRIGGERS)
@pytest.mark.parametrize("phase", list(PHASES))
async def test_time_to_expired_and_to_trainer_exit(
    harness: Harness, proxy: HoldProxy, mocks, phase: str, trigger: str
) -> None:
    """Measures one cell of the table; the last cell prints the whole table."""
    held = await hold(harness, proxy, phase, budget=trigger == "budget")
    to_expired, to_exit = [], []
    try:
        for run in range(RUNS):
            daemon, notify = harness.daemon, harness.notify
            assert daemon is not None and notify is not None
            if run:
                for entered in (harness.base / "gates").glob("*.entered"):
                    entered.unlink()
            mark, status_mark = len(daemon.logs), len(notify.messages)
            if run:
                await _held_again(harness, phase, mark, status_mark)
            cycle = [e for e in daemon.events("cycle.started")][-1]["cycle"]
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
            if trainers:
                to_exit.append(await _wait_gone(trainers) - began)
            if trigger == "power":
                mark, status_mark = len(daemon.logs), len(notify.messages)
                await mocks.set_on_battery(False)
            elif trigger == "sigterm":
                assert await daemon.wait_exit(30) == 0
                if run < RUNS - 1:
                    await harness.start(env=daemon_env(harness))
                    await _held_again(harness, phase, 0, 0)
    finally:
        held.release()
    _RESULTS[(phase, trigger)] = (to_expired, to_exit)
    if len(_RESULTS) == len(PHASES) * len(TRIGGERS):
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
