"""How one ``flower-supernode`` is started: its argv and environment, from a ``SupernodeSpec``.

Owns the mapping from syftd's settings to flwr 1.42's command line (``--superlink``, ``--insecure``
or ``--root-certificates``, ``--auth-supernode-private-key``, ``--trusted-entities``, ``--port``,
``--node-config`` with the stop file's path first) and the child's environment (telemetry and the
update check off, ``FLWR_HOME``, the venv's ``bin`` first on ``PATH`` because the SuperNode starts
``flower-superexec`` by name). Also the checks of a SuperLink address and of one node-config entry,
which the config loader reuses, and whether a host is loopback (the grid URL check asks it too).
Pure: no I/O, nothing started here.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # exercised by make test-compat on 3.10
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "ENV_STOP_FILE",
    "PRIVACY_ENV",
    "STOP_FILE_KEY",
    "SupernodeSpec",
    "command",
    "environment",
    "is_loopback_address",
    "node_config_problem",
    "superlink_problem",
]

STOP_FILE_KEY = "syftd-stop-file"
"""The ``--node-config`` key (``context.node_config`` in the ClientApp) naming the stop file."""
ENV_STOP_FILE = "SYFTD_STOP_FILE"
"""The same path in the environment, which flwr hands down to the ClientApp process."""
PRIVACY_ENV: Mapping[str, str] = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
"""Flower's telemetry and update check, both on by default in flwr 1.42, set off explicitly."""

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[^]]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>\d{1,5})$")


@dataclass(frozen=True, slots=True)
class SupernodeSpec:
    """Everything needed to start one SuperNode; built from a job's ``[job.flower]`` table."""

    executable: Path
    superlink: str
    stop_file: Path
    flwr_home: Path
    runtime_port: int = 9094
    insecure: bool = False
    root_certificates: Path | None = None
    auth_private_key: Path | None = None
    trusted_entities: Path | None = None
    node_config: tuple[str, ...] = ()


def command(spec: SupernodeSpec) -> list[str]:
    """The SuperNode's argv. The stop file comes first in ``--node-config``, as a TOML literal string.

    Raises:
        ValueError: the stop file's path holds a quote or white space, which flwr's parser cannot carry.
    """
    if any(ch == "'" or ch.isspace() for ch in str(spec.stop_file)):
        raise ValueError(f"the stop file's path cannot hold quotes or white space: {spec.stop_file}")
    argv = [str(spec.executable), "--superlink", spec.superlink, "--port", str(spec.runtime_port)]
    if spec.insecure:
        argv.append("--insecure")
    if spec.root_certificates is not None:
        argv += ["--root-certificates", str(spec.root_certificates)]
    if spec.auth_private_key is not None:
        argv += ["--auth-supernode-private-key", str(spec.auth_private_key)]
    if spec.trusted_entities is not None:
        argv += ["--trusted-entities", str(spec.trusted_entities)]
    entries = [f"{STOP_FILE_KEY}='{spec.stop_file}'", *spec.node_config]
    argv += ["--node-config", " ".join(entries)]
    return argv


def environment(spec: SupernodeSpec, base: Mapping[str, str]) -> dict[str, str]:
    """The child's environment: ``base`` plus the privacy switches, ``FLWR_HOME``, the stop file and
    the executable's directory first on ``PATH`` (flwr starts ``flower-superexec`` by name)."""
    env = dict(base)
    env.update(PRIVACY_ENV)
    env["FLWR_HOME"] = str(spec.flwr_home)
    env[ENV_STOP_FILE] = str(spec.stop_file)
    env["PATH"] = str(spec.executable.parent) + (":" + base["PATH"] if base.get("PATH") else "")
    env.pop("PYTHONPATH", None)  # syftd's own packages must not shadow the Flower environment's
    return env


def is_loopback_address(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def superlink_problem(address: str, *, insecure: bool) -> str | None:
    """What is wrong with a SuperLink Fleet address (``host:port``, ``[v6]:port``), or None.
    ``insecure`` (plain HTTP) is accepted only for a loopback host."""
    match = _HOST_PORT.match(address)
    if match is None:
        return 'must be "host:port" or "[ipv6]:port" without a scheme, e.g. "superlink.example.org:9092"'
    if not 1 <= int(match["port"]) <= 65535:
        return "port must be from 1 to 65535"
    host = match["v6"] or match["host"]
    if match["v6"] is not None:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return "not a valid IPv6 address in brackets"
    if insecure and not is_loopback_address(host):
        return "insecure (plain HTTP) is allowed only to a loopback SuperLink"
    return None


def node_config_problem(entry: str) -> str | None:
    """What is wrong with one ``key=value`` node-config entry (value in TOML: bool, int, float or a
    quoted string), or None."""
    key, sep, value = entry.partition("=")
    if not sep or not _BARE_KEY.match(key):
        return 'must look like key=value with a key of letters, digits, - and _, e.g. "partition-id=0"'
    if key == STOP_FILE_KEY:
        return f"{STOP_FILE_KEY} is set by syftd"
    if not value or (any(ch.isspace() for ch in value) and value[0] not in "'\""):
        return 'the value must be a TOML bool, number or quoted string, e.g. data-dir="/srv/data"'
    if value[0] in "'\"" and (len(value) < 2 or value[-1] != value[0] or value[0] in value[1:-1]):
        return "a quoted value must be one string in matching quotes, without that quote inside"
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return 'the value must be a TOML bool, number or quoted string, e.g. data-dir="/srv/data"'
    if not isinstance(parsed, bool | int | float | str):
        return "the value must be a bool, a number or a string"
    return None
