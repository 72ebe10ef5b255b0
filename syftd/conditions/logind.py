"""systemd-logind over the system bus: ``PrepareForSleep``, ``IdleHint`` and the sleep delay lock.

Owns publishing ``sleeping``/``idle``, and the one *delay* inhibitor lock the daemon holds while a
cycle runs: taken on request, released on request (or ``LINGER_S`` after the last cycle, for one
that starts right after it; at once if sleep comes meanwhile) or at the latest ``InhibitDelayMaxUSec``
− 1 s after ``PrepareForSleep(true)``, so logind never waits on syftd past its own bound. A release that
arrives while the ``Inhibit`` call is still in flight wins: the lock it returns is closed at once, so
no lock outlives the cycle that asked for it. Does not own
deciding when a cycle runs or stopping the trainer (the daemon), nor re-reading the other sources
after resume (the monitor's ``on_resume``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

from dbus_fast.aio import ProxyInterface

from syftd import events
from syftd.conditions.dbus import PROPERTIES, DBusSource, SystemBus, unwrap
from syftd.conditions.source import Publish
from syftd.log import get_logger

__all__ = ["DEFAULT_INHIBIT_DELAY_S", "LogindSource"]

_log = get_logger(__name__)

BUS_NAME = "org.freedesktop.login1"
PATH = "/org/freedesktop/login1"
IFACE = "org.freedesktop.login1.Manager"
DEFAULT_INHIBIT_DELAY_S = 5.0
RELEASE_MARGIN_S = 1.0
LINGER_S = 2.0
"""``release_sleep_lock_soon`` keeps the lock this long for a cycle that starts right after (issue 15)."""
LOCK_WHO = "syftd"
LOCK_WHY = "stop training and checkpoint before sleep"


class LogindSource(DBusSource):
    """Follows ``PrepareForSleep`` and ``IdleHint``; holds the delay lock only while asked to."""

    name = "logind"
    bus_name = BUS_NAME

    def __init__(
        self,
        bus: SystemBus,
        publish: Publish,
        on_availability: Callable[[bool], None],
        on_resume: Callable[[], Awaitable[None]],
    ) -> None:
        super().__init__(bus, publish, on_availability)
        self._on_resume = on_resume
        self._manager: ProxyInterface | None = None
        self._props_iface: ProxyInterface | None = None
        self.inhibit_delay_s = DEFAULT_INHIBIT_DELAY_S
        self._lock_fd: int | None = None
        self._is_wanted = False
        self._deadline: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._resume_task: asyncio.Task[None] | None = None

    @property
    def is_lock_held(self) -> bool:
        """Whether the delay inhibitor lock is held now."""
        return self._lock_fd is not None

    async def hold_sleep_lock(self) -> bool:
        """Take the delay lock (no-op if held); False when logind is not there to give one."""
        self._is_wanted = True
        self._cancel_linger()
        if self._lock_fd is not None:
            return True
        if self._manager is None:
            return False
        fd = int(
            await asyncio.wait_for(
                self._manager.call_inhibit("sleep", LOCK_WHO, LOCK_WHY, "delay"),  # type: ignore[attr-defined]
                5.0,
            )
        )
        if self.is_lock_held or not self.available or not self._is_wanted:
            # held already, logind gone, or released while the call was in flight: this lock is not wanted
            os.close(fd)
            return self.is_lock_held
        self._lock_fd = fd
        _log.info(events.CONDITIONS_SLEEP_LOCK_TAKEN, delay_max_s=self.inhibit_delay_s)
        return True

    def release_sleep_lock_soon(self) -> None:
        """No cycle runs: release the lock ``LINGER_S`` from now unless ``hold_sleep_lock`` comes first, so
        that a cycle starting right after (a retry, the next of back-to-back cycles) costs no D-Bus call.
        Not wanted meanwhile: ``PrepareForSleep`` releases it at once."""
        self._is_wanted = False
        if self._lock_fd is not None and self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(LINGER_S, self.release_sleep_lock)

    def _cancel_linger(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def release_sleep_lock(self, reason: str = "requested") -> None:
        """Close the lock's fd (logind then proceeds), also one still being taken; idempotent."""
        self._is_wanted = False
        self._cancel_linger()
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)
            _log.info(events.CONDITIONS_SLEEP_LOCK_RELEASED, reason=reason)

    async def stop(self) -> None:
        """Release the lock, stop following logind; idempotent."""
        self.release_sleep_lock("stopped")
        if self._resume_task is not None and not self._resume_task.done():
            self._resume_task.cancel()
            await asyncio.gather(self._resume_task, return_exceptions=True)
        await super().stop()

    async def _attach(self) -> None:
        self._manager = self._bus.proxy_interface(BUS_NAME, PATH, "login1.xml", IFACE)
        self._manager.on_prepare_for_sleep(self._on_prepare_for_sleep)  # type: ignore[attr-defined]
        self._props_iface = self._bus.proxy_interface(BUS_NAME, PATH, "login1.xml", PROPERTIES)
        self._props_iface.on_properties_changed(self._on_changed)  # type: ignore[attr-defined]
        await self._read(is_initial=True)

    async def _read(self, *, is_initial: bool = False) -> None:
        props = await self._bus.get_all(BUS_NAME, PATH, IFACE)
        if "InhibitDelayMaxUSec" in props:
            self.inhibit_delay_s = int(props["InhibitDelayMaxUSec"]) / 1e6
        facts = {"idle": bool(props.get("IdleHint", False))}
        if is_initial:
            facts["sleeping"] = bool(props.get("PreparingForSleep", False))
        self._publish(self.name, facts)

    def _detach(self) -> None:
        self.release_sleep_lock("logind_gone")
        if self._manager is not None:
            self._manager.off_prepare_for_sleep(self._on_prepare_for_sleep)  # type: ignore[attr-defined]
            self._manager = None
        if self._props_iface is not None:
            self._props_iface.off_properties_changed(self._on_changed)  # type: ignore[attr-defined]
            self._props_iface = None

    def _on_changed(self, interface: str, changed: dict[str, Any], _invalidated: list[str]) -> None:
        values = unwrap(changed)
        if interface == IFACE and "IdleHint" in values:
            self._publish(self.name, {"idle": bool(values["IdleHint"])})
        if interface == IFACE and "InhibitDelayMaxUSec" in values:
            self.inhibit_delay_s = int(values["InhibitDelayMaxUSec"]) / 1e6

    def _on_prepare_for_sleep(self, start: bool) -> None:
        _log.info(events.CONDITIONS_PREPARE_FOR_SLEEP, start=start, lock_held=self.is_lock_held)
        if start:
            if not self._is_wanted:
                self.release_sleep_lock("sleep")  # kept only in case a cycle followed: logind need not wait
            if self._lock_fd is not None and self._deadline is None:
                bound_s = max(0.0, self.inhibit_delay_s - RELEASE_MARGIN_S)
                self._deadline = asyncio.get_running_loop().call_later(bound_s, self.release_sleep_lock, "deadline")
            self._publish(self.name, {"sleeping": True})
        elif self._resume_task is None or self._resume_task.done():
            self._resume_task = asyncio.ensure_future(self._resumed())

    async def _resumed(self) -> None:
        try:
            await self._on_resume()
        finally:
            self._publish(self.name, {"sleeping": False})
