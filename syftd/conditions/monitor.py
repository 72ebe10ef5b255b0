"""The conditions monitor: runs a source per area, merges what they publish, and tells subscribers.

Owns the monitor's lifecycle (connecting the system bus when a source needs it, starting and stopping
every source, bounded), the merged ``Conditions`` value with each fact's source, simulated overrides,
telling subscribers of each change, and the daemon-facing refresh, sleep-lock and thermal switches.
Does not own which source reads an area, its fallback or the switching between them (``areas``),
reading the system (the sources) or deciding anything from the value (``syftd.policy``).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from syftd import events
from syftd.conditions.areas import Area, SourceSelector
from syftd.conditions.sysfs import ThermalSource
from syftd.conditions.value import FACTS, Conditions
from syftd.config import ConditionsConfig
from syftd.log import get_logger
from syftd.service import ServiceContext

__all__ = ["ConditionsMonitor"]

_log = get_logger(__name__)

SIMULATED = "simulated"
_GRADUAL = frozenset({"battery_percent", "temperature_c", "free_disk_mb"})
REFRESH_TIMEOUT_S = 5.0


class ConditionsMonitor(ServiceContext):
    """Publishes ``Conditions`` on every change; an async context manager over ``start()``/``stop()``."""

    def __init__(
        self,
        config: ConditionsConfig,
        state_dir: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        proc_net: Path = Path("/proc/net"),
        platform: str = sys.platform,
    ) -> None:
        self._config = config
        self._state_dir = state_dir
        self._clock = clock
        self._proc_net = proc_net
        self._platform = platform
        self._base = Conditions()
        self._current = Conditions()
        self._overrides: dict[str, Any] = {}
        self._subscribers: list[Callable[[Conditions], None]] = []
        self._areas: dict[str, Area] = {}
        self._thermal: ThermalSource | None = None
        self._logind: Any = None
        self._bus: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._state = "new"

    @property
    def current(self) -> Conditions:
        """The latest merged value, overrides applied."""
        return self._current

    @property
    def active_sources(self) -> dict[str, str]:
        """The source each area reads right now (``{"power": "upower", ...}``)."""
        names = {name: (a.active.name if a.active is not None else "absent") for name, a in self._areas.items()}
        if self._thermal is not None:
            names["thermal"] = self._thermal.name
        return names

    def subscribe(self, callback: Callable[[Conditions], None]) -> Callable[[], None]:
        """Call ``callback(conditions)`` on the loop after every change; returns the unsubscribe function."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    async def start(self) -> None:
        """Pick and start the sources; returns once every one has published its first snapshot.

        Raises:
            ConditionSourceError: a forced source cannot run here (no bus, not macOS).
            RuntimeError: called twice.
        """
        if self._state != "new":
            raise RuntimeError("ConditionsMonitor.start() called twice; create one monitor per daemon run")
        self._state = "starting"
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        self._state = "running"

    async def stop(self) -> None:
        """Stop every source and release the sleep lock; idempotent and bounded."""
        if self._state == "stopped":
            return
        self._state = "stopped"
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        sources: list[Any] = [self._thermal]
        for area in self._areas.values():
            sources += [area.primary, area.fallback]
        for source in sources:
            if source is not None:
                try:
                    await asyncio.wait_for(source.stop(), REFRESH_TIMEOUT_S)
                except Exception as exc:  # noqa: BLE001 - stopping must go on whatever one source does
                    _log.warning(events.CONDITIONS_SOURCE_STOP_FAILED, source=source.name, error=repr(exc))
        if self._bus is not None:
            await self._bus.close()
            self._bus = None

    async def refresh(self) -> None:
        """Re-read every active source (after resume, bus reconnect, SIGHUP)."""
        sources = [a.active for a in self._areas.values()] + [self._thermal]
        for source in sources:
            if source is None:
                continue
            try:
                await asyncio.wait_for(source.refresh(), REFRESH_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - one failing source must not stop the others' refresh
                _log.warning(events.CONDITIONS_REFRESH_FAILED, source=source.name, error=repr(exc))

    def override(self, fact: str, value: Any | None) -> None:
        """Simulate ``fact`` = ``value`` over whatever the source says; ``None`` clears the override.

        Raises:
            ValueError: ``fact`` is not a fact of ``Conditions``.
        """
        if fact not in FACTS:
            raise ValueError(f"no condition named {fact!r}; conditions are {sorted(FACTS)}")
        now = self._clock()
        if value is None:
            if fact in self._overrides:
                del self._overrides[fact]
                _log.info(events.CONDITIONS_OVERRIDE_CLEARED, fact=fact, simulated=True)
            real = getattr(self._base, fact)
            self._set_current(self._current.updated(now, self._base.sources.get(fact, ""), **{fact: real}))
            return
        self._overrides[fact] = value
        _log.info(events.CONDITIONS_OVERRIDE_SET, fact=fact, value=value, simulated=True)
        self._set_current(self._current.updated(now, SIMULATED, **{fact: value}))

    async def hold_sleep_lock(self) -> bool:
        """Hold logind's delay lock while a cycle runs; False where there is no logind."""
        if self._logind is None:
            return False
        return bool(await self._logind.hold_sleep_lock())

    def release_sleep_lock_soon(self) -> None:
        """No cycle runs: release the delay lock in ``logind.LINGER_S`` unless a cycle holds it again first."""
        if self._logind is not None:
            self._logind.release_sleep_lock_soon()

    def release_sleep_lock(self) -> None:
        """Release the delay lock (the trainer has stopped, or the cycle ended); idempotent."""
        if self._logind is not None:
            self._logind.release_sleep_lock()

    @property
    def is_sleep_lock_held(self) -> bool:
        """Whether the delay lock is held now."""
        return self._logind is not None and bool(self._logind.is_lock_held)

    @property
    def inhibit_delay_s(self) -> float | None:
        """logind's ``InhibitDelayMaxUSec`` in seconds (how long a delay lock may hold a suspend), or None."""
        return None if self._logind is None else float(self._logind.inhibit_delay_s)

    def set_thermal_active(self, active: bool) -> None:
        """Poll temperature (and free disk) while a cycle runs or is due; never otherwise."""
        if self._thermal is not None:
            self._thermal.set_active(active)

    def refresh_disk(self) -> float | None:
        """Read the state directory's free space now; publishes it and returns MiB (None if unknown)."""
        return self._thermal.refresh_disk() if self._thermal is not None else None

    async def _start(self) -> None:
        cfg = self._config
        is_linux = self._platform.startswith("linux")
        wants_bus = is_linux and (
            cfg.power_source in ("auto", "upower")
            or cfg.network_source in ("auto", "networkmanager")
            or cfg.sleep_source in ("auto", "logind")
        )
        if wants_bus:
            from syftd.conditions.dbus import SystemBus

            self._bus = await SystemBus.connect(cfg.bus_address)
        selector = SourceSelector(
            cfg,
            platform=self._platform,
            proc_net=self._proc_net,
            bus=self._bus,
            publisher=self._publisher,
            on_availability=self._on_availability,
            on_resume=self._on_resume,
        )
        self._areas = {
            "power": selector.power(cfg.power_source),
            "network": selector.network(cfg.network_source),
            "sleep": selector.sleep(cfg.sleep_source),
        }
        self._logind = self._areas["sleep"].primary
        self._thermal = ThermalSource(self._publisher("thermal"), cfg.sysfs_root, self._state_dir, cfg.thermal_poll_s)
        for area in self._areas.values():
            await area.start(self._publish)
        await self._thermal.start()

    def _on_availability(self, area: Area) -> Callable[[bool], None]:
        def changed(available: bool) -> None:
            if self._state in ("stopped", "new"):
                return
            task = asyncio.ensure_future(area.switch(available, self._publish))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return changed

    async def _on_resume(self) -> None:
        _log.info(events.CONDITIONS_RESUMED)
        await self.refresh()

    def _publisher(self, area_name: str) -> Callable[[str, Mapping[str, Any]], None]:
        def publish(source: str, facts: Mapping[str, Any]) -> None:
            area = self._areas.get(area_name)
            if area is not None and area.primary is not None and source != area.primary.name:
                if area.primary.available:
                    return
            self._publish(source, facts)

        return publish

    def _publish(self, source: str, facts: Mapping[str, Any]) -> None:
        now = self._clock()
        self._base = self._base.updated(now, source, **facts)
        visible = {k: v for k, v in facts.items() if k not in self._overrides}
        if visible:
            self._set_current(self._current.updated(now, source, **visible))

    def _set_current(self, new: Conditions) -> None:
        old, self._current = self._current, new
        if new is old:
            return
        before = old.as_dict()
        changed = {k: v for k, v in new.as_dict().items() if before[k] != v}
        if not changed:
            return
        level = _log.debug if changed.keys() <= _GRADUAL else _log.info
        level("conditions.changed", **changed)
        for callback in list(self._subscribers):
            try:
                callback(new)
            except Exception:  # noqa: BLE001 - one subscriber must not break the others
                _log.exception(events.CONDITIONS_SUBSCRIBER_FAILED, subscriber=repr(callback))
