"""The D-Bus sources against a real private dbus-daemon with python-dbusmock's templates."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs
from support.dbus import DBusMocks, MockControl, wait_for_conditions
from support.timing import LOAD_MARGIN_S
from support.waiting import poll_until

from syftd.conditions import Conditions, Connectivity, logind

pytestmark = pytest.mark.dbus


def has(**facts: Any) -> Callable[[Conditions], bool]:
    """A predicate: every given fact has the given value."""
    return lambda c: all(getattr(c, name) == value for name, value in facts.items())


async def test_start_publishes_the_dbus_snapshot_and_selects_dbus_sources(
    mocks: MockControl, dbus_mocks: DBusMocks, make_monitor: Callable[..., Any]
) -> None:
    """With the services present, start() returns with UPower/NM/logind facts and those sources active."""
    monitor = await make_monitor(bus_address=dbus_mocks.address)
    c = monitor.current
    assert (c.on_external_power, c.battery_percent, c.online, c.connectivity, c.metered, c.idle, c.sleeping) == (
        True,
        80.0,
        True,
        Connectivity.FULL,
        False,
        False,
        False,
    )
    assert monitor.active_sources == {
        "power": "upower",
        "network": "networkmanager",
        "sleep": "logind",
        "thermal": "sysfs-thermal",
    }


def _discharging_battery(sysfs: Any, capacity: int = 42) -> None:
    bat = sysfs / "class" / "power_supply" / "BAT0"
    bat.mkdir(parents=True, exist_ok=True)
    for name, value in {"type": "Battery", "status": "Discharging", "present": "1", "capacity": str(capacity)}.items():
        (bat / name).write_text(value + "\n")


async def test_unplug_and_replug_are_published_within_a_second(
    mocks: MockControl, dbus_mocks: DBusMocks, make_monitor: Callable[..., Any]
) -> None:
    """OnBattery true → on_external_power False, false → True, each published within 1 s on an idle machine
    (the bound adds the load margin; tests/bench measures the latency)."""
    monitor = await make_monitor(bus_address=dbus_mocks.address)
    for on_battery in (True, False, True):
        started = time.monotonic()
        await mocks.set_on_battery(on_battery)
        await wait_for_conditions(monitor, has(on_external_power=not on_battery), 1.0 + LOAD_MARGIN_S)
        assert time.monotonic() - started < 1.0 + LOAD_MARGIN_S
    assert monitor.current.sources["on_external_power"] == "upower"


async def test_battery_level_follows_the_display_device(
    mocks: MockControl, dbus_mocks: DBusMocks, make_monitor: Callable[..., Any]
) -> None:
    """Percentage changes are published; a display device that is not present means no battery level."""
    monitor = await make_monitor(bus_address=dbus_mocks.address)
    await mocks.set_battery(35.0)
    await wait_for_conditions(monitor, lambda c: c.battery_percent == 35.0)
    await mocks.set_battery(35.0, present=False)
    await wait_for_conditions(monitor, lambda c: c.battery_percent is None)


async def test_networkmanager_state_changes_move_online(
    mocks: MockControl, dbus_mocks: DBusMocks, make_monitor: Callable[..., Any]
) -> None:
    """Only State 70 (connected global) is online: 20, 50 and 60 are offline; back to 70 is online."""
    monitor = await make_monitor(bus_address=dbus_mocks.address)
    for state, online in ((20, False), (70, True), (60, False), (50, False), (70, True)):
        await mocks.set_network(State=state)
        await wait_for_conditions(monitor, has(online=online))


async def test_metered_on_and_off(mocks: MockControl, dbus_mocks: DBusMocks, make_monitor: Callable[..., Any]) -> None:
    """Metered 1 (yes) and 3 (guess yes) are metered; 2 (no), 4 (guess no) and 0 (unknown) are not."""
    monitor = await make_monitor(bus_address=dbus_mocks.address)
    for value, metered in ((1, True), (2, False), (3, True), (4, False), (1, True), (0, False)):
        await mocks.set_network(Metered=value)
        await wait_for_conditions(monitor, has(metered=metered))


async def test_captive_portal_and_limited_connectivity_count_as_offline(
    mocks: MockControl, dbus_mocks: DBusMocks, make_monitor: Callable[..., Any]
) -> None:
    """Connected global behind a portal (2) or limited (3) is offline while connectivity checking is on."""
    monitor = await make_monitor(bus_address=dbus_mocks.address)
    await mocks.set_network(Connectivity=2)
    c = await wait_for_conditions(monitor, lambda c: c.connectivity is Connectivity.PORTAL)
    assert c.online is False
    await mocks.set_network(Connectivity=3)
    c = await wait_for_conditions(monitor, lambda c: c.connectivity is Connectivity.LIMITED)
    assert c.online is False
    await mocks.set_network(Connectivity=4)
    await wait_for_conditions(monitor, lambda c: c.online is True and c.connectivity is Connectivity.FULL)


async def test_without_connectivity_checking_connected_global_is_online(
    mocks: MockControl, dbus_mocks: DBusMocks, make_monitor: Callable[..., Any]
) -> None:
    """With ConnectivityCheckEnabled false, NM's connectivity value does not hold online back."""
    await mocks.set_network(ConnectivityCheckEnabled=False, Connectivity=0)
    monitor = await make_monitor(bus_address=dbus_mocks.address)
    assert monitor.current.online is True
    assert monitor.current.connectivity is Connectivity.UNKNOWN


