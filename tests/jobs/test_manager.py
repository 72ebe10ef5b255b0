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
from structlog.testing import capture_logs

from syftd import events
from syftd.config import Config, DaemonConfig, JobConfig
from syftd.jobs import JobManager
from syftd.trainer.process import KILL_AFTER_TERM_S

pytestmark = pytest.mark.timeout(90)


@asynccontextmanager
async def manager(
    world: World, job: JobConfig, conditions: StaticConditions | None = None, statuses: list[str] | None = None
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
        status=(statuses if statuses is not None else []).append,
    )
    await jobs.start()
    try:
        yield jobs
    finally:
        await jobs.stop()


async def _until(predicate: Callable[[], bool], timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def _finished(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == events.CYCLE_FINISHED]


async def test_a_due_cycle_runs_once_with_one_finished_line_one_history_entry_and_its_phase_words(
    world: World,
) -> None:
    """Due at start: one cycle runs to done; the history and the log say so once; STATUS= named its phases."""
    world.host()
    statuses: list[str] = []
    with capture_logs() as logs:
        async with manager(world, world.job(), statuses=statuses) as jobs:
            await _until(lambda: len(_finished(logs)) == 1)
            await _until(lambda: jobs.status()[0]["last_outcome"] == "done")
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
        with capture_logs() as logs:
            async with manager(world, world.job()) as jobs:
                await world.entered("load")
                await _until(lambda: "loading data" in jobs.status_line())
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
        await _until(lambda: jobs.status()[0]["last_outcome"] == "done")
        await _until(lambda: conditions.lock_releases >= 1)
        assert conditions.lock_holds == 1


async def test_a_lost_network_aborts_the_report_and_the_spooled_diff_is_reported_once_online(world: World) -> None:
    """The report is held; the network goes: the cycle ends spooled. Online again: the manager reports
    the spooled diff through the same path, exactly once, and the history entry says reported."""
    world.host()
    job = world.job()
    job = dataclasses.replace(job, constraints=dataclasses.replace(job.constraints, requires_network=True))
    conditions = StaticConditions(online=True)
    world.proxy.hold("report")
    with capture_logs() as logs:
        async with manager(world, job, conditions) as jobs:
            await world.proxy.entered("report")
            conditions.publish(time.monotonic(), online=False)
            await _until(lambda: len(_finished(logs)) == 1)
            assert _finished(logs)[0]["outcome"] == "spooled"
            world.proxy.release()
            assert world.reports() == []
            assert jobs.status()[0]["spool_pending"] == 1
            conditions.publish(time.monotonic(), online=True)
            await _until(lambda: len(world.reports()) == 1)
            await _until(lambda: jobs.status()[0]["spool_pending"] == 0)
    entries = await asyncio.to_thread(world.history.entries, "tiny")
    assert [e["outcome"] for e in entries] == ["reported"]
    assert len(world.reports()) == 1
