"""Fixtures of the Flower tests: the flwr environment (built once, cached across runs) and one SuperLink
with one always-online SuperNode per module."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.flower import SuperLink, flower_env_or_skip, stop_group


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
