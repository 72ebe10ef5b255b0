"""The ClientApp authors' helper (contrib/flower/syftd_stop.py): standalone, cheap, and it reads what
the daemon's stop file writer writes."""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from support.flower import EXAMPLE_APP, PROJECT

from syftd.flower import stopfile

HELPER = PROJECT / "contrib" / "flower" / "syftd_stop.py"


@pytest.fixture
def helper(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A fresh import of the helper file, as a ClientApp would have it (no syftd on its path needed)."""
    spec = importlib.util.spec_from_file_location("syftd_stop_under_test", HELPER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def context(stop_file: Path | None) -> Any:
    return SimpleNamespace(node_config={} if stop_file is None else {"syftd-stop-file": str(stop_file), "x": 1})


def test_the_helper_imports_only_the_standard_library() -> None:
    """It runs inside the Flower environment, where syftd is not installed."""
    tree = ast.parse(HELPER.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "json", "os", "time", "dataclasses", "typing"}, imported


def test_the_example_app_ships_the_same_helper() -> None:
    """examples/flower carries a copy (a FAB holds only the app's files): it must not drift."""
    assert (EXAMPLE_APP / "syftd_example" / "syftd_stop.py").read_bytes() == HELPER.read_bytes()


def test_keep_going_until_the_daemon_writes_the_file_then_stop_with_its_reason_and_deadline(
    helper: ModuleType, tmp_path: Path
) -> None:
    """No file: keep going. The daemon's writer: stop, with the reason and the deadline it wrote."""
    path = tmp_path / "stop"
    ctx = context(path)
    assert helper.should_stop(ctx) is False and helper.stop_request(ctx) is None
    deadline = time.time() + 5
    stopfile.write(path, reason="on_battery", deadline_unix=deadline)
    assert helper.should_stop(ctx) is True
    request = helper.stop_request(ctx)
    assert request.reason == "on_battery" and request.deadline_unix == pytest.approx(deadline)
    assert 4 < request.seconds_left() <= 5
    stopfile.clear(path)
    assert helper.should_stop(ctx) is False


def test_without_the_key_or_the_env_var_it_never_stops(helper: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ClientApp run by a plain flower-supernode (not syftd) trains as usual."""
    monkeypatch.delenv("SYFTD_STOP_FILE", raising=False)
    assert helper.should_stop(context(None)) is False and helper.stop_request(context(None)) is None
    assert helper.should_stop(SimpleNamespace()) is False


def test_the_environment_names_the_file_when_node_config_does_not(
    helper: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SYFTD_STOP_FILE is the fallback (flwr hands the SuperNode's environment down to the ClientApp)."""
    path = tmp_path / "stop"
    path.write_text("not json")
    monkeypatch.setenv("SYFTD_STOP_FILE", str(path))
    ctx = context(None)
    assert helper.should_stop(ctx) is True
    assert helper.stop_request(ctx) == helper.StopRequest("unknown", None)  # unreadable content still means stop


def test_the_path_is_looked_up_once_per_context_and_each_check_is_one_stat(
    helper: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per batch: one os.stat, no parsing, no node_config lookup after the first call."""
    ctx = context(tmp_path / "stop")
    helper.should_stop(ctx)
    ctx.node_config = {}  # would be noticed if it were read again
    stats: list[str] = []
    real_stat = os.stat
    monkeypatch.setattr(helper.os, "stat", lambda p, *a, **k: (stats.append(p), real_stat(p, *a, **k))[1])
    for _ in range(100):
        assert helper.should_stop(ctx) is False
    assert stats == [str(tmp_path / "stop")] * 100
    began = time.perf_counter()
    for _ in range(10_000):
        helper.should_stop(ctx)
    per_call_us = (time.perf_counter() - began) / 10_000 * 1e6
    assert per_call_us < 200, f"{per_call_us:.1f} µs per check"
