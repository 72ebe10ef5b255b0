"""The chaos soak: the real daemon, the local node and the D-Bus mocks under seeded random faults, then a
drain, then the ledger and the totals.

Owns the schedule (a fault every 1–5 s, drawn from the seeded RNG: every kind once in a random order,
then by weight; each kind at most once at a time),
the drain (faults undone, the job kept from starting cycles by going on battery, the spool left to
empty), the bounds the invariants are checked against and the printed totals. Does not own the faults
(``faults``), the daemon and node (``world``), the ledger (``ledger``) or the gaps (``gaps``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from support.dbus import DBusMocks, MockControl
from support.soak import events
from support.soak.faults import KINDS, Faults, Injected
from support.soak.gaps import Gaps, measure
from support.soak.ledger import Ledger, reconcile
from support.soak.world import Settings, World
from support.timing import LOAD_MARGIN_S
from support.waiting import poll_until

__all__ = ["FD_GROWTH", "RSS_GROWTH", "Result", "soak"]

RSS_GROWTH = (1.20, 5.0)
"""The last third's median RSS may exceed the first third's by at most 20 % plus 5 MiB."""
FD_GROWTH = 8
"""The last third's highest fd count may exceed the first third's by at most this many."""


@dataclass
class Result:
    """What one soak found; ``render()`` is the printed totals."""

    seed: int
    seconds: float
    drain_s: float
    settings: Settings
    ledger: Ledger
    gaps: Gaps
    cycles: Counter[str]
    cycle_ends: int
    faults: list[Injected]
    skipped: dict[str, str]
    memory: dict[str, float]
    tracebacks: int
    orphans: list[int]
    shm_left: int
    findings: list[str] = field(default_factory=list)
    out: Path | None = None

    @property
    def idle_bound_s(self) -> float:
        """The wedge bound: the longest wait the daemon may choose (the backoff cap, which is also the retry
        period after a final-looking rejection, or a rejection until the node's cycle ends), plus
        stable_for_s, the node's 1 s cycle-end tick and twice the load margin."""
        s = self.settings
        wait = max(s.backoff_max_s, s.cycle_length_s + s.rejection_jitter_s)
        return wait + s.stable_for_s + 1.0 + 2 * LOAD_MARGIN_S

    @property
    def cycle_bound_s(self) -> float:
        """A cycle's longest run: its budget and grace, then a probe and a report of ``timeout_s`` each."""
        s = self.settings
        return s.max_cycle_s + 2.0 + 2 * s.timeout_s + 2 * LOAD_MARGIN_S

    def memory_flat(self) -> bool:
        """RSS and fds of the last third of the samples within the stated growth of the first third's."""
        m = self.memory
        ratio, extra = RSS_GROWTH
        return m["rss_last"] <= m["rss_first"] * ratio + extra and m["fds_last"] <= m["fds_first"] + FD_GROWTH

    def render(self) -> str:
        """The totals, then findings, the fault sequence and every diff that did not end well."""
        t, g, m = self.ledger.totals(), self.gaps, self.memory
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(self.cycles.items()) if k != "started")
        kinds = Counter(f.kind for f in self.faults)
        lines = [
            f"== soak: seed {self.seed}, {self.seconds:.0f} s of faults, then {self.drain_s:.1f} s of drain",
            f"cycles: {self.cycles['started']} started; finished: {outcomes or 'none'}; "
            f"node cycles ended at cycle_length: {self.cycle_ends}",
            f"faults: {len(self.faults)} ({', '.join(f'{k} {kinds[k]}' for k in KINDS if kinds[k])})",
            f"diffs finished: {t['finished']}; reported once: {t['reported']} (resends into the same row: "
            f"{t['resends']}); discarded after the node said gone: {t['discarded_after_gone']}; "
            f"lost: {t['lost']}; duplicated: {t['duplicated']}; still spooled after the drain: "
            f"{t['still_spooled']}; node rows with no spool.added line: {t['unmatched_rows']}; refused by the "
            f"disk (its file or its commit) and reported anyway: {t['unspooled_on_node']} of {t['unspooled']}",
            f"longest idle gap while the conditions held: {g.longest_idle_s:.1f} s (bound {self.idle_bound_s:.1f} s); "
            f"longest cycle: {g.longest_cycle_s:.1f} s (bound {self.cycle_bound_s:.1f} s)",
            f"daemon RSS: first third {m['rss_first']:.1f} MiB, last third {m['rss_last']:.1f} MiB (medians; "
            f"bound x{RSS_GROWTH[0]} + {RSS_GROWTH[1]:g} MiB); fds: {m['fds_first']:.0f} -> {m['fds_last']:.0f} "
            f"(maxima; bound +{FD_GROWTH}); {m['samples']:.0f} samples over {m['daemons']:.0f} daemon(s)",
            f"cycles that never logged cycle.finished, their daemon alive: {g.unfinished}; cycles started "
            f"before the announced wait was over: {g.early_starts} (the worst {g.worst_early_s:.1f} s early)",
            f"tracebacks in the daemon's output: {self.tracebacks}; trainers alive after their daemon's kill -9: "
            f"{len(self.orphans)}; /dev/shm/syftd-* left after the soak: {self.shm_left}",
        ]
        lines += [f"skipped fault {k}: {why}" for k, why in self.skipped.items()]
        lines += [f"finding: {f}" for f in self.findings]
        bad = [d for d in self.ledger.diffs if d.verdict in ("lost", "duplicated", "still_spooled")]
        lines += [f"diff {d.cycle_id} ({d.sha}): {d.verdict}: {d.why}" for d in bad]
        if self.out is not None:
            lines.append(f"fault sequence and daemon output: {self.out}")
        lines.append("fault sequence (seconds into the soak):")
        lines += [f.line() for f in sorted(self.faults, key=lambda f: f.at)]
        return "\n".join(lines)


