"""The shipped systemd units: `systemd-analyze verify` prints nothing, the system unit's offline
exposure is at most 1.5, and the directives the daemon relies on are present and consistent with
the example configuration."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from service.helpers import REPO, SYSTEMD_DIR, parse_unit

from syftd import config as config_mod
from syftd import configfile

ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (package systemd)")

SYSTEM_UNIT = SYSTEMD_DIR / "syftd.service"
USER_UNIT = SYSTEMD_DIR / "syftd-user.service"
TRUE = shutil.which("true") or "/bin/true"
EXPOSURE_LIMIT = 1.5


def _rendered(unit: Path, tmp_path: Path, name: str | None = None) -> Path:
    """A copy whose ExecStart= names an executable that exists here (verify checks it)."""
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={TRUE}", unit.read_text(), flags=re.M)
    out = tmp_path / (name or unit.name)
    out.write_text(text)
    return out


def _analyze(*args: str, user: bool = False, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if user:
        runtime = tmp_path / "xdg-runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env.update(XDG_RUNTIME_DIR=str(runtime), HOME=str(tmp_path))
    cmd = [str(ANALYZE), *(["--user"] if user else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)


def _units() -> dict[str, dict[str, list[str]]]:
    return parse_unit(SYSTEM_UNIT.read_text())


def _seconds(value: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)\s*(ms|min|s|h)?", value):
        total += float(number) * {"ms": 0.001, "s": 1, "min": 60, "h": 3600, "": 1}[unit]
    return total


def test_verify_system_unit_prints_nothing(tmp_path: Path) -> None:
    """`systemd-analyze verify --man=no` on the system unit: exit 0 and no output at all."""
    done = _analyze("verify", "--man=no", str(_rendered(SYSTEM_UNIT, tmp_path)), tmp_path=tmp_path)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_verify_user_unit_prints_nothing(tmp_path: Path) -> None:
    """`systemd-analyze --user verify --man=no` on the user unit: exit 0 and no output at all."""
    unit = _rendered(USER_UNIT, tmp_path, "syftd.service")
    done = _analyze("verify", "--man=no", str(unit), user=True, tmp_path=tmp_path)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_verify_gate_is_not_vacuous(tmp_path: Path) -> None:
    """A typo that verify only warns about (exit 0) still produces output, so the gate above catches it."""
    broken = _rendered(SYSTEM_UNIT, tmp_path)
    broken.write_text(broken.read_text().replace("WatchdogSec=", "WatchdogSecc="))
    done = _analyze("verify", "--man=no", str(broken), tmp_path=tmp_path)
    assert "WatchdogSecc" in done.stdout + done.stderr


def test_system_unit_exposure_at_most_1_5(tmp_path: Path) -> None:
    """`systemd-analyze security --offline=true` rates the system unit at most 1.5."""
    done = _analyze("security", "--offline=true", str(_rendered(SYSTEM_UNIT, tmp_path)), tmp_path=tmp_path)
    match = re.search(r"Overall exposure level for syftd\.service: ([\d.]+) (\w+)", done.stdout)
    assert match, done.stdout[-2000:] + done.stderr
    score = float(match.group(1))
    print(
        f"\nsystemd-analyze security --offline=true syftd.service: {score} {match.group(2)} "
        f"(limit {EXPOSURE_LIMIT}; unhardened baseline 9.6)"
    )
    assert score <= EXPOSURE_LIMIT


def test_service_protocol_directives() -> None:
    """Type=notify with a SIGHUP ExecReload, watchdog, restart on failure but never on exit status 78."""
    service = _units()["Service"]
    assert service["Type"] == ["notify"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["ExecStart"][0].split()[1:] == ["--config", "/etc/syftd/syftd.toml", "run"]
    assert _seconds(service["WatchdogSec"][0]) >= 10
    assert service["Restart"] == ["on-failure"]
    assert "78" in service["RestartPreventExitStatus"][0].split()
    assert "Type=notify-reload" in SYSTEM_UNIT.read_text(), "the >= 253 alternative is documented"


def test_stop_timeout_covers_the_shutdown_grace() -> None:
    """TimeoutStopSec= is at least daemon.shutdown_grace_s + 10, for the default and the example config."""
    timeout = _seconds(_units()["Service"]["TimeoutStopSec"][0])
    example = configfile.load(REPO / "config" / "syftd.toml").daemon.shutdown_grace_s
    assert timeout >= max(example, config_mod.DaemonConfig().shutdown_grace_s) + 10


def test_static_user_and_directories_match_the_config() -> None:
    """User=syftd (not DynamicUser=), and the state/runtime directories are the example config's."""
    service = _units()["Service"]
    assert service["User"] == ["syftd"] and "DynamicUser" not in service
    assert service["StateDirectory"] == ["syftd"]
    assert service["RuntimeDirectory"] == ["syftd"]
    assert service["ConfigurationDirectory"] == ["syftd"]
    daemon = configfile.load(REPO / "config" / "syftd.toml").daemon
    assert (daemon.state_dir, daemon.runtime_dir) == (Path("/var/lib/syftd"), Path("/run/syftd"))


