"""The routing table as the network fallback: online = a default route on an up interface.

Owns parsing ``/proc/net/route`` and ``/proc/net/ipv6_route``, the metered guess from the
interface (``metered_policy = "auto"``), and following changes through an rtnetlink socket on the
event loop (polling every ``poll_interval_s`` only where netlink is unavailable). Does not own
NetworkManager's richer answer (``networkmanager``) or when this fallback is used (``monitor``).
Connectivity is unknown here (``None``): the routing table cannot see a captive portal.
"""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from syftd import events
from syftd.conditions.source import Publish
from syftd.log import get_logger

__all__ = ["DefaultRoute", "RouteSource", "default_routes", "is_interface_up", "is_metered_interface"]

_log = get_logger(__name__)

RTF_UP = 0x1
RTF_REJECT = 0x200
IFF_UP = 0x1
# RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE
NETLINK_GROUPS = 0x1 | 0x10 | 0x40 | 0x100 | 0x400
SETTLE_S = 0.02
_METERED_PREFIXES = ("ww", "ppp", "usb")
_METERED_DRIVERS = frozenset(
    {
        "rndis_host",
        "cdc_ether",
        "cdc_ncm",
        "cdc_mbim",
        "qmi_wwan",
        "ipheth",
        "huawei_cdc_ncm",
        "cdc_subset",
        "sierra_net",
    }
)


@dataclass(frozen=True, slots=True)
class DefaultRoute:
    """One default route: its family and interface."""

    family: Literal["ipv4", "ipv6"]
    interface: str


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return []


def default_routes(proc_net: Path) -> list[DefaultRoute]:
    """The default routes that are up, IPv4 then IPv6 (IPv6 reject and loopback routes excluded)."""
    routes = []
    for line in _lines(proc_net / "route")[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[1] == "00000000" and fields[7] == "00000000":
            if int(fields[3], 16) & RTF_UP:
                routes.append(DefaultRoute("ipv4", fields[0]))
    for line in _lines(proc_net / "ipv6_route"):
        fields = line.split()
        if len(fields) >= 10 and set(fields[0]) == {"0"} and fields[1] == "00" and fields[9] != "lo":
            flags = int(fields[8], 16)
            if flags & RTF_UP and not flags & RTF_REJECT:
                routes.append(DefaultRoute("ipv6", fields[9]))
    return routes


def is_interface_up(sys_class_net: Path, interface: str) -> bool:
    """Administratively up (IFF_UP) and operationally up (``operstate`` up, or unknown as for tun and lo).

    sysfs ``flags`` never shows IFF_RUNNING, so carrier comes from ``operstate``.
    """
    try:
        flags = int((sys_class_net / interface / "flags").read_text().strip(), 16)
        operstate = (sys_class_net / interface / "operstate").read_text().strip()
    except (OSError, ValueError):
        return False
    return bool(flags & IFF_UP) and operstate in ("up", "unknown")


def is_metered_interface(sys_class_net: Path, interface: str) -> bool:
    """A guess: mobile broadband or USB tethering, by name or driver (NetworkManager knows better)."""
    if interface.startswith(_METERED_PREFIXES):
        return True
    try:
        driver = os.path.basename(os.readlink(sys_class_net / interface / "device" / "driver"))
    except OSError:
        return False
    return driver in _METERED_DRIVERS


class RouteSource:
    """Publishes ``online``/``metered`` from the routing table, woken by rtnetlink."""

    name = "route"

    def __init__(
        self,
        publish: Publish,
        *,
        sysfs_root: Path,
        poll_interval_s: float,
        metered_policy: Literal["auto", "never"] = "auto",
        proc_net: Path = Path("/proc/net"),
        use_netlink: bool = True,
    ) -> None:
        self._publish = publish
        self._net = sysfs_root / "class" / "net"
        self._proc_net = proc_net
        self._interval_s = poll_interval_s
        self._metered_policy = metered_policy
        self._use_netlink = use_netlink
        self._sock: socket.socket | None = None
        self._settle: asyncio.TimerHandle | None = None
        self._poll_task: asyncio.Task[None] | None = None

    @property
    def is_event_driven(self) -> bool:
        """Whether rtnetlink wakes this source (else it polls)."""
        return self._sock is not None

    async def start(self) -> None:
        """Subscribe to rtnetlink (or start polling), then publish the first reading."""
        if self._use_netlink:
            self._sock = self._open_netlink()
        if self._sock is not None:
            asyncio.get_running_loop().add_reader(self._sock.fileno(), self._on_readable)
        else:
            self._poll_task = asyncio.ensure_future(self._poll())
        await self.refresh()

    async def refresh(self) -> None:
        """Read the routing table and publish."""
        self._evaluate()

    async def stop(self) -> None:
        """Stop listening; idempotent."""
        if self._settle is not None:
            self._settle.cancel()
            self._settle = None
        sock, self._sock = self._sock, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
        task, self._poll_task = self._poll_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _open_netlink(self) -> socket.socket | None:
        try:
            sock = socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
            )
        except (OSError, AttributeError) as exc:
            _log.info(events.CONDITIONS_NETLINK_UNAVAILABLE, error=repr(exc))
            return None
        try:
            sock.bind((0, NETLINK_GROUPS))
        except OSError as exc:
            sock.close()
            _log.info(events.CONDITIONS_NETLINK_UNAVAILABLE, error=repr(exc))
            return None
        return sock

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        while True:
            try:
                if not sock.recv(65536):
                    break
            except BlockingIOError:
                break
            except OSError:  # ENOBUFS: we missed messages; the re-read below covers them
                break
        if self._settle is None:
            self._settle = asyncio.get_running_loop().call_later(SETTLE_S, self._settled)

    def _settled(self) -> None:
        self._settle = None
        self._evaluate()

    def _evaluate(self) -> None:
        up = [r.interface for r in default_routes(self._proc_net) if is_interface_up(self._net, r.interface)]
        metered = self._metered_policy == "auto" and bool(up) and all(is_metered_interface(self._net, i) for i in up)
        self._publish(self.name, {"online": bool(up), "connectivity": None, "metered": metered})

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            self._evaluate()
