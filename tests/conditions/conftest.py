"""Fixtures of the condition-monitor tests: one private system bus with the three mocks per session,
reset before each test, and monitors that are always stopped."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.dbus import DBusMocks, MockControl, missing_reason

from syftd.conditions.monitor import ConditionsMonitor
from syftd.config import ConditionsConfig


@pytest.fixture(scope="session")
def dbus_mocks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DBusMocks]:
    """A private system bus with upower, networkmanager and logind mocks (skips where they are missing)."""
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)
    mocks = DBusMocks(tmp_path_factory.mktemp("dbus"))
    try:
        mocks.start()
        yield mocks
    finally:
        mocks.stop()


@pytest.fixture
async def mocks(dbus_mocks: DBusMocks) -> AsyncIterator[MockControl]:
    """Control of the mocks, all running and reset to the baseline (on AC, online, unmetered, not idle)."""
    for template in ("upower", "networkmanager", "logind"):
        if not dbus_mocks.is_running(template):
            await dbus_mocks.restart(template)
    control = await MockControl.connect(dbus_mocks.address)
    await control.reset()
    yield control
    control.close()


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    """An empty fake sysfs root (no power supplies, no thermal zones)."""
    root = tmp_path / "sys"
    (root / "class" / "power_supply").mkdir(parents=True)
    (root / "class" / "thermal").mkdir(parents=True)
    (root / "class" / "net").mkdir(parents=True)
    return root


@pytest.fixture
async def make_monitor(tmp_path: Path, sysfs: Path) -> AsyncIterator[Callable[..., Any]]:
    """Build and start a ``ConditionsMonitor`` (stopped at teardown) with config overrides as keywords."""
    monitors: list[ConditionsMonitor] = []

    async def make(**config: Any) -> ConditionsMonitor:
        config.setdefault("sysfs_root", sysfs)
        monitor = ConditionsMonitor(ConditionsConfig(**config), tmp_path)
        monitors.append(monitor)
        await monitor.start()
        return monitor

    yield make
    for monitor in monitors:
        await monitor.stop()
