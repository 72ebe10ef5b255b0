"""Holding the real daemon's cycle in one phase before a finished diff exists (tests/e2e/test_phases.py
and tests/bench/test_expiry_bench.py).

A proxy in front of the node holds one protocol step (authenticating, requesting, downloading); a
``sitecustomize`` gate holds the trainer process before its imports (starting trainer); a Python data
source holds the data load (loading data); training runs 100 000 steps. A gate holds while
``<gates>/<name>.hold`` exists and writes ``<name>.entered`` when reached (``support.gate_hook``: the
trainer blocks on a socket and says it arrived with a datagram; nothing polls).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from support import gate_hook
from support.harness import Harness
from support.holdproxy import HoldProxy
from support.waiting import Changes

__all__ = ["PHASES", "Held", "alive", "budget_s", "daemon_env", "history", "hold", "trainer_processes"]

BUDGET_S = {"authenticating": 5.0, "requesting": 5.0, "downloading": 5.0}
"""max_cycle_s per phase when the budget is the trigger: the held phase is reached well before it."""
_BUDGET_DEFAULT_S = 15.0

_SITECUSTOMIZE = """
import os, sys
_gate = os.environ.get("SYFTD_TEST_IMPORT_GATE")
if _gate and "syftd.trainer.worker" in getattr(sys, "orig_argv", ()) and os.path.exists(_gate + ".hold"):
    import gate_hook
    gate_hook.hold(_gate)
"""

_GATED_DATA = """
import torch
import gate_hook

GATE = {gate!r}

class Digits(torch.utils.data.Dataset):
    def __len__(self):
        return 256
    def __getitem__(self, i):
        return torch.zeros(784), i % 10

def dataset():
    gate_hook.hold(GATE)
    return Digits()
"""

PHASES = {
    # phase: (proxy step to hold, STATUS= words while held)
    "authenticating": ("authenticate", "authenticating"),
    "requesting": ("cycle-request", "requesting"),
    "downloading": ("get-model", "downloading"),
    "starting trainer": (None, "starting trainer"),
    "loading data": (None, "loading data"),
    "training": (None, "training "),
}


@dataclass
class Held:
    """One daemon held in one phase."""

    harness: Harness
    proxy: HoldProxy
    gates: Path
    phase: str

    def release(self) -> None:
        """Let every hold go: the proxy's step and the trainer gates (``gate_hook.let_go``)."""
        self.proxy.release()
        for gate in ("import", "load"):
            gate_hook.let_go(str(self.gates / gate))


async def hold(harness: Harness, proxy: HoldProxy, phase: str, *, budget: bool) -> Held:
    """Start a daemon and return once its one cycle is held in ``phase`` (and STATUS= says so)."""
    step, words = PHASES[phase]
    gates = harness.base / "gates"
    gates.mkdir(exist_ok=True)
    hooks = harness.base / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    (hooks / "gate_hook.py").write_text(Path(gate_hook.__file__).read_text())
    (hooks / "gated_data.py").write_text(textwrap.dedent(_GATED_DATA.format(gate=str(gates / "load"))))
    harness.host(max_updates=5)
    config = harness.write_config(url=proxy.url, job="max_updates = 100000").read_text()
    config = config.replace('version = "1.0"\n', 'version = "1.0"\ntransport = "http"\n', 1)
    if phase == "loading data":
        config = config.replace(
            'source = "synthetic-digits"\nsamples = 256',
            f'source = "python"\npath = "{hooks}"\ncallable = "gated_data:dataset"',
        )
    if budget:
        config = config.replace("max_cycle_s = 120", f"max_cycle_s = {budget_s(phase)}")
    harness.config_path.write_text(config)
    if step is not None:
        proxy.hold(step)
    elif phase == "starting trainer":
        (gates / "import.hold").write_text("")
    elif phase == "loading data":
        (gates / "load.hold").write_text("")
    held = Held(harness, proxy, gates, phase)
    gate = {"starting trainer": "import", "loading data": "load"}.get(phase)
    async with _entered(gates / gate if gate else None) as entered:
        await harness.start(env=daemon_env(harness))
        assert harness.notify is not None
        await harness.notify.wait_for(lambda m: words in m.fields.get("STATUS", ""), timeout=60)
        if phase == "downloading":
            assert harness.daemon is not None
            await harness.daemon.wait_log("trainer.spawned", timeout=30)  # prepared while the cycle downloads
        elif gate is not None:
            await entered.until(lambda: entered.count > 0, what=f"the trainer at its {gate} gate", timeout=60)
    return held


@contextlib.asynccontextmanager
async def _entered(gate: Path | None) -> AsyncIterator[Changes]:
    """Changes notified by each trainer's datagram on reaching ``gate`` (``gate_hook.hold``)."""
    changes = Changes()
    if gate is None:
        yield changes
        return
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(gate_hook.address(str(gate), "test"))
        sock.setblocking(False)

        def readable() -> None:
            with contextlib.suppress(BlockingIOError):
                while sock.recv(64):
                    changes.notify()

        loop.add_reader(sock.fileno(), readable)
        try:
            yield changes
        finally:
            loop.remove_reader(sock.fileno())


def budget_s(phase: str) -> float:
    """max_cycle_s used when the budget expires a cycle held in ``phase``."""
    return BUDGET_S.get(phase, _BUDGET_DEFAULT_S)


def trainer_processes(harness: Harness) -> list[psutil.Process]:
    """The daemon's live trainer processes (zombies and processes gone meanwhile left out)."""
    assert harness.daemon is not None
    found = []
    for child in psutil.Process(harness.daemon.pid).children(recursive=True):
        try:
            if "syftd.trainer" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:  # ZombieProcess included
            continue
    return found


def alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def history(harness: Harness) -> list[dict]:
    path = harness.base / "state" / "jobs" / "mnist" / "history.json"
    return json.loads(path.read_text())["entries"] if path.exists() else []


def daemon_env(harness: Harness) -> dict[str, str]:
    """The daemon's environment for the gates (its trainers inherit it)."""
    return {"PYTHONPATH": str(harness.base / "hooks"), "SYFTD_TEST_IMPORT_GATE": str(harness.base / "gates" / "import")}
