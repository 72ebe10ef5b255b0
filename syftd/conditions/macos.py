"""macOS power and network through ctypes: IOKit's time-remaining estimate, notify(3) fds, reachability.

Owns the mapping (``IOPSGetTimeRemainingEstimate() == -2.0`` ⇒ external power; reachable and no
connection required ⇒ online), waking on notify(3) posts delivered to a file descriptor watched by
the event loop, and polling ``psutil.sensors_battery()`` where IOKit cannot be loaded through ctypes
(psutil's compiled extension reads the same power sources). The system calls sit
behind ``MacAPI`` (three small methods) so the logic is tested on Linux with a fake; the ctypes
signatures themselves have not been run on a Mac. Does not own source selection (``monitor``).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import struct
from collections.abc import Callable
from typing import Any, Protocol

import psutil

from syftd.conditions.source import PolledSource, Publish
from syftd.errors import ConditionSourceError
from syftd.log import get_logger

__all__ = [
    "IOKitAPI",
    "MacAPI",
    "MacNetworkSource",
    "MacPowerSource",
    "PsutilPowerSource",
    "battery_facts",
    "is_external_power",
]

_log = get_logger(__name__)

POWER_NOTIFY = "com.apple.system.powersources.source"
NETWORK_NOTIFY = "com.apple.system.config.network_change"
TIME_REMAINING_UNLIMITED = -2.0
REACHABLE = 1 << 1
CONNECTION_REQUIRED = 1 << 2


class MacAPI(Protocol):
    """The system calls the macOS sources use (ctypes on a Mac, a fake in tests)."""

    def time_remaining(self) -> float:
        """``IOPSGetTimeRemainingEstimate()``: -2.0 unlimited (AC), -1.0 unknown, else seconds."""

    def register_fd(self, name: str) -> tuple[int, int]:
        """``notify_register_file_descriptor(name)``: (fd, token); each post writes the 4-byte token."""

    def cancel(self, token: int) -> None:
        """``notify_cancel(token)`` (also closes the registration's fd)."""

    def reachability_flags(self) -> int:
        """``SCNetworkReachabilityGetFlags`` for 0.0.0.0 (the default route)."""


def is_external_power(time_remaining: float) -> bool:
    """Only "unlimited" means a power adapter is connected; -1.0 (just unplugged) and ≥ 0 are battery."""
    return time_remaining == TIME_REMAINING_UNLIMITED


def battery_facts(battery: Any) -> dict[str, Any]:
    """The power facts of a ``psutil.sensors_battery()`` reading: None (no battery) and an unknown
    ``power_plugged`` are unknown, never "on battery"."""
    if battery is None:
        return {"on_external_power": None, "battery_percent": None}
    plugged = battery.power_plugged
    return {"on_external_power": None if plugged is None else bool(plugged), "battery_percent": float(battery.percent)}


class IOKitAPI:
    """``MacAPI`` through ctypes (IOKit, libSystem notify(3), SystemConfiguration, CoreFoundation).

    Raises:
        OSError: the libraries are not there (not macOS).
    """

    def __init__(self) -> None:
        self._iokit = ctypes.CDLL("/System/Library/Frameworks/IOKit.framework/IOKit")
        self._system = ctypes.CDLL("/usr/lib/libSystem.B.dylib")
        self._sc = ctypes.CDLL("/System/Library/Frameworks/SystemConfiguration.framework/SystemConfiguration")
        self._cf = ctypes.CDLL("/System/Library/Frameworks/CoreFoundation.framework/CoreFoundation")
        self._iokit.IOPSGetTimeRemainingEstimate.restype = ctypes.c_double
        self._iokit.IOPSGetTimeRemainingEstimate.argtypes = []
        self._system.notify_register_file_descriptor.restype = ctypes.c_uint32
        self._system.notify_register_file_descriptor.argtypes = [
            ctypes.c_char_p,
            ctypes.POINTER(ctypes.c_int),
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_int),
        ]
        self._system.notify_cancel.restype = ctypes.c_uint32
        self._system.notify_cancel.argtypes = [ctypes.c_int]
        self._sc.SCNetworkReachabilityCreateWithAddress.restype = ctypes.c_void_p
        self._sc.SCNetworkReachabilityCreateWithAddress.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self._sc.SCNetworkReachabilityGetFlags.restype = ctypes.c_uint8
        self._sc.SCNetworkReachabilityGetFlags.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
        self._cf.CFRelease.argtypes = [ctypes.c_void_p]

    def time_remaining(self) -> float:
        """See ``MacAPI``."""
        return float(self._iokit.IOPSGetTimeRemainingEstimate())

    def register_fd(self, name: str) -> tuple[int, int]:
        """See ``MacAPI``."""
        fd, token = ctypes.c_int(-1), ctypes.c_int(-1)
        status = self._system.notify_register_file_descriptor(name.encode(), ctypes.byref(fd), 0, ctypes.byref(token))
        if status != 0:
            raise OSError(f"notify_register_file_descriptor({name!r}) failed with status {status}")
        return fd.value, token.value

    def cancel(self, token: int) -> None:
        """See ``MacAPI``."""
        self._system.notify_cancel(token)

    def reachability_flags(self) -> int:
        """See ``MacAPI``."""
        sockaddr = struct.pack("BBH4s8x", 16, 2, 0, bytes(4))  # sockaddr_in for 0.0.0.0 (BSD layout)
        ref = self._sc.SCNetworkReachabilityCreateWithAddress(None, sockaddr)
        if not ref:
            return 0
        try:
            flags = ctypes.c_uint32(0)
            ok = self._sc.SCNetworkReachabilityGetFlags(ref, ctypes.byref(flags))
            return flags.value if ok else 0
        finally:
            self._cf.CFRelease(ref)