async def soak(
    bus: DBusMocks,
    base: Path,
    model: bytes,
    plans: dict[str, bytes],
    *,
    seconds: float,
    seed: int,
    skip: tuple[str, ...] = (),
    out: str | Path | None = None,
) -> Result:
    """Run the soak for ``seconds`` of faults (none of the kinds in ``skip``), then drain; the node and the
    daemon are stopped on return. The fault sequence and the daemons' output go to ``out`` (default
    ``base/soak-out``)."""
    unknown = set(skip) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds {sorted(unknown)}; the kinds are {', '.join(KINDS)}")
    for template in ("upower", "networkmanager", "logind"):
        if not bus.is_running(template):
            await bus.restart(template)
    control = await MockControl.connect(bus.address)
    await control.reset()
    world = World(base, bus, Settings())
    shm_before = _shm()
    world.node.start()
    faults: Faults | None = None
    try:
        world.host(model, plans)
        world.write_config()
        await world.start_daemon()
        started = time.time()
        faults = Faults(world, control, random.Random(seed), started)
        faults.disabled.update({kind: "left out by SOAK_SKIP" for kind in skip})
        ticker = asyncio.ensure_future(_tick(world))
        try:
            await _chaos(faults, started + seconds)
            drain_started = time.time()
            still = await _drain(world, faults, control)
            drained = time.time()
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await faults.writable()
        await world.node.acall(world.grid.settled())
        target = Path(out) if out is not None else base / "soak-out"
        result = _result(world, faults, seed, seconds, (started, drain_started, drained), still, target)
    finally:
        if faults is not None:
            await faults.writable()
        await world.stop()
        await control.reset()
        control.close()
        world.node.stop()
    # after the daemon's orderly stop: what a killed daemon left behind
    result.orphans = [pid for pid in faults.orphans if _is_trainer(pid)]
    for pid in result.orphans:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # trainers of daemons this soak started and killed
    result.shm_left = len(_shm() - shm_before)
    return result


async def _tick(world: World) -> None:
    """Every second: a memory/fd sample, and end the node's cycle if its cycle_length is over."""
    while True:
        world.sample()
        await world.end_due_cycles()
        await asyncio.sleep(1.0)  # behaviour: the soak's sampling tick (once a second), not a wait


async def _chaos(faults: Faults, until: float) -> None:
    tasks: set[asyncio.Future[None]] = set()
    rng = faults.rng
    try:
        kinds = list(KINDS)
        deck = rng.sample(kinds, len(kinds))  # every kind once first, so a short soak covers them all
        while time.time() < until:
            await asyncio.sleep(rng.uniform(1.0, 5.0))
            kind = deck.pop() if deck else rng.choices(kinds, [KINDS[k] for k in kinds])[0]
            if kind in faults.available():
                tasks.add(asyncio.ensure_future(faults.inject(kind)))
            for task in [t for t in tasks if t.done()]:
                tasks.discard(task)
                task.result()  # a fault that could not be injected or undone ends the soak
    finally:
        # every fault runs to its end (and undoes itself) before the drain or an error goes on
        failed = [r for r in await asyncio.gather(*tasks, return_exceptions=True) if isinstance(r, BaseException)]
    if failed:
        raise failed[0]


