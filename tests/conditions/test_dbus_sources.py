"""The D-Bus sources against a real private dbus-daemon with python-dbusmock's templates."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from support.dbus import DBusMocks, MockControl, wait_for_conditions

from syftd.conditions import Connectivity

pytestmark = pytest.mark.dbus


async def test_start_publishes_the_dbus_snapshot_and_selects_dbus_sources(
    mocks: MockControl, dbus_mocks: DBusMocks, make_monitor: Callable[..., Any]
) -> None:
    """With the services present, start() returns with UPower/NM/logind facts and those sources active."""
    monitor = await make_monitor(bus_address=dbus_mocks.address)
    c = monitor.current
    assert (c.on_external_power, c.battery_percent, c.online, c.connectivity, c.metered, c.idle, c.sleeping) == (
        True, 80.0, True, Connectivity.FULL, False, False, False)
    assert monitor.active_sources == {"power": "upower", "network": "networkmanager", "sleep": "logind",
                                      "thermal": "sysfs-thermal"}