def _default_api() -> MacAPI:
    try:
        return IOKitAPI()
    except OSError as exc:
        raise ConditionSourceError(f"macOS system libraries are not available here: {exc}") from exc


class _NotifySource:
    """Re-evaluates on each notify(3) post of ``notify_name``; a burst of posts is one evaluation."""

    name = "macos"
    notify_name = ""

    def __init__(self, publish: Publish, api: MacAPI | None = None) -> None:
        self._publish = publish
        self._api = api
        self._fd: int | None = None
        self._token: int | None = None

    async def start(self) -> None:
        """Register for posts, then publish the first reading.

        Raises:
            ConditionSourceError: not on macOS (the libraries cannot be loaded).
        """
        if self._api is None:
            self._api = _default_api()
        self._fd, self._token = self._api.register_fd(self.notify_name)
        os.set_blocking(self._fd, False)
        asyncio.get_running_loop().add_reader(self._fd, self._on_readable)
        await self.refresh()

    async def refresh(self) -> None:
        """Read and publish."""
        self._evaluate()

    async def stop(self) -> None:
        """Unregister; idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
        token, self._token = self._token, None
        if token is not None and self._api is not None:
            self._api.cancel(token)

    def _on_readable(self) -> None:
        if self._fd is None:
            return
        data = b""
        while True:
            try:
                chunk = os.read(self._fd, 4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        tokens = {struct.unpack(">i", data[i : i + 4])[0] for i in range(0, len(data) - 3, 4)}
        if self._token in tokens:
            self._evaluate()

    def _evaluate(self) -> None:
        raise NotImplementedError


class MacPowerSource(_NotifySource):
    """External power from IOKit, woken by ``com.apple.system.powersources.source`` posts."""

    notify_name = POWER_NOTIFY

    def _evaluate(self) -> None:
        assert self._api is not None
        self._publish(self.name, {"on_external_power": is_external_power(self._api.time_remaining())})


class MacNetworkSource(_NotifySource):
    """Online from SystemConfiguration reachability, woken by network-change posts (metered unknown)."""

    notify_name = NETWORK_NOTIFY

    def _evaluate(self) -> None:
        assert self._api is not None
        flags = self._api.reachability_flags()
        online = bool(flags & REACHABLE) and not flags & CONNECTION_REQUIRED
        self._publish(self.name, {"online": online, "connectivity": None, "metered": None})


class PsutilPowerSource(PolledSource):
    """``psutil.sensors_battery()`` every ``poll_interval_s``: the fallback where IOKit cannot be used."""

    name = "psutil"

    def __init__(self, publish: Publish, poll_interval_s: float, battery: Callable[[], Any] = psutil.sensors_battery):
        super().__init__(publish, poll_interval_s)
        self._battery = battery

    async def refresh(self) -> None:
        """Read the battery in a worker thread (the call may block briefly) and publish what it says."""
        self._publish(self.name, battery_facts(await asyncio.to_thread(self._battery)))
