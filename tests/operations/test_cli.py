"""The command line as an operator's script sees it: one exit-status table, --json on every command and
on errors, check-config's token and cross-key checks, the history verb, a second daemon refused."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.daemon import MNIST_JOB, DaemonProcess, NotifySocket, write_config

from syftd import capability, checkconfig
from syftd.errors import EXIT_TABLE, ExitStatus
from syftd.history import History

PROJECT = Path(__file__).resolve().parents[2]

README_EXAMPLE = """
[[job]]
name = "mnist"
nme = "mnist"
[job.grid]
url = "http://grid.example.org"
model = "mnist"
version = "1.0"
[job.constraints]
min_battery_percent = 120
"""


def syftd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syftd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT,
        env={**os.environ, **(env or {})},
    )


def token_config(tmp_path: Path, token: Path) -> Path:
    config = tmp_path / "syftd.toml"
    config.write_text(MNIST_JOB + f'token_file = "{token}"\n')
    return config


def test_help_prints_the_exit_status_table() -> None:
    """`syftd --help` ends with every status and its meaning, the same table the README shows."""
    done = syftd("--help")
    assert done.returncode == 0 and EXIT_TABLE in done.stdout
    readme = (PROJECT / "README.md").read_text()
    for status in ExitStatus:
        assert f"| {int(status)} |" in readme, f"README lacks exit status {int(status)}"


def test_readme_three_problem_example_prints_all_three(tmp_path: Path) -> None:
    """A cross-key problem (plain http off loopback) is reported beside two per-key ones."""
    bad = tmp_path / "bad.toml"
    bad.write_text(README_EXAMPLE)
    done = syftd("check-config", str(bad))
    assert done.returncode == 78
    assert "(3 problems)" in done.stderr
    assert "job[0].grid.url: plain http/ws is allowed only to a loopback host" in done.stderr
    assert "job[0].constraints.min_battery_percent: must be from 0 to 100, got 120" in done.stderr
    assert 'job[0].nme: unknown key; did you mean "job[0].name"?' in done.stderr


def test_check_config_refuses_a_token_file_the_daemon_would_refuse(tmp_path: Path) -> None:
    """Mode 0644 is a problem (exit 78) naming the key and the fix; 0600 passes."""
    token = tmp_path / "token"
    token.write_text("jwt\n")
    token.chmod(0o644)
    config = token_config(tmp_path, token)
    done = syftd("check-config", str(config))
    assert done.returncode == 78, done.stdout
    assert f"job[0].grid.token_file: token file {token} is open to group or others (mode 0644); chmod 600 it" in (
        done.stderr
    )
    token.chmod(0o600)
    done = syftd("check-config", str(config))
    assert done.returncode == 0 and "OK (1 job)" in done.stdout, done.stderr


def test_token_owned_by_another_user_is_a_problem(tmp_path: Path) -> None:
    """The owner must be the daemon's user or root; a missing or empty token file is named too."""
    token = tmp_path / "token"
    token.write_text("jwt")
    token.chmod(0o600)
    if os.getuid() == 0:
        os.chown(token, 65534, 65534)
        problems = checkconfig.token_file_problems(token, as_uid=0)
    else:
        problems = checkconfig.token_file_problems(token, as_uid=os.getuid() + 1)
    assert len(problems) == 1 and "is owned by" in problems[0] and "chown it to the daemon's user" in problems[0]
    assert checkconfig.token_file_problems(tmp_path / "none") == [f"token file {tmp_path / 'none'} does not exist"]
    empty = tmp_path / "empty"
    empty.write_text("")
    empty.chmod(0o600)
    assert checkconfig.token_file_problems(empty) == []  # an empty token file means: send no token


def test_check_config_json_and_the_torch_less_warning(tmp_path: Path) -> None:
    """--json gives one object with problems, warnings and the exit status; no torch is a warning that
    says "install syftd[train]", not a problem."""
    good = tmp_path / "good.toml"
    good.write_text(MNIST_JOB)
    done = syftd("check-config", "--json", str(good))
    answer = json.loads(done.stdout)
    assert done.returncode == 0 and answer["ok"] and answer["jobs"] == ["mnist"] and answer["exit_status"] == 0
    reason = capability.training_unavailable(present=lambda name: name != "torch")
    assert reason is not None and "torch is not installed" in reason and "install syftd[train]" in reason
    report = checkconfig.check(good, can_train=reason)
    assert report.exit_status == 0 and report.warnings == [reason]
    assert capability.training_unavailable(present=lambda name: True) is None
    bad = tmp_path / "bad.toml"
    bad.write_text(README_EXAMPLE)
    done = syftd("--json", "check-config", str(bad))
    answer = json.loads(done.stdout)
    assert done.returncode == 78 and answer["exit_status"] == 78 and len(answer["problems"]) == 3


