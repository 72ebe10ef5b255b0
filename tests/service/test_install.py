"""`make install-systemd`, `install-launchd`, `install-systemd-user` and the uninstall targets, run for
real into scratch DESTDIRs (or a scratch HOME): the daemon gets its own venv under PREFIX that works
at PREFIX once staged, the unit and config land in place, and an existing config is never overwritten."""

from __future__ import annotations

import os
import plistlib
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from service.helpers import PREFIX, SYSTEM_PYTHON, copy_venv, run_make

from syftd import configfile
from syftd.errors import ConfigError

pytestmark = pytest.mark.slow


def _venv_python(destdir: Path) -> str:
    return str(destdir / PREFIX.lstrip("/") / "bin" / "python")


def test_staged_venv_is_relocated_to_prefix(staged_install: Path) -> None:
    """Scripts name PREFIX's interpreter, never the DESTDIR they were built in; torch is not installed."""
    bin_dir = staged_install / PREFIX.lstrip("/") / "bin"
    assert (bin_dir / "syftd").read_text().splitlines()[0] == f"#!{PREFIX}/bin/python"
    for path in bin_dir.iterdir():
        if path.is_file() and not path.is_symlink():
            assert str(staged_install) not in path.read_text(errors="replace"), path
    probe = subprocess.run(
        [_venv_python(staged_install), "-c", "import importlib.util as u, syftd; print(u.find_spec('torch'))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.stdout.strip() == "None", probe.stderr


def test_installed_unit_and_sysusers(staged_install: Path) -> None:
    """The unit goes to /etc/systemd/system, the sysusers file to /etc/sysusers.d (both 0644), and
    /usr/local/bin/syftd points at the venv's script."""
    unit = staged_install / "etc/systemd/system/syftd.service"
    assert f"ExecStart={PREFIX}/bin/syftd --config /etc/syftd/syftd.toml run" in unit.read_text()
    for path in (unit, staged_install / "etc/sysusers.d/syftd.conf"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.readlink(staged_install / "usr/local/bin/syftd") == f"{PREFIX}/bin/syftd"


def test_installed_config_reads_the_credential(staged_install: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed config names ${CREDENTIALS_DIRECTORY}/token; it loads under systemd's variable,
    and without it names the key; the token file is created empty and owner-only."""
    conf = staged_install / "etc/syftd"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/syftd.service")
    config = configfile.load(conf / "syftd.toml")
    assert config.job[0].grid.token_file == Path("/run/credentials/syftd.service/token")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError, match=r"job\[0\]\.grid\.token_file: environment variable"):
        configfile.load(conf / "syftd.toml")
    token = conf / "token"
    assert token.read_bytes() == b"" and stat.S_IMODE(token.stat().st_mode) == 0o600


def test_check_config_of_the_installed_config(staged_install: Path) -> None:
    """The README's check: `CREDENTIALS_DIRECTORY=/etc/syftd syftd check-config` with the service venv."""
    conf = staged_install / "etc/syftd"
    done = subprocess.run(
        [_venv_python(staged_install), "-m", "syftd", "check-config", str(conf / "syftd.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "CREDENTIALS_DIRECTORY": str(conf)},
    )
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout


def test_reinstall_keeps_config_and_token_and_uninstall_keeps_them(staged_install: Path, tmp_path: Path) -> None:
    """A second install keeps an edited config and a filled token; uninstall removes unit and venv only."""
    destdir = tmp_path / "root"
    shutil.copytree(staged_install, destdir, symlinks=True)
    args = (f"DESTDIR={destdir}", f"PREFIX={PREFIX}", f"SERVICE_PYTHON={SYSTEM_PYTHON}")
    conf = destdir / "etc/syftd"
    (conf / "syftd.toml").write_text((conf / "syftd.toml").read_text() + "\n# edited by the admin\n")
    (conf / "token").write_text("jwt")
    output = run_make("install-systemd", *args)
    assert "keeping the existing" in output
    assert (conf / "syftd.toml").read_text().endswith("# edited by the admin\n")
    assert (conf / "token").read_text() == "jwt"
    run_make("uninstall-systemd", *args)
    assert not (destdir / "etc/systemd/system/syftd.service").exists()
    assert not (destdir / "etc/sysusers.d/syftd.conf").exists()
    assert not (destdir / PREFIX.lstrip("/")).exists()
    assert not (destdir / "usr/local/bin/syftd").is_symlink()
    assert (conf / "syftd.toml").exists() and (conf / "token").exists()


def test_install_launchd(staged_install: Path, tmp_path: Path) -> None:
    """install-launchd stages the LaunchDaemon plist and a config with macOS paths; uninstall removes it."""
    destdir = tmp_path / "root"
    copy_venv(staged_install, destdir)
    args = (f"DESTDIR={destdir}", "PREFIX=/usr/local/syftd", f"SERVICE_PYTHON={SYSTEM_PYTHON}")
    (destdir / "usr/local").mkdir(parents=True)
    (destdir / PREFIX.lstrip("/")).rename(destdir / "usr/local/syftd")
    run_make("install-launchd", *args)
    plist = destdir / "Library/LaunchDaemons/org.openmined.syftd.plist"
    job = plistlib.loads(plist.read_bytes())
    assert job["ProgramArguments"][0] == "/usr/local/syftd/bin/syftd"
    assert (destdir / "Library/Logs/syftd").is_dir()
    config = configfile.load(destdir / "etc/syftd/syftd.toml")
    assert (config.daemon.state_dir, config.daemon.runtime_dir) == (Path("/var/db/syftd"), Path("/var/run/syftd"))
    assert job["ExitTimeOut"] >= config.daemon.shutdown_grace_s + 10
    run_make("uninstall-launchd", *args)
    assert not plist.exists() and not (destdir / "usr/local/syftd").exists()


def test_install_systemd_user(staged_install: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """install-systemd-user puts the user unit and a config with home/runtime-dir paths under $HOME."""
    home = tmp_path / "home"
    venv = home / ".local/share/syftd/venv"
    copy_venv(staged_install, tmp_path / "stage")
    venv.parent.mkdir(parents=True)
    (tmp_path / "stage" / PREFIX.lstrip("/")).rename(venv)
    run_make(
        "install-systemd-user",
        f"HOME={home}",
        f"SERVICE_PYTHON={SYSTEM_PYTHON}",
        env={"HOME": str(home), "XDG_RUNTIME_DIR": str(tmp_path / "no-user-manager")},
    )
    unit = home / ".config/systemd/user/syftd.service"
    assert "ExecStart=%h/.local/share/syftd/venv/bin/syftd" in unit.read_text()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    config = configfile.load(home / ".config/syftd/syftd.toml")
    assert config.daemon.state_dir == home / ".local/state/syftd"
    assert config.daemon.runtime_dir == Path("/run/user/1000/syftd")
    assert (venv / "bin" / "syftd").read_text().splitlines()[0] == f"#!{venv}/bin/python"
