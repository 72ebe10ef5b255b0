"""End to end: the real daemon, real trainer processes, the local node over 127.0.0.1, and condition changes
as real D-Bus signals from python-dbusmock on a private system bus."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import signal
import time

import aiohttp
import numpy as np
import pytest
from support.harness import Harness, eventually
from support.timing import LOAD_MARGIN_S

from syftd import control
from syftd.grid import wire
from syftd.grid.kept import IDLE_CLOSE_S

pytestmark = [pytest.mark.torch, pytest.mark.dbus, pytest.mark.slow, pytest.mark.timeout(180)]

NM_DISCONNECTED, NM_CONNECTED_GLOBAL = 20, 70


async def retrieve(h: Harness, checkpoint: int) -> list[np.ndarray]:
    url = f"{h.node.node.url}/model-centric/retrieve-model"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, params={"name": h.name, "version": "1.0", "checkpoint": str(checkpoint)}) as answer,
    ):
        assert answer.status == 200, await answer.text()
        return [_array(t) for t in wire.parse_state(await answer.read())]


def _array(tensor: wire.Tensor) -> np.ndarray:
    return np.frombuffer(tensor.data, dtype=np.float32).reshape(tensor.shape)


def _when(entry: dict) -> float:
    return dt.datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()


async def test_plugged_in_and_online_a_cycle_completes_and_the_node_averages_it(harness: Harness) -> None:
    """On AC and online: one cycle runs to ``done``; the node's new checkpoint is the old one minus the diff."""
    harness.host(max_updates=5)
    harness.write_config()
    daemon = await harness.start()
    finished = await daemon.wait_log("cycle.finished", timeout=90)
    assert finished["outcome"] == "done", finished
    assert finished["steps"] == 5
    reports = harness.node.reports_for(harness.name)
    assert len(reports) == 1
    await harness.node.wait_until(lambda: harness.node.node.checkpoint_number(harness.name) == 2)
    before, after = await retrieve(harness, 1), await retrieve(harness, 2)
    diff = [_array(t) for t in wire.parse_state(reports[0].diff)]
    for b, a, d in zip(before, after, diff, strict=True):
        np.testing.assert_allclose(a, b - d, atol=1e-7, rtol=0)
    status = await asyncio.to_thread(_cli, harness, "status", "--json")
    assert '"last_outcome": "done"' in status


