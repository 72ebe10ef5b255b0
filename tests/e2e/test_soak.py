"""The chaos soak (README, "Soak"): the real daemon, the local node and the D-Bus mocks under seeded random
faults (power, network and sleep flaps, kill -9 of the daemon and its trainer, node restarts, 503 bursts,
early cycle closes, a read-only state directory), then the ledger of every finished diff.

In ``make test`` it runs 50 s of faults (seed 7 under CI=true, else a random seed it prints; SOAK_SEED
overrides, SOAK_SKIP=kind,kind leaves kinds out); ``make soak`` runs SOAK_MINUTES of them. One soak per
module; each test checks one invariant of its result, so a failure names the invariant, and every failure
message carries the totals.
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
from pathlib import Path

import pytest
from support.dbus import DBusMocks
from support.soak.run import Result, soak

MINUTES = os.environ.get("SOAK_MINUTES", "").strip()
LONG = bool(MINUTES)
SECONDS = float(MINUTES) * 60 if LONG else 50.0
if "SOAK_SEED" in os.environ:
    SEED = int(os.environ["SOAK_SEED"])
elif os.environ.get("CI", "").lower() == "true":
    SEED = 7
else:
    SEED = random.SystemRandom().randrange(1, 2**31)
SKIP = tuple(k.strip() for k in os.environ.get("SOAK_SKIP", "").split(",") if k.strip())

pytestmark = [pytest.mark.torch, pytest.mark.dbus, pytest.mark.slow, pytest.mark.timeout(SECONDS + 600)]


@pytest.fixture(scope="module")
def result(
    dbus_mocks: DBusMocks, tmp_path_factory: pytest.TempPathFactory, mnist_bytes: tuple[bytes, dict[str, bytes]]
) -> Result:
    base: Path = tmp_path_factory.mktemp("soak")
    # pytest keeps only its last few temporary directories: a long soak's output goes where it stays
    out = os.environ.get("SOAK_OUT") or (tempfile.mkdtemp(prefix="syftd-soak-") if LONG else None)
    print(f"\nsoak: seed {SEED}, {SECONDS:.0f} s of faults (SOAK_SEED={SEED} repeats the fault draws)", flush=True)
    found = asyncio.run(soak(dbus_mocks, base, *mnist_bytes, seconds=SECONDS, seed=SEED, skip=SKIP, out=out))
    print(found.render(), flush=True)
    return found


def test_soak_injected_faults_of_most_kinds_and_finished_diffs(result: Result) -> None:
    """The soak did what it claims: cycles ran, diffs finished, and faults of most kinds were injected
    (each kind comes once early in a random order, so a short soak meets most of them)."""
    kinds = {f.kind for f in result.faults}
    assert result.cycles["started"] >= 1 and result.ledger.totals()["finished"] >= 1, result.render()
    assert len(kinds) >= 6, result.render()


def test_soak_no_finished_diff_is_lost(result: Result) -> None:
    """Every finished diff is on the node or was discarded after the node said its cycle is gone."""
    assert result.ledger.count("lost") == 0, result.render()


def test_soak_no_finished_diff_is_reported_twice(result: Result) -> None:
    """No diff is in two rows on the node (a resend into its own row only overwrites it)."""
    assert result.ledger.count("duplicated") == 0, result.render()


def test_soak_no_job_wedges(result: Result) -> None:
    """While the conditions hold, the job never goes longer than its longest chosen wait without a cycle,
    no cycle outlives its budget plus a probe and a report, and the spool empties in the drain."""
    gaps = result.gaps
    assert gaps.longest_idle_s <= result.idle_bound_s, result.render()
    assert gaps.longest_cycle_s <= result.cycle_bound_s, result.render()
    assert result.ledger.count("still_spooled") == 0, result.render()


def test_soak_every_cycle_logs_how_it_ended(result: Result) -> None:
    """Every cycle a daemon starts ends with its ``cycle.finished`` line, unless that daemon is killed."""
    assert result.gaps.unfinished == 0, result.render()


def test_soak_daemon_keeps_the_waits_it_announces(result: Result) -> None:
    """No cycle starts before the wait the daemon announced when the one before finished (``retry_in_s``):
    no hot loop."""
    assert result.gaps.early_starts == 0, result.render()


def test_soak_daemon_memory_and_fds_stay_flat(result: Result) -> None:
    """The daemon's RSS and fd count in the last third of the samples are within the stated growth of the first."""
    assert result.memory["samples"] >= 10, result.render()
    assert result.memory_flat(), result.render()
