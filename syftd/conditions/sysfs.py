"""sysfs readings: external power as systemd's ``on_ac_power()`` decides it, battery level, temperature, disk.

Owns the power-supply algorithm (any online non-battery supply ⇒ AC; else any discharging battery
⇒ battery; else AC, which covers desktops without supplies), the hottest thermal zone, the free
space of the state directory, and the two polled sources built on them. Polling happens only
here: power every ``poll_interval_s`` only while UPower is absent, temperature and disk every
``thermal_poll_s`` only while the daemon marks thermal watching active.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

from syftd.conditions.source import PolledSource, Publish

__all__ = [
    "SysfsPowerSource",
    "ThermalSource",
    "battery_percent",
    "free_disk_mb",
    "max_temperature_c",
    "on_ac_power",
]


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def _supplies(sysfs_root: Path) -> list[Path]:
    try:
        return sorted((sysfs_root / "class" / "power_supply").iterdir())
    except OSError:
        return []


def _is_counted_battery(supply: Path) -> bool:
    return _read(supply / "scope") != "Device" and _read(supply / "present") != "0"


def on_ac_power(sysfs_root: Path) -> bool:
    """systemd's ``on_ac_power()``: connected counts, not charging (a full or charge-limited battery on AC is AC)."""
    found_online = found_discharging = False
    for supply in _supplies(sysfs_root):
        kind = _read(supply / "type")
        if kind == "USB" and "[source]" in (_read(supply / "power_role") or ""):
            continue
        if kind == "Battery":
            if _is_counted_battery(supply) and _read(supply / "status") == "Discharging":
                found_discharging = True
            continue
        online = _read(supply / "online")
        if online is not None and online.isdigit() and int(online) > 0:
            found_online = True
    return found_online or not found_discharging


def battery_percent(sysfs_root: Path) -> float | None:
    """Mean ``capacity`` of the system's batteries; None without one."""
    levels = []
    for supply in _supplies(sysfs_root):
        if _read(supply / "type") == "Battery" and _is_counted_battery(supply):
            capacity = _read(supply / "capacity")
            if capacity is not None and capacity.isdigit():
                levels.append(float(capacity))
    return sum(levels) / len(levels) if levels else None


def max_temperature_c(sysfs_root: Path) -> float | None:
    """The hottest ``thermal_zone*/temp`` in °C (sysfs gives millidegrees); None without zones."""
    temps = []
    for zone in (sysfs_root / "class" / "thermal").glob("thermal_zone*"):
        raw = _read(zone / "temp")
        with contextlib.suppress(TypeError, ValueError):
            temps.append(int(raw) / 1000.0)  # type: ignore[arg-type]
    return max(temps) if temps else None


def free_disk_mb(path: Path) -> float | None:
    """Free space (MiB) of the filesystem holding ``path`` for an unprivileged writer; None if absent."""
    try:
        return shutil.disk_usage(path).free / 2**20
    except OSError:
        return None


class SysfsPowerSource(PolledSource):
    """Polls ``on_ac_power()`` every ``poll_interval_s`` (sysfs has no cheap change event)."""

    name = "sysfs"

    def __init__(self, publish: Publish, sysfs_root: Path, poll_interval_s: float) -> None:
        super().__init__(publish, poll_interval_s)
        self._root = sysfs_root

    async def refresh(self) -> None:
        """Read and publish."""
        self._publish(
            self.name, {"on_external_power": on_ac_power(self._root), "battery_percent": battery_percent(self._root)}
        )


class ThermalSource(PolledSource):
    """Temperature and free disk: read at start and on demand, polled only while active."""

    name = "sysfs-thermal"

    def __init__(self, publish: Publish, sysfs_root: Path, state_dir: Path, poll_s: float) -> None:
        super().__init__(publish, poll_s)
        self._root = sysfs_root
        self._state_dir = state_dir

    @property
    def is_active(self) -> bool:
        """Whether temperature is being polled."""
        return self._task is not None

    async def start(self) -> None:
        """Publish one reading."""
        await self.refresh()

    async def refresh(self) -> None:
        """Read temperature and free disk, and publish."""
        self._publish(
            self.name, {"temperature_c": max_temperature_c(self._root), "free_disk_mb": free_disk_mb(self._state_dir)}
        )

    def refresh_disk(self) -> float | None:
        """Read free disk now, publish it, and return it."""
        free = free_disk_mb(self._state_dir)
        self._publish(self.name, {"free_disk_mb": free})
        return free

    def set_active(self, active: bool) -> None:
        """Poll every ``poll_s`` while active (a cycle runs or is due); not at all otherwise."""
        if active and self._task is None:
            self._task = asyncio.ensure_future(self._poll())
        elif not active and self._task is not None:
            self._task.cancel()
            self._task = None

    async def _poll(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self._interval_s)
