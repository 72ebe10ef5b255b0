"""The soak's ledger: what became of every diff the daemon finished, and the totals the soak prints.

Pure: takes the daemon's facts (``events.Fact``), the node's stored reports and its "cycle gone"
answers, and the spool entries still pending at the end; returns a verdict per diff. Does no I/O and
reads no clock. Does not own reading the logs (``events``), the idle gaps (``gaps``) or running the
soak (``run``).

A finished diff (``spool.added``) is, in the end, exactly one of:

- ``reported``: the node holds it in exactly one row, one (cycle, worker) pair; a resend of the same
  bytes into that row only overwrites it and is counted as a resend;
- ``duplicated``: the node holds it in two or more rows (two cycles, or two workers);
- ``discarded_after_gone``: not on the node, discarded by the daemon with a reason quoting the node's
  "cycle gone" answer, and the node did give such an answer between the diff's spooling and its discard;
- ``still_spooled``: still pending in the spool after the drain (the daemon never got it out: a wedge);
- ``lost``: anything else (discarded for another reason or with no such answer, quarantined, vanished,
  or overwritten on the node by a different diff of the same row).

A diff the disk refused to spool (``cycle.diff_unspooled``: its file; ``cycle.diff_uncommitted``: its
commit, refused while its report was already on its way) was never finished in this sense; it is
counted apart, with how many of them the node holds.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from support.soak.events import Fact, is_gone

__all__ = ["VERDICTS", "Diff", "Ledger", "NodeRow", "reconcile"]

VERDICTS = ("reported", "discarded_after_gone", "still_spooled", "duplicated", "lost")
_SLACK_S = 0.5
"""Allowed disorder between the node's clock readings and the daemon's log timestamps (one machine)."""


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One report the node stored (``ReportRecord``): its row is (cycle, worker id, request key)."""

    sha256: str
    cycle: int
    worker_id: str
    request_key: str


@dataclass(slots=True)
class Diff:
    """One finished diff and what became of it."""

    cycle_id: str
    sha: str
    finished_at: float
    discarded_at: float | None = None
    discard_reason: str | None = None
    quarantined: bool = False
    rows: set[tuple[int, str]] = field(default_factory=set)
    records: int = 0
    verdict: str = "lost"
    why: str = ""


@dataclass(slots=True)
class Ledger:
    """Every finished diff with its verdict, and what the node holds that no finished diff explains."""

    diffs: list[Diff]
    resends: int
    unmatched_rows: int
    """Node rows whose bytes match no ``spool.added``, ``cycle.diff_unspooled`` nor ``cycle.diff_uncommitted`` line."""
    unspooled: int = 0
    """Diffs the disk refused to spool (read-only state directory), reported from memory instead."""
    unspooled_on_node: int = 0
    """How many of those the node holds (the rest were lost with the report that failed, by design)."""

    def count(self, verdict: str) -> int:
        """How many diffs got ``verdict``."""
        return sum(1 for d in self.diffs if d.verdict == verdict)

    def totals(self) -> dict[str, int]:
        """Diffs finished, then one figure per verdict, then resends and unmatched node rows."""
        return {
            "finished": len(self.diffs),
            **{v: self.count(v) for v in VERDICTS},
            "resends": self.resends,
            "unmatched_rows": self.unmatched_rows,
            "unspooled": self.unspooled,
            "unspooled_on_node": self.unspooled_on_node,
        }

    def failures(self, verdicts: Sequence[str]) -> list[Diff]:
        """The diffs with one of ``verdicts``."""
        return [d for d in self.diffs if d.verdict in verdicts]


def reconcile(
    facts: Iterable[Fact],
    rows: Sequence[NodeRow],
    gone_answers: Sequence[tuple[float, str]],
    still_pending: set[str],
) -> Ledger:
    """The verdict for every diff the facts say was finished.

    ``gone_answers`` are (wall-clock time, text) of every error the node answered to a probe or report;
    ``still_pending`` the cycle ids left in the spool after the drain.
    """
    diffs: dict[str, Diff] = {}
    unspooled: set[str] = set()
    for fact in sorted(facts, key=lambda f: f.at):
        if fact.cycle_id is None:
            continue
        if fact.kind == "diff_unspooled" and fact.sha:
            unspooled.add(fact.sha)
        diff = diffs.get(fact.cycle_id)
        if fact.kind == "diff_finished" and fact.sha and diff is None:
            diffs[fact.cycle_id] = Diff(fact.cycle_id, fact.sha, fact.at)
        elif diff is not None and fact.kind == "diff_discarded" and diff.discarded_at is None:
            diff.discarded_at, diff.discard_reason = fact.at, fact.reason
        elif diff is not None and fact.kind == "diff_quarantined":
            diff.quarantined = True

    by_row: dict[tuple[int, str, str], list[str]] = defaultdict(list)
    for row in rows:
        by_row[(row.cycle, row.worker_id, row.request_key)].append(row.sha256)
    overwritten = {sha for shas in by_row.values() for sha in shas[:-1] if sha != shas[-1]}
    records = Counter(row.sha256 for row in rows)
    matched: set[str] = set()
    for diff in diffs.values():
        for row in rows:
            if row.sha256.startswith(diff.sha):
                diff.rows.add((row.cycle, row.worker_id))
                matched.add(row.sha256)
        diff.records = sum(n for sha, n in records.items() if sha.startswith(diff.sha))
        if any(sha.startswith(diff.sha) for sha in overwritten):
            diff.verdict, diff.why = "lost", "overwritten on the node by another diff of the same row"
        elif len(diff.rows) == 1:
            diff.verdict = "reported"
        elif len(diff.rows) > 1:
            diff.verdict, diff.why = "duplicated", f"rows {sorted(diff.rows)}"
    _judge_unreported([d for d in diffs.values() if not d.rows], gone_answers, still_pending)
    resends = sum(max(0, d.records - len(d.rows)) for d in diffs.values())
    from_memory = {sha for sha in records if any(sha.startswith(prefix) for prefix in unspooled)}
    return Ledger(
        sorted(diffs.values(), key=lambda d: d.finished_at),
        resends,
        len(set(records) - matched - from_memory),
        unspooled=len(unspooled),
        unspooled_on_node=sum(1 for prefix in unspooled if any(sha.startswith(prefix) for sha in records)),
    )


def _judge_unreported(diffs: list[Diff], gone_answers: Sequence[tuple[float, str]], still_pending: set[str]) -> None:
    answers = sorted((at, text) for at, text in gone_answers if is_gone(text))
    used: set[int] = set()
    for diff in sorted(diffs, key=lambda d: d.discarded_at or float("inf")):
        if diff.cycle_id in still_pending:
            diff.verdict, diff.why = "still_spooled", "pending in the spool after the drain"
        elif diff.quarantined:
            diff.verdict, diff.why = "lost", "quarantined"
        elif diff.discarded_at is None:
            diff.verdict, diff.why = "lost", "neither on the node nor discarded nor spooled"
        elif not is_gone(diff.discard_reason):
            diff.verdict, diff.why = "lost", f"discarded without a 'cycle gone' answer: {diff.discard_reason}"
        else:
            low, high = diff.finished_at - _SLACK_S, diff.discarded_at + _SLACK_S
            index = next((i for i, (at, _) in enumerate(answers) if i not in used and low <= at <= high), None)
            if index is None:
                diff.verdict, diff.why = (
                    "lost",
                    f"discarded as gone, but the node said no such thing: {diff.discard_reason}",
                )
            else:
                used.add(index)
                diff.verdict, diff.why = "discarded_after_gone", answers[index][1]
