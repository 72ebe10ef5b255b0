"""The configuration loader raises nothing but ConfigError, and ``syftd check-config`` exits 78 naming the
key, for hostile files: 2,000-deep arrays, numbers at the edge of the float range, a path variable set to
the empty string, a runtime directory whose control socket path would not fit a Unix socket address, and
a ``ca_file`` that is missing or not PEM. Each is checked through the real CLI in a child process."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from support.daemon import MNIST_JOB

from syftd import config as config_mod
from syftd import configfile, control
from syftd.errors import ConfigError

PROJECT = Path(__file__).resolve().parents[1]


def check_config(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syftd", "check-config", str(path)],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def daemon_table(tmp_path: Path, extra: str = "") -> str:
    return f'[daemon]\nstate_dir = "{tmp_path / "state"}"\nruntime_dir = "{tmp_path / "run"}"\n{extra}\n'


@pytest.mark.parametrize(
    ("attack", "key"),
    [
        ("deep arrays", "<toml>"),
        ("deep arrays under a key", "job[0].data.samples"),
        ("idle_exit_s = 1e308", "job[0].trainer.idle_exit_s"),
        ("empty $VAR in state_dir", "daemon.state_dir"),
        ("relative state_dir", "daemon.state_dir"),
        ("runtime_dir too long", "daemon.runtime_dir"),
        ("ca_file missing", "job[0].grid.ca_file"),
        ("ca_file not PEM", "job[0].grid.ca_file"),
    ],
)
def test_check_config_exits_78_naming_the_key(tmp_path: Path, attack: str, key: str) -> None:
    """Each attack: exit status 78, the problem names its dotted key, and no traceback."""
    env: dict[str, str] = {}
    text = daemon_table(tmp_path) + MNIST_JOB
    if attack == "deep arrays":
        text += "x = " + "[" * 2000 + "]" * 2000 + "\n"
    elif attack == "deep arrays under a key":
        text += "[job.data]\nsamples = " + "[" * 40 + "]" * 40 + "\n"
    elif attack == "idle_exit_s = 1e308":
        text += "[job.trainer]\nidle_exit_s = 1e308\n"
    elif attack == "empty $VAR in state_dir":
        env["SYFTD_TEST_EMPTY"] = ""
        text = text.replace(f'state_dir = "{tmp_path / "state"}"', 'state_dir = "${SYFTD_TEST_EMPTY}/state"')
    elif attack == "relative state_dir":
        text = text.replace(f'state_dir = "{tmp_path / "state"}"', 'state_dir = "state"')
    elif attack == "runtime_dir too long":
        text = text.replace(str(tmp_path / "run"), "/run/" + "r" * 100)
    elif attack == "ca_file missing":
        text += f'ca_file = "{tmp_path / "missing.pem"}"\n'
    else:
        (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n")
        text += f'ca_file = "{tmp_path / "ca.pem"}"\n'
    path = tmp_path / "syftd.toml"
    path.write_text(text)
    result = check_config(path, env)
    assert result.returncode == 78, (result.stdout, result.stderr)
    assert f"  {key}" in result.stderr or f"  {key}:" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_pem_ca_file_passes(tmp_path: Path) -> None:
    """The ca_file check accepts a real PEM bundle (the system's, where it exists)."""
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if not bundle.exists():
        pytest.skip("no system CA bundle at /etc/ssl/certs/ca-certificates.crt")
    path = tmp_path / "syftd.toml"
    path.write_text(daemon_table(tmp_path) + MNIST_JOB + f'ca_file = "{bundle}"\n')
    result = check_config(path)
    assert result.returncode == 0, result.stderr


def test_loads_raises_only_config_error_on_a_nesting_bomb() -> None:
    """In process too: tomllib's RecursionError becomes a ConfigError."""
    with pytest.raises(ConfigError, match="nested more than"):
        configfile.loads("x = " + "[" * 5000 + "]" * 5000)


def test_every_numeric_key_has_both_bounds() -> None:
    """No number in the schema is unbounded, so no value like 1e308 reaches a timer or a sleep."""
    unbounded = []

    def walk(cls: type[typing.Any], prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            inner = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
            target = inner[0]
            if dataclasses.is_dataclass(target):
                walk(typing.cast(type[typing.Any], target), f"{prefix}{f.name}.")
            elif typing.get_origin(target) is tuple and dataclasses.is_dataclass(typing.get_args(target)[0]):
                walk(typing.get_args(target)[0], f"{prefix}{f.name}[].")
            elif target in (int, float) and (f.metadata.get("min") is None or f.metadata.get("max") is None):
                unbounded.append(f"{prefix}{f.name}")

    walk(config_mod.Config, "")
    assert unbounded == []


def test_the_socket_name_the_config_checks_is_the_control_socket() -> None:
    """config checks the socket path length with its own copy of the name (it must not import aiohttp)."""
    assert configfile._SOCKET_NAME == control.SOCKET_NAME
