"""The chaos soak: the real daemon, the local node and the dbusmock bus under random faults, with a ledger.

Faults, drawn at random (seeded; the seed is printed), one every 1-6 s: power and network flaps (lost for
0.1-3 s), ``kill -9`` of the daemon (restarted at once) and of its trainer, 503 bursts from the node,
early cycle closes on the node, the state directory read-only for 0.5-3 s (a bind mount; left out
where mount is not permitted). Every
finished diff (a ``spool.added`` line of any daemon life) goes into the ledger, keyed by its sha256, and
at the end must have been reported exactly once (one row on the node: a resend overwrites its row, two
rows would be two cycles' worth) or discarded only after the node said its cycle is gone. After the
chaos, the faults are lifted: the spool must drain and a new cycle must finish within the backoff cap
plus a margin (no wedge), and the daemon's resident memory and open files must not have grown.

``SYFTD_SOAK_S`` sets the chaos duration (45 s in ``make test``; ``make soak`` runs 1,800 s) and
``SYFTD_SOAK_SEED`` the seed. The totals are printed (run with ``-s``) for the README.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psutil
import pytest
from support.daemon import DaemonProcess
from support.harness import Harness

SOAK_S = float(os.environ.get("SYFTD_SOAK_S", "45"))
SEED = int(os.environ.get("SYFTD_SOAK_SEED", str(time.time_ns() % 1_000_000)))
BACKOFF_MAX_S = 4.0
# A worker id whose assignment never got its diff (trainer or daemon killed mid-cycle) is refused by the
# node ("already assigned to cycle N") until that cycle ends: the node's cycle length bounds the wait.
CYCLE_LENGTH_S = 20
SETTLE_S = CYCLE_LENGTH_S + BACKOFF_MAX_S + 120.0  # then a full cycle (cold trainer, 2 steps, report) at load 8

pytestmark = [pytest.mark.torch, pytest.mark.dbus, pytest.mark.slow, pytest.mark.timeout(SOAK_S + SETTLE_S + 240)]

NM_DISCONNECTED, NM_CONNECTED_GLOBAL = 20, 70
# relative weights: a daemon kill every few faults would leave no cycle time to finish
FAULTS = {
    "power": 3,
    "network": 3,
    "kill_daemon": 1,
    "kill_trainer": 2,
    "burst_503": 2,
    "close_cycle": 2,
    "read_only": 1,
}


def _mount(*args: str, command: str = "mount") -> bool:
    return subprocess.run([command, *args], capture_output=True, check=False).returncode == 0


@dataclass
class Soak:
    """The run's state: every daemon life, the fault counts, and resource samples per daemon pid."""

    harness: Harness
    mocks: Any
    rng: random.Random
    lives: list[DaemonProcess] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    samples: dict[int, list[tuple[float, int, int]]] = field(default_factory=dict)

    @property
    def daemon(self) -> DaemonProcess:
        return self.lives[-1]

    async def start(self) -> None:
        self.lives.append(await self.harness.start())

    def sample(self) -> None:
        try:
            process = psutil.Process(self.daemon.pid)
            row = (time.monotonic(), process.memory_info().rss, process.num_fds())
        except psutil.NoSuchProcess:
            return
        self.samples.setdefault(self.daemon.pid, []).append(row)

    async def fault(self, name: str) -> None:
        self.faults[name] += 1
        node = self.harness.node
        if name == "power":
            await self.mocks.set_on_battery(True)
            await asyncio.sleep(self.rng.uniform(0.1, 3.0))  # the flap's length: part of the chaos schedule
            await self.mocks.set_on_battery(False)
        elif name == "network":
            await self.mocks.set_network(State=NM_DISCONNECTED)
            await asyncio.sleep(self.rng.uniform(0.1, 3.0))
            await self.mocks.set_network(State=NM_CONNECTED_GLOBAL)
        elif name == "kill_daemon":
            self.daemon.signal(signal.SIGKILL)
            await self.daemon.wait_exit()
            await self.start()
        elif name == "kill_trainer":
            for child in psutil.Process(self.daemon.pid).children(recursive=True):
                try:
                    if "syftd.trainer" in " ".join(child.cmdline()):
                        child.send_signal(signal.SIGKILL)
                except psutil.NoSuchProcess:
                    continue
        elif name == "burst_503":
            count = self.rng.randint(1, 6)
            node.sync(lambda: node.node.fail_next(count, 503))
        elif name == "close_cycle":
            await node.acall(node.node.close_cycle(self.harness.name, "1.0"))
        elif name == "read_only":
            state = self.harness.base / "state"
            if not _mount("--bind", str(state), str(state)):
                return
            try:
                _mount("-o", "remount,ro,bind", str(state))
                await asyncio.sleep(self.rng.uniform(0.5, 3.0))
            finally:
                _mount(str(state), command="umount")

    async def lift(self) -> None:
        """End every fault: on AC, online, and the node's queued 503 answers spent by requests of ours."""
        await self.mocks.set_on_battery(False)
        await self.mocks.set_network(State=NM_CONNECTED_GLOBAL)
        async with aiohttp.ClientSession() as session:
            for _ in range(10_000):
                async with session.get(self.harness.node.node.url) as answer:
                    if answer.status != 503:
                        return

    def logs(self, event: str) -> list[dict[str, Any]]:
        return [entry for life in self.lives for entry in life.events(event)]


