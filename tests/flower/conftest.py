"""Fixtures of the Flower tests: the flwr environment (built once, cached across runs), one SuperLink
with one always-online SuperNode for the module, and a supervisor factory that cleans up after itself."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.flower import SuperLink, flower_env_or_skip, free_port, stop_group

from syftd.flower.command import SupernodeSpec
from syftd.flower.supervisor import SupernodeSupervisor


@pytest.fixture(scope="session")
def flower_bin() -> Path:
    """``.venv-flower/bin`` with flwr 1.42.0 (skips with the build's reason where PyPI is unreachable)."""
    return flower_env_or_skip()


@pytest.fixture(scope="module")
def federation(flower_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SuperLink]:
    """A SuperLink on loopback plus one plain SuperNode (partition 0) that stays online throughout."""
    link = SuperLink(flower_bin, tmp_path_factory.mktemp("flower"))
    steady: subprocess.Popen[bytes] | None = None
    try:
        link.start()
        steady = link.supernode(link.home / "steady", 0)
        yield link
    finally:
        if steady is not None:
            stop_group(steady)
        link.stop()


@pytest.fixture
async def supervise(
    federation: SuperLink, flower_bin: Path, tmp_path: Path
) -> AsyncIterator[Callable[..., SupernodeSupervisor]]:
    """Makes supervisors of a gated SuperNode (partition 1) on the federation; all leave at the end."""
    made: list[SupernodeSupervisor] = []

    def make(**kwargs: Any) -> SupernodeSupervisor:
        spec = SupernodeSpec(
            executable=flower_bin / "flower-supernode",
            superlink=federation.address,
            stop_file=tmp_path / f"stop-{len(made)}",
            flwr_home=tmp_path / f"home-{len(made)}",
            runtime_port=free_port(),
            insecure=True,
            node_config=("partition-id=1",),
        )
        kwargs.setdefault("expiry_grace_s", 5.0)
        supervisor = SupernodeSupervisor(spec, job="gated", **kwargs)
        made.append(supervisor)
        return supervisor

    yield make
    for supervisor in made:
        await supervisor.leave("shutdown", grace_s=0)
