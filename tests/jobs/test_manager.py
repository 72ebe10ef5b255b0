"""The job manager in-process: one ``cycle.finished`` line and one history entry per cycle, the stop
deadline, the sleep lock following the cycles, and spooled diffs through the one report path."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from jobs.conftest import StaticConditions, World, eventually_async, trainer_pids
from support.waiting import poll_until

from syftd import events
from syftd.config import Config, DaemonConfig, JobConfig
from syftd.jobs import JobManager
from syftd.trainer.process import KILL_AFTER_TERM_S

pytestmark = pytest.mark.timeout(90)


@asynccontextmanager
async def manager(
    world: World,
    job: JobConfig,
    conditions: StaticConditions | None = None,
    statuses: list[str] | None = None,
    before_start: Callable[[], None] = lambda: None,
) -> AsyncIterator[JobManager]:
    config = Config(daemon=DaemonConfig(state_dir=world.base / "state", runtime_dir=world.base / "run"), job=(job,))
    jobs = JobManager(
        config,
        pool=world.pool,
        spool=world.spool,
        history=world.history,
        identity=world.identity,
        client_factory=world.session,
        monitor=conditions,
        status=lambda text: (statuses if statuses is not None else []).append(text) or world.changes.notify(),
    )
    if conditions is not None:
        conditions.changes = world.changes
    before_start()  # the daemon starts the monitor (its first snapshot) after building the manager
    await jobs.start()
    try:
        yield jobs
    finally:
        await jobs.stop()


async def _until(world: World, predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Await ``predicate``, re-checked on each log line (``world.logs()``), STATUS= line and sleep-lock call."""
    await world.changes.until(predicate, what=what, timeout=timeout)


