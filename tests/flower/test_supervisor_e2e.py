"""The supervisor against a real Flower federation on loopback: a ``flower-superlink``, the example
ServerApp running FedAvg, one always-online SuperNode and one gated SuperNode under syftd's supervisor.

Rounds are short (a few seconds of numpy "training" with a pause per step, so a stop lands mid-round);
a ClientApp process start costs 2–3 s per message in flwr 1.42, which dominates each round.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.flower import EXAMPLE_APP, PROJECT, Report, SuperLink, free_port, wait_until

from syftd.flower.command import SupernodeSpec
from syftd.flower.session import Phase, SessionOutcome, sleep_grace
from syftd.flower.supervisor import SupernodeSupervisor, group_alive

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

STEPS = 30
STEP_S = 0.1
GRACE_S = 8.0  # the partial reply reaches the SuperLink 2.5–3.5 s after the stop file; margin for load


def run_config(report: Path, *, rounds: int, on_stop: str, steps: int = STEPS) -> str:
    return (
        f"num-server-rounds={rounds} min-nodes=1 round-timeout=120.0 local-steps={steps} step-seconds={STEP_S} "
        f'on-stop="{on_stop}" report-file="{report}"'
    )


async def joined(supervisor: SupernodeSupervisor, federation: SuperLink, timeout: float = 60) -> int:
    """Join and wait until the SuperLink activated the node; its node id."""
    supervisor.join()
    await wait_until(lambda: supervisor.phase is Phase.JOINED, timeout=timeout, what="the SuperNode joined")
    node_id = supervisor.reader.node_id
    assert node_id is not None
    await wait_until(
        lambda: f"Activated node_id={node_id}" in federation.text(), timeout=10, what="the SuperLink activated it"
    )
    return node_id


async def training(supervisor: SupernodeSupervisor, message: int, timeout: float = 60) -> None:
    """Wait until the gated node's ClientApp is inside its training loop for its ``message``-th message."""

    def inside() -> bool:
        tail = supervisor.reader.tail
        last = max((i for i, line in enumerate(tail) if "Received successfully" in line), default=-1)
        return supervisor.reader.received >= message and any("syftd-example: training" in x for x in tail[last:])

    await wait_until(inside, timeout=timeout, what=f"ClientApp training message {message}; {supervisor.reader.tail}")


async def test_gated_node_joins_leaves_mid_round_at_no_cost_to_the_round_and_rejoins_later(
    federation: SuperLink, supervise: Callable[..., SupernodeSupervisor], tmp_path: Path
) -> None:
    """Joined, its update is in the round; stopped mid-round, its ClientApp sees the stop file and
    returns a partial update, the SuperNode is gone within grace + 1 s after deactivating at the
    SuperLink, and the round lasts as long as a normal one; joined again, a later round includes it."""
    supervisor = supervise(expiry_grace_s=GRACE_S)
    first = await joined(supervisor, federation)
    report = Report(tmp_path / "report.jsonl")
    federation.run(EXAMPLE_APP, run_config(report.path, rounds=4, on_stop="partial"))

    one = await report.wait_round(1, timeout=90)
    assert first in one["results"] and one["steps"][str(first)] == STEPS, one

    await training(supervisor, 2)
    deactivated = federation.count("/v1/fleet/deactivate-node")
    pid = supervisor.process.pid if supervisor.process else 0
    began = time.monotonic()
    result = await supervisor.leave("on_battery")
    took = time.monotonic() - began
    assert result is not None and result.outcome is SessionOutcome.DONE and result.reason == "on_battery", result
    assert result.leave_s is not None and took <= GRACE_S + 1.0 and not result.killed, (took, result)
    assert not group_alive(pid), "the SuperNode's process group outlived the leave"
    assert federation.count("/v1/fleet/deactivate-node") == deactivated + 1, "no DeactivateNode at the SuperLink"

    two = await report.wait_round(2, timeout=60)
    assert str(first) in two["steps"] and two["steps"][str(first)] < STEPS, (
        f"no partial update from the node: {two}; {result}"
    )
    # a node that vanished without leaving would cost the round 30–60 s of heartbeat expiry
    assert two["seconds"] <= one["seconds"] + 5.0, (one["seconds"], two["seconds"])

    second = await joined(supervisor, federation)
    assert second != first  # automatic node auth: a new identity per start
    done = await wait_until(lambda: report.entries("done"), timeout=120, what="the run finished")
    later = [report.round(n) for n in (3, 4)]
    assert any(r and second in r["results"] for r in later), later
    print(
        f"\nround 1 (both nodes) {one['seconds']:.2f} s, round 2 (gated node left mid-round) {two['seconds']:.2f} s, "
        f"leave {result.leave_s:.2f} s (grace {GRACE_S:g} s), "
        f"partial update after {two['steps'][str(first)]}/{STEPS} steps; "
        f"rejoined as {second}: rounds 3/4 results {[r and len(r['results']) for r in later]}; done {bool(done)}"
    )


