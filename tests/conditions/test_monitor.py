"""The monitor's own contract: injected clock, synchronous subscribers, overrides, lifecycle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from syftd.conditions import Conditions
from syftd.conditions.monitor import ConditionsMonitor
from syftd.config import ConditionsConfig

NONE = {"power_source": "none", "network_source": "none", "sleep_source": "none"}


def _monitor(sysfs: Path, tmp_path: Path, now: list[float]) -> ConditionsMonitor:
    return ConditionsMonitor(ConditionsConfig(sysfs_root=sysfs, **NONE), tmp_path, clock=lambda: now[0])


async def test_change_times_come_from_the_injected_clock(sysfs: Path, tmp_path: Path) -> None:
    """changed_at is the injected clock's time of each change; an unchanged value keeps its time."""
    now = [100.0]
    monitor = _monitor(sysfs, tmp_path, now)
    async with monitor:
        assert monitor.current.held_since("on_external_power") == 100.0
        now[0] = 130.0
        monitor.override("on_external_power", False)
        assert monitor.current.held_since("on_external_power") == 130.0
        now[0] = 140.0
        monitor.override("on_external_power", False)
        assert monitor.current.held_since("on_external_power") == 130.0
        now[0] = 150.0
        monitor.override("on_external_power", None)
        assert (monitor.current.on_external_power, monitor.current.held_since("on_external_power")) == (True, 150.0)
        assert monitor.current.sources["on_external_power"] == "none"


async def test_subscribers_are_called_synchronously_and_a_failing_one_does_not_stop_others(
    sysfs: Path, tmp_path: Path
) -> None:
    """Each change reaches every subscriber before override() returns; unsubscribe stops delivery."""
    monitor = _monitor(sysfs, tmp_path, [0.0])
    seen: list[Conditions] = []

    def broken(_c: Conditions) -> None:
        raise RuntimeError("subscriber bug")

    async with monitor:
        monitor.subscribe(broken)
        unsubscribe = monitor.subscribe(seen.append)
        monitor.override("online", False)
        assert [c.online for c in seen] == [False]
        unsubscribe()
        unsubscribe()
        monitor.override("online", None)
        assert len(seen) == 1


async def test_start_twice_is_refused_and_stop_is_idempotent(sysfs: Path, tmp_path: Path) -> None:
    """A second start() says to create a new monitor; stop() may be called any number of times."""
    monitor = _monitor(sysfs, tmp_path, [0.0])
    await monitor.start()
    with pytest.raises(RuntimeError, match="one monitor per daemon run"):
        await monitor.start()
    await monitor.stop()
    await monitor.stop()


async def test_sleep_lock_calls_are_harmless_without_logind(sysfs: Path, tmp_path: Path) -> None:
    """With sleep_source none there is no lock to hold; release and thermal switches are no-ops."""
    monitor: Any = _monitor(sysfs, tmp_path, [0.0])
    async with monitor:
        assert await monitor.hold_sleep_lock() is False
        monitor.release_sleep_lock()
        assert monitor.is_sleep_lock_held is False
        monitor.set_thermal_active(True)
        monitor.set_thermal_active(False)
