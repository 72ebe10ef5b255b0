"""The middle layer in-process: the job manager and the cycle against the project's node on 127.0.0.1
(through a proxy that can hold one protocol step), a real spool, history and identity in a temporary
directory, and a real trainer pool running the torch-free STAND-IN trainer (support.standin_trainer).

Every test here runs under blockbuster: a blocking call (file I/O, sleeps, blocking sockets) made by
syftd's code on the event loop fails it; the tests' own set-up may block.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from blockbuster import BlockBuster, blockbuster_ctx
from structlog.testing import capture_logs
from support.holdproxy import HoldProxy
from support.waiting import Changes, notify_on_log, poll_until

from syftd.conditions.value import Conditions
from syftd.config import BudgetConfig, ConstraintsConfig, GridConfig, JobConfig, ScheduleConfig, TrainerConfig
from syftd.grid import syft_pb2 as pb
from syftd.grid import wire
from syftd.grid.client import GridClient
from syftd.history import History
from syftd.identity import Identity
from syftd.jobs.cycle import CycleRun
from syftd.jobs.ports import GridSession
from syftd.jobs.states import new_cycle_id
from syftd.node.node import GridNode, NodeOptions
from syftd.spool import Spool
from syftd.trainer.process import TrainerPool

TESTS = Path(__file__).resolve().parents[1]
GRACE_S = 0.5
_names = itertools.count(1)


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Fail any test in which the daemon's code makes a blocking call on the event loop.

    The local node (syftd.node) shares the loop in these tests but is the server side: its store
    is created and read synchronously on purpose, so it is left out of the scan."""
    with blockbuster_ctx("syftd", excluded_modules=["syftd.node"]) as detector:
        # a download streamed to a file writes each chunk into the page cache on the loop, on purpose
        # (tens of microseconds; a thread hop per chunk costs more): syftd.grid.transfer says so
        detector.functions["io.BufferedWriter.write"].can_block_in("syftd/grid/transfer.py", "stream_to_file")
        yield detector


def tiny_model() -> bytes:
    """A two-tensor float32 State: the stand-in's diffs have the same shapes."""
    return wire.encode_state(
        [
            wire.Tensor("float32", (4, 3), struct.pack("<12f", *range(12))),
            wire.Tensor("float32", (3,), struct.pack("<3f", 1, 2, 3)),
        ]
    )


@dataclass
class World:
    """One test's node (behind the proxy), state directory and stand-in trainer pool."""

    node: GridNode
    proxy: HoldProxy
    pool: TrainerPool
    base: Path
    gates: Path
    gate_address: str
    """The abstract unix address (no leading NUL) the stand-in announces each gate it reaches to."""
    name: str = ""
    spool: Spool = field(init=False)
    history: History = field(init=False)
    identity: Identity = field(init=False)
    changes: Changes = field(init=False)
    """Notified by each cycle's ``on_change`` (state, trainer phase, progress) and each gate reached."""
    _held: set[str] = field(init=False, default_factory=set)
    _entered: list[str] = field(init=False, default_factory=list)
    _waiting: dict[str, list[Any]] = field(init=False, default_factory=dict)
    _gate_sock: socket.socket = field(init=False)

    def __post_init__(self) -> None:
        state = self.base / "state"
        self.spool, self.history, self.identity = Spool(state), History(state), Identity(state)
        self.changes = Changes()
        # the stand-in announces each gate it reaches with a datagram here and blocks until answered
        self._gate_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._gate_sock.bind("\0" + self.gate_address)
        self._gate_sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self._gate_sock.fileno(), self._on_gate_reached)

    def close(self) -> None:
        """Stop listening for gates; a stand-in still held is released (or ended by its pool)."""
        asyncio.get_running_loop().remove_reader(self._gate_sock.fileno())
        for addresses in self._waiting.values():
            for address in addresses:
                self._let_go(address)
        self._gate_sock.close()

    def host(self, **server: Any) -> str:
        self.name = f"tiny-{next(_names)}"
        client = {"name": self.name, "version": "1.0", "batch_size": 4, "lr": 0.1, "max_updates": 5}
        server_config = {"cycle_length": 600, "num_cycles": 0, "min_diffs": 1, "max_diffs": 1, **server}
        plan = bytes(pb.Plan(torchscript=b"stand-in: no TorchScript is run").SerializeToString())
        self.node.host(self.name, "1.0", tiny_model(), {"training_plan": plan}, client, server_config)
        return self.name

    def job(self, *, max_updates: int = 5, **sections: Any) -> JobConfig:
        grid = GridConfig(url=self.proxy.url, model=self.name, version="1.0", transport="http", timeout_s=30.0)
        return JobConfig(
            name="tiny",
            grid=grid,
            constraints=ConstraintsConfig(
                requires_external_power=False, requires_network=False, requires_unmetered=False, stable_for_s=0.0
            ),
            schedule=sections.pop("schedule", ScheduleConfig(interval_s=3600, backoff_initial_s=0.2)),
            budget=sections.pop("budget", BudgetConfig(max_cycle_s=120, expiry_grace_s=GRACE_S)),
            trainer=TrainerConfig(idle_exit_s=30.0, progress_interval_s=0.0, max_updates=max_updates),
            **sections,
        )

    def session(self, job: JobConfig, token: str | None = None) -> GridSession:
        return GridClient(job.grid, token=token)

    def cycle(self, job: JobConfig) -> CycleRun:
        return CycleRun(
            job,
            cycle_id=new_cycle_id(),
            client=lambda: self.session(job),
            pool=self.pool,
            spool=self.spool,
            identity=self.identity,
            on_change=self.changes.notify,
        )

    @contextlib.contextmanager
    def logs(self) -> Iterator[list[dict[str, Any]]]:
        """``structlog.testing.capture_logs``, each line also notifying ``changes``."""
        with capture_logs(processors=[notify_on_log(self.changes, asyncio.get_running_loop())]) as logs:
            yield logs

    async def gate(self, phase: str) -> None:
        """Make the stand-in hold before ``phase`` (import, load, train, step<n>, diff)."""
        self._held.add(phase)
        await asyncio.to_thread((self.gates / f"{phase}.hold").write_text, "")

    async def open_gate(self, phase: str) -> None:
        """Let a stand-in held before ``phase`` go on, and the next ones pass."""
        await asyncio.to_thread((self.gates / f"{phase}.hold").unlink, missing_ok=True)
        self._held.discard(phase)
        for address in self._waiting.pop(phase, []):
            self._let_go(address)

    async def entered(self, phase: str, timeout: float = 30) -> None:
        """Await the stand-in reaching the hold before ``phase`` (its datagram, not a poll)."""
        await self.changes.until(
            lambda: phase in self._entered, what=f"the stand-in reaching its {phase} gate", timeout=timeout
        )

    def _on_gate_reached(self) -> None:
        while True:
            try:
                data, address = self._gate_sock.recvfrom(256)
            except BlockingIOError:
                break
            phase = data.decode()
            self._entered.append(phase)
            if phase in self._held:
                self._waiting.setdefault(phase, []).append(address)
            else:  # opened after the stand-in saw its .hold file
                self._let_go(address)
        self.changes.notify()

    def _let_go(self, address: Any) -> None:
        with contextlib.suppress(OSError):  # the stand-in has gone meanwhile (expired, SIGTERM)
            self._gate_sock.sendto(b"go", address)

    def reports(self) -> list[Any]:
        return [r for r in self.node.reports if r.model == self.name]


