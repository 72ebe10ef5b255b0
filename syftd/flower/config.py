"""The ``[job.flower]`` table of a ``kind = "flower"`` job, its checks, and the spec it yields.

Owns the keys (the SuperLink's address, TLS, node authentication, trusted entities, node-config
entries, where ``flower-supernode`` is) and the checks ``check-config`` runs on them: one line per
problem naming its dotted key, like every other table. Also ``spec_of``, which turns the table into
the ``SupernodeSpec`` the supervisor starts. Does not own the ``[[job]]`` table itself
(``syftd.config``) or what happens at run time (``supervisor``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syftd.flower.command import SupernodeSpec, node_config_problem, superlink_problem

__all__ = ["FlowerConfig", "flower_problems", "spec_of"]


def _key(default: Any = ..., *, doc: str, **meta: Any) -> Any:
    """A key as ``syftd.tomlschema`` reads it: default, one-line meaning, optional min/max/check."""
    metadata = {"doc": doc, "min": meta.get("min"), "max": meta.get("max"), "check": meta.get("check")}
    if default is ...:
        return field(metadata=metadata)
    if isinstance(default, tuple):
        frozen = default
        return field(default_factory=lambda: frozen, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, slots=True)
class FlowerConfig:
    """The [job.flower] table: which SuperLink to join, how, and with which flower-supernode."""

    superlink: str = _key(doc='SuperLink Fleet API address, "host:port" (no scheme)')
    venv: Path | None = _key(None, doc="the Flower virtual environment; runs VENV/bin/flower-supernode")
    supernode: Path | None = _key(None, doc="the flower-supernode executable (instead of venv)")
    insecure: bool = _key(False, doc="plain HTTP, no TLS; allowed only to a loopback SuperLink")
    root_certificates: Path | None = _key(None, doc="PEM CA bundle that verifies the SuperLink (default: system CAs)")
    auth_private_key: Path | None = _key(None, doc="the node's private key for SuperNode authentication (needs TLS)")
    trusted_entities: Path | None = _key(None, doc="YAML of public keys whose signed apps (FABs) may run")
    node_config: tuple[str, ...] = _key(
        (), doc='extra --node-config entries, e.g. ["partition-id=0", "data-dir=\\"/srv/data\\""]',
        check=node_config_problem,
    )  # fmt: skip
    runtime_port: int = _key(9094, doc="local port of the SuperNode's Runtime API; one per SuperNode", min=1, max=65535)


def flower_problems(flower: FlowerConfig, where: str) -> list[str]:
    """Problems that need more than one key or the file system; each line starts with ``where.key``."""
    problems: list[str] = []
    if (message := superlink_problem(flower.superlink, insecure=flower.insecure)) is not None:
        problems.append(f"{where}.superlink: {message}, got {flower.superlink!r}")
    if (flower.venv is None) == (flower.supernode is None):
        problems.append(f"{where}.venv: set exactly one of venv or supernode (where flower-supernode is)")
    else:
        executable = executable_of(flower)
        key = "venv" if flower.venv is not None else "supernode"
        if not executable.is_file() or not os.access(executable, os.X_OK):
            problems.append(f"{where}.{key}: no executable flower-supernode at {executable} (README, 'Flower')")
    if flower.insecure and flower.root_certificates is not None:
        problems.append(f"{where}.root_certificates: not used with insecure = true; leave one out")
    if flower.insecure and flower.auth_private_key is not None:
        problems.append(f"{where}.auth_private_key: SuperNode authentication needs TLS (insecure = false)")
    for key in ("root_certificates", "auth_private_key", "trusted_entities"):
        path = getattr(flower, key)
        if path is not None and not path.is_file():
            problems.append(f"{where}.{key}: no such file, got {str(path)!r}")
    return problems


def executable_of(flower: FlowerConfig) -> Path:
    """The flower-supernode to run."""
    if flower.supernode is not None:
        return flower.supernode
    assert flower.venv is not None
    return flower.venv / "bin" / "flower-supernode"


def spec_of(flower: FlowerConfig, *, job_dir: Path, stop_file: Path) -> SupernodeSpec:
    """The supervisor's spec: ``job_dir`` becomes the SuperNode's FLWR_HOME."""
    return SupernodeSpec(
        executable=executable_of(flower),
        superlink=flower.superlink,
        stop_file=stop_file,
        flwr_home=job_dir,
        runtime_port=flower.runtime_port,
        insecure=flower.insecure,
        root_certificates=flower.root_certificates,
        auth_private_key=flower.auth_private_key,
        trusted_entities=flower.trusted_entities,
        node_config=flower.node_config,
    )
