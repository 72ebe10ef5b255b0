"""One cycle in-process (CycleRun) against the node, a real spool and the stand-in trainer: outcomes,
expiry in every phase before the diff exists, the phase words, and the one report path."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
from jobs.conftest import GRACE_S, World, eventually_async, trainer_pids

from syftd.config import BudgetConfig
from syftd.jobs.cycle import CycleRun
from syftd.jobs.report import ReportRun
from syftd.jobs.states import CycleState, TrainerPhase
from syftd.jobs.view import phase_text
from syftd.outcomes import CycleOutcome, Ended, ExpiryReason, ReportOutcome

pytestmark = pytest.mark.timeout(90)

# design bounds (expiry_grace_s + 3 s), with the margin that holds on a loaded machine
BOUND_S = GRACE_S + 3.0


def plain(ended: Ended) -> Ended:
    """The typed end without whether the node had accepted the request."""
    return dataclasses.replace(ended, accepted=False)


async def _state(world: World, run: CycleRun, state: CycleState, timeout: float = 30) -> None:
    """Await ``run`` entering ``state`` (its on_change hook wakes the wait)."""
    await world.changes.until(lambda: run.state is state, what=f"the cycle reaching {state.value}", timeout=timeout)


async def _words(world: World, run: CycleRun, words: str, timeout: float = 10) -> None:
    """Await the phase words starting with ``words``: the frames sent before a hold reach the cycle."""
    await world.changes.until(
        lambda: phase_text(run).startswith(words), what=f"the phase words {words!r}", timeout=timeout
    )


async def test_a_cycle_trains_spools_reports_once_and_ends_done(world: World) -> None:
    """Accepted, trained by the stand-in, spooled, reported: DONE, one report on the node, nothing pending."""
    world.host()
    run = world.cycle(world.job())
    record = await asyncio.wait_for(run.run(), 60)
    assert plain(record.ended) == Ended(CycleOutcome.DONE), record
    assert record.steps == 5 and record.bytes_up > 0
    assert len(world.reports()) == 1
    assert await asyncio.to_thread(world.spool.pending, "tiny") == []
    assert run.flag.reason is None


PHASES = {
    # phase: (how to hold it, how to know it is held, the status words while held)
    "authenticating": ("authenticate", None, "authenticating"),
    "requesting": ("cycle-request", None, "requesting"),
    "downloading": ("get-model", None, "downloading"),
    "starting trainer": (None, "import", "starting trainer"),
    "loading data": (None, "load", "loading data"),
    "training": (None, "step2", "training 1/3, loss 1.00"),
    "writing the diff": (None, "diff", "writing the diff"),
}


@pytest.mark.parametrize("phase", list(PHASES))
async def test_expiry_in_each_phase_before_the_diff_exists(world: World, phase: str) -> None:
    """Held in ``phase``, expired: EXPIRED with the reason within the grace + 3 s, the trainer process gone
    within the same bound, nothing reported, the flag closed, and the status words named the phase."""
    step, gate, words = PHASES[phase]
    world.host()
    job = world.job(max_updates=3)
    if step is not None:
        world.proxy.hold(step)
    if gate is not None:
        await world.gate(gate)
    run = world.cycle(job)
    running = asyncio.ensure_future(run.run())
    try:
        if step is not None:
            await world.proxy.entered(step)
        else:
            await world.entered(gate)
        await _words(world, run, words)
        began = time.monotonic()
        assert run.expire(ExpiryReason.MANUAL)
        record = await asyncio.wait_for(running, BOUND_S + 5)
        took_s = time.monotonic() - began
    finally:
        world.proxy.release()
        await world.open_gate(gate or "none")
    assert plain(record.ended) == Ended.expired(ExpiryReason.MANUAL), record
    assert took_s <= BOUND_S, took_s
    await eventually_async(lambda: trainer_pids() == [], timeout=BOUND_S)
    assert world.reports() == []


async def test_a_stopping_daemon_brings_the_sigterm_forward(world: World) -> None:
    """Expired with a long grace, then expired again with SHUTDOWN and an earlier term_by: the trainer
    held in its data load gets SIGTERM at term_by, not at the grace."""
    world.host()
    job = world.job(budget=BudgetConfig(max_cycle_s=120, expiry_grace_s=60.0))
    await world.gate("load")
    run = world.cycle(job)
    running = asyncio.ensure_future(run.run())
    try:
        await world.entered("load")
        await _state(world, run, CycleState.TRAINING)
        assert run.expire(ExpiryReason.POWER_LOST)
        began = time.monotonic()
        run.expire(ExpiryReason.SHUTDOWN, term_by=time.monotonic() + 0.2)
        record = await asyncio.wait_for(running, 10)
    finally:
        await world.open_gate("load")
    assert time.monotonic() - began < 0.2 + 3.0
    assert plain(record.ended) == Ended.expired(ExpiryReason.POWER_LOST)
    assert record.error is not None and "terminated" in record.error


async def test_the_budget_expires_a_cycle_held_in_its_download(world: World) -> None:
    """max_cycle_s passes while get-model is held: EXPIRED with budget, the download abandoned at once."""
    world.host()
    job = world.job(budget=BudgetConfig(max_cycle_s=0.5, expiry_grace_s=GRACE_S))
    world.proxy.hold("get-model")
    try:
        record = await asyncio.wait_for(world.cycle(job).run(), 10)
    finally:
        world.proxy.release()
    assert plain(record.ended) == Ended.expired(ExpiryReason.BUDGET)
    await eventually_async(lambda: trainer_pids() == [], timeout=BOUND_S)


async def test_the_status_words_follow_the_trainer(world: World) -> None:
    """starting trainer → loading data → training N/M, loss → writing the diff; never "training" before a step."""
    world.host()
    for gate in ("import", "load", "train", "diff"):
        await world.gate(gate)
    run = world.cycle(world.job(max_updates=3))
    running = asyncio.ensure_future(run.run())
    seen = []
    try:
        for gate, arrived in (
            ("import", lambda: run.state is CycleState.TRAINING),  # the spawned trainer is this cycle's
            ("load", lambda: run.trainer_phase is TrainerPhase.LOADING_DATA),  # the stage frame
            ("train", lambda: run.progress is not None),  # the step-0 frame: data loaded, no step yet
            ("diff", lambda: run.trainer_phase is TrainerPhase.WRITING_DIFF),  # the stage frame
        ):
            await world.entered(gate)
            await world.changes.until(arrived, what=f"the frames sent before the {gate} hold", timeout=10)
            seen.append(phase_text(run))
            await world.open_gate(gate)
        record = await asyncio.wait_for(running, 30)
    finally:
        for gate in ("import", "load", "train", "diff"):
            await world.open_gate(gate)
    assert record.ended.outcome is CycleOutcome.DONE
    assert seen[0] == "starting trainer"
    assert seen[1] == "loading data"
    assert seen[2] == "loading data"  # the data is loaded, no step has run yet
    assert seen[3] == "writing the diff"


async def test_an_aborted_report_leaves_the_diff_spooled_and_it_is_reported_once_later(world: World) -> None:
    """The report is held at the proxy and aborted (network lost): SPOOLED; the one report path later
    probes, reports and marks it: one report on the node, nothing pending."""
    world.host()
    job = world.job()
    world.proxy.hold("report")
    run = world.cycle(job)
    running = asyncio.ensure_future(run.run())
    try:
        await world.proxy.entered("report")
        assert run.state is CycleState.REPORTING
        assert phase_text(run) == "reporting"
        assert not run.expire(ExpiryReason.BUDGET), "the flag no longer ends a cycle with a finished diff"
        run.expire(ExpiryReason.NETWORK_LOST)
        record = await asyncio.wait_for(running, 10)
    finally:
        world.proxy.release()
    assert plain(record.ended) == Ended(CycleOutcome.SPOOLED)
    assert world.reports() == []
    pending = await asyncio.to_thread(world.spool.pending, "tiny")
    assert len(pending) == 1
    reporter = ReportRun("tiny", world.spool, lambda: world.session(job), asyncio.Event())
    assert await reporter.report_all(pending) == [(pending[0], ReportOutcome.REPORTED)]
    assert len(world.reports()) == 1
    assert await asyncio.to_thread(world.spool.pending, "tiny") == []


async def test_a_node_that_is_down_fails_the_cycle_unavailable(world: World) -> None:
    """Connection refused: FAILED with unavailable, no trainer started."""
    world.host()
    job = world.job()
    job = dataclasses.replace(job, grid=dataclasses.replace(job.grid, url="http://127.0.0.1:9"))
    record = await asyncio.wait_for(world.cycle(job).run(), 30)
    assert record.ended.outcome is CycleOutcome.FAILED and record.ended.reason == "unavailable"
    assert trainer_pids() == []
