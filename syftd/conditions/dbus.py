"""The system-bus connection the D-Bus sources share, and the base class of a source bound to one bus name.

Owns connecting (a missing bus is ``None``, not an error), the shipped introspection XML, following
a service's owner through ``NameOwnerChanged``, and the attach/detach life of a per-name source.
Does not own what any service's properties mean (``upower``, ``networkmanager``, ``logind``) or
which source is active for an area (``monitor``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

from dbus_fast import BusType, DBusError, Message, MessageType, Variant
from dbus_fast.aio import MessageBus, ProxyInterface
from dbus_fast.introspection import Node

from syftd import events
from syftd.conditions.source import Publish
from syftd.log import get_logger

__all__ = ["DBusSource", "SystemBus", "resolve_address", "unwrap"]

_log = get_logger(__name__)

DEFAULT_SYSTEM_BUS = "unix:path=/var/run/dbus/system_bus_socket"
_DBUS = "org.freedesktop.DBus"
_DBUS_PATH = "/org/freedesktop/DBus"
PROPERTIES = "org.freedesktop.DBus.Properties"
CONNECT_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 5.0


def resolve_address(configured: str | None) -> str:
    """The bus address: the configured one, else ``$DBUS_SYSTEM_BUS_ADDRESS``, else the default socket."""
    return configured or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or DEFAULT_SYSTEM_BUS


def unwrap(props: Mapping[str, Any]) -> dict[str, Any]:
    """Plain values from a property dict whose values may be ``Variant``."""
    return {k: (v.value if isinstance(v, Variant) else v) for k, v in props.items()}


def _introspection(filename: str) -> Node:
    text = (resources.files("syftd.conditions") / "introspection" / filename).read_text(encoding="utf-8")
    return Node.parse(text)


class SystemBus:
    """One connection to the system bus (with unix-fd passing, which logind's ``Inhibit`` needs)."""

    def __init__(self, bus: MessageBus, address: str) -> None:
        self.bus = bus
        self.address = address
        self._owner_watchers: dict[str, list[Callable[[str], None]]] = {}
        self._disconnect_callbacks: list[Callable[[], None]] = []
        self._nodes: dict[str, Node] = {}
        self._closing = False
        bus.add_message_handler(self._on_message)
        self._disconnect_task = asyncio.ensure_future(self._watch_disconnect())

    @classmethod
    async def connect(cls, address: str | None) -> SystemBus | None:
        """Connect to ``resolve_address(address)``; ``None`` when there is no bus to connect to."""
        resolved = resolve_address(address)
        bus = MessageBus(bus_address=resolved, bus_type=BusType.SYSTEM, negotiate_unix_fd=True)
        try:
            await asyncio.wait_for(bus.connect(), CONNECT_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError, EOFError, ValueError) as exc:
            _log.info(events.CONDITIONS_BUS_UNAVAILABLE, address=resolved, error=repr(exc))
            bus.disconnect()
            return None
        except Exception as exc:  # noqa: BLE001 - dbus-fast raises AuthError and others; all mean "no bus"
            _log.info(events.CONDITIONS_BUS_UNAVAILABLE, address=resolved, error=repr(exc))
            bus.disconnect()
            return None
        return cls(bus, resolved)

    @property
    def connected(self) -> bool:
        """Whether the connection is still up."""
        return bool(self.bus.connected) and not self._closing

    def proxy_interface(self, name: str, path: str, xml: str, interface: str) -> ProxyInterface:
        """A proxy for ``interface`` of ``name`` at ``path``, built from the shipped ``xml``."""
        node = self._nodes.get(xml)
        if node is None:
            node = self._nodes[xml] = _introspection(xml)
        return self.bus.get_proxy_object(name, path, node).get_interface(interface)

    async def call(self, msg: Message) -> Message:
        """A method call with a timeout; an error reply raises ``DBusError``.

        Raises:
            asyncio.TimeoutError: no reply within ``CALL_TIMEOUT_S``.
        """
        reply = await asyncio.wait_for(self.bus.call(msg), CALL_TIMEOUT_S)
        if reply.message_type == MessageType.ERROR:
            raise DBusError(reply.error_name or "org.freedesktop.DBus.Error.Failed", str(reply.body))
        return reply

    async def get_all(self, name: str, path: str, interface: str) -> dict[str, Any]:
        """``Properties.GetAll(interface)`` of ``name`` at ``path``, unwrapped."""
        reply = await self.call(
            Message(destination=name, path=path, interface=PROPERTIES, member="GetAll", signature="s", body=[interface])
        )
        return unwrap(reply.body[0])

    async def name_owner(self, name: str) -> str:
        """The unique name owning ``name``, or ``""``."""
        reply = await asyncio.wait_for(
            self.bus.call(
                Message(
                    destination=_DBUS,
                    path=_DBUS_PATH,
                    interface=_DBUS,
                    member="GetNameOwner",
                    signature="s",
                    body=[name],
                )
            ),
            CALL_TIMEOUT_S,
        )
        if reply.message_type == MessageType.ERROR:
            return ""
        return str(reply.body[0])

    async def watch_name(self, name: str, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(new_owner)`` on each owner change of ``name`` ("" = gone); returns unwatch."""
        rule = (
            f"type='signal',sender='{_DBUS}',interface='{_DBUS}',path='{_DBUS_PATH}',"
            f"member='NameOwnerChanged',arg0='{name}'"
        )
        self._owner_watchers.setdefault(name, []).append(callback)
        await self.call(
            Message(destination=_DBUS, path=_DBUS_PATH, interface=_DBUS, member="AddMatch", signature="s", body=[rule])
        )

        def unwatch() -> None:
            watchers = self._owner_watchers.get(name, [])
            if callback in watchers:
                watchers.remove(callback)

        return unwatch

    def on_disconnect(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once if the bus connection drops (not on ``close()``)."""
        self._disconnect_callbacks.append(callback)

    async def close(self) -> None:
        """Disconnect; idempotent."""
        if self._closing:
            return
        self._closing = True
        self.bus.disconnect()
        try:
            await asyncio.wait_for(asyncio.shield(self._disconnect_task), CALL_TIMEOUT_S)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self._disconnect_task.cancel()

    async def _watch_disconnect(self) -> None:
        try:
            await self.bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
        except Exception as exc:  # noqa: BLE001 - any end of the connection is a disconnect
            _log.info(events.CONDITIONS_BUS_DISCONNECTED, error=repr(exc))
        if not self._closing:
            _log.warning(events.CONDITIONS_BUS_LOST, address=self.address)
            for callback in list(self._disconnect_callbacks):
                callback()

    def _on_message(self, msg: Message) -> bool:
        if (
            msg.message_type == MessageType.SIGNAL
            and msg.member == "NameOwnerChanged"
            and msg.sender == _DBUS
            and msg.path == _DBUS_PATH
        ):
            name, _old, new = msg.body
            for callback in list(self._owner_watchers.get(name, ())):
                callback(new)
        return False


class DBusSource:
    """A source bound to one well-known bus name: attached while it has an owner, detached while not.

    Subclasses implement ``_attach()`` (subscribe to signals first, then read and publish a
    snapshot) and ``_detach()`` (drop the subscriptions). ``on_availability(bool)`` tells the
    monitor when the service comes and goes, so it can switch to a fallback and back.
    """

    name = "dbus"
    bus_name = ""

    def __init__(self, bus: SystemBus, publish: Publish, on_availability: Callable[[bool], None]) -> None:
        self._bus = bus
        self._publish = publish
        self._on_availability = on_availability
        self._unwatch: Callable[[], None] | None = None
        self._attached = False
        self._transition: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def available(self) -> bool:
        """Whether the service is present and its snapshot published."""
        return self._attached

    async def start(self) -> None:
        """Watch the name, then attach if it has an owner (publishing the first snapshot)."""
        self._unwatch = await self._bus.watch_name(self.bus_name, self._on_owner_changed)
        self._bus.on_disconnect(self._on_bus_lost)
        if await self._bus.name_owner(self.bus_name):
            await self._try_attach()

    async def refresh(self) -> None:
        """Read the service's state afresh (after resume)."""
        if self._attached:
            await self._read()

    async def stop(self) -> None:
        """Stop following the service; idempotent."""
        self._stopped = True
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        if self._transition is not None and not self._transition.done():
            self._transition.cancel()
            await asyncio.gather(self._transition, return_exceptions=True)
        if self._attached:
            self._attached = False
            self._detach()

    async def _attach(self) -> None:
        raise NotImplementedError

    async def _read(self) -> None:
        raise NotImplementedError

    def _detach(self) -> None:
        raise NotImplementedError

    async def _try_attach(self) -> None:
        try:
            await self._attach()
        except Exception as exc:  # noqa: BLE001 - a service that answers badly counts as absent
            _log.warning(events.CONDITIONS_SOURCE_FAILED, source=self.name, error=repr(exc))
            self._detach()
            return
        self._attached = True

    def _on_owner_changed(self, new_owner: str) -> None:
        if self._stopped:
            return
        previous = self._transition
        self._transition = asyncio.ensure_future(self._follow_owner(new_owner, previous))

    async def _follow_owner(self, new_owner: str, previous: asyncio.Task[None] | None) -> None:
        if previous is not None and not previous.done():
            await asyncio.gather(previous, return_exceptions=True)
        was = self._attached
        if self._attached:
            self._attached = False
            self._detach()
        if new_owner:
            await self._try_attach()
        _log.info(events.CONDITIONS_SERVICE_OWNER_CHANGED, source=self.name, present=bool(new_owner))
        if was != self._attached or (was and self._attached):
            self._on_availability(self._attached)

    def _on_bus_lost(self) -> None:
        if self._attached and not self._stopped:
            self._attached = False
            self._detach()
            self._on_availability(False)
