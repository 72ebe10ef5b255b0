"""The phase sweep, end to end: the real daemon held in each phase before a finished diff exists, then
expired by a lost constraint (dbusmock), the budget, SIGUSR2 and SIGTERM; and the sleep lock after
fast-failing cycles.

Holds are deterministic: a proxy in front of the node holds one protocol step (authenticating,
requesting, downloading); a ``sitecustomize`` gate holds the trainer process before its imports
(starting trainer); a Python data source holds the data load (loading data); training runs 100 000
steps. Bounds come from the design (``expiry_grace_s`` + 3 s, ``shutdown_grace_s`` + 1 s) with the
margin that holds on a loaded machine; the tight figures are in tests/bench/test_expiry_bench.py.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator

import pytest
from support.harness import Harness, eventually
from support.holdproxy import HoldProxy
from support.phases import PHASES, alive, budget_s, history, hold, trainer_processes
from support.waiting import poll_until

pytestmark = [pytest.mark.torch, pytest.mark.dbus, pytest.mark.slow, pytest.mark.timeout(180)]

GRACE_S = 2.0  # the harness's expiry_grace_s
SHUTDOWN_GRACE_S = 4.0  # the harness's shutdown_grace_s
BOUND_S = GRACE_S + 3.0

TRIGGERS = {"power": "power_lost", "budget": "budget", "sigusr2": "manual", "sigterm": "shutdown"}


@pytest.fixture
async def proxy(harness: Harness) -> AsyncIterator[HoldProxy]:
    async with HoldProxy(harness.node.node.url) as started:
        yield started


@pytest.mark.parametrize("trigger", list(TRIGGERS))
@pytest.mark.parametrize("phase", list(PHASES))
async def test_each_phase_before_the_diff_expires_within_its_bounds(
    harness: Harness, proxy: HoldProxy, mocks, phase: str, trigger: str
) -> None:
    """Held in ``phase`` and expired by ``trigger``: the EXPIRED result and the trainer's exit within
    expiry_grace_s + 3 s, nothing reported, exactly one cycle.finished and one history entry for that
    cycle; for SIGTERM the daemon exits within shutdown_grace_s + 1 s."""
    held = await hold(harness, proxy, phase, budget=trigger == "budget")
    daemon = harness.daemon
    assert daemon is not None
    cycle = daemon.events("cycle.started")[0]["cycle"]
    trainers = trainer_processes(harness)
    assert (trainers != []) == (phase not in ("authenticating", "requesting")), trainers
    try:
        began = time.monotonic()
        match trigger:
            case "power":
                await mocks.set_on_battery(True)
            case "budget":
                pass  # max_cycle_s runs out while the cycle is held
            case "sigusr2":
                daemon.signal(signal.SIGUSR2)
            case "sigterm":
                daemon.signal(signal.SIGTERM)
        if trigger == "budget":
            expiring = await daemon.wait_log("cycle.expiring", timeout=budget_s(phase) + 30, cycle=cycle)
            assert expiring["reason"] == "budget"
            began = time.monotonic()
        finished = await daemon.wait_log("cycle.finished", timeout=BOUND_S + 30, cycle=cycle)
        result_s = time.monotonic() - began
        assert (finished["outcome"], finished["reason"]) == ("expired", TRIGGERS[trigger]), finished
        assert result_s <= BOUND_S, (phase, trigger, result_s)
        if trigger == "sigterm":
            assert await daemon.wait_exit(timeout=SHUTDOWN_GRACE_S + 30) == 0
            assert time.monotonic() - began <= SHUTDOWN_GRACE_S + 1.0, time.monotonic() - began
        else:
            # this cycle's trainer (a next cycle may already have started its own); polls: the process table
            await eventually(
                lambda: not any(alive(p) for p in trainers),
                timeout=max(0.1, BOUND_S - (time.monotonic() - began)),
                what="the expired cycle's trainer gone",
            )
    finally:
        held.release()
    if trigger != "sigterm":
        began = time.monotonic()
        await harness.stop()
        assert time.monotonic() - began <= SHUTDOWN_GRACE_S + 1.0 + 5.0, daemon.raw[-30:]
    assert harness.node.reports_for(harness.name) == []
    assert len([e for e in daemon.events("cycle.finished") if e["cycle"] == cycle]) == 1
    # the history is written right after the log line, off the daemon's event loop; polls: the file
    await eventually(
        lambda: any(e["cycle_id"] == cycle for e in history(harness)), timeout=10, what="the history entry"
    )
    entries = [e for e in history(harness) if e["cycle_id"] == cycle]
    assert len(entries) == 1 and entries[0]["outcome"] == "expired", entries


async def test_cycles_failing_within_milliseconds_leave_no_inhibitor_lock(harness: Harness, mocks) -> None:
    """The node is down: 30 cycles fail within milliseconds of taking the sleep lock. Once the daemon is
    idle (power lost, so no cycle starts), logind lists no syftd inhibitor: no release lost the race with
    an Inhibit call still in flight."""
    harness.host()
    harness.write_config(url="ws://127.0.0.1:9").write_text(
        harness.config_path.read_text().replace(
            "backoff_initial_s = 0.5", "backoff_initial_s = 0.01\nbackoff_max_s = 0.05"
        )
    )
    daemon = await harness.start()
    await daemon.until(lambda: len(daemon.events("cycle.finished")) >= 30, what="30 cycles finished", timeout=60)
    await mocks.set_on_battery(True)
    await daemon.wait_log("conditions.changed", on_external_power=False, timeout=10)
    await daemon.until(
        lambda: len(daemon.events("cycle.finished")) == len(daemon.events("cycle.started")),
        what="every started cycle finished",
        timeout=10,
    )

    async def no_syftd_lock() -> bool:
        return not any(row[1] == "syftd" for row in await mocks.list_inhibitors())

    # polls: logind's inhibitor list has no change signal; an Inhibit call in flight is bounded by 5 s
    await poll_until(no_syftd_lock, what="no syftd inhibitor lock left (one outlived its cycle)", timeout=6.0)
    taken = len(daemon.events("conditions.sleep_lock_taken"))
    released = len(daemon.events("conditions.sleep_lock_released"))
    assert taken == released, (taken, released)