async def _drain(world: World, faults: Faults, control: MockControl) -> set[str]:
    """Undo everything, keep new cycles from starting (on battery), and wait for the spool to empty.

    Returns the cycle ids still spooled when the time is up: twice the backoff cap, a probe and a report,
    and twice the load margin (a cycle still training expires at once on battery).
    """
    began = time.time()
    await faults.writable()
    await control.set_on_battery(True)
    await control.set_network(State=70)
    world.node.sync(lambda: _clear_failures(world))
    s = world.settings
    bound_s = 2 * s.backoff_max_s + 2 * s.timeout_s + 2 * LOAD_MARGIN_S - (time.time() - began)
    pending: set[str] = set()

    def drained() -> bool:
        nonlocal pending
        pending = events.pending_spool(world.state_dir, "mnist")
        return pending == set() and not _running(world)

    # polls: the spool directory announces nothing; at the bound, what is still spooled is the result
    with contextlib.suppress(AssertionError):
        await poll_until(drained, what="the spool drained", timeout=max(0.0, bound_s), every=0.5)
    world.not_holding.append((began, time.time() + 3600))
    return pending


def _clear_failures(world: World) -> None:
    while world.grid.take_failure() is not None:
        pass


def _running(world: World) -> bool:
    daemon = world.daemon
    if daemon is None:
        return False
    mine = [f for f in events.facts(list(daemon.logs), daemon.pid) if f.kind in ("cycle_started", "cycle_finished")]
    return bool(mine) and mine[-1].kind == "cycle_started"


def _result(
    world: World,
    faults: Faults,
    seed: int,
    seconds: float,
    times: tuple[float, float, float],
    still: set[str],
    out: Path,
) -> Result:
    started, drain_started, drained = times
    facts = world.facts()
    gone = [(at, text) for at, _op, text in world.grid.answers]
    ledger = reconcile(facts, world.rows(), gone, still)
    gaps = measure(facts, world.deaths, world.not_holding, started, drained)
    cycles: Counter[str] = Counter()
    for fact in facts:
        if fact.kind == "cycle_started":
            cycles["started"] += 1
        elif fact.kind == "cycle_finished":
            cycles[f"{fact.outcome}" + (f"/{fact.reason}" if fact.reason else "")] += 1
    raw = world.raw_lines()
    out.mkdir(parents=True, exist_ok=True)
    (out / "faults.txt").write_text("".join(f.line() + "\n" for f in sorted(faults.log, key=lambda f: f.at)))
    (out / "daemon.log").write_text("".join(line + "\n" for line in raw))
    return Result(
        seed=seed,
        seconds=seconds,
        drain_s=drained - drain_started,
        settings=world.settings,
        ledger=ledger,
        gaps=gaps,
        cycles=cycles,
        cycle_ends=world.cycle_ends,
        faults=list(faults.log),
        skipped=dict(faults.disabled),
        memory=_memory([s for s in world.samples if s[0] < drain_started]),
        tracebacks=sum(1 for line in raw if "Traceback" in line or "exception was never retrieved" in line),
        orphans=[],
        shm_left=0,
        findings=list(world.findings),
        out=out,
    )


def _memory(samples: list[tuple[float, int, float, int]]) -> dict[str, float]:
    third = max(1, len(samples) // 3)
    first, last = samples[:third], samples[-third:]
    return {
        "rss_first": statistics.median(s[2] for s in first) if first else 0.0,
        "rss_last": statistics.median(s[2] for s in last) if last else 0.0,
        "fds_first": max((s[3] for s in first), default=0),
        "fds_last": max((s[3] for s in last), default=0),
        "samples": len(samples),
        "daemons": len({s[1] for s in samples}),
    }


def _is_trainer(pid: int) -> bool:
    try:
        return b"syftd.trainer" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _shm() -> set[str]:
    with contextlib.suppress(OSError):
        return {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith("syftd-")}
    return set()
