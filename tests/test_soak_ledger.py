"""The soak's ledger and wedge measure (tests/support/soak) on hand-made facts: each verdict can come out,
so a soak that passes has really found every diff reported once or discarded after the node said gone."""

from __future__ import annotations

from support.soak.events import Fact, facts, pending_spool
from support.soak.gaps import measure
from support.soak.ledger import NodeRow, reconcile

SHA_A, SHA_B = "a" * 64, "b" * 64


def finished(cycle: str, sha: str, at: float) -> Fact:
    return Fact("diff_finished", at, 1, cycle, sha[:16])


def discarded(cycle: str, at: float, reason: str) -> Fact:
    return Fact("diff_discarded", at, 1, cycle, reason=reason)


def test_one_row_is_reported_a_resend_into_it_is_counted_and_two_rows_are_duplicated() -> None:
    rows = [NodeRow(SHA_A, 3, "w1", "k1"), NodeRow(SHA_A, 3, "w1", "k1"), NodeRow(SHA_B, 4, "w1", "k2")]
    rows.append(NodeRow(SHA_B, 5, "w2", "k3"))
    ledger = reconcile([finished("c1", SHA_A, 1), finished("c2", SHA_B, 2)], rows, [], set())
    assert [d.verdict for d in ledger.diffs] == ["reported", "duplicated"]
    assert ledger.totals()["resends"] == 1


def test_a_diff_reported_from_memory_is_counted_apart_and_its_row_is_not_unexplained() -> None:
    """Two diffs the disk refused to spool (``cycle.diff_unspooled``): the node holds one, whose row is
    explained; no finished diff is judged for them; a row matching nothing stays unexplained."""
    sha_c = "c" * 64
    facts_ = [Fact("diff_unspooled", 1, 1, "u1", SHA_A[:16]), Fact("diff_unspooled", 2, 1, "u2", SHA_B[:16])]
    ledger = reconcile(facts_, [NodeRow(SHA_A, 3, "w1", "k1"), NodeRow(sha_c, 4, "w1", "k2")], [], set())
    totals = ledger.totals()
    assert (totals["finished"], totals["unspooled"], totals["unspooled_on_node"]) == (0, 2, 1)
    assert totals["unmatched_rows"] == 1


def test_a_discard_counts_only_after_a_gone_answer_between_spooling_and_discard() -> None:
    gone = "cycle closed on the node: get-plan: HTTP 400 Cycle not found!"
    facts_ = [
        finished("ok", SHA_A, 10),
        discarded("ok", 12, gone),
        finished("early", SHA_B, 20),
        discarded("early", 22, gone),
        finished("transient", "c" * 64, 30),
        discarded("transient", 31, "cycle closed on the node: report refused: database is locked"),
    ]
    answers = [(11.0, "Cycle not found!"), (5.0, "Cycle not found!"), (30.5, "database is locked")]
    ledger = reconcile(facts_, [], answers, set())
    assert [(d.cycle_id, d.verdict) for d in ledger.diffs] == [
        ("ok", "discarded_after_gone"),
        ("early", "lost"),
        ("transient", "lost"),
    ]


def test_a_diff_overwritten_by_another_in_its_row_is_lost_and_a_pending_one_still_spooled() -> None:
    rows = [NodeRow(SHA_A, 3, "w1", "k1"), NodeRow(SHA_B, 3, "w1", "k1")]
    facts_ = [finished("first", SHA_A, 1), finished("second", SHA_B, 2), finished("stuck", "c" * 64, 3)]
    ledger = reconcile(facts_, rows, [], {"stuck"})
    assert [d.verdict for d in ledger.diffs] == ["lost", "reported", "still_spooled"]


def test_idle_time_counts_only_while_the_conditions_hold_and_no_cycle_runs() -> None:
    cycles = [Fact("cycle_started", 10, 1), Fact("cycle_finished", 12, 1), Fact("cycle_started", 40, 1)]
    gaps = measure(cycles, {}, [(20.0, 30.0)], 0.0, 50.0)
    assert (gaps.longest_idle_s, gaps.idle_ended_at) == (18.0, 40.0)
    assert gaps.longest_cycle_s == 10.0 and gaps.unfinished == 0


def test_a_cycle_followed_by_another_start_without_its_end_is_unfinished() -> None:
    cycles = [Fact("cycle_started", 1, 7), Fact("cycle_started", 5, 7), Fact("cycle_started", 9, 8)]
    gaps = measure(cycles, {7: 8.0}, [], 0.0, 20.0)
    assert gaps.unfinished == 1 and gaps.longest_cycle_s == 11.0


def test_a_cycle_started_before_the_announced_wait_is_over_is_early() -> None:
    cycles = [
        Fact("cycle_started", 1, 7),
        Fact("cycle_finished", 2, 7, retry_in_s=5.0),
        Fact("cycle_started", 2.01, 7),
        Fact("cycle_finished", 3, 7, retry_in_s=1.0),
        Fact("cycle_started", 4.05, 7),
    ]
    gaps = measure(cycles, {}, [], 0.0, 10.0)
    assert (gaps.early_starts, gaps.worst_early_s) == (1, 4.99)


def test_the_facts_come_from_the_daemon_log_lines_and_the_spool_files(tmp_path) -> None:
    lines = [
        {"event": "spool.added", "timestamp": "2026-01-01T00:00:01Z", "cycle_id": "c1", "sha256": "ab" * 8},
        {"event": "cycle.finished", "timestamp": "2026-01-01T00:00:02Z", "cycle": "c1", "outcome": "done"},
        {"event": "grid.reported", "timestamp": "2026-01-01T00:00:02Z"},
        # the disk refused the commit of c2 while its report was on its way: a diff counted apart
        {"event": "cycle.diff_uncommitted", "timestamp": "2026-01-01T00:00:03Z", "cycle": "c2", "sha256": "cd" * 8},
    ]
    found = list(facts(lines, 5))
    assert [(f.kind, f.cycle_id, f.sha) for f in found] == [
        ("diff_finished", "c1", "ab" * 8),
        ("cycle_finished", "c1", None),
        ("diff_unspooled", "c2", "cd" * 8),
    ]
    spool = tmp_path / "jobs" / "mnist" / "spool"
    spool.mkdir(parents=True)
    for name in ("a.json", "a.diff", "b.json", "b.reported", "c.diff"):
        (spool / name).write_bytes(b"")
    assert pending_spool(tmp_path, "mnist") == {"a"}