def test_token_arrives_as_a_credential() -> None:
    """LoadCredential=token:/etc/syftd/token, and the example config documents the matching token_file."""
    assert _units()["Service"]["LoadCredential"] == ["token:/etc/syftd/token"]
    assert 'token_file = "${CREDENTIALS_DIRECTORY}/token"' in (REPO / "config" / "syftd.toml").read_text()


def test_low_priority_and_memory_cap() -> None:
    """Nice=19, idle CPU and I/O scheduling, a small CPUWeight, and MemoryMax of at least 2G."""
    service = _units()["Service"]
    assert service["Nice"] == ["19"]
    assert service["CPUSchedulingPolicy"] == ["idle"]
    assert service["IOSchedulingClass"] == ["idle"]
    assert int(service["CPUWeight"][0]) < 100
    size = re.fullmatch(r"(\d+)([KMGT]?)", service["MemoryMax"][0])
    assert size
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[size.group(2)]
    assert int(size.group(1)) * scale >= 2 * 2**30


def test_hardening_keeps_dbus_netlink_and_proc_net() -> None:
    """AF_UNIX and AF_NETLINK allowed, no ProcSubset=pid, no PrivateNetwork=, no network-online.target."""
    units = _units()
    service = units["Service"]
    families = " ".join(service["RestrictAddressFamilies"]).split()
    assert {"AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6"} <= set(families)
    assert "ProcSubset" not in service and "PrivateNetwork" not in service
    for key in ("After", "Wants", "Requires"):
        assert not any("network-online.target" in value for value in units["Unit"].get(key, []))


def test_user_unit_mirrors_the_protocol() -> None:
    """The user unit: same notify/reload/restart protocol, venv under the home, default.target."""
    units = parse_unit(USER_UNIT.read_text())
    service = units["Service"]
    assert service["Type"] == ["notify"] and service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["ExecStart"][0].startswith("%h/.local/share/syftd/venv/bin/syftd ")
    assert "78" in service["RestartPreventExitStatus"][0].split()
    assert units["Install"]["WantedBy"] == ["default.target"]


def test_sysusers_creates_the_service_user(tmp_path: Path) -> None:
    """systemd-sysusers applied to a scratch root creates user syftd with home /var/lib/syftd."""
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        pytest.skip("systemd-sysusers is not installed (package systemd)")
    (tmp_path / "etc").mkdir()
    done = subprocess.run(
        [sysusers, f"--root={tmp_path}", str(SYSTEMD_DIR / "syftd.sysusers")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text()
    entry = next(line for line in passwd.splitlines() if line.startswith("syftd:")).split(":")
    assert entry[5] == "/var/lib/syftd" and 0 < int(entry[2]) < 1000
