"""The routing-table monitor in a network namespace the test creates: every change published within 1 s.

The monitor runs as a child process inside the namespace (``ip netns exec``) and prints each
published change as a JSON line with its CLOCK_MONOTONIC time, which the parent shares.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from support.timing import LOAD_MARGIN_S

CHILD = r"""
import asyncio, json, sys, time
from pathlib import Path
from syftd.conditions.monitor import ConditionsMonitor
from syftd.config import ConditionsConfig

async def main():
    cfg = ConditionsConfig(power_source="none", sleep_source="none", network_source="route",
                           poll_interval_s=3600.0)
    monitor = ConditionsMonitor(cfg, Path(sys.argv[1]))
    last = []

    def emit(c):
        if c.online is not None and last[-1:] != [c.online]:
            last.append(c.online)
            print(json.dumps({"online": c.online, "t": time.monotonic()}), flush=True)

    monitor.subscribe(emit)
    await monitor.start()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await monitor.stop()

asyncio.run(main())
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace with a veth pair v0 (10.77.0.1/24) – v1, both up, no default route."""
    name = f"syftd-test-{os.getpid()}"
    probe = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace here (ip netns add: {probe.stderr.strip()})")
    try:
        _ip("-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        _ip("-n", name, "addr", "add", "10.77.0.1/24", "dev", "v0")
        _ip("-n", name, "link", "set", "v0", "up")
        _ip("-n", name, "link", "set", "v1", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


@pytest.fixture
async def child(netns: str, tmp_path: Any) -> AsyncIterator[asyncio.subprocess.Process]:
    """The monitor running inside the namespace."""
    proc = await asyncio.create_subprocess_exec(
        "ip",
        "netns",
        "exec",
        netns,
        sys.executable,
        "-c",
        CHILD,
        str(tmp_path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    yield proc
    if proc.returncode is None:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()


async def _next(proc: asyncio.subprocess.Process, timeout_s: float) -> dict[str, Any]:
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout_s)
        assert line, "the monitor in the namespace exited"
        try:
            return dict(json.loads(line))
        except ValueError:
            continue


async def test_route_changes_in_a_namespace_are_published_within_a_second(
    netns: str, child: asyncio.subprocess.Process
) -> None:
    """Default route added → online; deleted → offline; peer down (no carrier) → offline; link down → offline."""
    first = await _next(child, 10.0)
    assert first["online"] is False
    latencies = []
    steps: list[tuple[tuple[str, ...], bool]] = [
        (("route", "add", "default", "via", "10.77.0.2", "dev", "v0"), True),
        (("route", "del", "default"), False),
        (("route", "add", "default", "via", "10.77.0.2", "dev", "v0"), True),
        (("link", "set", "v1", "down"), False),
        (("link", "set", "v1", "up"), True),
        (("link", "set", "v0", "down"), False),
    ]
    for command, online in steps:
        started = time.monotonic()
        _ip("-n", netns, *command)
        event = await _next(child, 1.0 + LOAD_MARGIN_S)
        assert event["online"] is online, command
        latencies.append(event["t"] - started)
    print(f"route change → published: max {max(latencies) * 1000:.0f} ms over {len(latencies)} changes")
    assert max(latencies) < 1.0 + LOAD_MARGIN_S  # within 1 s idle; tests/bench measures the latency
