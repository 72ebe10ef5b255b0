"""The launchd plists (daemon and agent): they parse with plistlib and round-trip in XML and binary,
pass a schema check of launchd.plist(5) keys and types, restart on failure but not after a clean
exit, run as background work, and give the daemon at least shutdown_grace_s + 10 to stop."""

from __future__ import annotations

import plistlib
from pathlib import Path
from typing import Any

import pytest
from service.helpers import LAUNCHD_DIR, REPO, SYSTEMD_DIR, parse_unit

from syftd import config as config_mod
from syftd import configfile

DAEMON = LAUNCHD_DIR / "org.openmined.syftd.plist"
AGENT = LAUNCHD_DIR / "org.openmined.syftd.agent.plist"

# launchd.plist(5): key -> accepted Python types after plistlib.loads
SCHEMA: dict[str, tuple[type, ...]] = {
    "Label": (str,),
    "ProgramArguments": (list,),
    "RunAtLoad": (bool,),
    "KeepAlive": (bool, dict),
    "ProcessType": (str,),
    "LowPriorityIO": (bool,),
    "LowPriorityBackgroundIO": (bool,),
    "Nice": (int,),
    "ThrottleInterval": (int,),
    "ExitTimeOut": (int,),
    "Umask": (int,),
    "EnvironmentVariables": (dict,),
    "StandardOutPath": (str,),
    "StandardErrorPath": (str,),
    "WorkingDirectory": (str,),
    "UserName": (str,),
    "GroupName": (str,),
    "AbandonProcessGroup": (bool,),
}
KEEPALIVE_KEYS = {"SuccessfulExit", "Crashed", "PathState", "OtherJobEnabled", "AfterInitialDemand"}
PROCESS_TYPES = {"Background", "Standard", "Adaptive", "Interactive"}


def schema_problems(job: dict[str, Any]) -> list[str]:
    """Every way ``job`` departs from the launchd.plist(5) subset syftd uses; empty when it conforms."""
    problems = [f"{key}: unknown key" for key in job if key not in SCHEMA]
    problems += [
        f"{key}: must be {' or '.join(t.__name__ for t in types)}, got {type(job[key]).__name__}"
        for key, types in SCHEMA.items()
        if key in job and (not isinstance(job[key], types) or (int in types and isinstance(job[key], bool)))
    ]
    if not isinstance(job.get("Label"), str) or not job.get("Label"):
        problems.append("Label: required")
    args = job.get("ProgramArguments")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        problems.append("ProgramArguments: required, a non-empty array of strings")
    elif not args[0].startswith("/"):
        problems.append("ProgramArguments[0]: launchd needs an absolute path (no PATH search, no ~)")
    keepalive = job.get("KeepAlive")
    if isinstance(keepalive, dict):
        problems += [f"KeepAlive.{k}: unknown condition" for k in keepalive if k not in KEEPALIVE_KEYS]
        problems += [
            f"KeepAlive.{k}: must be a boolean"
            for k, v in keepalive.items()
            if k in ("SuccessfulExit", "Crashed") and not isinstance(v, bool)
        ]
    if "ProcessType" in job and job["ProcessType"] not in PROCESS_TYPES:
        problems.append(f"ProcessType: one of {sorted(PROCESS_TYPES)}")
    if isinstance(job.get("Nice"), int) and not -20 <= job["Nice"] <= 20:
        problems.append("Nice: from -20 to 20")
    if job.get("ExitTimeOut") == 0:
        problems.append("ExitTimeOut: 0 means never SIGKILL")
    env = job.get("EnvironmentVariables", {})
    if isinstance(env, dict) and not all(isinstance(v, str) for v in env.values()):
        problems.append("EnvironmentVariables: values must be strings")
    return problems


def _load(path: Path) -> dict[str, Any]:
    text = path.read_text().replace("@HOME@", "/Users/ada").replace("@PREFIX@", "/Users/ada/.local/share/syftd/venv")
    job: dict[str, Any] = plistlib.loads(text.encode())
    return job


@pytest.fixture(params=[DAEMON, AGENT], ids=["daemon", "agent"])
def job(request: pytest.FixtureRequest) -> dict[str, Any]:
    path: Path = request.param
    return _load(path)


def test_parses_and_round_trips(job: dict[str, Any]) -> None:
    """plistlib reads it, and XML and binary encodings give back the same job."""
    for fmt in (plistlib.FMT_XML, plistlib.FMT_BINARY):
        assert plistlib.loads(plistlib.dumps(job, fmt=fmt, sort_keys=True)) == job


def test_schema(job: dict[str, Any]) -> None:
    """Known keys only, with launchd's types and value ranges."""
    assert schema_problems(job) == []


def test_schema_check_catches_mistakes() -> None:
    """The check is not vacuous: the mistakes it exists for are reported."""
    bad = {
        **_load(DAEMON),
        "ProgramArguments": "/opt/syftd/bin/syftd run",
        "Nice": "19",
        "KeepAlive": {"NetworkStat": True},
        "ExitTimeOut": 0,
        "NetworkState": True,
    }
    problems = "\n".join(schema_problems(bad))
    for key in ("ProgramArguments", "Nice", "KeepAlive.NetworkStat", "ExitTimeOut", "NetworkState"):
        assert key in problems


def test_runs_the_daemon_in_the_foreground(job: dict[str, Any]) -> None:
    """`syftd --config FILE run`, with the label the file is installed under."""
    args = job["ProgramArguments"]
    assert args[0].endswith("/bin/syftd") and args[1] == "--config" and args[-1] == "run"
    assert job["Label"] == "org.openmined.syftd" == DAEMON.name.removesuffix(".plist")


def test_restarts_on_failure_only_and_throttles(job: dict[str, Any]) -> None:
    """KeepAlive restarts after a crash or non-zero exit, not after a clean exit, at most once a minute."""
    assert job["RunAtLoad"] is True
    assert job["KeepAlive"] == {"SuccessfulExit": False}
    assert job["ThrottleInterval"] >= 60


def test_background_priority(job: dict[str, Any]) -> None:
    """Background process type, low-priority I/O, niceness 19."""
    assert job["ProcessType"] == "Background"
    assert job["LowPriorityIO"] is True and job["Nice"] == 19


def test_exit_timeout_covers_the_grace(job: dict[str, Any]) -> None:
    """ExitTimeOut >= shutdown_grace_s + 10 (default and example config), equal to systemd's TimeoutStopSec."""
    grace = max(
        config_mod.DaemonConfig().shutdown_grace_s,
        configfile.load(REPO / "config" / "syftd.toml").daemon.shutdown_grace_s,
    )
    assert job["ExitTimeOut"] >= grace + 10
    stop = parse_unit((SYSTEMD_DIR / "syftd.service").read_text())["Service"]["TimeoutStopSec"][0]
    assert f"{job['ExitTimeOut']}s" == stop


def test_logs_go_to_absolute_files(job: dict[str, Any]) -> None:
    """stdout and stderr go to one absolute log file (launchd does not rotate it)."""
    assert job["StandardOutPath"] == job["StandardErrorPath"]
    assert job["StandardOutPath"].startswith("/") and job["StandardOutPath"].endswith("/syftd.log")
