"""The sysfs and routing-table fallbacks over fake trees, and a monitor with no bus at all."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.dbus import wait_for_conditions
from support.timing import LOAD_MARGIN_S

from syftd.conditions.route import default_routes, is_interface_up, is_metered_interface
from syftd.conditions.sysfs import battery_percent, max_temperature_c, on_ac_power
from syftd.errors import ConditionSourceError

NO_BUS = "unix:path=/nonexistent/syftd-test-bus"


def supply(sysfs: Path, name: str, **attrs: str) -> Path:
    """A fake /sys/class/power_supply/<name> with the given attribute files."""
    path = sysfs / "class" / "power_supply" / name
    path.mkdir(parents=True, exist_ok=True)
    for key, value in attrs.items():
        (path / key).write_text(value + "\n")
    return path


def test_no_power_supplies_at_all_is_a_desktop_on_power(sysfs: Path, tmp_path: Path) -> None:
    """An empty (or missing) power_supply class means on AC, and no battery level."""
    assert on_ac_power(sysfs) is True
    assert on_ac_power(tmp_path / "missing") is True
    assert battery_percent(sysfs) is None


def test_discharging_battery_without_online_supply_is_on_battery(sysfs: Path) -> None:
    """A discharging battery and an offline adapter: on battery, its capacity is the level."""
    supply(sysfs, "AC", type="Mains", online="0")
    supply(sysfs, "BAT0", type="Battery", status="Discharging", present="1", capacity="57")
    assert on_ac_power(sysfs) is False
    assert battery_percent(sysfs) == 57.0


@pytest.mark.parametrize("status", ["Charging", "Full", "Not charging"])
def test_connected_adapter_counts_whatever_the_battery_does(sysfs: Path, status: str) -> None:
    """External power means connected, not charging: full and charge-limited batteries on AC are on power."""
    supply(sysfs, "ADP1", type="Mains", online="1")
    supply(sysfs, "BAT0", type="Battery", status=status, present="1", capacity="80")
    assert on_ac_power(sysfs) is True


def test_peripheral_and_absent_batteries_are_ignored(sysfs: Path) -> None:
    """A mouse battery (scope Device) or a removed battery discharging does not mean the machine is."""
    supply(sysfs, "hidpp_battery_0", type="Battery", scope="Device", status="Discharging", capacity="10")
    supply(sysfs, "BAT1", type="Battery", present="0", status="Discharging")
    assert on_ac_power(sysfs) is True
    assert battery_percent(sysfs) is None


def test_usb_supply_in_source_role_is_not_power_in(sysfs: Path) -> None:
    """A USB-C port that supplies power to a phone is not external power for us."""
    supply(sysfs, "ucsi-source-psy-1", type="USB", online="1", power_role="sink [source]")
    supply(sysfs, "BAT0", type="Battery", status="Discharging", present="1", capacity="30")
    assert on_ac_power(sysfs) is False
    supply(sysfs, "ucsi-source-psy-2", type="USB", online="1", power_role="[sink] source")
    assert on_ac_power(sysfs) is True


def test_temperature_is_the_hottest_zone_in_celsius(sysfs: Path) -> None:
    """thermal_zone*/temp are millidegrees; the max wins; unreadable zones are skipped."""
    assert max_temperature_c(sysfs) is None
    for name, temp in (("thermal_zone0", "45000"), ("thermal_zone1", "71500"), ("thermal_zone2", "garbage")):
        zone = sysfs / "class" / "thermal" / name
        zone.mkdir()
        (zone / "temp").write_text(temp + "\n")
    assert max_temperature_c(sysfs) == 71.5


def _proc_net(tmp_path: Path, route: str, ipv6: str = "") -> Path:
    net = tmp_path / "proc_net"
    net.mkdir(exist_ok=True)
    header = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    (net / "route").write_text(header + route)
    (net / "ipv6_route").write_text(ipv6)
    return net


def _iface(sysfs: Path, name: str, flags: str = "0x1003", operstate: str = "up", driver: str | None = None) -> None:
    path = sysfs / "class" / "net" / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "flags").write_text(flags + "\n")
    (path / "operstate").write_text(operstate + "\n")
    if driver is not None:
        drivers = sysfs / "bus" / "usb" / "drivers" / driver
        drivers.mkdir(parents=True, exist_ok=True)
        (path / "device").mkdir(exist_ok=True)
        (path / "device" / "driver").symlink_to(drivers)


V4_DEFAULT = "eth0\t00000000\t0102000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
V4_LAN = "eth0\t0002000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
V6_DEFAULT = (
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "fd000000000000000000000000000001 00000400 00000001 00000000 00000003 wlan0\n"
)
V6_REJECT = (
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n"
)


def test_default_routes_are_read_from_both_tables(tmp_path: Path) -> None:
    """IPv4 dest 0/0 with RTF_UP and IPv6 ::/0 not rejected and not on lo count; a LAN route does not."""
    net = _proc_net(tmp_path, V4_DEFAULT + V4_LAN, V6_DEFAULT + V6_REJECT)
    assert [(r.family, r.interface) for r in default_routes(net)] == [("ipv4", "eth0"), ("ipv6", "wlan0")]
    assert default_routes(_proc_net(tmp_path, V4_LAN)) == []
    assert default_routes(tmp_path / "missing") == []


def test_interface_must_be_up_with_a_carrier(sysfs: Path) -> None:
    """IFF_UP and operstate up (or unknown, as tun reports) are both needed; no carrier is down."""
    _iface(sysfs, "eth0")
    _iface(sysfs, "tun0", operstate="unknown")
    _iface(sysfs, "eth1", operstate="lowerlayerdown")
    _iface(sysfs, "eth2", "0x1002")
    net = sysfs / "class" / "net"
    assert [is_interface_up(net, i) for i in ("eth0", "tun0", "eth1", "eth2", "nope")] == [
        True,
        True,
        False,
        False,
        False,
    ]


def test_metered_guess_from_interface_name_or_driver(sysfs: Path) -> None:
    """wwan/ppp/usb names and tethering drivers are metered guesses; plain Ethernet is not."""
    _iface(sysfs, "wwan0")
    _iface(sysfs, "enx001122", driver="cdc_ether")
    _iface(sysfs, "eth0")
    net = sysfs / "class" / "net"
    assert [is_metered_interface(net, i) for i in ("wwan0", "ppp0", "enx001122", "eth0")] == [True, True, True, False]


async def test_no_bus_at_all_falls_back_without_error(
    make_monitor: Callable[..., Any], sysfs: Path, tmp_path: Path
) -> None:
    """A bus address that answers nothing: sysfs power, route network, no sleep source, and start() returns."""
    supply(sysfs, "BAT0", type="Battery", status="Discharging", present="1", capacity="66")
    monitor = await make_monitor(bus_address=NO_BUS)
    assert monitor.active_sources == {"power": "sysfs", "network": "route", "sleep": "none", "thermal": "sysfs-thermal"}
    c = monitor.current
    assert (c.on_external_power, c.battery_percent, c.sleeping) == (False, 66.0, False)
    assert c.online is not None
    assert c.free_disk_mb is not None and c.free_disk_mb > 0
    assert await monitor.hold_sleep_lock() is False


async def test_forcing_a_dbus_source_without_a_bus_is_a_clear_error(
    make_monitor: Callable[..., Any],
) -> None:
    """power_source = "upower" with no bus raises ConditionSourceError naming the key."""
    with pytest.raises(ConditionSourceError, match="power_source = 'upower' needs the system bus"):
        await make_monitor(bus_address=NO_BUS, power_source="upower")


async def test_forcing_macos_sources_on_linux_is_a_clear_error(make_monitor: Callable[..., Any]) -> None:
    """network_source = "macos" where the macOS libraries cannot load raises ConditionSourceError."""
    with pytest.raises(ConditionSourceError, match="macOS"):
        await make_monitor(bus_address=NO_BUS, network_source="macos")


async def test_none_sources_publish_their_assumptions(make_monitor: Callable[..., Any]) -> None:
    """ "none" means: assume on AC, online and unmetered, never told of sleep."""
    monitor = await make_monitor(power_source="none", network_source="none", sleep_source="none")
    c = monitor.current
    assert (c.on_external_power, c.online, c.metered, c.sleeping) == (True, True, False, False)
    assert monitor.active_sources["power"] == "none"


async def test_sysfs_power_is_polled_at_the_configured_interval(make_monitor: Callable[..., Any], sysfs: Path) -> None:
    """Without UPower, unplugging (a sysfs change) is seen at the next poll."""
    adapter = supply(sysfs, "AC", type="Mains", online="1")
    supply(sysfs, "BAT0", type="Battery", status="Charging", present="1", capacity="90")
    monitor = await make_monitor(bus_address=NO_BUS, poll_interval_s=0.05)
    assert monitor.current.on_external_power is True
    (adapter / "online").write_text("0\n")
    (sysfs / "class" / "power_supply" / "BAT0" / "status").write_text("Discharging\n")
    await wait_for_conditions(monitor, lambda c: c.on_external_power is False, 1.0 + LOAD_MARGIN_S)


async def test_temperature_is_polled_only_while_thermal_watching_is_on(
    make_monitor: Callable[..., Any], sysfs: Path
) -> None:
    """Read once at start; while active every thermal_poll_s; after switching off, changes go unseen."""
    zone = sysfs / "class" / "thermal" / "thermal_zone0"
    zone.mkdir()
    (zone / "temp").write_text("40000\n")
    monitor = await make_monitor(bus_address=NO_BUS, thermal_poll_s=0.05)
    assert monitor.current.temperature_c == 40.0
    monitor.set_thermal_active(True)
    (zone / "temp").write_text("85000\n")
    await wait_for_conditions(monitor, lambda c: c.temperature_c == 85.0, 1.0 + LOAD_MARGIN_S)
    monitor.set_thermal_active(False)
    (zone / "temp").write_text("30000\n")
    assert monitor.refresh_disk() is not None
    assert monitor.current.temperature_c == 85.0