async def _looked_for(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """The shared bounded poll, for the manager's job state that no line or status announces (the spool
    count is set after the history write's thread returns; the node's report list)."""
    await poll_until(predicate, what=what, timeout=timeout)


def _finished(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == events.CYCLE_FINISHED]


async def test_a_due_cycle_runs_once_with_one_finished_line_one_history_entry_and_its_phase_words(
    world: World,
) -> None:
    """Due at start: one cycle runs to done; the history and the log say so once; STATUS= named its phases."""
    world.host()
    statuses: list[str] = []
    with world.logs() as logs:
        async with manager(world, world.job(), statuses=statuses) as jobs:
            await _until(world, lambda: len(_finished(logs)) == 1, "one cycle.finished line")
            await _until(world, lambda: jobs.status()[0]["last_outcome"] == "done", "last outcome done")
    entries = await asyncio.to_thread(world.history.entries, "tiny")
    assert [(e["outcome"], e["reason"]) for e in entries] == [("done", None)]
    assert _finished(logs)[0]["outcome"] == "done"
    assert len(world.reports()) == 1
    assert any("starting trainer" in s or "loading data" in s or "downloading" in s for s in statuses), statuses


async def test_stop_while_loading_data_ends_the_cycle_expired_shutdown_by_the_deadline(world: World) -> None:
    """The stand-in is held in its data load; stop(deadline): the trainer gets SIGTERM at the deadline, the
    cycle ends expired (shutdown) with one line and one history entry, and stop() returns in time."""
    world.host()
    await world.gate("load")
    try:
        with world.logs() as logs:
            async with manager(world, world.job()) as jobs:
                await world.entered("load")
                await _until(world, lambda: "loading data" in jobs.status_line(), "STATUS= loading data")
                began = time.monotonic()
                await jobs.stop(began + 0.3)
                took_s = time.monotonic() - began
    finally:
        await world.open_gate("load")
    assert took_s <= 0.3 + KILL_AFTER_TERM_S + 1.0, took_s
    assert [(e["outcome"], e["reason"]) for e in _finished(logs)] == [("expired", "shutdown")]
    entries = await asyncio.to_thread(world.history.entries, "tiny")
    assert [(e["outcome"], e["reason"]) for e in entries] == [("expired", "shutdown")]
    await eventually_async(lambda: trainer_pids() == [], timeout=3.0)
    assert world.reports() == []


async def test_the_sleep_lock_is_held_per_cycle_and_released_when_idle(world: World) -> None:
    """Each cycle takes the lock once; once no cycle runs it has been released as often as taken."""
    world.host()
    conditions = StaticConditions(on_external_power=True, online=True, metered=False)
    async with manager(world, world.job(), conditions) as jobs:
        await _until(world, lambda: jobs.status()[0]["last_outcome"] == "done", "last outcome done")
        await _until(world, lambda: conditions.lock_releases >= 1, "the sleep lock released")
        assert conditions.lock_holds == 1


async def test_a_lost_network_aborts_the_report_and_the_spooled_diff_is_reported_once_online(world: World) -> None:
    """The report is held; the network goes: the cycle ends spooled. Online again: the manager reports
    the spooled diff through the same path, exactly once, and the history entry says reported."""
    world.host()
    job = world.job()
    job = dataclasses.replace(job, constraints=dataclasses.replace(job.constraints, requires_network=True))
    conditions = StaticConditions(online=True)
    world.proxy.hold("report")
    with world.logs() as logs:
        async with manager(world, job, conditions) as jobs:
            await world.proxy.entered("report")
            conditions.publish(time.monotonic(), online=False)
            await _until(world, lambda: len(_finished(logs)) == 1, "one cycle.finished line")
            assert _finished(logs)[0]["outcome"] == "spooled"
            world.proxy.release()
            assert world.reports() == []
            # the pending count follows the history write, which runs off the loop after cycle.finished
            await _looked_for(lambda: jobs.status()[0]["spool_pending"] == 1, "one diff pending in the spool")
            conditions.publish(time.monotonic(), online=True)
            await _looked_for(lambda: len(world.reports()) == 1, "one report on the node")
            await _looked_for(lambda: jobs.status()[0]["spool_pending"] == 0, "nothing pending in the spool")
    entries = await asyncio.to_thread(world.history.entries, "tiny")
    assert [e["outcome"] for e in entries] == ["reported"]
    assert len(world.reports()) == 1


async def test_an_operator_expiry_pauses_the_job_until_a_trigger(world: World) -> None:
    """interval_s = 0: `syftd expire` ends the running cycle (manual) and no new one starts; status says
    it holds for the operator; a trigger runs the next one to done."""
    world.host()
    job = dataclasses.replace(world.job(), schedule=dataclasses.replace(world.job().schedule, interval_s=0.0))
    await world.gate("train")
    # the stand-in monitor's sleep-lock release marks each decision tick that starts no cycle
    conditions = StaticConditions()
    with world.logs() as logs:
        async with manager(world, job, conditions) as jobs:
            await world.entered("train")
            jobs.expire("tiny")
            await world.open_gate("train")
            await _until(world, lambda: len(_finished(logs)) == 1, "one cycle.finished line")
            assert (_finished(logs)[0]["outcome"], _finished(logs)[0]["reason"]) == ("expired", "manual")
            # the tick after the cycle's end decides: with interval_s = 0 it would start the next cycle
            # there and then; it holds for the operator instead
            await _until(
                world,
                lambda: "expired by the operator" in " ".join(jobs.why("tiny")["reasons"]),
                "the decision after the cycle's end: held for the operator",
            )
            assert len([e for e in logs if e["event"] == events.CYCLE_STARTED]) == 1
            assert "expired by the operator" in jobs.status_line(), jobs.status_line()
            assert "expired by the operator" in " ".join(jobs.why("tiny")["reasons"])
            jobs.trigger("tiny")
            await _until(
                world, lambda: len(_finished(logs)) >= 2, "a second cycle.finished line"
            )  # interval_s = 0: more may follow
    assert _finished(logs)[1]["outcome"] == "done"


async def test_a_worker_id_left_in_a_cycle_without_a_diff_is_not_reused(world: World) -> None:
    """A cycle accepted and then cut off (the daemon killed: here its task is cancelled past every
    handler) leaves its worker id marked; the next cycle authenticates afresh and is accepted."""
    world.host()
    job = world.job()
    await world.gate("train")
    first = world.cycle(job)
    running = asyncio.ensure_future(first.run())
    try:
        await world.entered("train")
        worker = await asyncio.to_thread(world.identity.load_worker, "tiny")
        assert worker is None  # assigned to the open cycle without a diff: not to be asked with again
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await world.open_gate("train")
    assert (first.record.ended.outcome.value, first.record.ended.reason) == ("expired", "shutdown")
    with world.logs() as logs:
        record = await asyncio.wait_for(world.cycle(job).run(), 30)
    assert record.ended.outcome.value == "done", record
    assert [e["event"] for e in logs if e["event"] in (events.IDENTITY_RENEWED, events.GRID_AUTHENTICATED)] == [
        events.IDENTITY_RENEWED,
        events.GRID_AUTHENTICATED,
    ]


async def test_why_right_after_start_says_the_conditions_must_hold_since_the_daemon_started(world: World) -> None:
    """Conditions seen first at start (stable_for_s = 30): why names the wait from the daemon's start,
    not a condition "regained"."""
    world.host()
    job = world.job()
    job = dataclasses.replace(
        job, constraints=dataclasses.replace(job.constraints, stable_for_s=30.0, requires_external_power=True)
    )
    conditions = StaticConditions()

    def first_snapshot() -> None:
        conditions.publish(time.monotonic(), on_external_power=True, online=True, metered=False)

    async with manager(world, job, conditions, before_start=first_snapshot) as jobs:
        await _looked_for(lambda: jobs.why("tiny")["reasons"] != [], "why giving reasons")
        why = jobs.why("tiny")
    text = " ".join(why["reasons"])
    assert "must hold 30 s since the daemon started" in text and "regained" not in text, why