async def test_going_to_sleep_cuts_the_grace_so_the_leave_fits_the_inhibit_delay(
    federation: SuperLink, supervise: Callable[..., SupernodeSupervisor], tmp_path: Path
) -> None:
    """A ClientApp that ignores the stop file (10 s of training), a long grace (30 s) already running for an AC loss:
    the machine then prepares to sleep with logind's InhibitDelayMaxUSec = 5 s, the grace is cut, and
    the SuperNode has left (SIGTERM, deactivated) within 5 − 1 s of that signal."""
    inhibit_delay_s = 5.0
    supervisor = supervise(expiry_grace_s=30.0)
    node = await joined(supervisor, federation)
    report = Report(tmp_path / "report.jsonl")
    federation.run(EXAMPLE_APP, run_config(report.path, rounds=1, on_stop="ignore", steps=100))
    await training(supervisor, 1)
    deactivated = federation.count("/v1/fleet/deactivate-node")
    unplugged_at = time.monotonic()
    unplugged = asyncio.create_task(supervisor.leave("on_battery"))
    await wait_until(supervisor.spec.stop_file.exists, timeout=5, what="the stop file")
    assert supervisor.phase is Phase.LEAVING and supervisor.process is not None
    pid = supervisor.process.pid
    began, signalled = time.monotonic(), time.time()
    result = await supervisor.leave("sleep", grace_s=sleep_grace(30.0, inhibit_delay_s))
    took = time.monotonic() - began
    assert result is not None and result is await unplugged
    assert result.reason == "on_battery" and result.outcome is SessionOutcome.EXPIRED, result
    assert federation.count("/v1/fleet/deactivate-node") == deactivated + 1
    left = federation.last_access("/v1/fleet/deactivate-node") - signalled
    assert left <= inhibit_delay_s - 1.0, (
        f"deactivated {left:.2f} s after PrepareForSleep, bound {inhibit_delay_s - 1} s"
    )
    assert result.leave_s is not None and not result.killed and not group_alive(pid)
    exited = result.leave_s - (began - unplugged_at)
    # the process outlives its deactivation until its ClientApp has stopped (~1.2 s), a frozen leftover at worst
    assert took <= inhibit_delay_s - 1.0 + 3.0, f"its process group was gone only {took:.2f} s after the signal"
    one = await report.wait_round(1, timeout=60)
    assert node not in one["results"], one
    print(
        f"\nsleep: deactivated at the SuperLink {left:.2f} s after the signal (bound {inhibit_delay_s - 1:.0f} s), "
        f"SuperNode exited after {exited:.2f} s, its group gone after {took:.2f} s; round {one['seconds']:.2f} s"
    )


