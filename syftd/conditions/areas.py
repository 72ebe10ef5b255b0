"""Which source reads each area of the conditions: the choice, the fallback, and switching between them.

Owns ``Area`` (an area's primary source, its fallback, which one is active, starting them and
switching to the fallback while the primary's D-Bus service is gone and back when it returns) and
``SourceSelector`` (``auto`` or a source forced by config, per platform, with the assumption a
``none`` source publishes). Does not own the merged value, overrides or subscribers, the monitor's
lifecycle (``monitor``), nor reading the system (the sources). Each area's choice is logged once, as
``conditions.source_selected``.

Areas and their sources (``none`` publishes an assumption, not a reading)::

    power    upower  → sysfs (poll)          | macos | none: on external power
    network  networkmanager → route (netlink) | macos | none: online, unmetered
    sleep    logind  → none: never told of sleep
    thermal  sysfs thermal zones + free disk of the state dir (polled only while active; ``monitor``)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syftd import events
from syftd.conditions.source import AREA_FACTS, FixedSource, Publish, Source
from syftd.conditions.sysfs import SysfsPowerSource
from syftd.config import ConditionsConfig
from syftd.errors import ConditionSourceError
from syftd.log import get_logger

__all__ = ["Area", "SourceSelector"]

_log = get_logger("syftd.conditions.monitor")  # the monitor's component: these lines are the monitor's
_ASSUMED: Mapping[str, Mapping[str, Any]] = {
    "power": {"on_external_power": True, "battery_percent": None},
    "network": {"online": True, "connectivity": None, "metered": False},
    "sleep": {"sleeping": False, "idle": None},
}


@dataclass(eq=False)
class Area:
    """One area's primary source (a D-Bus service that may come and go) and its fallback."""

    name: str
    primary: Any = None
    fallback: Source | None = None
    is_fallback_running: bool = False
    switching: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def active(self) -> Source | None:
        """The source the area reads now, or None."""
        if self.primary is not None and self.primary.available:
            return self.primary  # type: ignore[no-any-return]
        return self.fallback if self.is_fallback_running else None

    async def start(self, publish: Publish) -> None:
        """Start the primary, else the fallback; with neither, ``publish`` the area's facts as unknown."""
        if self.primary is not None:
            try:
                await self.primary.start()
            except Exception as exc:  # noqa: BLE001 - a bus that answers badly is a missing service
                _log.warning(events.CONDITIONS_SOURCE_FAILED, source=self.primary.name, error=repr(exc))
        if self.primary is None or not self.primary.available:
            await self._start_fallback(publish)
        _log.info(
            events.CONDITIONS_SOURCE_SELECTED,
            area=self.name,
            source=self.primary.name if self.primary is not None else getattr(self.fallback, "name", None),
            fallback=self.fallback.name if self.primary is not None and self.fallback is not None else None,
            active=self.active.name if self.active is not None else None,
        )

    async def switch(self, available: bool, publish: Publish) -> None:
        """Follow the primary's availability: stop the fallback when it returns, start it when it goes."""
        async with self.switching:
            if available and self.is_fallback_running and self.fallback is not None:
                self.is_fallback_running = False
                await self.fallback.stop()
                _log.info(events.CONDITIONS_SOURCE_SWITCHED, area=self.name, to=self.primary.name)
            elif not available and self.primary is not None and not self.primary.available:
                await self._start_fallback(publish)
                _log.warning(
                    events.CONDITIONS_SOURCE_SWITCHED,
                    area=self.name,
                    to=self.fallback.name if self.fallback is not None else None,
                    lost=self.primary.name,
                )

    async def _start_fallback(self, publish: Publish) -> None:
        if self.fallback is None:
            publish(self.primary.name, dict.fromkeys(AREA_FACTS[self.name]))
            return
        if not self.is_fallback_running:
            self.is_fallback_running = True
            await self.fallback.start()


