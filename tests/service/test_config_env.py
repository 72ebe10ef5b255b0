"""Path-valued config keys expand $VAR and ${VAR} (systemd's ${CREDENTIALS_DIRECTORY}, ${HOME} in the
user config); a variable the environment does not set is a problem naming the key and the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from syftd import config as config_mod
from syftd import configfile
from syftd.errors import ConfigError

TEMPLATE = """
[daemon]
state_dir = "{state}"
runtime_dir = "{runtime}"

[[job]]
name = "env"

[job.grid]
url = "http://127.0.0.1:5000"
model = "mnist"
version = "1.0"
token_file = "{token}"
ca_file = "{ca}"

[job.data]
source = "mnist"
path = "{data}"
"""


def _load(**paths: str) -> config_mod.Config:
    values = {
        "state": "/var/lib/syftd",
        "runtime": "/run/syftd",
        "token": "/etc/syftd/token",
        "ca": "/etc/syftd/ca.pem",
        "data": "/srv/mnist",
        **paths,
    }
    return configfile.loads(TEMPLATE.format(**values))


def test_every_path_key_expands_braced_and_bare_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """token_file, ca_file, state_dir, runtime_dir and data.path all expand the environment."""
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/syftd.service")
    monkeypatch.setenv("SYFTD_TEST_HOME", "/home/ada")
    config = _load(
        state="${SYFTD_TEST_HOME}/.local/state/syftd",
        runtime="$SYFTD_TEST_HOME/run",
        token="${CREDENTIALS_DIRECTORY}/token",
        ca="${CREDENTIALS_DIRECTORY}/ca.pem",
        data="$SYFTD_TEST_HOME/mnist",
    )
    job = config.job[0]
    assert config.daemon.state_dir == Path("/home/ada/.local/state/syftd")
    assert config.daemon.runtime_dir == Path("/home/ada/run")
    assert job.grid.token_file == Path("/run/credentials/syftd.service/token")
    assert job.grid.ca_file == Path("/run/credentials/syftd.service/ca.pem")
    assert job.data.path == Path("/home/ada/mnist")


def test_unset_variable_is_a_problem_naming_key_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """${CREDENTIALS_DIRECTORY} outside systemd: one problem on job[0].grid.token_file naming the variable."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError) as caught:
        _load(token="${CREDENTIALS_DIRECTORY}/token")
    assert list(caught.value.problems) == [
        "job[0].grid.token_file: environment variable $CREDENTIALS_DIRECTORY is not set, "
        "got '${CREDENTIALS_DIRECTORY}/token'"
    ]


def test_every_unset_variable_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Problems for several keys come together, each naming its own key."""
    monkeypatch.delenv("SYFTD_TEST_UNSET_A", raising=False)
    monkeypatch.delenv("SYFTD_TEST_UNSET_B", raising=False)
    with pytest.raises(ConfigError) as caught:
        _load(state="$SYFTD_TEST_UNSET_A/state", data="${SYFTD_TEST_UNSET_B}")
    assert [p.split(":")[0] for p in caught.value.problems] == ["daemon.state_dir", "job[0].data.path"]
    assert "$SYFTD_TEST_UNSET_A" in caught.value.problems[0]


def test_plain_paths_are_unchanged() -> None:
    """A path without variables loads exactly as written."""
    assert _load().job[0].grid.token_file == Path("/etc/syftd/token")