async def test_kill_9_of_the_supervising_daemon_ends_the_supernode(
    federation: SuperLink, flower_bin: Path, tmp_path: Path
) -> None:
    """A reaper process watches the supervising daemon: SIGKILL of the daemon makes the SuperNode leave
    (deactivated at the SuperLink) and its whole process group end within a few seconds, outside systemd."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    driver = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).with_name("supervise.py")), str(flower_bin / "flower-supernode"),
        federation.address, str(tmp_path), str(free_port()),
        stdout=asyncio.subprocess.PIPE, env=env, cwd=PROJECT,
    )  # fmt: skip
    try:
        assert driver.stdout is not None

        async def joined_line() -> dict[str, int]:
            while line := await driver.stdout.readline():  # the driver's own log lines come first
                if line.startswith(b'{"pid"'):
                    return dict(json.loads(line))
            raise AssertionError("the driver ended before its SuperNode joined")

        joined_as = await asyncio.wait_for(joined_line(), 60)
        pgid = joined_as["pid"]
        assert group_alive(pgid)
        deactivated = federation.count("/v1/fleet/deactivate-node")
        driver.kill()
        await asyncio.wait_for(driver.wait(), 5)
        began = time.monotonic()
        await wait_until(lambda: not group_alive(pgid), timeout=5, what="the SuperNode gone after the daemon's kill -9")
        gone = time.monotonic() - began
        await wait_until(
            lambda: federation.count("/v1/fleet/deactivate-node") > deactivated, timeout=5, what="DeactivateNode"
        )
        print(f"\nkill -9 of the daemon: the SuperNode's group gone {gone:.2f} s later, deactivated")
    finally:
        if driver.returncode is None:
            driver.kill()
            await driver.wait()


async def test_a_supernode_that_exits_on_its_own_fails_with_its_status_and_is_restarted_with_backoff(
    flower_bin: Path, tmp_path: Path
) -> None:
    """flwr refuses a node key together with --insecure and exits: each session fails with its exit
    status and output, the next start comes after a doubling delay, and leave() during the delay
    returns at once without starting another."""
    key = tmp_path / "node.key"
    key.write_text("not a key\n")
    spec = SupernodeSpec(
        executable=flower_bin / "flower-supernode", superlink="127.0.0.1:9", stop_file=tmp_path / "stop",
        flwr_home=tmp_path / "home", runtime_port=free_port(), insecure=True, auth_private_key=key,
    )  # fmt: skip
    ended: list[float] = []
    supervisor = SupernodeSupervisor(
        spec, job="broken", expiry_grace_s=1.0, backoff_initial_s=0.5, backoff_max_s=60,
        on_result=lambda _: ended.append(time.monotonic()),
    )  # fmt: skip
    supervisor.join()
    await wait_until(lambda: len(supervisor.results) >= 2, timeout=60, what="two failed sessions")
    first = supervisor.results[0]
    assert first.outcome is SessionOutcome.FAILED and first.exit_status not in (0, None), first
    assert first.reason is not None and f"status {first.exit_status}" in first.reason and first.output_tail
    await wait_until(lambda: supervisor.phase is Phase.RESTARTING, timeout=10, what="waiting to restart")
    began = time.monotonic()
    assert await supervisor.leave("on_battery") is None  # no session was running: nothing to report
    assert time.monotonic() - began < 1.0 and not supervisor.running and supervisor.phase is Phase.WAITING
    assert len(supervisor.results) == 2
    # the second session began at least the first delay (0.5 s) after the first one ended
    assert ended[1] - ended[0] >= 0.5, ended


async def test_one_session_in_the_callers_task_is_not_restarted(flower_bin: Path, tmp_path: Path) -> None:
    """run_once (what a job kind's run uses): a SuperNode that exits on its own ends the session
    FAILED and nothing restarts it (the job's own backoff decides what comes next)."""
    key = tmp_path / "node.key"
    key.write_text("not a key\n")
    spec = SupernodeSpec(
        executable=flower_bin / "flower-supernode", superlink="127.0.0.1:9", stop_file=tmp_path / "stop",
        flwr_home=tmp_path / "home", runtime_port=free_port(), insecure=True, auth_private_key=key,
    )  # fmt: skip
    supervisor = SupernodeSupervisor(spec, job="once", expiry_grace_s=1.0, backoff_initial_s=0.01)
    result = await asyncio.wait_for(supervisor.run_once(), 60)
    assert result.outcome is SessionOutcome.FAILED and result.exit_status not in (0, None), result
    assert supervisor.phase is Phase.WAITING and not supervisor.running and supervisor.results == [result]
    assert not supervisor.request_stop("power_lost")  # nothing runs any more