def trainer_pids() -> list[int]:
    """The stand-in trainer processes that are this process's children and still alive (not zombies)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "standin_trainer" in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return found


async def eventually_async(
    predicate: Callable[[], bool], *, timeout: float = 10, every: float = 0.02, what: str = "the condition"
) -> None:
    """Await a condition of the outside world that sends no event (files, the process table), off the
    loop: the shared bounded poll (``support.waiting``)."""
    await poll_until(predicate, what=what, timeout=timeout, every=every, off_loop=True)


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    gates = tmp_path / "gates"
    gates.mkdir()
    monkeypatch.setenv("SYFTD_STANDIN_GATES", str(gates))
    gate_address = f"syftd-standin-gates-{os.getpid()}-{next(_names)}"
    monkeypatch.setenv("SYFTD_STANDIN_GATE_SOCKET", gate_address)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    node = GridNode(NodeOptions())
    await node.start("127.0.0.1", 0)
    try:
        async with (
            HoldProxy(node.url) as proxy,
            TrainerPool(worker_module="support.standin_trainer", log_format="json", log_level="warning") as pool,
        ):
            world = World(node, proxy, pool, tmp_path, gates, gate_address)
            try:
                yield world
            finally:
                world.close()
    finally:
        await node.stop()


class StaticConditions:
    """A STAND-IN for the conditions monitor: publishes the Conditions the test sets, counts the sleep
    lock (the real monitor and logind are tested with D-Bus in tests/conditions and tests/e2e)."""

    def __init__(self, **facts: Any) -> None:
        self._current = Conditions().updated(0.0, "test", **facts)
        self._subscribers: list[Callable[[Conditions], None]] = []
        self.lock_holds = 0
        self.lock_releases = 0
        self.lock_takes = 0  # holds that took a lock not held (a D-Bus Inhibit call for the real monitor)
        self.lock_held = False
        self.changes: Changes | None = None
        """Notified when the sleep lock is taken or released."""

    @property
    def current(self) -> Conditions:
        return self._current

    def publish(self, now: float, **facts: Any) -> None:
        self._current = self._current.updated(now, "test", **facts)
        for callback in list(self._subscribers):
            callback(self._current)

    def subscribe(self, callback: Callable[[Conditions], None]) -> Callable[[], None]:
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def set_thermal_active(self, active: bool) -> None:
        del active

    async def hold_sleep_lock(self) -> bool:
        self.lock_holds += 1
        self.lock_takes += 0 if self.lock_held else 1
        self.lock_held = True
        if self.changes is not None:
            self.changes.notify()
        return True

    def release_sleep_lock_soon(self) -> None:
        """At once here: the real monitor's linger is logind's (tests/conditions/test_dbus_sources.py)."""
        self.release_sleep_lock()

    def release_sleep_lock(self) -> None:
        self.lock_releases += 1
        self.lock_held = False
        if self.changes is not None:
            self.changes.notify()


@pytest.fixture(autouse=True)
def stand_in_trains_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The installation probe (``syftd.capability``) asks whether *torch's* trainer could run here; the
    stand-in trainer of these tests needs neither torch nor Pillow, so under ``make test-compat`` (no
    torch) the probe must not hold the job back."""
    monkeypatch.setattr("syftd.capability.training_unavailable", lambda *args, **kwargs: None)