async def test_idle_hint_is_published(
    mocks: MockControl, dbus_mocks: DBusMocks, make_monitor: Callable[..., Any]
) -> None:
    """logind's IdleHint becomes ``idle``."""
    monitor = await make_monitor(bus_address=dbus_mocks.address)
    await mocks.set_idle(True)
    await wait_for_conditions(monitor, lambda c: c.idle is True)
    await mocks.set_idle(False)
    await wait_for_conditions(monitor, lambda c: c.idle is False)


async def _syftd_locks(mocks: MockControl) -> list[tuple[str, ...]]:
    return [row[:4] for row in await mocks.list_inhibitors() if row[1] == "syftd"]


async def _await_no_lock(mocks: MockControl, timeout_s: float) -> None:
    async def none_listed() -> bool:
        return not await _syftd_locks(mocks)

    # polls: logind's list has no change signal; each look is a D-Bus round trip
    await poll_until(none_listed, what="the delay lock released (gone from logind's list)", timeout=timeout_s)


async def test_sleep_lock_is_taken_and_released_when_told(
    mocks: MockControl, dbus_mocks: DBusMocks, make_monitor: Callable[..., Any]
) -> None:
    """No lock without a cycle; hold → a sleep delay lock; PrepareForSleep(true) → sleeping; release → gone."""
    monitor = await make_monitor(bus_address=dbus_mocks.address)
    assert await _syftd_locks(mocks) == []
    assert await monitor.hold_sleep_lock() is True
    assert await monitor.hold_sleep_lock() is True
    locks = await _syftd_locks(mocks)
    assert len(locks) == 1 and locks[0][0] == "sleep" and locks[0][3] == "delay"
    await mocks.prepare_for_sleep(True)
    await wait_for_conditions(monitor, lambda c: c.sleeping is True)
    assert monitor.is_sleep_lock_held
    monitor.release_sleep_lock()
    monitor.release_sleep_lock()
    await _await_no_lock(mocks, 0.5 + LOAD_MARGIN_S)


