"""Fixtures of the condition-monitor tests: fake sysfs trees and monitors that are always stopped. The
session's private system bus with the three mocks (``dbus_mocks``, ``mocks``) is in tests/conftest.py,
shared with the end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from syftd.conditions.monitor import ConditionsMonitor
from syftd.config import ConditionsConfig


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
