"""The soak's world: its own local node (in a thread, answers recorded), the daemon as a child process across
kills and restarts, its configuration, and the samples of its memory and file descriptors.

Owns starting, killing and restarting the daemon, keeping every daemon's log lines and their facts,
when each daemon was up, the node's "cycle gone" answers and its cycle deadlines (the node ends a
cycle at its ``cycle_length``, as a node with many workers would), and the RSS/fd samples. Does not
own the faults (``faults``), the ledger (``ledger``) or the soak's schedule (``run``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import psutil

from support.daemon import DaemonProcess, NotifySocket
from support.daemonconfig import daemon_config
from support.dbus import DBusMocks
from support.harness import ThreadNode
from support.proc import rss_mib
from support.soak import events
from support.soak.ledger import NodeRow
from syftd.node.node import GridNode, NodeOptions
from syftd.node.state import Refusal

__all__ = ["LedgerNode", "Settings", "World"]


@dataclass(frozen=True, slots=True)
class Settings:
    """The figures the daemon and the node are configured with; the wedge threshold derives from them."""

    cycle_length_s: float = 6.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    rejection_jitter_s: float = 0.5
    stable_for_s: float = 0.5
    timeout_s: float = 5.0
    max_cycle_s: float = 60.0
    max_updates: int = 5


class LedgerNode(GridNode):
    """The project's node, recording every error it answers to a download (the probe) or a report."""

    def __init__(self, options: NodeOptions | None = None) -> None:
        super().__init__(options)
        self.answers: list[tuple[float, str, str]] = []
        """(wall-clock time, operation, the node's error text)."""

    async def download(self, kind: str, query: Mapping[str, str]) -> bytes:
        try:
            return await super().download(kind, query)
        except Refusal as refusal:
            self.answers.append((time.time(), f"get-{kind}", refusal.message))
            raise

    async def report(
        self, data: Mapping[str, Any], transport: Literal["ws", "http"], *, is_gone: Callable[[], bool] = lambda: False
    ) -> dict[str, Any]:
        answer = await super().report(data, transport, is_gone=is_gone)
        if "error" in answer:
            self.answers.append((time.time(), "report", str(answer["error"])))
        return answer


