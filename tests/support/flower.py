"""A real Flower federation on loopback for the tests: the flwr environment, a SuperLink, plain
SuperNodes, and the example ServerApp's per-round report.

The environment is built once by ``contrib/flower/make-venv.sh`` into ``.venv-flower`` (cached across
runs by its stamp file); ``flower_env_or_skip`` skips with the build's own words only when it cannot
be installed. Every wait takes a timeout and fails with what was seen.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from support.waiting import poll_until, poll_until_blocking

__all__ = [
    "EXAMPLE_APP",
    "FLWR_SPEC",
    "PROJECT",
    "Report",
    "SuperLink",
    "daemon_config",
    "flower_env_or_skip",
    "free_port",
    "stop_group",
    "wait_until",
]

PROJECT = Path(__file__).resolve().parents[2]
EXAMPLE_APP = PROJECT / "examples" / "flower"
FLWR_SPEC = "flwr==1.42.0"
PRIVACY = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


def daemon_config(
    tmp_path: Path,
    bus_address: str,
    link: SuperLink,
    flower_bin: Path,
    *,
    grace_s: float,
    trust: str = "insecure = true",
    backoff_initial_s: float = 0.5,
    backoff_max_s: float = 18000.0,
) -> Path:
    """A daemon config (JSON logs, the test bus's D-Bus sources) with one flower job ``fl`` on ``link``;
    ``trust`` holds its TLS and authentication keys (plain loopback by default)."""
    path = tmp_path / "syftd.toml"
    path.write_text(f"""
[daemon]
state_dir = "{tmp_path / "state"}"
runtime_dir = "{tmp_path / "run"}"
log_format = "json"
log_level = "debug"
shutdown_grace_s = {grace_s}

[daemon.conditions]
bus_address = "{bus_address}"
power_source = "upower"
network_source = "networkmanager"
sleep_source = "logind"

[[job]]
name = "fl"
kind = "flower"

[job.flower]
superlink = "{link.address}"
venv = "{flower_bin.parent}"
{trust}
node_config = ["partition-id=1"]
runtime_port = {free_port()}

[job.constraints]
stable_for_s = 0.2

[job.schedule]
backoff_initial_s = {backoff_initial_s}
backoff_max_s = {backoff_max_s}

[job.budget]
max_cycle_s = 600
expiry_grace_s = {grace_s}
""")
    return path


def flower_env_or_skip() -> Path:
    """The ``bin`` directory of ``.venv-flower``, built if needed; skips when it cannot be installed."""
    venv = PROJECT / ".venv-flower"
    began = time.monotonic()
    try:
        done = subprocess.run(
            [str(PROJECT / "contrib" / "flower" / "make-venv.sh"), str(venv), FLWR_SPEC],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"cannot install the Flower environment ({FLWR_SPEC}): the build took over 900 s")
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        pytest.skip(f"cannot install the Flower environment ({FLWR_SPEC} from PyPI): " + " | ".join(tail))
    print(f"flower env: {done.stdout.strip()} ({time.monotonic() - began:.1f} s)")
    return venv / "bin"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str, poll: float = 0.05) -> Any:
    """The first truthy ``predicate()`` within ``timeout`` s (for state only observable by looking): the
    shared bounded poll (``support.waiting``)."""
    return await poll_until(predicate, what=what, timeout=timeout, every=poll)


class SuperLink:
    """``flower-superlink`` on a free loopback port, its log in ``home/superlink.log``: ``--insecure``,
    or HTTPS with ``tls`` = (certificate, key, CA) files, plus ``--enable-supernode-auth`` if ``node_auth``."""

    def __init__(
        self, bin_dir: Path, home: Path, *, tls: tuple[Path, Path, Path] | None = None, node_auth: bool = False
    ) -> None:
        self.bin_dir, self.home = bin_dir, home
        self.tls, self.node_auth = tls, node_auth
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log = home / "superlink.log"
        self.process: subprocess.Popen[bytes] | None = None

    def env(self, home: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(PRIVACY, FLWR_HOME=str(home), PATH=f"{self.bin_dir}:{env.get('PATH', '')}")
        return env

    def start(self) -> None:
        """Start it and wait (blocking, for a module fixture) until it serves."""
        (self.home / "link").mkdir(parents=True, exist_ok=True)
        security = ["--insecure"] if self.tls is None else [
            f"--ssl-{name}file={path}" for name, path in zip(("cert", "key", "ca-cert"), self.tls, strict=True)
        ]  # fmt: skip
        if self.node_auth:
            security.append("--enable-supernode-auth")
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(self.bin_dir / "flower-superlink"), *security,
                 "--disable-runtime-dependency-installation", "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, env=self.env(self.home / "link"), start_new_session=True,
            )  # fmt: skip
        process = self.process
        # polls: the SuperLink's log file, written by another process, announces nothing
        poll_until_blocking(
            lambda: "Uvicorn running" in self.text() or process.poll() is not None,
            what="the SuperLink serving",
            timeout=60,
        )
        assert "Uvicorn running" in self.text(), f"SuperLink not up: {self.text()}"
        cli = self.home / "cli"
        cli.mkdir(exist_ok=True)
        trust = "insecure = true" if self.tls is None else f'root-certificates = "{self.tls[2]}"'
        (cli / "config.toml").write_text(
            f'[superlink]\ndefault = "local"\n[superlink.local]\naddress = "{self.address}"\n{trust}\n'
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def count(self, needle: str) -> int:
        return self.text().count(needle)

    def last_access(self, path: str) -> float:
        """Wall-clock time (s since the epoch) of the latest request to ``path`` in the access log."""
        lines = [line for line in self.text().splitlines() if f'"POST {path} ' in line]
        assert lines, f"no request to {path} in the SuperLink's log"
        stamp = lines[-1].split()[0].replace("Z", "+00:00")
        return datetime.datetime.fromisoformat(stamp).timestamp()

    def run(self, app: Path, run_config: str) -> None:
        """Submit a run of the app (``flwr run``); it returns once the SuperLink accepted it."""
        done = subprocess.run(
            [str(self.bin_dir / "flwr"), "run", str(app), "local", "--run-config", run_config],
            env=self.env(self.home / "cli"), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"flwr run failed: {done.stdout}\n{done.stderr}"

    def register(self, public_key: Path) -> int:
        """Register a SuperNode's public key (``flwr supernode register``, node authentication); its node id."""
        done = subprocess.run(
            [str(self.bin_dir / "flwr"), "supernode", "register", str(public_key), "local", "--format", "json"],
            env=self.env(self.home / "cli"), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"flwr supernode register failed: {done.stdout}\n{done.stderr}"
        return int(json.loads(done.stdout[done.stdout.index("{") :])["node-id"])

    def supernode(self, home: Path, partition_id: int) -> subprocess.Popen[bytes]:
        """A plain ``flower-supernode`` (not gated: the node that is always online), output in home/out.log."""
        home.mkdir(parents=True, exist_ok=True)
        with (home / "out.log").open("wb") as out:
            return subprocess.Popen(
                [str(self.bin_dir / "flower-supernode"), "--insecure", "--superlink", self.address,
                 "--port", str(free_port()), "--node-config", f"partition-id={partition_id}"],
                stdout=out, stderr=subprocess.STDOUT, env=self.env(home), start_new_session=True,
            )  # fmt: skip

    def stop(self) -> None:
        """SIGTERM the SuperLink's session, SIGKILL it 10 s later (it sometimes ignores SIGTERM)."""
        if self.process is None:
            return
        children = _session_members(self.process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _session_members(ppid: int) -> set[int]:
    """Descendants of ``ppid`` (the SuperLink starts its SuperExec in a session of its own)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat[stat.rfind(")") + 2 :].split()[1])
    found, frontier = set(), {ppid}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


class Report:
    """The example ServerApp's JSON lines: one ``configure_train`` and one ``aggregate_train`` per round."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self, event: str | None = None) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        return [e for e in lines if event is None or e["event"] == event]

    def round(self, n: int) -> dict[str, Any] | None:
        return next((e for e in self.entries("aggregate_train") if e["round"] == n), None)

    def asked(self, n: int) -> dict[str, Any] | None:
        return next((e for e in self.entries("configure_train") if e["round"] == n), None)

    async def wait_round(self, n: int, timeout: float) -> dict[str, Any]:
        result: dict[str, Any] = await wait_until(
            lambda: self.round(n), timeout=timeout, what=f"round {n} aggregated; report so far {self.entries()}"
        )
        return result


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM a process started in its own session, SIGKILL its group 10 s later."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(5)
