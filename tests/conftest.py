"""Fixtures shared by the whole suite. Area-specific fixtures live in tests/<area>/conftest.py and
reusable machinery (private D-Bus, the local grid node, the daemon as a child process) in tests/support/."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

# The recorded PyGrid bytes (tests/fixtures/README.md says where each file came from).
FIXTURES = Path(__file__).resolve().parent / "fixtures"

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.dbus import DBusMocks, MockControl, missing_reason  # noqa: E402 - needs the path above

HAS_TORCH = importlib.util.find_spec("torch") is not None


_NOT_COLLECTED: list[str] = []


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Without torch (make test-compat), skip collecting modules marked torch: they import it at the top.
    The terminal summary names them (pytest_terminal_summary), so the skip is not silent."""
    if HAS_TORCH or collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    text = collection_path.read_text(encoding="utf-8")
    if any(line.startswith("pytestmark") and "torch" in line for line in text.splitlines()):
        _NOT_COLLECTED.append(collection_path.name)
        return True
    return None


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which test modules were left out because torch is not installed here."""
    if _NOT_COLLECTED:
        names = ", ".join(sorted(set(_NOT_COLLECTED)))
        terminalreporter.write_line(
            f"not collected, torch is not installed here ({len(set(_NOT_COLLECTED))} modules): {names}"
        )


@pytest.fixture(scope="session")
def dbus_mocks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DBusMocks]:
    """One private system bus with the upower, networkmanager and logind mocks for the whole session
    (skips where dbus-daemon or python3-dbusmock are missing)."""
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)
    mocks = DBusMocks(tmp_path_factory.mktemp("dbus"))
    try:
        mocks.start()
        yield mocks
    finally:
        mocks.stop()


@pytest.fixture
async def mocks(dbus_mocks: DBusMocks) -> AsyncIterator[MockControl]:
    """Control of the mocks, all running and reset to the baseline (on AC, online, unmetered, not idle)."""
    for template in ("upower", "networkmanager", "logind"):
        if not dbus_mocks.is_running(template):
            await dbus_mocks.restart(template)
    control = await MockControl.connect(dbus_mocks.address)
    await control.reset()
    yield control
    control.close()
