"""What `make run` prints for a person: one line per cycle, whichever of the daemon's and the node's
records of it arrives first, and the commands to inspect the demo."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from syftd import demo
from syftd.demo import CycleLines

DONE = {
    "event": "cycle.finished",
    "outcome": "done",
    "steps": 100,
    "loss": 1.42624,
    "accuracy": 0.51562,
    "duration_s": 4.027,
}


def _lines() -> tuple[CycleLines, list[str]]:
    printed: list[str] = []
    return CycleLines(printed.append), printed


def test_a_done_cycle_is_one_line_with_steps_loss_accuracy_duration_and_checkpoint() -> None:
    """The daemon's record first, then the node's checkpoint: one line, printed when both are in."""
    lines, printed = _lines()
    assert lines.daemon_event(None, "info", dict(DONE)) == DONE
    assert printed == []
    lines.node_checkpoint(2)
    assert printed == ["cycle 1: done, 100 steps, loss 1.426, accuracy 51.6 %, 4.0 s, node checkpoint 2"]


def test_the_node_checkpoint_may_arrive_before_the_daemons_record() -> None:
    """The two come from different processes; the pairing does not depend on their order."""
    lines, printed = _lines()
    lines.node_checkpoint(2)
    lines.node_checkpoint(3)
    lines.cycle_finished(dict(DONE))
    lines.cycle_finished({**DONE, "loss": 0.9})
    assert [line.split(", ")[-1] for line in printed] == ["node checkpoint 2", "node checkpoint 3"]
    assert printed[1].startswith("cycle 2: done, 100 steps, loss 0.900")


def test_a_cycle_that_did_not_finish_is_printed_at_once_with_its_reason() -> None:
    """Expired and rejected cycles produce no checkpoint, so they do not wait for one."""
    lines, printed = _lines()
    lines.cycle_finished({"event": "cycle.finished", "outcome": "expired", "reason": "power_lost", "steps": 12})
    assert printed == ["cycle 1: expired (power_lost), 12 steps"]
    lines.daemon_event(None, "info", {"event": "grid.reported"})
    assert len(printed) == 1


def test_records_from_two_threads_each_give_one_line() -> None:
    """50 cycles, the node's checkpoints from another thread: 50 lines, each with a checkpoint."""
    lines, printed = _lines()
    node = threading.Thread(target=lambda: [lines.node_checkpoint(n) for n in range(2, 52)])
    node.start()
    for _ in range(50):
        lines.cycle_finished(dict(DONE))
    node.join(30)
    assert len(printed) == 50 and all("node checkpoint" in line for line in printed)


def test_the_inspection_commands_name_the_demo_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """At start the demo prints status, why and simulate power-loss, each with -c and its config path."""
    demo._print_inspection(tmp_path / "syftd.toml")
    out = capsys.readouterr().out
    for verb in ("status", "why mnist", "simulate power-loss"):
        assert f"-c {tmp_path / 'syftd.toml'} {verb}" in out