async def test_chaos_soak_loses_no_diff_counts_none_twice_and_never_wedges(harness: Harness, mocks: Any) -> None:
    """Random faults for SYFTD_SOAK_S, then the ledger: each finished diff reported once or discarded after
    the node said its cycle is gone; the spool drains and a cycle finishes after the faults are lifted;
    no growth of RSS or open files within a daemon life."""
    print(f"\nsoak: {SOAK_S:g} s, seed {SEED}")
    harness.host(max_updates=2, cycle_length=CYCLE_LENGTH_S)
    path = harness.write_config()
    text = path.read_text().replace("interval_s = 3600", "interval_s = 0")
    text = text.replace(
        "backoff_initial_s = 0.5",
        f"backoff_initial_s = 0.5\nbackoff_max_s = {BACKOFF_MAX_S}\nfinished_retry_s = {BACKOFF_MAX_S}",
    )
    path.write_text(text)
    soak = Soak(harness, mocks, random.Random(SEED))
    await soak.start()
    began = time.monotonic()
    while time.monotonic() - began < SOAK_S:
        await soak.fault(soak.rng.choices(list(FAULTS), weights=list(FAULTS.values()))[0])
        soak.sample()
        await asyncio.sleep(soak.rng.uniform(1.0, 6.0))  # the chaos schedule itself, not a synchronisation

    await soak.lift()
    settle = len(soak.daemon.logs)
    spool = harness.base / "state" / "jobs" / "mnist" / "spool"
    deadline = time.monotonic() + SETTLE_S
    wedged = None
    try:
        await soak.daemon.wait_log("cycle.finished", timeout=SETTLE_S, after=settle, outcome="done")
        while any(spool.glob("*.json")):
            assert time.monotonic() < deadline, f"spool never drained: {sorted(p.name for p in spool.iterdir())}"
            await soak.daemon.wait_log("spool.reported", timeout=max(0.1, deadline - time.monotonic()), after=settle)
            settle = len(soak.daemon.logs)
    except AssertionError as exc:
        wedged = exc  # the ledger below is printed first
    soak.sample()

    rows: dict[str, set[str]] = {}
    for report in harness.node.reports_for(harness.name):
        rows.setdefault(hashlib.sha256(report.diff).hexdigest()[:16], set()).add(report.request_key)
    discarded = {entry["cycle_id"]: entry.get("reason", "") for entry in soak.logs("spool.discarded")}
    finished = {entry["sha256"]: entry["cycle_id"] for entry in soak.logs("spool.added")}
    twice = {sha: keys for sha, keys in rows.items() if len(keys) > 1}
    lost = [cycle for sha, cycle in finished.items() if not rows.get(sha) and "cycle" not in discarded.get(cycle, "")]
    reported = sum(1 for sha in finished if rows.get(sha))
    growth = {
        pid: (series[-1][1] - series[0][1], series[-1][2] - series[0][2])
        for pid, series in soak.samples.items()
        if len(series) >= 5
    }
    print(
        f"soak totals: seed {SEED}, {SOAK_S:g} s, faults {dict(soak.faults)}, daemon lives {len(soak.lives)}, "
        f"finished diffs {len(finished)}, reported once {reported}, discarded after the node said gone "
        f"{len(finished) - reported - len(lost)}, lost {len(lost)}, counted twice {len(twice)}, "
        f"growth per life (rss bytes, fds) {growth}"
    )
    if wedged is not None:
        raise wedged
    assert finished, "no diff finished during the soak"
    assert twice == {}
    assert lost == []
    for rss, fds in growth.values():
        assert fds <= 8 and rss <= 64 * 2**20, growth
