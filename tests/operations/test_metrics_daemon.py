"""The real daemon's metrics endpoint, scraped with prometheus_client's parser while real cycles run
against the local grid node: the counters move with a completed and an expired cycle."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

import aiohttp
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.harness import Harness
from support.waiting import poll_until

pytestmark = [pytest.mark.torch, pytest.mark.dbus, pytest.mark.slow, pytest.mark.timeout(240)]


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as answer,
    ):
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await answer.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape_until(port: int, predicate, timeout: float = 15) -> dict:
    """Scrape until ``predicate(samples)``: the history (and so the counters) is written just after the
    cycle.finished line, off the event loop."""
    seen: list[dict] = [{}]

    async def reached() -> dict | None:
        seen[0] = await scrape(port)
        return seen[0] if predicate(seen[0]) else None

    # polls: an HTTP endpoint sends no events
    try:
        return await poll_until(reached, what="the expected metrics", timeout=timeout, every=0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last scraped: {seen[0]}") from None


def cycles(got: dict, outcome: str, reason: str = "") -> float:
    return got.get(("syftd_cycles_total", (("job", "mnist"), ("outcome", outcome), ("reason", reason))), 0.0)


async def test_counters_move_with_an_expired_then_a_completed_cycle(harness: Harness) -> None:
    """Expire a long cycle (SIGUSR2), then run a short one: cycles_total counts expired/manual then done,
    steps and bytes grow, the last success is set, and the conditions are gauges."""
    harness.host(max_updates=3)
    harness.write_config(daemon='metrics_listen = "127.0.0.1:0"', job="max_updates = 100000")
    daemon = await harness.start()
    port = (await daemon.wait_log("metrics.listening", timeout=30))["port"]
    got = await scrape(port)
    assert cycles(got, "done") == 0 and got[("syftd_condition", (("fact", "on_external_power"),))] == 1
    await daemon.wait_log("cycle.state_changed", to_state="training", timeout=90)
    daemon.signal(signal.SIGUSR2)
    await daemon.wait_log("cycle.finished", outcome="expired", timeout=60)
    got = await scrape_until(port, lambda g: cycles(g, "expired", "manual") == 1)
    assert cycles(got, "done") == 0
    steps_after_expiry = got.get(("syftd_steps_total", (("job", "mnist"),)), 0.0)

    harness.config_path.write_text(harness.config_path.read_text().replace("max_updates = 100000", ""))
    reloads = len(daemon.events("config.reloaded"))
    daemon.signal(signal.SIGHUP)
    await daemon.wait_log("config.reloaded", after=0, timeout=30)
    assert len(daemon.events("config.reloaded")) == reloads + 1
    daemon.signal(signal.SIGUSR1)
    await daemon.wait_log("cycle.finished", outcome="done", timeout=120)
    got = await scrape_until(port, lambda g: cycles(g, "done") == 1)
    assert cycles(got, "expired", "manual") == 1
    assert got[("syftd_steps_total", (("job", "mnist"),))] == steps_after_expiry + 3
    assert got[("syftd_downloaded_bytes_total", (("job", "mnist"),))] > 0
    assert got[("syftd_uploaded_bytes_total", (("job", "mnist"),))] > 0
    assert got[("syftd_last_success_timestamp_seconds", (("job", "mnist"),))] > 1.7e9
    assert ("syftd_spool_depth", (("job", "mnist"),)) in got
    assert got[("syftd_trainer_starts_total", (("job", "mnist"), ("start", "cold")))] >= 1
    # this machine has no powercap RAPL: each cycle says so, and the metrics count it
    finished = daemon.events("cycle.finished")
    assert {e["energy_j"] for e in finished} == {"unavailable"}
    assert got[("syftd_energy_unavailable_total", (("job", "mnist"),))] == len(finished)


async def test_without_metrics_listen_nothing_listens(harness: Harness) -> None:
    """Off by default: the daemon holds no TCP socket at all (the control socket is a Unix one)."""
    harness.host(max_updates=3)
    harness.write_config(job="max_updates = 100000")
    daemon = await harness.start()
    listening = [c for c in psutil.Process(daemon.pid).net_connections(kind="tcp") if c.status == "LISTEN"]
    assert listening == [] and daemon.events("metrics.listening") == []


async def test_joules_over_a_fake_powercap_tree_reach_the_log_history_and_metrics(harness: Harness) -> None:
    """daemon.conditions.sysfs_root points at a tree whose package counter the test advances by 42 J
    (across a wrap) during training: cycle.finished, `syftd history` and the metrics all carry 42 J."""
    sysfs = harness.base / "sys"
    zone = sysfs / "class" / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    (zone / "energy_uj").write_text(f"{262143328850 - 2_000_000}\n")
    (sysfs / "class" / "power_supply").mkdir(parents=True)
    harness.host(max_updates=3)
    harness.write_config(daemon='metrics_listen = "127.0.0.1:0"', job="max_updates = 100000")
    harness.config_path.write_text(
        harness.config_path.read_text().replace(
            "[daemon.conditions]\n", f'[daemon.conditions]\nsysfs_root = "{sysfs}"\n'
        )
    )
    daemon = await harness.start()
    port = (await daemon.wait_log("metrics.listening", timeout=30))["port"]
    ready = await daemon.wait_log("daemon.ready", timeout=10)
    assert ready["energy"] == "readable (1 package zones)"
    await daemon.wait_log("cycle.state_changed", to_state="training", timeout=90)
    (zone / "energy_uj").write_text("40000000\n")  # wrapped: 2 J to the top, then 40 J
    daemon.signal(signal.SIGUSR2)
    finished = await daemon.wait_log("cycle.finished", timeout=60)
    assert finished["energy_j"] == 42.0
    assert 0 <= finished.get("trainer_energy_j", -1) <= 42.0, finished
    got = await scrape_until(port, lambda g: cycles(g, "expired", "manual") == 1)
    assert got[("syftd_energy_joules_total", (("job", "mnist"), ("scope", "package")))] == 42.0
    history = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "syftd", "--config", str(harness.config_path), "history", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(history.stdout)["entries"][-1]["energy_j"] == 42.0
