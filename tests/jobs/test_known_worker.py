"""The worker id a cycle leaves reusable is known to the next one without reading ``worker.json``
(issue 15): its cycle-request goes out while the work directory is set up in a worker thread. What the
file would say still decides: an id in a cycle without a diff, forgotten, or saved for another node is
not known, and a new ``Identity`` (a restarted daemon) reads the file."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from jobs.conftest import World

from syftd.identity import Identity
from syftd.outcomes import CycleOutcome

pytestmark = pytest.mark.timeout(90)


def test_the_known_worker_follows_what_the_file_says(tmp_path: Path) -> None:
    """Saved → known (with its speed-test flag); in a cycle → not known; out of it → known; forgotten →
    not known; another node → not known; a new Identity knows nothing until it has read the file."""
    identity = Identity(tmp_path)
    assert identity.known_worker("mnist", "http://a") is None
    identity.save_worker("mnist", "w-1", "http://a", requires_speed_test=True)
    assert identity.known_worker("mnist", "http://a") == ("w-1", True)
    assert identity.known_worker("mnist", "http://b") is None
    identity.mark_in_cycle("mnist", True)
    assert identity.known_worker("mnist", "http://a") is None
    identity.mark_in_cycle("mnist", False)
    assert identity.known_worker("mnist", "http://a") == ("w-1", True)
    restarted = Identity(tmp_path)
    assert restarted.known_worker("mnist", "http://a") is None
    assert restarted.load_worker("mnist", "http://a") == "w-1"
    assert restarted.known_worker("mnist", "http://a") == ("w-1", True)
    identity.forget_worker("mnist")
    assert identity.known_worker("mnist", "http://a") is None
    assert identity.load_worker("mnist", "http://a") is None


def test_an_id_left_in_a_cycle_on_disk_is_not_known_after_a_restart(tmp_path: Path) -> None:
    """A daemon killed mid-cycle left the in-cycle mark: the next daemon reads it and does not know the id."""
    Identity(tmp_path).save_worker("mnist", "w-1", "http://a")
    Identity(tmp_path).mark_in_cycle("mnist", True)
    restarted = Identity(tmp_path)
    assert restarted.load_worker("mnist", "http://a") is None
    assert restarted.known_worker("mnist", "http://a") is None


async def test_a_back_to_back_cycle_requests_with_the_known_id_without_reading_the_file(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two cycles: the first authenticates (the file has no id) and reads the file once; the second reads
    it not at all and requests with the same worker id; both are DONE, two diffs reported."""
    world.host()
    world.node.set_averaging_delay(0)
    reads: list[str] = []
    real_load = world.identity.load_worker

    def load_worker(*args: Any, **kwargs: Any) -> Any:
        reads.append("read")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(world.identity, "load_worker", load_worker)
    job = world.job()
    first = await asyncio.wait_for(world.cycle(job).run(), 60)
    assert first.ended.outcome is CycleOutcome.DONE, first
    assert reads == ["read"]
    await world.node.settled()
    second = await asyncio.wait_for(world.cycle(job).run(), 60)
    assert second.ended.outcome is CycleOutcome.DONE, second
    assert reads == ["read"]
    assert [r.worker_id for r in world.reports()] == [world.reports()[0].worker_id] * 2
