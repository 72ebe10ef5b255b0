"""Benchmark: the idle daemon's resident memory and wake-ups per minute (make bench).

Targets (design.md): resident memory while waiting ≤ 60 MiB (Flower's client daemon idles at about
260 MiB); no wake-ups from syftd's own timers while waiting, beyond the watchdog ping. The daemon must
never import torch: its /proc/PID/maps lists no libtorch. The daemons follow UPower, NetworkManager
and logind on the session's private bus (python-dbusmock), so nothing is polled. Baseline in the same
run: a bare asyncio process that only waits, and the same daemon with a 1 s watchdog. Metrics off and
on: the same daemon with ``metrics_listen`` set (scraped once before the window, not during it).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from support.daemon import MNIST_JOB, DaemonProcess, NotifySocket, write_config
from support.dbus import DBusMocks
from support.proc import context_switches, rss_mib

WINDOW_S = 20.0
TARGET_RSS_MIB = 60.0
FLOWER_RSS_MIB = 260.0


async def wakeups_per_minute(pid: int) -> float:
    before = context_switches(pid)
    await asyncio.sleep(WINDOW_S)  # the measurement window itself, not synchronisation
    return (context_switches(pid) - before) * 60.0 / WINDOW_S


async def _daemon(
    tmp_path: Path, name: str, bus: DBusMocks, env: dict[str, str] | None = None, daemon_extra: str = ""
) -> tuple[DaemonProcess, NotifySocket]:
    base = tmp_path / name
    base.mkdir()
    notify = NotifySocket(base / "notify.sock")
    conditions = f'{daemon_extra}\n[daemon.conditions]\nbus_address = "{bus.address}"'
    config = write_config(base / "syftd.toml", base, jobs=MNIST_JOB, daemon_extra=conditions)
    daemon = await DaemonProcess.start(config, notify=notify, env=env)
    await notify.wait_for(lambda m: "READY" in m, timeout=30)
    return daemon, notify


async def _scrape(port: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert data.startswith(b"HTTP/1.1 200 OK")
    return len(data)


async def test_idle_daemon_memory_and_wakeups(tmp_path: Path, dbus_mocks: DBusMocks) -> None:
    """Prints RSS and wake-ups/min of the idle daemon against a bare asyncio process."""
    bare = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import asyncio; print('up', flush=True); asyncio.run(asyncio.Event().wait())",
        stdout=asyncio.subprocess.PIPE,
    )
    assert bare.stdout is not None
    await asyncio.wait_for(bare.stdout.readline(), 30)
    daemon, notify = await _daemon(tmp_path, "plain", dbus_mocks)
    watched, notify_w = await _daemon(tmp_path, "watchdog", dbus_mocks, env={"WATCHDOG_USEC": "2000000"})
    metered, notify_m = await _daemon(tmp_path, "metrics", dbus_mocks, daemon_extra='metrics_listen = "127.0.0.1:0"')
    try:
        maps = Path(f"/proc/{daemon.pid}/maps").read_text()
        assert "libtorch" not in maps, "the daemon mapped libtorch: something imported torch"
        port = (await metered.wait_log("metrics.listening", timeout=30))["port"]
        scrape_bytes = await _scrape(port)  # one scrape first: the registry and its text are built
        bare_rss, daemon_rss, metrics_rss = rss_mib(bare.pid), rss_mib(daemon.pid), rss_mib(metered.pid)
        bare_wake, daemon_wake, watched_wake, metrics_wake = await asyncio.gather(
            wakeups_per_minute(bare.pid),
            wakeups_per_minute(daemon.pid),
            wakeups_per_minute(watched.pid),
            wakeups_per_minute(metered.pid),
        )
        print()
        print(
            f"idle RSS: daemon {daemon_rss:.1f} MiB, bare asyncio {bare_rss:.1f} MiB "
            f"(ratio {daemon_rss / bare_rss:.2f}); target ≤ {TARGET_RSS_MIB:.0f} MiB "
            f"({daemon_rss / TARGET_RSS_MIB:.2f} of it); Flower ≈ {FLOWER_RSS_MIB:.0f} MiB "
            f"({daemon_rss / FLOWER_RSS_MIB:.2f} of it)"
        )
        print(
            f"wake-ups/min over {WINDOW_S:.0f} s: daemon {daemon_wake:.1f}, bare asyncio {bare_wake:.1f}, "
            f"daemon with a 1 s watchdog ping {watched_wake:.1f} (expected ≈ 60)"
        )
        print(
            f"metrics off/on: RSS {daemon_rss:.1f} / {metrics_rss:.1f} MiB (+{metrics_rss - daemon_rss:.1f}, "
            f"ratio {metrics_rss / daemon_rss:.2f}); wake-ups/min {daemon_wake:.1f} / {metrics_wake:.1f} "
            f"(unscraped during the window; one scrape before it: {scrape_bytes} bytes)"
        )
        power = daemon.events("conditions.source_selected")[0].get("source")
        print(f"libtorch mapped by the daemon: {'libtorch' in maps}; power source: {power}")
        assert daemon_rss <= TARGET_RSS_MIB
        assert metrics_rss <= TARGET_RSS_MIB
    finally:
        bare.kill()
        await bare.wait()
        for d, n in ((daemon, notify), (watched, notify_w), (metered, notify_m)):
            await d.stop()
            n.close()
