"""A flower job's run as the job manager sees it: expire before or during the session, the outcome
and reason it records, the phase words, and the grace cut before a suspend. The SuperNode is the real
``flower-supernode``, refused at start (a key with --insecure) where a session must end fast."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from syftd import config, configfile
from syftd.flower.run import FlowerRun
from syftd.outcomes import CycleOutcome, ExpiryReason, Failure

pytestmark = pytest.mark.timeout(120)


def job(flower_bin: Path, tmp_path: Path, extra: str = "") -> config.JobConfig:
    text = (
        f'[[job]]\nname = "fl"\nkind = "flower"\n[job.flower]\nsuperlink = "127.0.0.1:9"\n'
        f'venv = "{flower_bin.parent}"\ninsecure = true\n{extra}[job.budget]\nexpiry_grace_s = 3\nmax_cycle_s = 60\n'
    )
    return configfile.loads(text).job[0]


async def test_expired_before_it_started_records_expired_without_starting_anything(
    flower_bin: Path, tmp_path: Path
) -> None:
    run = FlowerRun(job(flower_bin, tmp_path), cycle_id="c1", state_dir=tmp_path)
    assert run.expire(ExpiryReason.POWER_LOST)
    record = await run.run()
    assert record.ended.outcome is CycleOutcome.EXPIRED and record.ended.expiry is ExpiryReason.POWER_LOST
    assert run.supervisor.results == [] and run.state.is_terminal and not run.expire(ExpiryReason.MANUAL)
    entry = record.as_dict()
    assert entry["kind"] == "flower" and entry["outcome"] == "expired" and entry["reason"] == "power_lost"


async def test_a_supernode_that_exits_on_its_own_is_a_failed_run_with_its_output(
    flower_bin: Path, tmp_path: Path
) -> None:
    key = tmp_path / "node.key"
    key.write_text("not a key\n")
    # check-config refuses a key with insecure = true; build the job without it, then add the key
    cfg = job(flower_bin, tmp_path)
    assert cfg.flower is not None
    cfg = dataclasses.replace(cfg, flower=dataclasses.replace(cfg.flower, auth_private_key=key))
    run = FlowerRun(cfg, cycle_id="c2", state_dir=tmp_path)
    assert run.state.value == "starting flower-supernode"
    record = await asyncio.wait_for(run.run(), 60)
    assert record.ended.outcome is CycleOutcome.FAILED and record.ended.failure is Failure.SUPERNODE
    assert record.error is not None and "exited on its own" in record.error and record.exit_status not in (0, None)
    assert (tmp_path / "flower" / "fl").is_dir()  # FLWR_HOME lives in the job's state


def test_sleep_cuts_the_grace_to_the_inhibit_delay_and_term_by_brings_sigterm_forward(
    flower_bin: Path, tmp_path: Path
) -> None:
    """expiry_grace_s (3 s) normally; before a suspend with InhibitDelayMaxUSec = 4 s, 4 − 1 − 1.25 s;
    never past a stop deadline."""
    run = FlowerRun(job(flower_bin, tmp_path), cycle_id="c3", state_dir=tmp_path, inhibit_delay_s=lambda: 4.0)
    assert run.grace_for(ExpiryReason.POWER_LOST, term_by=None, now=100.0) == 3.0
    assert run.grace_for(ExpiryReason.SLEEP, term_by=None, now=100.0) == pytest.approx(1.75)
    assert run.grace_for(ExpiryReason.SHUTDOWN, term_by=101.0, now=100.0) == 1.0
    assert run.grace_for(ExpiryReason.SHUTDOWN, term_by=99.0, now=100.0) == 0.0