@dataclass
class World:
    """One soak's node, daemon(s), directories and measurements."""

    base: Path
    bus: DBusMocks
    settings: Settings
    node: ThreadNode = field(init=False)
    name: str = ""
    daemons: list[DaemonProcess] = field(default_factory=list)
    notifies: list[NotifySocket] = field(default_factory=list)
    ready_at: dict[int, float] = field(default_factory=dict)
    deaths: dict[int, float] = field(default_factory=dict)
    down_since: float | None = None
    not_holding: list[tuple[float, float]] = field(default_factory=list)
    samples: list[tuple[float, int, float, int]] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    cycle_ends: int = 0

    def __post_init__(self) -> None:
        self.node = ThreadNode()
        self.node.node = LedgerNode(NodeOptions())
        self.state_dir = self.base / "state"
        self.config_path = self.base / "syftd.toml"

    @property
    def grid(self) -> LedgerNode:
        node = self.node.node
        assert isinstance(node, LedgerNode)
        return node

    @property
    def daemon(self) -> DaemonProcess | None:
        """The current daemon, if one was started."""
        return self.daemons[-1] if self.daemons else None

    def host(self, model: bytes, plans: dict[str, bytes]) -> None:
        """Host the soak's MNIST process: one diff per cycle, cycles ending after ``cycle_length_s``."""
        self.name = f"soak-{os.getpid()}-{int(time.time())}"
        client = {"name": self.name, "version": "1.0", "batch_size": 16, "lr": 0.05, "max_updates": 5}
        # num_cycles 0 would make every rejection look final (no timeout, as PyGrid answers once num_cycles is reached)
        server = {"cycle_length": self.settings.cycle_length_s, "num_cycles": 10**6, "min_diffs": 1, "max_diffs": 1}
        self.node.sync(lambda: self.grid.host(self.name, "1.0", model, plans, client, server))

    def write_config(self) -> None:
        s = self.settings
        values = {
            "daemon": {"log_level": "info"},
            "job.grid": {"timeout_s": s.timeout_s},
            "job.constraints": {"stable_for_s": s.stable_for_s},
            "job.schedule": {
                "interval_s": 0,
                "backoff_initial_s": s.backoff_initial_s,
                "backoff_max_s": s.backoff_max_s,
                "rejection_jitter_s": s.rejection_jitter_s,
                "finished_retry_s": s.backoff_max_s,
            },
            "job.budget": {"max_cycle_s": s.max_cycle_s},
            "job.trainer": {"nice": 0, "sched_idle": False, "max_updates": s.max_updates},
        }
        url = self.grid.url.replace("http://", "ws://")
        text = daemon_config(base=self.base, bus_address=self.bus.address, url=url, model=self.name, values=values)
        self.config_path.write_text(text)

    # ------------------------------------------------------------------ the daemon

    async def start_daemon(self, attempts: int = 5) -> None:
        """Start a daemon and wait for READY; a start that fails is a finding, retried ``attempts`` times."""
        for attempt in range(1, attempts + 1):
            notify = NotifySocket(self.base / f"notify-{len(self.notifies)}.sock")
            self.notifies.append(notify)
            daemon = await DaemonProcess.start(self.config_path, notify=notify)
            self.daemons.append(daemon)
            ready = asyncio.ensure_future(notify.wait_for(lambda m: "READY" in m, timeout=60))
            exited = asyncio.ensure_future(daemon.proc.wait())
            await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
            exited.cancel()
            if ready.done() and ready.exception() is None:
                now = time.time()
                self.ready_at[daemon.pid] = now
                if self.down_since is not None:
                    self.not_holding.append((self.down_since, now))
                    self.down_since = None
                return
            ready.cancel()
            await daemon.stop()
            self.deaths[daemon.pid] = time.time()
            tail = "\n".join(daemon.raw[-12:])
            self.findings.append(f"daemon start {attempt} failed (exit {daemon.proc.returncode}):\n{tail}")
            self.down_since = self.down_since or time.time()
            await asyncio.sleep(2.0)  # behaviour: the next attempt after a pause, as systemd's RestartSec
        raise AssertionError(f"the daemon did not start in {attempts} attempts; see the findings")

    async def kill_daemon(self) -> list[int]:
        """SIGKILL the daemon and reap it; returns the pids of its trainers, to check they die with it."""
        daemon = self.daemon
        assert daemon is not None
        trainers = self.trainer_pids()
        self.down_since = time.time()
        self.deaths[daemon.pid] = self.down_since
        with contextlib.suppress(ProcessLookupError):
            daemon.signal(signal.SIGKILL)
        await daemon.wait_exit(30)
        return trainers

    def trainer_pids(self) -> list[int]:
        """Pids of the current daemon's live trainer processes."""
        daemon = self.daemon
        if daemon is None:
            return []
        found = []
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(daemon.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    if child.status() != psutil.STATUS_ZOMBIE and "syftd.trainer" in " ".join(child.cmdline()):
                        found.append(child.pid)
        return found

    def sample(self) -> None:
        """One RSS (MiB) and fd-count sample of the live daemon."""
        daemon = self.daemon
        if daemon is None or daemon.proc.returncode is not None or daemon.pid in self.deaths:
            return
        with contextlib.suppress(OSError, AssertionError):
            fds = len(os.listdir(f"/proc/{daemon.pid}/fd"))
            self.samples.append((time.time(), daemon.pid, rss_mib(daemon.pid), fds))

    async def stop(self) -> None:
        """Stop the daemon (SIGTERM), close the notify sockets; idempotent."""
        if self.daemon is not None:
            await self.daemon.stop()
        for notify in self.notifies:
            notify.close()
        self.notifies.clear()

    # ------------------------------------------------------------------ the node

    async def end_due_cycles(self) -> None:
        """Close the node's cycle once its ``cycle_length`` is over (this node closes cycles only on reports)."""

        async def close_if_due() -> bool:
            process = self.grid.state.find(self.name, "1.0")
            cycle = process.current_cycle() if process is not None else None
            if cycle is None or cycle.end is None or datetime.now() < cycle.end:
                return False
            return await self.grid.close_cycle(self.name, "1.0")

        if await self.node.acall(close_if_due()):
            self.cycle_ends += 1

    def node_call(self, fn: Callable[[LedgerNode], Awaitable[Any]]) -> Awaitable[Any]:
        """Run a coroutine of the node on its loop, awaited from the soak's."""
        return self.node.acall(fn(self.grid))

    # ------------------------------------------------------------------ what happened

    def facts(self) -> list[events.Fact]:
        """Every daemon's facts, in time order."""
        found = [f for d in self.daemons for f in events.facts(list(d.logs), d.pid)]
        return sorted(found, key=lambda f: f.at)

    def rows(self) -> list[NodeRow]:
        """The node's stored reports of the soak's process."""
        return [NodeRow(r.diff_sha256, r.cycle, r.worker_id, r.request_key) for r in self.node.reports_for(self.name)]

    def raw_lines(self) -> list[str]:
        """Every line every daemon printed."""
        return [line for d in self.daemons for line in d.raw]
