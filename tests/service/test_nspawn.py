"""syftd.service under a real systemd: `systemd-nspawn -D / --volatile=yes -b` boots the host's systemd
as PID 1 in a throwaway container (platform-notes §4.4) with the staged `make install-systemd` tree
bind-mounted read-only, and a oneshot unit inside (nspawn_checks.py) drives the service and records
one result per behaviour. The container has its own loopback only, no grid node and no power or
network service, so every job waits for the network.

Skips only where nspawn cannot run (not root, no CAP_SYS_ADMIN, systemd-nspawn or script missing).
On a failure the assertion message carries the check's details and the tail of the container's
console and journal.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from service.helpers import PREFIX

from syftd import configfile

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

HERE = Path(__file__).resolve().parent
BOOT_TIMEOUT_S = 180.0
SECRET = "syftd-test-secret-7f3a91c2e4"
TEST_UNIT = """\
[Unit]
Description=syftd service checks
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=/usr/bin/python3 /in/checks.py
StandardOutput=append:/out/checks.log
StandardError=append:/out/checks.log
TimeoutStartSec=170
"""
# behaviours checked inside; the last two wait on the cycle machinery (``syftd why`` naming the
# unmet constraint, and the daemon logging ``grid.token_loaded`` when it reads the token file)
CHECKS = [
    "sysusers_user",
    "start_active_with_status",
    "runs_unprivileged_idle",
    "cli_status",
    "token_via_load_credential",
    "reload_succeeds",
    "broken_reload_keeps_running",
    "usr1_logs_job_triggered",
    "watchdog_restarts_stopped_daemon",
    "stop_within_timeout",
    "config_error_fails_78_no_restart",
    "token_never_logged",
    "why_names_unmet_constraint",
    "token_loaded_logged",
]


def _cannot_run() -> str | None:
    if os.geteuid() != 0:
        return "systemd-nspawn needs root"
    for tool in ("systemd-nspawn", "script"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (packages systemd-container, util-linux; .ci/run installs them)"
    cap_eff = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("CapEff"))
    if not int(cap_eff.split()[1], 16) & (1 << 21):
        return "no CAP_SYS_ADMIN: systemd-nspawn cannot create the container here"
    if not Path("/usr/lib/systemd/systemd").exists() and not Path("/lib/systemd/systemd").exists():
        return "the host has no systemd binary to boot"
    return None


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """Ask nspawn to power the container off, then kill whatever is left of the tree."""
    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    for child in tree:
        if child.name() == "systemd-nspawn":
            child.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=10)
    for child in alive:
        child.kill()
    proc.kill()
    proc.wait(timeout=10)


def _inputs(staged: Path, work: Path) -> dict[str, Any]:
    inputs = work / "in"
    inputs.mkdir()
    (inputs / "checks.py").write_bytes((HERE / "nspawn_checks.py").read_bytes())
    good = (staged / "etc/syftd/syftd.toml").read_text()
    (inputs / "good.toml").write_text(good)
    (inputs / "invalid.toml").write_text(good.replace("\n[daemon]\n", "\n[daemon]\nno_such_key = 1\n", 1))
    assert "no_such_key" in (inputs / "invalid.toml").read_text()
    (inputs / "token").write_text(SECRET + "\n")
    (inputs / "syftd-test.service").write_text(TEST_UNIT)
    config = configfile.loads(good.replace("${CREDENTIALS_DIRECTORY}", "/run/credentials/syftd.service"))
    params = {"shutdown_grace_s": config.daemon.shutdown_grace_s, "job": config.job[0].name}
    (inputs / "params.json").write_text(json.dumps(params))
    return params


@pytest.fixture(scope="module")
def container(staged_install: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Boot once, run every check, power off; yields the results and the logs."""
    reason = _cannot_run()
    if reason is not None:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("nspawn")
    _inputs(staged_install, work)
    out = work / "out"
    out.mkdir()
    etc = staged_install / "etc"
    binds = [
        ("--bind-ro", staged_install / PREFIX.lstrip("/"), PREFIX),
        ("--bind-ro", etc / "systemd/system/syftd.service", "/etc/systemd/system/syftd.service"),
        ("--bind-ro", etc / "sysusers.d/syftd.conf", "/etc/sysusers.d/syftd.conf"),
        ("--bind-ro", work / "in", "/in"),
        ("--bind", out, "/out"),
        ("--bind-ro", work / "in/syftd-test.service", "/etc/systemd/system/syftd-test.service"),
        ("--bind-ro", "/dev/null", "/etc/systemd/system/systemd-firstboot.service"),
        ("--bind-ro", "/dev/null", "/etc/systemd/system/systemd-networkd-wait-online.service"),
    ]
    nspawn = [
        "systemd-nspawn",
        "-D",
        "/",
        "--volatile=yes",
        "-b",
        "--register=no",
        "--keep-unit",
        "--private-network",
        f"--machine=syftd-test-{os.getpid()}",
        *(f"{flag}={source}:{target}" for flag, source, target in binds),
        "systemd.unit=syftd-test.service",
    ]
    console = work / "console.log"
    started = time.monotonic()
    proc = subprocess.Popen(
        ["script", "-qec", subprocess.list2cmdline(nspawn), str(console)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        proc.wait(timeout=BOOT_TIMEOUT_S)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_tree(proc)
    seconds = time.monotonic() - started
    results_file = out / "results.json"
    state = {
        "results": json.loads(results_file.read_text()) if results_file.exists() else {},
        "seconds": seconds,
        "timed_out": timed_out,
        "console": console.read_text(errors="replace") if console.exists() else "",
        "checks_log": (out / "checks.log").read_text(errors="replace") if (out / "checks.log").exists() else "",
        "journal": (out / "journal.txt").read_text(errors="replace") if (out / "journal.txt").exists() else "",
    }
    print(f"\nnspawn: boot + {len(state['results'])} checks + poweroff in {seconds:.1f} s")
    return state


def _explain(state: dict[str, Any], name: str) -> str:
    detail = json.dumps(state["results"].get(name), indent=1)
    return (
        f"check {name}: {detail}\n(timed out: {state['timed_out']}, {state['seconds']:.1f} s)\n"
        f"--- checks.log\n{state['checks_log'][-3000:]}\n--- console (tail)\n{state['console'][-3000:]}\n"
        f"--- journal (tail)\n{state['journal'][-4000:]}"
    )


@pytest.mark.parametrize("name", CHECKS)
def test_service_under_real_systemd(container: dict[str, Any], name: str) -> None:
    """Each behaviour of the installed unit under systemd as PID 1 (see the check names in nspawn_checks.py)."""
    result = container["results"].get(name)
    assert result is not None and result["ok"], _explain(container, name)


def test_token_value_never_reaches_any_output(container: dict[str, Any]) -> None:
    """The token's value appears in neither the container's journal nor its console."""
    assert container["journal"], _explain(container, "token_never_logged")
    assert SECRET not in container["journal"] and SECRET not in container["console"]
