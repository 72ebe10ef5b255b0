"""A private system bus with python-dbusmock's upower, networkmanager and logind mocks, and their controls.

Owns starting a real ``dbus-daemon`` (``<type>system</type>``, like dbusmock's PrivateDBus) on a
socket in a temporary directory, running each mock as a separate process under the *system*
Python (Debian's python3-dbusmock needs dbus-python and, for logind, PyGObject), killing and
restarting a mock mid-test, resetting their state, and driving them (``MockControl``). Waits are
on D-Bus signals (``NameOwnerChanged``), never on sleeps. Used by tests/conditions and by the
end-to-end daemon tests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol, TypeVar

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from support.timing import LOAD_MARGIN_S

__all__ = [
    "MOCK_NAMES",
    "DBusMocks",
    "MockControl",
    "PrivateSystemBus",
    "missing_reason",
    "wait_for_conditions",
]

SYSTEM_PYTHON = "/usr/bin/python3"
MOCK_NAMES = {
    "upower": "org.freedesktop.UPower",
    "networkmanager": "org.freedesktop.NetworkManager",
    "logind": "org.freedesktop.login1",
}
_PATHS = {
    "upower": "/org/freedesktop/UPower",
    "networkmanager": "/org/freedesktop/NetworkManager",
    "logind": "/org/freedesktop/login1",
}
_IFACES = {
    "upower": "org.freedesktop.UPower",
    "networkmanager": "org.freedesktop.NetworkManager",
    "logind": "org.freedesktop.login1.Manager",
}
DISPLAY_DEVICE = "/org/freedesktop/UPower/devices/DisplayDevice"
DEVICE_IFACE = "org.freedesktop.UPower.Device"
MOCK_IFACE = "org.freedesktop.DBus.Mock"
PROPS = "org.freedesktop.DBus.Properties"
START_TIMEOUT_S = 15.0
TEST_INHIBIT_DELAY_USEC = 1_500_000

_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""

T = TypeVar("T")


def missing_reason() -> str | None:
    """Why the D-Bus tests cannot run here, or None when dbus-daemon and python3-dbusmock are present."""
    if shutil.which("dbus-daemon") is None:
        return "dbus-daemon is not installed (apt-get install dbus; .ci/run does)"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import dbusmock, dbus, gi"], capture_output=True, check=False)
    if probe.returncode != 0:
        return "python3-dbusmock (with python3-dbus, python3-gi) is not installed for /usr/bin/python3"
    return None


def _run_in_thread(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on its own loop in a worker thread (for synchronous session fixtures)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


async def _connect(address: str) -> MessageBus:
    return await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()


async def _call(bus: MessageBus, **kw: Any) -> Message:
    reply = await asyncio.wait_for(bus.call(Message(**kw)), START_TIMEOUT_S)
    if reply.message_type == MessageType.ERROR:
        raise RuntimeError(f"{kw.get('member')} failed: {reply.error_name} {reply.body}")
    return reply


async def _await_owner(bus: MessageBus, name: str, present: bool, proc: subprocess.Popen[bytes] | None) -> None:
    """Until ``name`` has an owner (or none, when ``present`` is False); signal first, then the check."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def handler(msg: Message) -> bool:
        if msg.member == "NameOwnerChanged" and msg.body[0] == name and bool(msg.body[2]) == present:
            if not done.done():
                done.set_result(None)
        return False

    bus.add_message_handler(handler)
    try:
        await _call(
            bus,
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="AddMatch",
            signature="s",
            body=[f"type='signal',member='NameOwnerChanged',arg0='{name}'"],
        )
        reply = await bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="NameHasOwner",
                signature="s",
                body=[name],
            )
        )
        if bool(reply.body[0]) == present:
            return
        deadline = loop.time() + START_TIMEOUT_S
        while not done.done():
            if proc is not None and present and proc.poll() is not None:
                raise RuntimeError(f"mock for {name} exited with {proc.returncode} before owning its name")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"{name} {'did not appear' if present else 'did not go away'}")
            await asyncio.wait({done}, timeout=min(remaining, 0.5))
    finally:
        bus.remove_message_handler(handler)


