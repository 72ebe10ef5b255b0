"""`syftd history`'s text table: one row per cycle, the record's error shown by its first line (``--json``
keeps it whole), so a failed cycle says why without ``--json``; and `syftd status`'s, which says the last
cycle's error under its table."""

from __future__ import annotations

from syftd.control import VERBS


def test_a_failed_cycle_shows_the_first_line_of_its_error_cut_to_the_table() -> None:
    """A flower run refused by TLS and a done cycle: two rows under the header; the failure's ERROR cell is
    the first line of its error, cut with an ellipsis; the done cycle's is "-"."""
    error = "flower-supernode exited on its own with status 1: SSL/TLS handshake error detected. | " + "x" * 100
    answer = {
        "entries": [
            {"time": 0, "job": "fl", "cycle_id": "c1", "outcome": "failed", "reason": "supernode", "error": error},
            {"time": 1, "job": "fl", "cycle_id": "c2", "outcome": "done", "steps": 3, "duration_s": 1.5},
        ]
    }
    rows = VERBS["history"].render(answer).splitlines()
    assert rows[0].split() == ["TIME", "JOB", "CYCLE", "OUTCOME", "STEPS", "SECONDS", "ENERGY", "ERROR"]
    assert len(rows) == 3
    assert "failed (supernode)" in rows[1] and "SSL/TLS handshake error detected." in rows[1]
    assert rows[1].endswith("…") and "x" * 100 not in rows[1]
    assert rows[2].rstrip().endswith("-")


def test_status_says_the_last_cycle_s_error_under_the_table() -> None:
    """`syftd status` without --json: a job whose last cycle failed gets a line with the first line of its
    error under the table; a job whose last cycle ended without one gets none."""
    answer = {
        "version": "0",
        "pid": 1,
        "status": "fl: waiting",
        "jobs": [
            {
                "name": "fl",
                "state": "waiting",
                "last_outcome": "failed (storage)",
                "last": {"error": "disk full\nmore"},
            },
            {"name": "mnist", "state": "waiting", "last_outcome": "done", "last": {"outcome": "done"}},
        ],
    }
    lines = VERBS["status"].render(answer).splitlines()
    assert lines[-1] == "fl: last error: disk full"
    assert not any(line.startswith("mnist: last error") for line in lines)
