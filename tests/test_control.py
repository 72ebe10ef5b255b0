"""The control socket and the CLI verbs, against the real daemon as a child process."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.daemon import MNIST_JOB, DaemonProcess, NotifySocket, write_config

from syftd import control
from syftd.errors import AlreadyRunningError


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[DaemonProcess, Path, Path]]:
    """A daemon with one job; yields it, its config path and its runtime directory."""
    # outside pytest's 0700 tmp tree, so that another user can reach the socket when a test allows it
    base = Path(tempfile.mkdtemp(prefix="syftd-control-", dir="/tmp"))
    os.chmod(base, 0o755)
    notify = NotifySocket(base / "notify.sock")
    config = write_config(base / "syftd.toml", base, jobs=MNIST_JOB)
    daemon = await DaemonProcess.start(config, notify=notify)
    try:
        await notify.wait_for(lambda m: "READY" in m)
        yield daemon, config, base / "run"
    finally:
        await daemon.stop()
        notify.close()
        shutil.rmtree(base, ignore_errors=True)


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syftd", "--config", str(config), *args], capture_output=True, text=True, timeout=60
    )


async def test_socket_is_owner_only(running) -> None:
    """The socket file is created with mode 0600 inside a 0700 runtime directory."""
    _daemon, _config, run = running
    assert stat.S_IMODE((run / control.SOCKET_NAME).stat().st_mode) == 0o600
    assert stat.S_IMODE(run.stat().st_mode) == 0o700


async def test_status_why_trigger_expire_simulate_through_the_cli(running) -> None:
    """Each CLI verb reaches the daemon over the socket and prints its answer."""
    daemon, config, _run = running
    status = await asyncio.to_thread(cli, config, "status")
    assert status.returncode == 0 and "mnist" in status.stdout and "JOB" in status.stdout
    as_json = json.loads((await asyncio.to_thread(cli, config, "status", "--json")).stdout)
    assert [job["name"] for job in as_json["jobs"]] == ["mnist"]
    why = await asyncio.to_thread(cli, config, "why", "mnist")
    assert why.returncode == 0 and why.stdout.startswith("mnist:")
    trigger = await asyncio.to_thread(cli, config, "trigger", "mnist")
    assert trigger.returncode == 0
    await daemon.wait_log("job.triggered", job="mnist")
    expire = await asyncio.to_thread(cli, config, "expire")
    assert expire.returncode == 0
    await daemon.wait_log("job.expire_requested", job="mnist")
    simulate = await asyncio.to_thread(cli, config, "simulate", "power-loss", "--for", "5", "mnist")
    assert simulate.returncode == 0, simulate.stderr


async def test_unknown_job_is_a_clear_error(running) -> None:
    """`syftd why nosuch` names the configured jobs and exits 67 (unknown job), not 69 (no daemon)."""
    _daemon, config, _run = running
    result = await asyncio.to_thread(cli, config, "why", "nosuch")
    assert result.returncode == 67
    assert "no job named 'nosuch'; configured: mnist" in result.stderr


async def test_cli_without_a_daemon_says_so(tmp_path: Path) -> None:
    """With no daemon running the CLI names the socket it looked for and exits 69."""
    config = write_config(tmp_path / "syftd.toml", tmp_path, jobs=MNIST_JOB)
    result = await asyncio.to_thread(cli, config, "status")
    assert result.returncode == 69
    assert "no syftd is running" in result.stderr and str(tmp_path / "run") in result.stderr


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a client as another user")
async def test_other_users_are_refused_even_with_a_world_writable_socket(running) -> None:
    """A peer whose SO_PEERCRED uid is neither the daemon's nor root gets 403, logged as control.peer_refused."""
    daemon, _config, run = running
    sock = run / control.SOCKET_NAME
    os.chmod(run, 0o755)
    os.chmod(sock, 0o777)
    nobody = pwd.getpwnam("nobody")
    client = (
        "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]);"
        "s.sendall(b'GET /v1/status HTTP/1.1\\r\\nHost: syftd\\r\\nConnection: close\\r\\n\\r\\n');"
        "print(s.recv(200).split(b'\\r\\n')[0].decode())"
    )
    result = await asyncio.to_thread(
        subprocess.run,
        ["/usr/bin/python3", "-c", client, str(sock)],
        capture_output=True,
        text=True,
        timeout=30,
        user=nobody.pw_uid,
        group=nobody.pw_gid,
        extra_groups=[],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "HTTP/1.1 403 Forbidden"
    refused = await daemon.wait_log("control.peer_refused")
    assert refused["peer_uid"] == nobody.pw_uid
    answer = await control.call(run, "status", {})
    assert answer["jobs"][0]["name"] == "mnist"


async def test_a_second_daemon_on_the_same_socket_is_refused(running, tmp_path: Path) -> None:
    """A live control socket is not stolen by a second daemon."""
    _daemon, _config, run = running
    server = control.ControlServer(run, {name: _noop for name in control.VERBS})
    with pytest.raises(AlreadyRunningError, match="another syftd is already running on control socket"):
        await server.start()


async def _noop(_params: dict) -> dict:
    return {}