def _cli(h: Harness, *args: str) -> str:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "syftd", "--config", str(h.config_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_unplugging_mid_training_expires_the_cycle_and_replugging_runs_the_next(harness: Harness) -> None:
    """OnBattery=true while training: expired with power_lost, nothing reported, the trainer process gone;
    after replugging (and stable_for_s) the next cycle completes."""
    harness.host(max_updates=5)
    harness.write_config(job="max_updates = 100000")
    daemon = await harness.start()
    await _training(daemon)
    from support.dbus import MockControl

    control = await MockControl.connect(harness.bus.address)
    try:
        await control.set_on_battery(True)
        finished = await daemon.wait_log("cycle.finished", timeout=30)
        assert (finished["outcome"], finished["reason"]) == ("expired", "power_lost"), finished
        assert harness.node.reports_for(harness.name) == []
        await eventually(lambda: harness.trainers() == [], timeout=15)

        harness.config_path.write_text(
            harness.config_path.read_text().replace("max_updates = 100000", "max_updates = 3")
        )
        daemon.signal(signal.SIGHUP)
        await daemon.wait_log("config.reloaded")
        mark = len(daemon.logs)
        await control.set_on_battery(False)
        daemon.signal(signal.SIGUSR1)  # the interval after an expiry does not apply, but be explicit
        finished = await daemon.wait_log("cycle.finished", timeout=90, after=mark)
        assert finished["outcome"] == "done", finished
        assert len(harness.node.reports_for(harness.name)) == 1
    finally:
        control.close()


async def _training(daemon) -> dict:
    """Wait until the trainer has reported its first step."""
    return await daemon.wait_log("cycle.state_changed", to_state="training", timeout=90)


async def test_network_lost_mid_training_expires_without_a_report(harness: Harness, mocks) -> None:
    """NetworkManager says disconnected while training: expired with network_lost and the node got no
    report while it said offline (loopback stays reachable, so the node's side is what counts)."""
    harness.host(max_updates=5)
    harness.write_config(job="max_updates = 100000")
    daemon = await harness.start()
    await _training(daemon)
    await mocks.set_network(State=NM_DISCONNECTED)
    finished = await daemon.wait_log("cycle.finished", timeout=30)
    assert (finished["outcome"], finished["reason"]) == ("expired", "network_lost"), finished
    assert harness.node.reports_for(harness.name) == []


async def test_offline_between_training_and_report_spools_then_reports_once_online(harness: Harness, mocks) -> None:
    """The node holds the report; NM goes offline → the cycle ends spooled; online again → reported once
    and the checkpoint moves."""
    harness.host(max_updates=3)
    harness.write_config()
    harness.node.sync(harness.node.node.hold_reports)
    try:
        daemon = await harness.start()
        await harness.node.wait_until(lambda: harness.node.node.held_reports >= 1, timeout=90)
        await mocks.set_network(State=NM_DISCONNECTED)
        finished = await daemon.wait_log("cycle.finished", timeout=30)
        assert finished["outcome"] == "spooled", finished
    finally:
        harness.node.sync(harness.node.node.release_reports)
    assert harness.node.reports_for(harness.name) == []
    await mocks.set_network(State=NM_CONNECTED_GLOBAL)
    await daemon.wait_log("spool.reported", timeout=30)
    reports = harness.node.reports_for(harness.name)
    assert len({r.request_key for r in reports}) == 1
    await harness.node.wait_until(lambda: harness.node.node.checkpoint_number(harness.name) == 2)


async def test_kill_9_after_spooling_reports_exactly_once_after_restart(harness: Harness) -> None:
    """SIGKILL while the report is held (the diff is spooled): the restarted daemon reports it exactly once."""
    await harness.kill_9_with_the_report_held()
    daemon = await harness.start()
    await daemon.wait_log("spool.reported", timeout=60)
    reports = harness.node.reports_for(harness.name)
    assert len({r.request_key for r in reports}) == 1
    await harness.node.wait_until(lambda: harness.node.node.checkpoint_number(harness.name) == 2)


async def test_kill_9_then_cycle_closed_on_the_node_discards_the_spooled_diff(harness: Harness) -> None:
    """The node closed the cycle while the daemon was dead: the spooled diff is discarded, with a log line."""
    await harness.kill_9_with_the_report_held(close_cycle=True)
    daemon = await harness.start()
    discarded = await daemon.wait_log("spool.discarded", timeout=60)
    assert "cycle closed" in discarded["reason"]
    assert harness.node.reports_for(harness.name) == []


async def test_budget_spent_expires_with_reason_budget(harness: Harness) -> None:
    """max_cycle_s elapses during training: expired with budget."""
    harness.host(max_updates=5)
    harness.write_config(job="max_updates = 100000").write_text(
        harness.config_path.read_text().replace("max_cycle_s = 120", "max_cycle_s = 8")
    )
    daemon = await harness.start()
    finished = await daemon.wait_log("cycle.finished", timeout=60)
    assert (finished["outcome"], finished["reason"]) == ("expired", "budget"), finished
    assert harness.node.reports_for(harness.name) == []


async def test_sigterm_mid_training_exits_within_the_grace(harness: Harness) -> None:
    """SIGTERM while training: the daemon exits 0 within shutdown_grace_s + 1 s (the design's figure, plus the
    load margin), the cycle expired (shutdown)."""
    harness.host(max_updates=5)
    harness.write_config(job="max_updates = 100000")
    daemon = await harness.start()
    await _training(daemon)
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert await daemon.wait_exit(timeout=10) == 0
    elapsed = time.monotonic() - started
    assert elapsed <= 4.0 + 1.0 + LOAD_MARGIN_S, elapsed  # shutdown_grace_s = 4.0 in the harness config
    finished = daemon.events("cycle.finished")
    assert [(f["outcome"], f["reason"]) for f in finished] == [("expired", "shutdown")]


async def test_a_cycle_kept_open_for_more_diffs_is_read_as_averaging_until_the_cap_then_its_timeout_is_honoured(
    harness: Harness,
) -> None:
    """One worker, max_diffs = 2: after its report the node keeps the cycle open and rejects the same
    worker with the cycle's remaining time. syftd first reads that as "averaging in progress" and
    retries shortly with growing delays; about 30 s after the report it honours the node's timeout."""
    harness.host(max_updates=3, cycle_length=600, max_diffs=2, min_diffs=2, num_cycles=5)
    harness.write_config().write_text(harness.config_path.read_text().replace("interval_s = 3600", "interval_s = 0"))
    daemon = await harness.start()
    first = await daemon.wait_log("cycle.finished", timeout=90)
    assert first["outcome"] == "done"
    after, retries = daemon.logs.index(first) + 1, []
    while True:
        rejected = await daemon.wait_log("cycle.finished", timeout=60, after=after)
        assert rejected["outcome"] == "rejected", rejected
        after = daemon.logs.index(rejected) + 1
        if rejected["retry_in_s"] >= rejected["rejected_timeout_s"]:
            break
        retries.append(rejected["retry_in_s"])
    # 0.25 s, then three short steps (1.25 times as late after the report each), then doubling
    assert 0 < retries[0] <= 0.25 and len(retries) >= 8, retries
    assert max(retries[1:4]) < 0.1 and retries[4:8] == sorted(retries[4:8])
    assert _when(rejected) - _when(first) == pytest.approx(30.0, abs=5.0)
    assert 500 < rejected["rejected_timeout_s"] <= 600
    with pytest.raises(AssertionError):
        await daemon.wait_log("cycle.started", after=after, timeout=3)


async def test_node_down_backs_off_with_growing_jittered_delays(harness: Harness) -> None:
    """Connection refused: each failure waits a full-jitter delay under a doubling cap."""
    harness.host()
    harness.write_config(url="ws://127.0.0.1:9").write_text(
        harness.config_path.read_text().replace(
            "backoff_initial_s = 0.5", "backoff_initial_s = 0.2\nbackoff_max_s = 1.6"
        )
    )
    daemon = await harness.start()
    after = 0
    for _ in range(6):
        entry = await daemon.wait_log("cycle.finished", timeout=30, after=after)
        after = daemon.logs.index(entry) + 1
    failures = daemon.events("cycle.finished")[:6]
    starts = daemon.events("cycle.started")[:6]
    assert all(f["outcome"] == "failed" and f["reason"] == "unavailable" for f in failures), failures
    caps = [min(1.6, 0.2 * 2**k) for k in range(5)]
    delays = [f["retry_in_s"] for f in failures[:5]]
    assert all(0 <= d <= c + 1e-9 for d, c in zip(delays, caps, strict=True)), (delays, caps)
    assert len(set(delays)) > 1, "full jitter gives different delays"
    for failure, delay, nxt in zip(failures, delays, starts[1:], strict=False):
        assert _when(nxt) - _when(failure) >= delay - 0.05


async def test_prepare_for_sleep_expires_the_cycle_and_releases_the_lock(harness: Harness, mocks) -> None:
    """PrepareForSleep(true) while training: expired with sleep; the delay lock is gone right after."""
    harness.host(max_updates=5)
    harness.write_config(job="max_updates = 100000")
    daemon = await harness.start()
    await _training(daemon)
    assert any(row[1] == "syftd" for row in await mocks.list_inhibitors())
    await mocks.prepare_for_sleep(True)
    finished = await daemon.wait_log("cycle.finished", timeout=30)
    assert (finished["outcome"], finished["reason"]) == ("expired", "sleep"), finished
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2.0
    while any(row[1] == "syftd" for row in await mocks.list_inhibitors()):
        assert loop.time() < deadline, "the sleep delay lock was not released after the trainer stopped"
    await mocks.prepare_for_sleep(False)


async def test_power_flapping_leaves_no_orphans_no_leaks_and_one_outcome_per_cycle(harness: Harness, mocks) -> None:
    """200 OnBattery flips over ~20 s, some held ≥ 0.5 s (stable_for_s = 0.2) so cycles start and expire:
    no crash, no orphan process, no leaked descriptor, and every started cycle has exactly one outcome."""
    harness.host(max_updates=5)
    harness.write_config(job="max_updates = 100000").write_text(
        harness.config_path.read_text().replace("interval_s = 3600", "interval_s = 0")
    )
    daemon = await harness.start()
    fds_before = len(os.listdir(f"/proc/{daemon.pid}/fd"))
    rng = random.Random(7)
    on_battery = False
    for flip in range(200):
        on_battery = not on_battery
        await mocks.set_on_battery(on_battery)
        hold = 0.6 if flip % 20 == 19 else rng.uniform(0.02, 0.12)
        await asyncio.sleep(hold)  # the flapping charger is the behaviour under test
    await mocks.set_on_battery(True)
    await eventually(lambda: len(daemon.events("cycle.finished")) == len(daemon.events("cycle.started")), timeout=30)
    started = [e["cycle"] for e in daemon.events("cycle.started")]
    finished = [e["cycle"] for e in daemon.events("cycle.finished")]
    assert started, "some holds were long enough to start cycles"
    assert sorted(started) == sorted(finished) and len(set(finished)) == len(finished)
    await eventually(lambda: harness.trainers() == [], timeout=30)
    assert daemon.proc.returncode is None
    # the job's grid client keeps its connections for IDLE_CLOSE_S after the last cycle, then closes them
    fds = lambda: len(os.listdir(f"/proc/{daemon.pid}/fd"))  # noqa: E731
    await eventually(lambda: fds() <= fds_before + 2, timeout=IDLE_CLOSE_S + LOAD_MARGIN_S)


async def test_sigusr2_expires_the_running_cycle_with_reason_manual(harness: Harness) -> None:
    """SIGUSR2 (simulate expiration) while training: expired with manual, nothing reported."""
    harness.host(max_updates=5)
    harness.write_config(job="max_updates = 100000")
    daemon = await harness.start()
    await _training(daemon)
    daemon.signal(signal.SIGUSR2)
    finished = await daemon.wait_log("cycle.finished", timeout=30)
    assert (finished["outcome"], finished["reason"]) == ("expired", "manual"), finished
    assert harness.node.reports_for(harness.name) == []


async def test_changing_the_job_on_reload_expires_its_running_cycle(harness: Harness) -> None:
    """SIGHUP with the running job's table changed: the cycle expires with config_changed."""
    harness.host(max_updates=5)
    harness.write_config(job="max_updates = 100000")
    daemon = await harness.start()
    await _training(daemon)
    harness.config_path.write_text(harness.config_path.read_text().replace("samples = 256", "samples = 300"))
    daemon.signal(signal.SIGHUP)
    reloaded = await daemon.wait_log("config.reloaded")
    assert reloaded["changed"] == ["mnist"]
    finished = await daemon.wait_log("cycle.finished", timeout=30)
    assert (finished["outcome"], finished["reason"]) == ("expired", "config_changed"), finished


async def test_simulated_power_loss_goes_through_the_decision_path(harness: Harness) -> None:
    """`syftd simulate power-loss` while training expires the cycle (power_lost), logged as simulated, and
    `syftd why` says so; `simulate clear` lets the job run again; `--for` ends a simulation by itself."""
    harness.host(max_updates=5)
    harness.write_config(job="max_updates = 100000")
    daemon = await harness.start()
    await _training(daemon)
    await asyncio.to_thread(_cli, harness, "simulate", "power-loss", "mnist")
    simulated = await daemon.wait_log("conditions.simulated", job="mnist")
    assert simulated["simulated"] == "power-loss"
    finished = await daemon.wait_log("cycle.finished", timeout=30)
    assert (finished["outcome"], finished["reason"]) == ("expired", "power_lost"), finished
    why = await asyncio.to_thread(_cli, harness, "why", "mnist")
    assert "on battery" in why and "simulated" in why, why
    mark = len(daemon.logs)
    await asyncio.to_thread(_cli, harness, "simulate", "clear", "mnist")
    cleared = await daemon.wait_log("conditions.simulated", simulated="clear", after=mark, timeout=10)
    started = await daemon.wait_log("cycle.started", after=mark, timeout=30)
    assert _when(started) - _when(cleared) >= 0.2 - 0.02, "a cleared simulation must hold stable_for_s anew"
    await asyncio.to_thread(_cli, harness, "simulate", "network-loss", "--for", "0.5", "mnist")
    await daemon.wait_log("conditions.simulation_ended", job="mnist", timeout=10)


async def test_trigger_force_runs_despite_unmet_constraints(harness: Harness, mocks) -> None:
    """On battery, `syftd trigger --force` starts a cycle anyway (plainly logged) and it completes."""
    await mocks.set_on_battery(True)
    harness.host(max_updates=3)
    harness.write_config()
    daemon = await harness.start()
    why = await asyncio.to_thread(_cli, harness, "why", "mnist")
    assert "on battery" in why
    await asyncio.to_thread(_cli, harness, "trigger", "--force", "mnist")
    await daemon.wait_log("job.forced", timeout=30)
    finished = await daemon.wait_log("cycle.finished", timeout=90)
    assert finished["outcome"] == "done", finished


async def test_a_second_sigint_forces_the_exit_while_a_cycle_stops(harness: Harness) -> None:
    """Ctrl-C twice while the trainer is stopping: the daemon exits at once with status 130."""
    harness.host(max_updates=5)
    harness.write_config(job="max_updates = 100000")
    daemon = await harness.start()
    await _training(daemon)
    daemon.signal(signal.SIGINT)
    await daemon.wait_log("daemon.stopping")
    daemon.signal(signal.SIGINT)
    assert await daemon.wait_exit(timeout=10) == 130
    await daemon.wait_log("daemon.forced_exit")


async def test_a_reused_worker_id_still_runs_the_speed_test_the_node_asked_for(harness: Harness) -> None:
    """The node wants a speed test (minimum speeds set): the second cycle, which reuses the saved worker
    id without authenticating again, still sends ping/download/upload and is accepted."""
    harness.host(max_updates=2, minimum_download_speed=0.001, minimum_upload_speed=0.001)
    # 1 s apart, not back to back: the node averages 0.2 s after answering the report, as a real one does
    harness.write_config().write_text(harness.config_path.read_text().replace("interval_s = 3600", "interval_s = 1"))
    daemon = await harness.start()
    first = await daemon.wait_log("cycle.finished", timeout=90)
    assert first["outcome"] == "done", first
    second = await daemon.wait_log("cycle.finished", timeout=60, after=daemon.logs.index(first) + 1)
    assert second["outcome"] == "done", second
    assert len(daemon.events("grid.authenticated")) == 1


async def test_kill_9_mid_training_then_restart_authenticates_afresh_and_is_accepted_at_once(
    harness: Harness,
) -> None:
    """SIGKILL while training leaves the worker id assigned to a cycle it has no diff for; the restarted
    daemon does not ask with that id (the node would reject it until the cycle closes) but authenticates
    afresh, and its first cycle is accepted within seconds, not after finished_retry_s."""
    harness.host(max_updates=5)
    harness.write_config(job="max_updates = 100000")
    daemon = await harness.start()
    await _training(daemon)
    assert daemon.pid
    import psutil

    trainers = [
        p for p in psutil.Process(daemon.pid).children(recursive=True) if "syftd.trainer" in " ".join(p.cmdline())
    ]
    daemon.signal(signal.SIGKILL)
    await daemon.wait_exit()
    for trainer in trainers:  # an orphaned trainer is issue 14's; here it must not keep the CPU
        trainer.kill()
    restarted = await harness.start()
    renewed = await restarted.wait_log("identity.renewed", timeout=30)
    accepted = await restarted.wait_log("grid.cycle_accepted", timeout=30)
    assert _when(accepted) - _when(renewed) < 10
    assert restarted.events("cycle.finished") == [] or all(
        f["outcome"] != "rejected" for f in restarted.events("cycle.finished")
    )


async def test_syftd_expire_pauses_the_job_until_a_trigger_or_power_lost_and_regained(harness: Harness, mocks) -> None:
    """With interval_s = 0, `syftd expire` ends the cycle (manual) and no new one starts: status and why
    say it holds for the operator. A trigger runs one; after another expire, unplugging and replugging
    (and stable_for_s) runs the next."""
    harness.host(max_updates=5)
    harness.write_config(job="max_updates = 100000").write_text(
        harness.config_path.read_text().replace("interval_s = 3600", "interval_s = 0")
    )
    daemon = await harness.start()
    await _training(daemon)
    await asyncio.to_thread(_cli, harness, "expire", "mnist")
    finished = await daemon.wait_log("cycle.finished", timeout=30)
    assert (finished["outcome"], finished["reason"]) == ("expired", "manual"), finished
    why = await asyncio.to_thread(_cli, harness, "why", "mnist")
    assert "expired by the operator" in why, why
    status = await asyncio.to_thread(_cli, harness, "status")
    assert "expired by the operator" in status, status
    with pytest.raises(AssertionError):
        await daemon.wait_log("cycle.started", after=daemon.logs.index(finished), timeout=3)
    mark = len(daemon.logs)
    await asyncio.to_thread(_cli, harness, "trigger", "mnist")
    await daemon.wait_log("cycle.state_changed", to_state="training", after=mark, timeout=90)
    await asyncio.to_thread(_cli, harness, "expire", "mnist")
    finished = await daemon.wait_log("cycle.finished", after=mark, timeout=30)
    assert finished["reason"] == "manual"
    mark = len(daemon.logs)
    await mocks.set_on_battery(True)
    await daemon.wait_log("conditions.changed", on_external_power=False, after=mark, timeout=10)
    await mocks.set_on_battery(False)
    started = await daemon.wait_log("cycle.started", after=mark, timeout=30)
    regained = await daemon.wait_log("conditions.changed", on_external_power=True, after=mark, timeout=10)
    assert _when(started) - _when(regained) >= 0.2 - 0.05  # stable_for_s


@pytest.mark.timeout(300)
async def test_twenty_back_to_back_cycles_against_a_node_that_averages_after_answering(harness: Harness) -> None:
    """The node in its default revision answers each report at once and averages 0.2 s later, keeping
    the worker in its cycle until then. With interval_s = 0, 20 cycles all complete: every rejection
    meanwhile is retried within 5 s, the checkpoint advances by 20, and each averaged checkpoint is the
    previous one minus the diff reported into it."""
    harness.host(max_updates=2)
    harness.write_config().write_text(harness.config_path.read_text().replace("interval_s = 3600", "interval_s = 0"))
    daemon = await harness.start()
    await eventually(
        lambda: len([f for f in daemon.events("cycle.finished") if f["outcome"] == "done"]) >= 20, timeout=240
    )
    await harness.stop()
    finished = daemon.events("cycle.finished")
    # the stop may catch a 21st cycle: it ends expired (shutdown) or, during its report, spooled
    last_cut_short = finished[-1]["outcome"] in ("expired", "spooled")
    before_stop = finished[:-1] if last_cut_short else finished
    done = [f for f in before_stop if f["outcome"] == "done"]
    rejected = [f for f in before_stop if f["outcome"] == "rejected"]
    assert len(done) >= 20 and all(f["outcome"] in ("done", "rejected") for f in before_stop), finished
    assert all(f["retry_in_s"] <= 5.0 for f in rejected), [f["retry_in_s"] for f in rejected]
    await harness.node.wait_until(lambda: harness.node.node.checkpoint_number(harness.name) >= 21, timeout=30)
    reports = harness.node.reports_for(harness.name)
    assert len(done) <= len(reports) <= len(done) + int(last_cut_short)
    before = await retrieve(harness, 1)
    for number, report in enumerate(reports[:20], start=2):
        after = await retrieve(harness, number)
        diff = [_array(t) for t in wire.parse_state(report.diff)]
        for b, a, d in zip(before, after, diff, strict=True):
            np.testing.assert_allclose(a, b - d, atol=1e-6, rtol=0)
        before = after


async def test_a_process_past_its_end_time_is_asked_again_after_growing_backoffs(harness: Harness) -> None:
    """The node keeps its cycle open for a second diff past the cycle's end and rejects the worker
    that already reported with a negative timeout. Past the averaging reading (a restarted daemon
    has none), those rejections are spaced by a growing jittered backoff (backoff_initial_s = 0.5),
    never a fixed short retry. The node asks for a speed test: one measurement per daemon life serves
    every request of its reuse window (grid.speed_test_reuse_s, 3600 s), rejected ones included."""
    cycle_s = 4 + 2 * int(LOAD_MARGIN_S)
    hosted_at = time.monotonic()
    speeds = {"minimum_download_speed": 0.001, "minimum_upload_speed": 0.001}
    harness.host(max_updates=3, cycle_length=cycle_s, max_diffs=2, min_diffs=2, num_cycles=5, **speeds)
    harness.write_config().write_text(harness.config_path.read_text().replace("interval_s = 3600", "interval_s = 0"))
    daemon = await harness.start()
    first = await daemon.wait_log("cycle.finished", timeout=90)
    assert first["outcome"] == "done" and first["speed_test_bytes"] > 0, first
    assert len(daemon.events("grid.speed_measured")) == 1
    await harness.stop()
    await asyncio.sleep(max(0.0, hosted_at + cycle_s + 1 - time.monotonic()))  # the cycle's end passes
    daemon = await harness.start()
    after, rejections = 0, []
    while len(rejections) < 4:
        rejected = await daemon.wait_log("cycle.finished", timeout=30, after=after)
        after = daemon.logs.index(rejected) + 1
        rejections.append(rejected)
    assert all(r["outcome"] == "rejected" and r["rejected_timeout_s"] < 0 for r in rejections), rejections
    assert len(daemon.events("grid.speed_measured")) == 1, daemon.events("grid.speed_measured")
    assert [r["speed_test_bytes"] > 0 for r in rejections] == [True, False, False, False], rejections
    waits = [r["retry_in_s"] for r in rejections]
    caps = [min(0.5 * 2**k, 300.0) for k in range(4)]  # backoff_initial_s doubling (equal jitter: half fixed)
    assert all(cap / 2 - 0.01 <= w <= cap + 0.01 for w, cap in zip(waits, caps, strict=True)), (waits, caps)


async def test_once_num_cycles_is_reached_the_daemon_asks_again_only_after_finished_retry_s(harness: Harness) -> None:
    """num_cycles = 1: after its cycle is averaged the node rejects without a timeout (the process looks
    finished), and the daemon takes that as it is, asking again every finished_retry_s (2 s here), no
    sooner, and says so in `status`. The daemon is restarted once the node has averaged, so its first
    answer is not read as the node still averaging this worker's own report (an in-memory reading of at
    most 30 s, tested in the policy), which would make this test cost over 30 s."""
    retry_s = 2.0
    harness.host(max_updates=3, num_cycles=1)
    text = harness.write_config().read_text()
    harness.config_path.write_text(text.replace("interval_s = 3600", f"interval_s = 0\nfinished_retry_s = {retry_s}"))
    daemon = await harness.start()
    done = await daemon.wait_log("cycle.finished", timeout=90)
    assert done["outcome"] == "done", done
    await harness.node.wait_until(lambda: harness.node.node.checkpoint_number(harness.name) == 2)
    await harness.stop()
    daemon = await harness.start()
    first = await daemon.wait_log("cycle.finished", timeout=30)
    after = daemon.logs.index(first) + 1
    second = await daemon.wait_log("cycle.finished", timeout=retry_s + LOAD_MARGIN_S, after=after)
    for rejected in (first, second):
        assert rejected["outcome"] == "rejected" and rejected["finished"] is True, rejected
        assert "rejected_timeout_s" not in rejected and retry_s - 0.05 <= rejected["retry_in_s"] <= retry_s, rejected
    gap = _when(second) - _when(first)
    assert retry_s <= gap <= retry_s + LOAD_MARGIN_S, gap
    status = await control.call(harness.base / "run", "status", {})
    assert status["jobs"][0]["last_outcome"].endswith("(finished)"), status
