"""The macOS sources' logic, on Linux, with the system calls faked.

macOS cannot run here: ``FakeMacAPI`` stands in for IOKit, notify(3) and SystemConfiguration. Its
notify fds are real pipes fed to the real event loop, and each post writes the registration's
4-byte big-endian token as notify(3) does. What this cannot show is that the ctypes signatures are
right on a Mac.
"""

from __future__ import annotations

import asyncio
import os
import struct
import sys
from typing import Any, NamedTuple

import psutil
import pytest

from syftd.conditions.macos import (
    CONNECTION_REQUIRED,
    REACHABLE,
    IOKitAPI,
    MacNetworkSource,
    MacPowerSource,
    PsutilPowerSource,
    battery_facts,
    is_external_power,
)


class sbattery(NamedTuple):
    """The fields of psutil.sensors_battery()'s reading (its own type is private to psutil)."""

    percent: float
    secsleft: int
    power_plugged: bool | None


class FakeMacAPI:
    """A fake of the three macOS calls (macOS cannot run here); notify fds are real pipes."""

    def __init__(self) -> None:
        self.remaining = -2.0
        self.flags = REACHABLE
        self.registrations: dict[str, tuple[int, int, int]] = {}
        self.cancelled: list[int] = []
        self._next_token = 7

    def time_remaining(self) -> float:
        return self.remaining

    def register_fd(self, name: str) -> tuple[int, int]:
        read_fd, write_fd = os.pipe()
        self._next_token += 1
        self.registrations[name] = (read_fd, write_fd, self._next_token)
        return read_fd, self._next_token

    def cancel(self, token: int) -> None:
        self.cancelled.append(token)
        for name, (read_fd, write_fd, t) in list(self.registrations.items()):
            if t == token:
                os.close(read_fd)
                os.close(write_fd)
                del self.registrations[name]

    def reachability_flags(self) -> int:
        return self.flags

    def post(self, name: str, *, token: int | None = None, times: int = 1) -> None:
        _read, write_fd, own = self.registrations[name]
        os.write(write_fd, struct.pack(">i", own if token is None else token) * times)


class Recorder:
    """Collects what a source publishes and lets a test await the next publication."""

    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []
        self._event = asyncio.Event()

    def __call__(self, _source: str, facts: Any) -> None:
        self.published.append(dict(facts))
        self._event.set()

    async def next(self, timeout_s: float = 1.0) -> dict[str, Any]:
        await asyncio.wait_for(self._event.wait(), timeout_s)
        self._event.clear()
        return self.published[-1]


@pytest.mark.parametrize(("remaining", "on_power"), [(-2.0, True), (-1.0, False), (0.0, False), (3600.0, False)])
def test_only_unlimited_time_remaining_means_external_power(remaining: float, on_power: bool) -> None:
    """-2.0 (kIOPSTimeRemainingUnlimited) is AC; -1.0 (just unplugged) and seconds left are battery."""
    assert is_external_power(remaining) is on_power


def test_a_psutil_battery_reading_maps_to_power_facts() -> None:
    """power_plugged decides; no battery (None) and an unknown power_plugged are unknown, not battery."""
    assert battery_facts(sbattery(100, psutil.POWER_TIME_UNLIMITED, True)) == {
        "on_external_power": True,
        "battery_percent": 100.0,
    }
    assert battery_facts(sbattery(73, 15120, False)) == {"on_external_power": False, "battery_percent": 73.0}
    assert battery_facts(sbattery(50, psutil.POWER_TIME_UNKNOWN, None))["on_external_power"] is None
    assert battery_facts(None) == {"on_external_power": None, "battery_percent": None}


async def test_power_posts_wake_the_source_and_a_burst_is_one_reading() -> None:
    """A post re-reads IOKit; three posts at once give one publication; a foreign token none."""
    api, recorder = FakeMacAPI(), Recorder()
    source = MacPowerSource(recorder, api)
    await source.start()
    assert await recorder.next() == {"on_external_power": True}
    api.remaining = -1.0
    api.post("com.apple.system.powersources.source", times=3)
    assert await recorder.next() == {"on_external_power": False}
    api.post("com.apple.system.powersources.source", token=12345)
    api.remaining = -2.0
    api.post("com.apple.system.powersources.source")
    assert await recorder.next() == {"on_external_power": True}
    assert len(recorder.published) == 3
    await source.stop()
    await source.stop()
    assert api.cancelled == [8]


async def test_network_reachability_flags_decide_online() -> None:
    """Reachable without "connection required" is online; metered and connectivity are unknown."""
    api, recorder = FakeMacAPI(), Recorder()
    source = MacNetworkSource(recorder, api)
    await source.start()
    assert await recorder.next() == {"online": True, "connectivity": None, "metered": None}
    api.flags = REACHABLE | CONNECTION_REQUIRED
    api.post("com.apple.system.config.network_change")
    assert (await recorder.next())["online"] is False
    api.flags = 0
    await source.refresh()
    assert (await recorder.next())["online"] is False
    await source.stop()


def test_real_api_cannot_load_on_linux() -> None:
    """Constructing the ctypes API here raises OSError, which the monitor turns into a clear error."""
    if sys.platform == "darwin":
        pytest.skip("this checks the failure path off macOS")
    with pytest.raises(OSError, match=r"IOKit|libSystem|cannot open"):
        IOKitAPI()


async def test_psutil_fallback_publishes_each_reading() -> None:
    """The fallback polls its battery reader and publishes the mapping (a stand-in reader: this Linux
    machine has no Mac battery)."""
    readings = iter([sbattery(73, 15120, False)])
    recorder = Recorder()
    source = PsutilPowerSource(recorder, 3600.0, battery=lambda: next(readings))
    await source.start()
    assert await recorder.next(10.0) == {"on_external_power": False, "battery_percent": 73.0}
    await source.stop()
    await source.stop()


async def test_psutil_fallback_runs_the_real_psutil_call_here() -> None:
    """With the default reader, the real psutil.sensors_battery() runs (None where there is no battery)."""
    recorder = Recorder()
    source = PsutilPowerSource(recorder, 3600.0)
    await source.start()
    facts = await recorder.next(10.0)
    await source.stop()
    assert facts == battery_facts(psutil.sensors_battery())
