"""NetworkManager over the system bus: online, connectivity (full/limited/portal) and metered.

Owns the rule: online = ``State`` 70 (connected global) and, when connectivity checking is on,
``Connectivity`` 4 (full); portal and limited count as offline; ``Metered`` 1 (yes) or 3 (guess
yes) is metered. Does not own the bus connection or the routing-table fallback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dbus_fast.aio import ProxyInterface

from syftd.conditions.dbus import PROPERTIES, DBusSource, unwrap
from syftd.conditions.value import Connectivity

__all__ = ["NetworkManagerSource", "network_facts"]

BUS_NAME = "org.freedesktop.NetworkManager"
PATH = "/org/freedesktop/NetworkManager"
IFACE = "org.freedesktop.NetworkManager"
STATE_CONNECTED_GLOBAL = 70
_CONNECTIVITY = {
    0: Connectivity.UNKNOWN,
    1: Connectivity.NONE,
    2: Connectivity.PORTAL,
    3: Connectivity.LIMITED,
    4: Connectivity.FULL,
}
_METERED_YES = (1, 3)
_WATCHED = frozenset({"State", "Connectivity", "Metered", "ConnectivityCheckEnabled"})


def network_facts(props: Mapping[str, Any]) -> dict[str, Any]:
    """The facts from NetworkManager's full property set (0-based NMConnectivityState)."""
    state = int(props.get("State", 0))
    raw_connectivity = int(props.get("Connectivity", 0))
    connectivity = _CONNECTIVITY.get(raw_connectivity, Connectivity.UNKNOWN)
    checking = props.get("ConnectivityCheckEnabled")
    is_checking = bool(checking) if checking is not None else connectivity is not Connectivity.UNKNOWN
    online = state == STATE_CONNECTED_GLOBAL and (not is_checking or connectivity is Connectivity.FULL)
    metered = int(props["Metered"]) in _METERED_YES if "Metered" in props else None
    return {"online": online, "connectivity": connectivity, "metered": metered}


class NetworkManagerSource(DBusSource):
    """Follows ``State``, ``Connectivity``, ``Metered`` and ``ConnectivityCheckEnabled`` by their signals."""

    name = "networkmanager"
    bus_name = BUS_NAME

    _props_iface: ProxyInterface | None = None
    _props: dict[str, Any]

    async def _attach(self) -> None:
        self._props = {}
        self._props_iface = self._bus.proxy_interface(BUS_NAME, PATH, "networkmanager.xml", PROPERTIES)
        self._props_iface.on_properties_changed(self._on_changed)  # type: ignore[attr-defined]
        await self._read()

    async def _read(self) -> None:
        self._props = await self._bus.get_all(BUS_NAME, PATH, IFACE)
        self._publish(self.name, network_facts(self._props))

    def _detach(self) -> None:
        if self._props_iface is not None:
            self._props_iface.off_properties_changed(self._on_changed)  # type: ignore[attr-defined]
            self._props_iface = None

    def _on_changed(self, interface: str, changed: dict[str, Any], _invalidated: list[str]) -> None:
        if interface == IFACE and changed.keys() & _WATCHED:
            self._props.update(unwrap(changed))
            self._publish(self.name, network_facts(self._props))
