"""The default install has no torch: in a real venv made from python3.11 with only the runtime
dependencies, check-config and the daemon's start-up say "install syftd[train]", and the daemon asks
the node for no cycle it cannot train.

The venv is built once per pyproject.toml (about 20 s, from pip's configured indexes and wheel
directories) and kept under the user's cache directory; the test skips, saying why, when pip cannot
install the dependencies here."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.daemon import MNIST_JOB, DaemonProcess, NotifySocket, write_config
from support.harness import Harness

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the shared venv is 3.11
    import tomli as tomllib

pytestmark = [pytest.mark.torch, pytest.mark.slow, pytest.mark.timeout(300)]

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def torchless_python() -> Path:
    """A venv's python with the project's runtime dependencies and no torch (syftd itself from the tree)."""
    base_python = shutil.which("python3.11") or sys.executable
    pyproject = (PROJECT / "pyproject.toml").read_bytes()
    deps = tomllib.loads(pyproject.decode())["project"]["dependencies"]
    digest = hashlib.sha256(pyproject + os.fsencode(base_python)).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    venv = cache / "syftd-tests" / f"torchless-{digest}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        made = subprocess.run([base_python, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=120)
        if made.returncode != 0:
            pytest.skip(f"cannot make a venv with {base_python}: {made.stderr.strip()[-300:]}")
        pip = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *deps], capture_output=True, text=True, timeout=240
        )
        if pip.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            pytest.skip(f"pip cannot install the runtime dependencies here (no index?): {pip.stderr.strip()[-400:]}")
        (venv / ".complete").write_text("ok\n")
    probe = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('torch'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.strip() == "None", "the torch-less venv has torch"
    return python


def test_check_config_without_torch_says_install_syftd_train(torchless_python: Path, tmp_path: Path) -> None:
    """A valid file passes (exit 0) with one warning naming the missing packages and the extra to install."""
    config = tmp_path / "syftd.toml"
    config.write_text(MNIST_JOB)
    done = subprocess.run(
        [str(torchless_python), "-m", "syftd", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT,
    )
    assert done.returncode == 0, done.stderr
    assert "OK (1 job)" in done.stdout
    assert "torch" in done.stderr and "install syftd[train]" in done.stderr


async def test_daemon_start_up_without_torch_logs_why_it_cannot_train(torchless_python: Path, tmp_path: Path) -> None:
    """The daemon starts (READY=1) and logs trainer.unavailable at error level with the install hint."""
    config = write_config(tmp_path / "syftd.toml", tmp_path, jobs=MNIST_JOB)
    notify = NotifySocket(tmp_path / "notify.sock")
    daemon = await DaemonProcess.start(config, notify=notify, python=str(torchless_python))
    try:
        await notify.wait_for(lambda m: "READY" in m, timeout=30)
        line = await daemon.wait_log("trainer.unavailable", timeout=10)
        assert line["level"] == "error" and "install syftd[train]" in line["reason"]
    finally:
        await daemon.stop()
        notify.close()


@pytest.mark.dbus
async def test_a_daemon_without_torch_requests_no_cycle_and_says_why(torchless_python: Path, harness: Harness) -> None:
    """With a node hosting a process and every condition met, the torch-less daemon never asks for a
    cycle, even when triggered; STATUS=, `status` and `why` give the reason with the install hint."""
    harness.host(max_updates=3)
    harness.write_config()
    notify = NotifySocket(harness.base / "notify-torchless.sock")
    daemon = await DaemonProcess.start(harness.config_path, notify=notify, python=str(torchless_python))
    try:
        await notify.wait_for(lambda m: "READY" in m, timeout=30)
        await notify.wait_for(lambda m: "install syftd[train]" in m.fields.get("STATUS", ""), timeout=30)
        cli = [str(torchless_python), "-m", "syftd", "--config", str(harness.config_path)]
        trigger = await asyncio.to_thread(
            subprocess.run, [*cli, "trigger"], capture_output=True, text=True, timeout=60, cwd=PROJECT
        )
        assert trigger.returncode == 0, trigger.stderr
        await daemon.wait_log("job.triggered", timeout=10)
        status = await asyncio.to_thread(
            subprocess.run, [*cli, "status", "--json"], capture_output=True, text=True, timeout=60, cwd=PROJECT
        )
        row = json.loads(status.stdout)["jobs"][0]
        assert "install syftd[train]" in row["state"] and row["next_run"] is None
        why = await asyncio.to_thread(
            subprocess.run, [*cli, "why", "mnist"], capture_output=True, text=True, timeout=60, cwd=PROJECT
        )
        assert why.stdout.startswith("mnist: cannot train:") and "install syftd[train]" in why.stdout
        assert daemon.events("cycle.started") == [] and daemon.events("grid.authenticated") == []
        process = next(
            p for p in harness.node.sync(harness.node.node.snapshot)["processes"] if p["name"] == harness.name
        )
        assert process["assigned"] == 0
    finally:
        await daemon.stop()
        notify.close()
