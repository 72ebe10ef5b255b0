"""The daemon as a real child process, seen through a NOTIFY_SOCKET the test owns and real signals."""

from __future__ import annotations

import itertools
import os
import signal
import statistics
import time
from pathlib import Path

import pytest
from support.daemon import MNIST_JOB, DaemonProcess, NotifySocket, write_config
from support.timing import LOAD_MARGIN_S


@pytest.fixture
async def notify(tmp_path: Path):
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


async def test_ready_reload_bad_reload_and_stop_follow_the_notify_protocol(tmp_path: Path, notify) -> None:
    """READY=1 at start; SIGHUP → RELOADING=1 (with MONOTONIC_USEC) then READY=1; a broken file on
    SIGHUP keeps the daemon running, READY=1 again and both STATUS= and the log name the bad key;
    SIGTERM → STOPPING=1 and exit status 0."""
    config = write_config(tmp_path / "syftd.toml", tmp_path, jobs=MNIST_JOB)
    daemon = await DaemonProcess.start(config, notify=notify)
    try:
        i, ready = await notify.wait_for(lambda m: "READY" in m)
        assert ready.fields["READY"] == "1"
        assert ready.fields["STATUS"]

        daemon.signal(signal.SIGHUP)
        i, reloading = await notify.wait_for(lambda m: "RELOADING" in m, after=i + 1)
        assert int(reloading.fields["MONOTONIC_USEC"]) > 0
        i, _ = await notify.wait_for(lambda m: "READY" in m, after=i + 1)
        await daemon.wait_log("config.reloaded")

        config.write_text(config.read_text().replace('version = "1.0"', "version = 1.0"))
        daemon.signal(signal.SIGHUP)
        i, _ = await notify.wait_for(lambda m: "RELOADING" in m, after=i + 1)
        i, ready = await notify.wait_for(lambda m: "READY" in m, after=i + 1)
        assert "job[0].grid.version" in ready.fields["STATUS"]
        failed = await daemon.wait_log("config.reload_failed")
        assert any(p.startswith("job[0].grid.version:") for p in failed["problems"])
        assert daemon.proc.returncode is None

        daemon.signal(signal.SIGTERM)
        await notify.wait_for(lambda m: "STOPPING" in m, after=i + 1)
        assert await daemon.wait_exit() == 0
    finally:
        await daemon.stop()


async def test_watchdog_pings_at_half_the_interval(tmp_path: Path, notify) -> None:
    """With WATCHDOG_USEC=400000 the daemon sends WATCHDOG=1 about every 0.2 s, from its event loop."""
    config = write_config(tmp_path / "syftd.toml", tmp_path, jobs=MNIST_JOB)
    daemon = await DaemonProcess.start(config, notify=notify, env={"WATCHDOG_USEC": "400000"})
    try:
        i, _ = await notify.wait_for(lambda m: "READY" in m)
        pings = []
        for _ in range(6):
            i, ping = await notify.wait_for(lambda m: "WATCHDOG" in m, after=i + 1, timeout=0.4 + LOAD_MARGIN_S)
            pings.append(ping.at)
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        # about every 0.2 s: the median says so; no single gap may exceed half the interval plus the load margin
        assert all(0.1 <= gap <= 0.2 + LOAD_MARGIN_S for gap in gaps) and statistics.median(gaps) <= 0.35, gaps
    finally:
        await daemon.stop()


async def test_watchdog_is_ignored_when_meant_for_another_pid(tmp_path: Path, notify) -> None:
    """WATCHDOG_PID naming another process disables the pings (sd_watchdog_enabled semantics)."""
    config = write_config(tmp_path / "syftd.toml", tmp_path, jobs=MNIST_JOB)
    daemon = await DaemonProcess.start(config, notify=notify, env={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
    try:
        i, _ = await notify.wait_for(lambda m: "READY" in m)
        with pytest.raises(AssertionError):
            await notify.wait_for(lambda m: "WATCHDOG" in m, after=i + 1, timeout=0.6)
    finally:
        await daemon.stop()


async def test_abstract_notify_socket_names_are_supported(tmp_path: Path) -> None:
    """NOTIFY_SOCKET=@name (Linux abstract namespace) receives READY=1."""
    import socket

    name = f"syftd-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(15)
    config = write_config(tmp_path / "syftd.toml", tmp_path, jobs=MNIST_JOB)
    daemon = await DaemonProcess.start(config, env={"NOTIFY_SOCKET": "@" + name})
    try:
        import asyncio

        while True:
            data = await asyncio.to_thread(sock.recv, 4096)
            if b"READY=1" in data.split(b"\n"):
                break
    finally:
        sock.close()
        await daemon.stop()


async def test_children_do_not_inherit_notify_socket(tmp_path: Path) -> None:
    """The daemon removes NOTIFY_SOCKET and WATCHDOG_USEC from its environment at start."""
    from syftd.sdnotify import Notifier

    env = {"NOTIFY_SOCKET": str(tmp_path / "x.sock"), "WATCHDOG_USEC": "1000000", "PATH": "/bin"}
    notifier = Notifier(env)
    assert "NOTIFY_SOCKET" not in env and "WATCHDOG_USEC" not in env
    assert notifier.is_enabled and notifier.watchdog_interval_s == 0.5
    notifier.close()


async def test_sigusr1_triggers_and_sigusr2_expires_every_enabled_job(tmp_path: Path, notify) -> None:
    """SIGUSR1 logs job.triggered and SIGUSR2 an expiration request for every enabled job."""
    config = write_config(tmp_path / "syftd.toml", tmp_path, jobs=MNIST_JOB)
    daemon = await DaemonProcess.start(config, notify=notify)
    try:
        await notify.wait_for(lambda m: "READY" in m)
        daemon.signal(signal.SIGUSR1)
        await daemon.wait_log("job.triggered", job="mnist")
        daemon.signal(signal.SIGUSR2)
        await daemon.wait_log("job.expire_requested", job="mnist", reason="manual")
    finally:
        await daemon.stop()


async def test_sigint_stops_gracefully(tmp_path: Path, notify) -> None:
    """SIGINT (Ctrl-C) stops like SIGTERM: STOPPING=1 and exit status 0 (a second SIGINT forcing exit 130
    is tested end to end, where a stop can take long enough to press it twice)."""
    config = write_config(tmp_path / "syftd.toml", tmp_path, jobs=MNIST_JOB)
    daemon = await DaemonProcess.start(config, notify=notify)
    try:
        await notify.wait_for(lambda m: "READY" in m)
        daemon.signal(signal.SIGINT)
        assert await daemon.wait_exit() == 0
    finally:
        await daemon.stop()


async def test_config_error_at_start_exits_78_naming_the_key(tmp_path: Path) -> None:
    """A bad file at start: exit status 78 (EX_CONFIG) and the message names the dotted key."""
    config = write_config(tmp_path / "syftd.toml", tmp_path, jobs=MNIST_JOB.replace("mnist", "MNIST!", 1))
    daemon = await DaemonProcess.start(config)
    assert await daemon.wait_exit() == 78
    assert any("job[0].name: must match" in line for line in daemon.raw), daemon.raw
