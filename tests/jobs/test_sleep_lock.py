"""The sleep lock (logind's delay inhibitor) across cycles, in-process with the stand-in trainer: taken
when a cycle starts, kept while cycles follow one another, released once no cycle runs (issue 15: a
D-Bus Inhibit call and a release per back-to-back cycle cost the daemon and logind)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from jobs.conftest import StaticConditions, World
from jobs.test_manager import _finished, manager
from structlog.testing import capture_logs
from support.harness import eventually

from syftd.config import ScheduleConfig

pytestmark = pytest.mark.timeout(90)


async def test_back_to_back_cycles_keep_one_sleep_lock_and_release_it_when_none_follows(world: World) -> None:
    """Three cycles with interval_s = 0 take the lock once; when the power goes, the cycle after the last
    does not start and the lock is released."""
    world.host()
    world.node.set_averaging_delay(0)  # averaged at once: the next request is accepted, no wait between
    job = world.job(schedule=ScheduleConfig(interval_s=0, backoff_initial_s=0.2))
    job = dataclasses.replace(job, constraints=dataclasses.replace(job.constraints, requires_external_power=True))
    conditions = StaticConditions(on_external_power=True, online=True, metered=False)
    with capture_logs() as logs:
        async with manager(world, job, conditions) as jobs:
            await eventually(lambda: len(_finished(logs)) >= 3, timeout=60)
            outcomes = [(e["outcome"], e.get("retry_in_s")) for e in _finished(logs)]
            assert conditions.lock_takes == 1, (conditions.lock_takes, outcomes)
            conditions.publish(asyncio.get_running_loop().time(), on_external_power=False)
            await eventually(lambda: jobs.status()[0]["state"] != "running" and not conditions.lock_held, timeout=30)
    assert all(e["outcome"] in ("done", "expired") for e in _finished(logs)), _finished(logs)
    assert conditions.lock_takes == 1