class PrivateSystemBus:
    """A real ``dbus-daemon`` configured as a system bus, listening in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.address = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Start the daemon; returns its address (``unix:path=...``)."""
        config = self.directory / "bus.conf"
        config.write_text(_BUS_CONFIG.format(socket=self.directory / "system_bus_socket"))
        self._proc = subprocess.Popen(
            ["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().decode().strip()
        if not line:
            raise RuntimeError(f"dbus-daemon printed no address (exit status {self._proc.poll()})")
        self.address = line.split(",")[0] if line.startswith("unix:path=") else line
        return self.address

    def stop(self) -> None:
        """Stop the daemon; idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()


class DBusMocks:
    """The three dbusmock templates on a private system bus, each its own process."""

    def __init__(self, directory: Path) -> None:
        self.bus = PrivateSystemBus(directory)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.address = ""

    def start(self) -> None:
        """Start the bus and all mocks; returns when each owns its name."""
        self.address = self.bus.start()
        _run_in_thread(self._start_all)

    def stop(self) -> None:
        """Stop all mocks and the bus; idempotent."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            proc.wait(10)
        self.procs.clear()
        self.bus.stop()

    def env(self) -> dict[str, str]:
        """``os.environ`` with ``DBUS_SYSTEM_BUS_ADDRESS`` pointing at the private bus."""
        return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.address}

    async def kill(self, template: str) -> None:
        """SIGKILL one mock and return once its name is gone from the bus."""
        bus = await _connect(self.address)
        try:
            proc = self.procs[template]
            proc.send_signal(signal.SIGKILL)
            await _await_owner(bus, MOCK_NAMES[template], False, None)
            proc.wait(10)
        finally:
            bus.disconnect()

    async def restart(self, template: str) -> None:
        """(Re)start one mock and return once it owns its name again (its state is the template's)."""
        bus = await _connect(self.address)
        try:
            await self._spawn(bus, template)
        finally:
            bus.disconnect()

    def is_running(self, template: str) -> bool:
        """Whether that mock's process is alive."""
        proc = self.procs.get(template)
        return proc is not None and proc.poll() is None

    async def _start_all(self) -> None:
        bus = await _connect(self.address)
        try:
            for template in MOCK_NAMES:
                await self._spawn(bus, template)
        finally:
            bus.disconnect()

    async def _spawn(self, bus: MessageBus, template: str) -> None:
        # Popen, not asyncio's: the mock outlives this loop (the session fixture runs on its own thread's loop)
        proc = subprocess.Popen(  # noqa: ASYNC220
            [SYSTEM_PYTHON, "-m", "dbusmock", "--system", "--template", template],
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs[template] = proc
        await _await_owner(bus, MOCK_NAMES[template], True, proc)


class MockControl:
    """Drives the mocks from the test's event loop (each call is a real D-Bus call to the mock)."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus

    @classmethod
    async def connect(cls, address: str) -> MockControl:
        """A control connection to the private bus."""
        return cls(await _connect(address))

    def close(self) -> None:
        """Disconnect."""
        self.bus.disconnect()

    async def reset(self) -> None:
        """Baseline: on AC, battery 80 % present, NM connected global + full + unmetered, not idle."""
        await self.set_on_battery(False)
        await self.set_battery(80.0, present=True)
        await self._ensure(
            "networkmanager",
            _PATHS["networkmanager"],
            _IFACES["networkmanager"],
            {
                "Metered": Variant("u", 4),
                "ConnectivityCheckEnabled": Variant("b", True),
                "State": Variant("u", 70),
                "Connectivity": Variant("u", 4),
            },
        )
        await self._ensure(
            "logind",
            _PATHS["logind"],
            _IFACES["logind"],
            {"InhibitDelayMaxUSec": Variant("t", TEST_INHIBIT_DELAY_USEC), "IdleHint": Variant("b", False)},
        )

    async def set_on_battery(self, on_battery: bool) -> None:
        """UPower ``OnBattery`` (emits PropertiesChanged)."""
        await self._set("upower", _PATHS["upower"], _IFACES["upower"], "OnBattery", Variant("b", on_battery))

    async def set_battery(self, percent: float, *, present: bool = True) -> None:
        """The display device's ``Percentage`` and ``IsPresent``."""
        await self._set("upower", DISPLAY_DEVICE, DEVICE_IFACE, "IsPresent", Variant("b", present))
        await self._set("upower", DISPLAY_DEVICE, DEVICE_IFACE, "Percentage", Variant("d", percent))

    async def set_network(self, **props: int | bool) -> None:
        """NetworkManager properties: ``State``, ``Connectivity``, ``Metered`` or ``ConnectivityCheckEnabled``."""
        for name, value in props.items():
            variant = Variant("b", value) if isinstance(value, bool) else Variant("u", value)
            await self._set("networkmanager", _PATHS["networkmanager"], _IFACES["networkmanager"], name, variant)

    async def set_idle(self, idle: bool) -> None:
        """logind ``IdleHint``."""
        await self._set("logind", _PATHS["logind"], _IFACES["logind"], "IdleHint", Variant("b", idle))

    async def prepare_for_sleep(self, start: bool) -> None:
        """Emit logind's ``PrepareForSleep(start)``."""
        await _call(
            self.bus,
            destination=MOCK_NAMES["logind"],
            path=_PATHS["logind"],
            interface=MOCK_IFACE,
            member="EmitSignal",
            signature="sssav",
            body=[_IFACES["logind"], "PrepareForSleep", "b", [Variant("b", start)]],
        )

    async def list_inhibitors(self) -> list[tuple[str, str, str, str, int, int]]:
        """logind's ``ListInhibitors()``: (what, who, why, mode, uid, pid)."""
        reply = await _call(
            self.bus,
            destination=MOCK_NAMES["logind"],
            path=_PATHS["logind"],
            interface=_IFACES["logind"],
            member="ListInhibitors",
        )
        return [tuple(row) for row in reply.body[0]]

    async def _set(self, template: str, path: str, iface: str, name: str, value: Variant) -> None:
        await _call(
            self.bus,
            destination=MOCK_NAMES[template],
            path=path,
            interface=PROPS,
            member="Set",
            signature="ssv",
            body=[iface, name, value],
        )

    async def _ensure(self, template: str, path: str, iface: str, props: dict[str, Variant]) -> None:
        reply = await _call(
            self.bus,
            destination=MOCK_NAMES[template],
            path=path,
            interface=PROPS,
            member="GetAll",
            signature="s",
            body=[iface],
        )
        for name, value in props.items():
            if name in reply.body[0]:
                await self._set(template, path, iface, name, value)
            else:
                await _call(
                    self.bus,
                    destination=MOCK_NAMES[template],
                    path=path,
                    interface=MOCK_IFACE,
                    member="AddProperty",
                    signature="ssv",
                    body=[iface, name, value],
                )


class _Observable(Protocol):
    @property
    def current(self) -> Any: ...

    def subscribe(self, callback: Callable[[Any], None]) -> Callable[[], None]: ...


async def wait_for_conditions(
    monitor: _Observable, predicate: Callable[[Any], bool], timeout_s: float = 1.0 + LOAD_MARGIN_S
) -> Any:
    """The first published value (or the current one) for which ``predicate`` holds, within ``timeout_s``
    (by default 1 s plus the load margin).

    Raises:
        TimeoutError: with the last value seen.
    """
    if predicate(monitor.current):
        return monitor.current
    found: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def on_change(value: Any) -> None:
        if not found.done() and predicate(value):
            found.set_result(value)

    unsubscribe = monitor.subscribe(on_change)
    try:
        return await asyncio.wait_for(found, timeout_s)
    except asyncio.TimeoutError:
        raise TimeoutError(f"no matching conditions within {timeout_s} s; last: {monitor.current}") from None
    finally:
        unsubscribe()
