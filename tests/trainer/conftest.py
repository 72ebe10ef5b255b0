"""Fixtures of the trainer tests: the recorded model and plan, a pool, flags, and data modules."""

from __future__ import annotations

import importlib.util
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from trainer.helpers import GOLDEN

from syftd.trainer.flag import ExpiryFlag
from syftd.trainer.process import TrainerPool

if importlib.util.find_spec("torch") is None:
    # make test-compat runs the torch-free tests on other Pythons; this module imports torch at the top
    collect_ignore = ["test_plan_and_data.py"]


@pytest.fixture(scope="session")
def model() -> bytes:
    """The recorded get-model body: a State of the 784-392-10 MLP."""
    return (GOLDEN / "012-http-GET-model-centric_get-model.response.bin").read_bytes()


@pytest.fixture(scope="session")
def plan() -> bytes:
    """The recorded get-plan body (Plan with TorchScript in field 7)."""
    return (GOLDEN / "013-http-GET-model-centric_get-plan.response.bin").read_bytes()


@pytest.fixture
async def pool() -> AsyncIterator[TrainerPool]:
    """A started pool, stopped (and its trainers reaped) after the test."""
    async with TrainerPool(log_format="json", log_level="warning") as started:
        yield started


@pytest.fixture
def new_flag() -> Iterator[Callable[[], ExpiryFlag]]:
    """Makes flags; every one is closed and unlinked after the test."""
    flags: list[ExpiryFlag] = []

    def make() -> ExpiryFlag:
        flags.append(ExpiryFlag())
        return flags[-1]

    yield make
    for flag in flags:
        flag.close()


@pytest.fixture
def data_module(tmp_path: Path) -> Callable[[str, str], Path]:
    """Writes a Python data module into tmp_path and returns the directory to put on data.path."""

    def write(name: str, source: str) -> Path:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return tmp_path

    return write
