"""The soak's faults, each a real event in the daemon's world: D-Bus signals from the mocks, signals to
processes, the node's test controls, and a read-only bind mount over the state directory.

Owns what each fault does and undoes, how long it lasts (drawn from the soak's seeded RNG), the log of
faults with their times, and the intervals in which the job's conditions did not hold (on battery,
offline, preparing for sleep). Does not own choosing when a fault happens (``run``) or the daemon's
lifecycle (``world``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from support.dbus import MockControl
from support.soak.world import World

__all__ = ["KINDS", "Faults", "Injected"]

NM_DISCONNECTED, NM_CONNECTED_GLOBAL = 20, 70

KINDS = {
    # kind: weight
    "power_flap": 3,
    "network_flap": 3,
    "sleep": 1,
    "daemon_kill": 2,
    "trainer_kill": 2,
    "node_restart": 2,
    "burst_503": 3,
    "cycle_close": 3,
    "readonly_state": 1,
}


@dataclass(frozen=True, slots=True)
class Injected:
    """One fault as injected: when (seconds into the soak), what, and its details."""

    at: float
    kind: str
    detail: str

    def line(self) -> str:
        """``  12.3 s  power_flap  on battery for 3.1 s``."""
        return f"{self.at:8.1f} s  {self.kind:<14} {self.detail}"


class Faults:
    """Injects the faults into ``world``; each kind at most once at a time."""

    def __init__(self, world: World, control: MockControl, rng: random.Random, started: float) -> None:
        self.world = world
        self.control = control
        self.rng = rng
        self.started = started
        self.log: list[Injected] = []
        self.active: set[str] = set()
        self.disabled: dict[str, str] = {}
        self.orphans: list[int] = []
        self._mounted = False
        self._actions: dict[str, Callable[[], Awaitable[str]]] = {
            "power_flap": self._power_flap,
            "network_flap": self._network_flap,
            "sleep": self._sleep,
            "daemon_kill": self._daemon_kill,
            "trainer_kill": self._trainer_kill,
            "node_restart": self._node_restart,
            "burst_503": self._burst_503,
            "cycle_close": self._cycle_close,
            "readonly_state": self._readonly_state,
        }

    def counts(self) -> Counter[str]:
        """Faults injected, by kind."""
        return Counter(f.kind for f in self.log)

    def available(self) -> list[str]:
        """The kinds that may start now (not running, not disabled, not excluded by a running one)."""
        excluded = {"daemon_kill": "readonly_state", "readonly_state": "daemon_kill"}
        return [
            k for k in KINDS if k not in self.active and k not in self.disabled and excluded.get(k) not in self.active
        ]

    async def inject(self, kind: str) -> None:
        """Run one fault to its end (a flap's duration included) and log it."""
        self.active.add(kind)
        at = time.time() - self.started
        try:
            detail = await self._actions[kind]()
        finally:
            self.active.discard(kind)
        self.log.append(Injected(round(at, 1), kind, detail))

    # ------------------------------------------------------------------ conditions over D-Bus

    async def _flap(self, lose: Callable[[], Awaitable[None]], regain: Callable[[], Awaitable[None]]) -> float:
        held = round(self.rng.uniform(0.5, 6.0), 1)
        began = time.time()
        await lose()
        try:
            await asyncio.sleep(held)
        finally:
            await regain()
            self.world.not_holding.append((began, time.time()))
        return held

    async def _power_flap(self) -> str:
        held = await self._flap(lambda: self.control.set_on_battery(True), lambda: self.control.set_on_battery(False))
        return f"on battery for {held} s"

    async def _network_flap(self) -> str:
        held = await self._flap(
            lambda: self.control.set_network(State=NM_DISCONNECTED),
            lambda: self.control.set_network(State=NM_CONNECTED_GLOBAL),
        )
        return f"offline for {held} s"

    async def _sleep(self) -> str:
        held = await self._flap(
            lambda: self.control.prepare_for_sleep(True), lambda: self.control.prepare_for_sleep(False)
        )
        return f"PrepareForSleep(true), resumed after {held} s"

    # ------------------------------------------------------------------ processes

    async def _daemon_kill(self) -> str:
        old = self.world.daemon
        trainers = await self.world.kill_daemon()
        pause = round(self.rng.uniform(0.0, 2.0), 1)
        await asyncio.sleep(pause)
        await self.world.start_daemon()
        alive = [pid for pid in trainers if _alive(pid)]
        self.orphans.extend(alive)
        pid = old.pid if old is not None else 0
        return f"kill -9 {pid}, restarted after {pause} s; its trainers still alive at READY: {alive or 'none'}"

    async def _trainer_kill(self) -> str:
        trainers = self.world.trainer_pids()
        if not trainers:
            return "no trainer running"
        pid = self.rng.choice(trainers)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return f"kill -9 trainer {pid}"

    # ------------------------------------------------------------------ the node

    async def _node_restart(self) -> str:
        down = round(self.rng.uniform(0.1, 2.0), 1)
        await self.world.node_call(lambda node: node.restart(down_s=down))
        return f"node down for {down} s, workers forgotten"

    async def _burst_503(self) -> str:
        count = self.rng.randint(1, 4)
        pending = self.world.node.sync(lambda: self.world.grid.snapshot()["failing"])
        if pending:
            return f"skipped: {pending} injected failures still pending"
        self.world.node.sync(lambda: self.world.grid.fail_next(count, 503))
        return f"the next {count} requests answered 503"

    async def _cycle_close(self) -> str:
        closed = await self.world.node_call(lambda node: node.close_cycle(self.world.name, "1.0"))
        return "closed the open cycle early" if closed else "no open cycle"

    # ------------------------------------------------------------------ the state directory

    async def _readonly_state(self) -> str:
        state = self.world.state_dir
        problem = await asyncio.to_thread(_mount_readonly, state)
        if problem is not None:
            self.disabled["readonly_state"] = problem
            print(f"soak: the read-only state directory fault is skipped: {problem}", flush=True)
            return f"skipped: {problem}"
        self._mounted = True
        held = round(self.rng.uniform(1.0, 8.0), 1)
        try:
            await asyncio.sleep(held)
        finally:
            await self.writable()
        return f"state directory read-only for {held} s"

    async def writable(self) -> None:
        """Undo the read-only mount, if there is one; idempotent."""
        if self._mounted:
            await asyncio.to_thread(_unmount, self.world.state_dir)
            self._mounted = False


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


def _mount_readonly(path: Path) -> str | None:
    """Bind-mount ``path`` read-only over itself and check a write really fails; the problem, or None."""
    if os.geteuid() != 0:
        return "not root: a bind mount needs CAP_SYS_ADMIN"
    path.mkdir(parents=True, exist_ok=True)
    for args in (["mount", "--bind", str(path), str(path)], ["mount", "-o", "remount,bind,ro", str(path)]):
        result = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
        if result.returncode != 0:
            if args[1] != "--bind":
                _unmount(path)
            return f"{' '.join(args)} failed: {result.stderr.strip() or result.returncode}"
    probe = path / ".soak-write-probe"
    try:
        probe.write_bytes(b"x")
    except OSError as exc:
        if exc.errno == errno.EROFS:
            return None
        _unmount(path)
        return f"a write under the read-only mount failed with {exc!r}, not EROFS"
    probe.unlink()
    _unmount(path)
    return "a write under the read-only mount succeeded"


def _unmount(path: Path) -> None:
    result = subprocess.run(["umount", str(path)], capture_output=True, timeout=30, check=False)
    if result.returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30, check=True)
