"""End-to-end machinery and fixtures (used by tests/e2e and tests/bench): one private system bus with the
UPower/NetworkManager/logind mocks and one local grid node per test session, a fresh FL process hosted
per test, and the real daemon as a child process.

The node runs in a thread of the test process with its own event loop, so tests read what it received
(``node.reports``: the raw diffs) directly and drive it through its own methods; the daemon reaches it
over real sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from support.daemon import DaemonProcess, NotifySocket
from support.daemonconfig import daemon_config
from support.dbus import DBusMocks, MockControl
from support.waiting import poll_until
from syftd.node.node import GridNode, NodeOptions

T = TypeVar("T")
_names = itertools.count(1)


class ThreadNode:
    """A ``GridNode`` on 127.0.0.1 served by its own event loop in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="grid-node", daemon=True)
        self.node = GridNode(NodeOptions())

    def start(self) -> None:
        self.thread.start()
        self.run(self.node.start("127.0.0.1", 0)).result(30)

    def stop(self) -> None:
        self.run(self.node.stop()).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def run(self, coro: Awaitable[T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def sync(self, fn: Callable[[], T], timeout: float = 30) -> T:
        """Run a plain method of the node on its loop and return the result (blocks briefly)."""

        async def wrapped() -> T:
            return fn()

        return self.run(wrapped()).result(timeout)

    async def acall(self, coro: Awaitable[T]) -> T:
        """Await a coroutine of the node, run on the node's loop, from the test's loop."""
        return await asyncio.wrap_future(self.run(coro))

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 20) -> None:
        """Await ``predicate()`` (evaluated on the node's loop after each change)."""
        ok = await asyncio.wrap_future(self.run(self.node.wait_until(predicate, timeout)))
        if not ok:
            raise AssertionError(f"node condition not reached within {timeout} s; node: {self.node.snapshot()}")

    def reports_for(self, name: str) -> list[Any]:
        return [r for r in list(self.node.reports) if r.model == name]


@pytest.fixture(scope="session")
def grid_node() -> Iterator[ThreadNode]:
    node = ThreadNode()
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def mnist_bytes() -> tuple[bytes, dict[str, bytes]]:
    """The MNIST model and training plan (built once: it needs torch)."""
    from syftd.node.mnist import build_mnist_process

    model, plans, _client, _server = build_mnist_process(seed=0, batch_size=16, lr=0.05, max_updates=5)
    return model, plans


@dataclass
class Harness:
    """One test's world: its FL process on the shared node, its daemon, its directories."""

    node: ThreadNode
    bus: DBusMocks
    base: Path
    model: bytes
    plans: dict[str, bytes]
    name: str = ""
    daemon: DaemonProcess | None = None
    notify: NotifySocket | None = None
    config_path: Path = field(default_factory=Path)

    def host(self, *, max_updates: int = 5, batch_size: int = 16, lr: float = 0.05, **server: Any) -> str:
        """Host a fresh MNIST process under a unique name; returns the name."""
        self.name = f"mnist-{next(_names)}-{os.getpid()}"
        client = {"name": self.name, "version": "1.0", "batch_size": batch_size, "lr": lr, "max_updates": max_updates}
        server_config = {"cycle_length": 600, "num_cycles": 0, "min_diffs": 1, "max_diffs": 1, **server}
        self.node.sync(lambda: self.node.node.host(self.name, "1.0", self.model, self.plans, client, server_config))
        return self.name

    def write_config(self, *, job: str = "", daemon: str = "", url: str | None = None) -> Path:
        """Write ``syftd.toml`` (``support.daemonconfig``); ``daemon``/``job`` are raw lines appended."""
        url = url or self.node.node.url.replace("http://", "ws://")
        self.config_path = self.base / "syftd.toml"
        text = daemon_config(
            base=self.base, bus_address=self.bus.address, url=url, model=self.name, daemon=daemon, job=job
        )
        self.config_path.write_text(text)
        return self.config_path

    async def kill_9_with_the_report_held(self, *, close_cycle: bool = False) -> None:
        """Run a cycle of a fresh process until its report is held by the node (the diff is spooled),
        SIGKILL the daemon, and release the held report only after the worker's connection died with it
        (the node drops it); ``close_cycle`` closes the node's cycle before the release."""
        self.host(max_updates=3)
        self.write_config()
        self.node.sync(self.node.node.hold_reports)
        try:
            daemon = await self.start()
            await daemon.wait_log("spool.added", timeout=90)
            await self.node.wait_until(lambda: self.node.node.held_reports >= 1, timeout=30)
            daemon.signal(signal.SIGKILL)
            await daemon.wait_exit()
            if close_cycle:
                assert await self.node.acall(self.node.node.close_cycle(self.name, "1.0"))
        finally:
            self.node.sync(self.node.node.release_reports)

    async def start(self, env: dict[str, str] | None = None) -> DaemonProcess:
        self.notify = NotifySocket(self.base / f"notify-{next(_names)}.sock")
        self.daemon = await DaemonProcess.start(self.config_path, notify=self.notify, env=env)
        await self.notify.wait_for(lambda m: "READY" in m, timeout=30)
        return self.daemon

    async def stop(self) -> None:
        if self.daemon is not None:
            await self.daemon.stop()
        if self.notify is not None:
            self.notify.close()

    def trainers(self) -> list[str]:
        """Command lines of the daemon's live trainer processes (zombies excluded)."""
        return [cmd for cmd in self.descendants() if "syftd.trainer" in cmd]

    def descendants(self) -> list[str]:
        """Command lines of the daemon's live descendants, zombies excluded."""
        assert self.daemon is not None
        found = []
        try:
            for child in psutil.Process(self.daemon.pid).children(recursive=True):
                try:
                    if child.status() != psutil.STATUS_ZOMBIE:
                        found.append(" ".join(child.cmdline()))
                except psutil.NoSuchProcess:
                    continue
        except psutil.NoSuchProcess:
            return []
        return found


@pytest.fixture
async def harness(
    grid_node: ThreadNode,
    dbus_mocks: DBusMocks,
    mocks: MockControl,
    tmp_path: Path,
    mnist_bytes: tuple[bytes, dict[str, bytes]],
) -> AsyncIterator[Harness]:
    h = Harness(grid_node, dbus_mocks, tmp_path, *mnist_bytes)
    try:
        yield h
    finally:
        await h.stop()
        grid_node.sync(lambda: grid_node.node.set_averaging_delay(grid_node.node.options.averaging_delay_s))


async def eventually(
    predicate: Callable[[], bool], *, timeout: float = 10, every: float = 0.05, what: str = "the condition"
) -> None:
    """Await a condition of the outside world that sends no event (process table, fd table): the shared
    bounded poll (``support.waiting``). For the daemon's log lines use ``DaemonProcess.until``."""
    await poll_until(predicate, what=what, timeout=timeout, every=every)
