"""The supervisor alone with the real ``flower-supernode``: the reaper after a ``kill -9`` of the
process that supervises it, a SuperNode that exits on its own (failed, restarted with backoff), one
session in the caller's task. Joining, leaving mid-round and sleep are shown end to end with the
real daemon in ``test_flower_daemon_e2e``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest
from support.flower import PROJECT, SuperLink, free_port, wait_until

from syftd.flower.command import SupernodeSpec
from syftd.flower.group import group_alive
from syftd.flower.session import Phase, SessionOutcome
from syftd.flower.supervisor import SupernodeSupervisor

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


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


def refused_spec(flower_bin: Path, tmp_path: Path) -> SupernodeSpec:
    """A SuperNode flwr refuses to run: a node key that is not one, together with --insecure."""
    key = tmp_path / "node.key"
    key.write_text("not a key\n")
    return SupernodeSpec(
        executable=flower_bin / "flower-supernode", superlink="127.0.0.1:9", stop_file=tmp_path / "stop",
        flwr_home=tmp_path / "home", runtime_port=free_port(), insecure=True, auth_private_key=key,
    )  # fmt: skip


async def test_a_supernode_that_exits_on_its_own_fails_with_its_status_and_is_restarted_with_backoff(
    flower_bin: Path, tmp_path: Path
) -> None:
    """flwr refuses a node key together with --insecure and exits: each session fails with its exit
    status and output, the next start comes after a doubling delay, and leave() during the delay
    returns at once without starting another."""
    spec = refused_spec(flower_bin, tmp_path)
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
    spec = refused_spec(flower_bin, tmp_path)
    supervisor = SupernodeSupervisor(spec, job="once", expiry_grace_s=1.0, backoff_initial_s=0.01)
    result = await asyncio.wait_for(supervisor.run_once(), 60)
    assert result.outcome is SessionOutcome.FAILED and result.exit_status not in (0, None), result
    assert supervisor.phase is Phase.WAITING and not supervisor.running and supervisor.results == [result]
    assert not supervisor.request_stop("power_lost")  # nothing runs any more
