"""Fixtures shared by the whole suite. Area-specific fixtures live in tests/<area>/conftest.py and
reusable machinery (private D-Bus, the local grid node, the daemon as a child process) in tests/support/."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures" / "pygrid-2020"

sys.path.insert(0, str(Path(__file__).resolve().parent))

HAS_TORCH = importlib.util.find_spec("torch") is not None


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Without torch (make test-compat), skip collecting modules marked torch: they import it at the top."""
    if HAS_TORCH or collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    text = collection_path.read_text(encoding="utf-8")
    if any(line.startswith("pytestmark") and "torch" in line for line in text.splitlines()):
        return True
    return None