async def test_a_release_while_the_inhibit_call_is_in_flight_leaves_no_lock(
    mocks: MockControl, dbus_mocks: DBusMocks, make_monitor: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cycle that ends before logind answered its Inhibit call: the lock logind then hands over is
    closed at once, and none is held or listed afterwards."""
    monitor = await make_monitor(bus_address=dbus_mocks.address)
    manager = monitor._logind._manager  # the logind Manager proxy: its Inhibit call is wrapped below
    real_inhibit = manager.call_inhibit

    async def inhibit_then_release(*args: Any) -> Any:
        answer = real_inhibit(*args)  # the call is made; the release lands before its answer is read
        monitor.release_sleep_lock()
        return await answer

    monkeypatch.setattr(manager, "call_inhibit", inhibit_then_release)
    for _ in range(5):
        assert await monitor.hold_sleep_lock() is False
        assert not monitor.is_sleep_lock_held
    await _await_no_lock(mocks, 0.5)
    assert await _syftd_locks(mocks) == []


async def test_a_cycle_starting_within_the_linger_keeps_the_lock_without_a_dbus_call(
    mocks: MockControl, dbus_mocks: DBusMocks, make_monitor: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No cycle runs: the lock is kept ``LINGER_S``; a hold within it takes no new lock (one Inhibit in
    all, one lock listed); without a hold it goes at the end of the linger, not before."""
    monkeypatch.setattr(logind, "LINGER_S", 0.4)
    monitor = await make_monitor(bus_address=dbus_mocks.address)
    with capture_logs() as logs:
        assert await monitor.hold_sleep_lock() is True
        monitor.release_sleep_lock_soon()
        assert await monitor.hold_sleep_lock() is True
        assert len(await _syftd_locks(mocks)) == 1
        loop = asyncio.get_running_loop()
        let_go = loop.time()
        monitor.release_sleep_lock_soon()
        assert monitor.is_sleep_lock_held
        await _await_no_lock(mocks, 0.4 + LOAD_MARGIN_S)
        assert loop.time() - let_go >= 0.35
    assert [e["event"] for e in logs if e["event"].startswith("conditions.sleep_lock")] == [
        "conditions.sleep_lock_taken",
        "conditions.sleep_lock_released",
    ]


async def test_sleep_during_the_linger_releases_the_lock_at_once(
    mocks: MockControl, dbus_mocks: DBusMocks, make_monitor: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock kept only in case a cycle follows does not make logind wait: PrepareForSleep(true) releases it."""
    monkeypatch.setattr(logind, "LINGER_S", 30.0)
    monitor = await make_monitor(bus_address=dbus_mocks.address)
    await monitor.hold_sleep_lock()
    monitor.release_sleep_lock_soon()
    await mocks.prepare_for_sleep(True)
    await wait_for_conditions(monitor, lambda c: c.sleeping is True)
    assert not monitor.is_sleep_lock_held
    await _await_no_lock(mocks, 0.5 + LOAD_MARGIN_S)


async def test_sleep_lock_is_released_at_the_latest_one_second_before_logind_gives_up(
    mocks: MockControl, dbus_mocks: DBusMocks, make_monitor: Callable[..., Any]
) -> None:
    """Not told to release: the lock goes InhibitDelayMaxUSec − 1 s after the signal (1.5 s − 1 s here)."""
    monitor = await make_monitor(bus_address=dbus_mocks.address)
    await monitor.hold_sleep_lock()
    loop = asyncio.get_running_loop()
    signalled = loop.time()
    await mocks.prepare_for_sleep(True)
    await wait_for_conditions(monitor, lambda c: c.sleeping is True)
    await _await_no_lock(mocks, 0.5 + LOAD_MARGIN_S)
    elapsed = loop.time() - signalled
    assert 0.45 <= elapsed < 0.5 + LOAD_MARGIN_S
    assert not monitor.is_sleep_lock_held


async def test_resume_rereads_every_source_and_publishes_awake(
    mocks: MockControl, dbus_mocks: DBusMocks, make_monitor: Callable[..., Any], sysfs: Any
) -> None:
    """PrepareForSleep(false): all sources are read afresh (a new thermal zone shows up), then sleeping False."""
    monitor = await make_monitor(bus_address=dbus_mocks.address)
    await mocks.prepare_for_sleep(True)
    await wait_for_conditions(monitor, lambda c: c.sleeping is True)
    zone = sysfs / "class" / "thermal" / "thermal_zone0"
    zone.mkdir()
    (zone / "temp").write_text("51000\n")
    await mocks.prepare_for_sleep(False)
    c = await wait_for_conditions(monitor, lambda c: c.sleeping is False)
    assert c.temperature_c == 51.0


async def test_upower_disappearing_falls_back_to_sysfs_and_returns_to_events(
    mocks: MockControl, dbus_mocks: DBusMocks, make_monitor: Callable[..., Any], sysfs: Any
) -> None:
    """UPower killed → sysfs says on battery; UPower back → its answer again, and its signals still work once."""
    _discharging_battery(sysfs)
    monitor = await make_monitor(bus_address=dbus_mocks.address)
    assert monitor.current.on_external_power is True
    changes: list[bool | None] = []
    monitor.subscribe(lambda c: changes.append(c.on_external_power))
    await dbus_mocks.kill("upower")
    c = await wait_for_conditions(monitor, lambda c: c.sources.get("on_external_power") == "sysfs")
    assert (c.on_external_power, c.battery_percent) == (False, 42.0)
    assert monitor.active_sources["power"] == "sysfs"
    await dbus_mocks.restart("upower")
    c = await wait_for_conditions(monitor, lambda c: c.sources.get("on_external_power") == "upower")
    assert c.on_external_power is True
    assert monitor.active_sources["power"] == "upower"
    await mocks.set_on_battery(True)
    await wait_for_conditions(monitor, lambda c: c.on_external_power is False)
    assert changes == [False, True, False]


async def test_networkmanager_disappearing_falls_back_to_the_routing_table(
    mocks: MockControl, dbus_mocks: DBusMocks, make_monitor: Callable[..., Any]
) -> None:
    """NetworkManager gone → the route source answers (connectivity unknown); back → NM again."""
    monitor = await make_monitor(bus_address=dbus_mocks.address)
    await dbus_mocks.kill("networkmanager")
    c = await wait_for_conditions(monitor, lambda c: c.sources.get("online") == "route")
    assert c.connectivity is None
    await dbus_mocks.restart("networkmanager")
    c = await wait_for_conditions(monitor, lambda c: c.sources.get("online") == "networkmanager")
    assert c.connectivity is Connectivity.FULL


async def test_logind_disappearing_drops_the_lock_and_assumes_awake(
    mocks: MockControl, dbus_mocks: DBusMocks, make_monitor: Callable[..., Any]
) -> None:
    """logind gone: the lock is closed, hold_sleep_lock() says False, sleeping falls back to False."""
    monitor = await make_monitor(bus_address=dbus_mocks.address)
    await monitor.hold_sleep_lock()
    await dbus_mocks.kill("logind")
    await wait_for_conditions(monitor, lambda c: c.sources.get("sleeping") == "none")
    assert not monitor.is_sleep_lock_held
    assert await monitor.hold_sleep_lock() is False


async def test_forced_upower_without_the_service_publishes_unknown(
    mocks: MockControl, dbus_mocks: DBusMocks, make_monitor: Callable[..., Any], sysfs: Any
) -> None:
    """power_source = "upower" has no fallback: while UPower is gone power is unknown, not guessed."""
    _discharging_battery(sysfs)
    await dbus_mocks.kill("upower")
    monitor = await make_monitor(bus_address=dbus_mocks.address, power_source="upower")
    assert monitor.current.on_external_power is None
    await dbus_mocks.restart("upower")
    await wait_for_conditions(monitor, lambda c: c.on_external_power is True)


async def test_simulated_power_loss_wins_until_cleared(
    mocks: MockControl, dbus_mocks: DBusMocks, make_monitor: Callable[..., Any]
) -> None:
    """override() publishes the simulated value, hides the source's changes, and clearing restores the real one."""
    monitor = await make_monitor(bus_address=dbus_mocks.address)
    seen: list[Any] = []
    monitor.subscribe(seen.append)
    monitor.override("on_external_power", False)
    assert monitor.current.on_external_power is False
    assert monitor.current.sources["on_external_power"] == "simulated"
    await mocks.set_on_battery(True)
    await mocks.set_on_battery(False)
    await mocks.set_battery(50.0)
    await wait_for_conditions(monitor, lambda c: c.battery_percent == 50.0)
    assert monitor.current.on_external_power is False
    monitor.override("on_external_power", None)
    restored = monitor.current
    assert restored.on_external_power is True
    assert [c.on_external_power for c in seen] == [False, False, True]
    with pytest.raises(ValueError, match="no condition named"):
        monitor.override("on_ac", True)