def test_errors_are_json_under_json_with_their_exit_status(tmp_path: Path) -> None:
    """No daemon: 69 and {"kind": "no_daemon"}; bad usage: 64 and {"kind": "usage"}; both on stdout."""
    config = write_config(tmp_path / "syftd.toml", tmp_path, jobs=MNIST_JOB)
    done = syftd("--config", str(config), "status", "--json")
    assert done.returncode == 69
    answer = json.loads(done.stdout)
    assert answer["kind"] == "no_daemon" and answer["exit_status"] == 69 and "no syftd is running" in answer["error"]
    done = syftd("--json", "simulate", "bogus")
    assert done.returncode == 64 and json.loads(done.stdout)["kind"] == "usage"
    done = syftd("simulate", "bogus")
    assert done.returncode == 64 and "invalid choice" in done.stderr
    done = syftd("--config", str(tmp_path / "missing.toml"), "run", "--json")
    assert done.returncode == 78 and json.loads(done.stdout)["kind"] == "config"


@pytest.fixture
async def daemon_with_history(tmp_path: Path):
    config = write_config(tmp_path / "syftd.toml", tmp_path, jobs=MNIST_JOB)
    history = History(tmp_path / "state")
    for i, outcome in enumerate(("done", "expired", "done")):
        history.record(
            "mnist",
            {"job": "mnist", "cycle_id": f"c{i}", "outcome": outcome, "steps": 5, "duration_s": 2.0, "time": 1e9 + i},
        )
    notify = NotifySocket(tmp_path / "notify.sock")
    daemon = await DaemonProcess.start(config, notify=notify)
    try:
        await notify.wait_for(lambda m: "READY" in m, timeout=30)
        yield daemon, config
    finally:
        await daemon.stop()
        notify.close()


async def test_history_verb_text_json_limit_and_unknown_job(daemon_with_history) -> None:
    """`syftd history` shows the kept entries oldest first; --json, --limit; an unknown job exits 67."""
    _daemon, config = daemon_with_history
    text = await asyncio.to_thread(syftd, "--config", str(config), "history")
    assert text.returncode == 0, text.stderr
    rows = text.stdout.splitlines()
    assert rows[0].split()[:4] == ["TIME", "JOB", "CYCLE", "OUTCOME"] and len(rows) == 4
    assert "expired" in rows[2]
    as_json = await asyncio.to_thread(syftd, "--config", str(config), "history", "mnist", "--json", "--limit", "2")
    entries = json.loads(as_json.stdout)["entries"]
    assert [e["cycle_id"] for e in entries] == ["c1", "c2"]
    unknown = await asyncio.to_thread(syftd, "--config", str(config), "history", "nosuch", "--json")
    assert unknown.returncode == 67 and json.loads(unknown.stdout)["kind"] == "unknown_job"
    status = await asyncio.to_thread(syftd, "--config", str(config), "--json", "status")
    assert json.loads(status.stdout)["jobs"][0]["name"] == "mnist"


async def test_a_second_daemon_exits_already_running(daemon_with_history) -> None:
    """A second `syftd run` on the same directories exits 75 and says which socket, no traceback."""
    _daemon, config = daemon_with_history
    second = await asyncio.to_thread(syftd, "--config", str(config), "run")
    assert second.returncode == 75, second.stderr[-2000:]
    said = second.stdout + second.stderr  # the refusal is the daemon's one log line (error level)
    assert said.count("another syftd is already running") == 1 and "Traceback" not in said, said


def test_mnist_and_imagefolder_also_need_torchvision() -> None:
    """The probe asks for torchvision only where the data source reads through it."""
    assert "torchvision" in capability.packages_for("mnist")
    assert "torchvision" not in capability.packages_for("synthetic-digits")
    reason = capability.training_unavailable(
        capability.packages_for("imagefolder"), present=lambda n: n != "torchvision"
    )
    assert reason is not None and "torchvision is not installed" in reason


def test_a_bad_choice_key_does_not_invent_cross_key_problems() -> None:
    """kind = "flwr" is named; the grid table that only a pygrid job needs is not demanded on top."""
    from syftd import configfile
    from syftd.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        configfile.loads('[[job]]\nname = "a"\nkind = "flwr"\n')
    assert len(info.value.problems) == 1 and info.value.problems[0].startswith("job[0].kind: must be one of")
