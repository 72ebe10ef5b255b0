"""UPower over the system bus: on external power (``OnBattery``) and the display device's battery level.

Owns mapping UPower's properties to ``on_external_power`` and ``battery_percent``. Does not own the
bus connection or the fallback when UPower is absent (``dbus``, ``monitor``, ``sysfs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dbus_fast.aio import ProxyInterface

from syftd.conditions.dbus import PROPERTIES, DBusSource, unwrap

__all__ = ["UPowerSource", "power_facts"]

BUS_NAME = "org.freedesktop.UPower"
PATH = "/org/freedesktop/UPower"
IFACE = "org.freedesktop.UPower"
DEVICE_IFACE = "org.freedesktop.UPower.Device"
DISPLAY_DEVICE = "/org/freedesktop/UPower/devices/DisplayDevice"


def power_facts(manager: Mapping[str, Any], device: Mapping[str, Any]) -> dict[str, Any]:
    """The facts in (partial) property sets: "not on battery" is on external power, even when full."""
    facts: dict[str, Any] = {}
    if "OnBattery" in manager:
        facts["on_external_power"] = not bool(manager["OnBattery"])
    if "IsPresent" in device or "Percentage" in device:
        facts["battery_percent"] = float(device["Percentage"]) if device.get("IsPresent") else None
    return facts


class UPowerSource(DBusSource):
    """Follows ``OnBattery`` and the display device's ``Percentage``/``IsPresent`` by their signals."""

    name = "upower"
    bus_name = BUS_NAME

    _manager_props: ProxyInterface | None = None
    _device_props: ProxyInterface | None = None
    _device: dict[str, Any]

    async def _attach(self) -> None:
        self._device = {}
        self._manager_props = self._bus.proxy_interface(BUS_NAME, PATH, "upower.xml", PROPERTIES)
        self._manager_props.on_properties_changed(self._on_manager_changed)  # type: ignore[attr-defined]
        self._device_props = self._bus.proxy_interface(BUS_NAME, DISPLAY_DEVICE, "upower-device.xml", PROPERTIES)
        self._device_props.on_properties_changed(self._on_device_changed)  # type: ignore[attr-defined]
        await self._read()

    async def _read(self) -> None:
        manager = await self._bus.get_all(BUS_NAME, PATH, IFACE)
        self._device = await self._bus.get_all(BUS_NAME, DISPLAY_DEVICE, DEVICE_IFACE)
        self._publish(self.name, power_facts(manager, self._device))

    def _detach(self) -> None:
        if self._manager_props is not None:
            self._manager_props.off_properties_changed(self._on_manager_changed)  # type: ignore[attr-defined]
            self._manager_props = None
        if self._device_props is not None:
            self._device_props.off_properties_changed(self._on_device_changed)  # type: ignore[attr-defined]
            self._device_props = None

    def _on_manager_changed(self, interface: str, changed: dict[str, Any], _invalidated: list[str]) -> None:
        if interface == IFACE and (facts := power_facts(unwrap(changed), {})):
            self._publish(self.name, facts)

    def _on_device_changed(self, interface: str, changed: dict[str, Any], _invalidated: list[str]) -> None:
        if interface != DEVICE_IFACE:
            return
        self._device.update(unwrap(changed))
        if "IsPresent" in changed or "Percentage" in changed:
            self._publish(self.name, power_facts({}, self._device))