class SourceSelector:
    """Builds each area from its configured source (``auto`` picks per platform and bus)."""

    def __init__(
        self,
        config: ConditionsConfig,
        *,
        platform: str,
        proc_net: Path,
        bus: Any,
        publisher: Callable[[str], Publish],
        on_availability: Callable[[Area], Callable[[bool], None]],
        on_resume: Callable[[], Awaitable[None]],
    ) -> None:
        self._config = config
        self._platform = platform
        self._proc_net = proc_net
        self._bus = bus
        self._publisher = publisher
        self._on_availability = on_availability
        self._on_resume = on_resume

    def power(self, choice: str) -> Area:
        """The power area: upower → sysfs, sysfs, macos or none.

        Raises:
            ConditionSourceError: a forced source cannot run here (no bus, not macOS).
        """
        publish = self._publisher("power")
        area = Area("power")
        sysfs = SysfsPowerSource(publish, self._config.sysfs_root, self._config.poll_interval_s)
        if choice == "auto":
            choice = "macos" if self._platform == "darwin" else ("upower" if self._bus else "sysfs")
            area.fallback = sysfs if choice == "upower" else None
        if choice == "upower":
            from syftd.conditions.upower import UPowerSource

            area.primary = UPowerSource(self._require_bus("power", choice), publish, self._on_availability(area))
        elif choice == "sysfs":
            area.fallback = sysfs
        elif choice == "macos":
            area.fallback = self._mac_power(publish)
        else:
            area.fallback = FixedSource("none", publish, _ASSUMED["power"])
        return area

    def network(self, choice: str) -> Area:
        """The network area: networkmanager → route, route, macos or none.

        Raises:
            ConditionSourceError: a forced source cannot run here (no bus, not macOS).
        """
        publish = self._publisher("network")
        area = Area("network")
        from syftd.conditions.route import RouteSource

        route = RouteSource(
            publish,
            sysfs_root=self._config.sysfs_root,
            proc_net=self._proc_net,
            poll_interval_s=self._config.poll_interval_s,
            metered_policy=self._config.metered_policy,
        )
        if choice == "auto":
            choice = "macos" if self._platform == "darwin" else ("networkmanager" if self._bus else "route")
            area.fallback = route if choice == "networkmanager" else None
        if choice == "networkmanager":
            from syftd.conditions.networkmanager import NetworkManagerSource

            area.primary = NetworkManagerSource(
                self._require_bus("network", choice), publish, self._on_availability(area)
            )
        elif choice == "route":
            area.fallback = route
        elif choice == "macos":
            from syftd.conditions.macos import MacNetworkSource

            area.fallback = MacNetworkSource(publish, self._mac_api())
        else:
            area.fallback = FixedSource("none", publish, _ASSUMED["network"])
        return area

    def sleep(self, choice: str) -> Area:
        """The sleep area: logind (its primary is the ``LogindSource``, holder of the sleep lock) or none.

        Raises:
            ConditionSourceError: logind is forced and no bus answered.
        """
        publish = self._publisher("sleep")
        area = Area("sleep")
        fixed = FixedSource("none", publish, _ASSUMED["sleep"])
        if choice == "auto":
            choice = "logind" if self._bus else "none"
            area.fallback = fixed if choice == "logind" else None
        if choice == "logind":
            from syftd.conditions.logind import LogindSource

            area.primary = LogindSource(
                self._require_bus("sleep", choice), publish, self._on_availability(area), self._on_resume
            )
        else:
            area.fallback = fixed
        return area

    def _require_bus(self, area: str, source: str) -> Any:
        if self._bus is None:
            raise ConditionSourceError(
                f"{area}_source = {source!r} needs the system bus, and none answered; "
                f"set bus_address or choose another {area}_source"
            )
        return self._bus

    def _mac_api(self) -> Any:
        from syftd.conditions.macos import IOKitAPI

        try:
            return IOKitAPI()
        except OSError as exc:
            raise ConditionSourceError(f"the macOS sources cannot run here ({exc}); choose another source") from exc

    def _mac_power(self, publish: Publish) -> Source:
        from syftd.conditions.macos import MacPowerSource, PsutilPowerSource

        try:
            return MacPowerSource(publish, self._mac_api())
        except ConditionSourceError:
            if self._platform != "darwin":
                raise
            _log.warning(events.CONDITIONS_IOKIT_UNAVAILABLE, fallback="psutil")
            return PsutilPowerSource(publish, self._config.poll_interval_s)
