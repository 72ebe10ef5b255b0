"""Fixtures shared by the whole suite. Area-specific fixtures live in tests/<area>/conftest.py and
reusable machinery (private D-Bus, the local grid node, the daemon as a child process) in tests/support/."""

from __future__ import annotations

import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures" / "pygrid-2020"

sys.path.insert(0, str(Path(__file__).resolve().parent))
