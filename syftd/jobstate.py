"""What the scheduler knows about one job, and how each outcome, operator verb and condition change
advances it: pure functions of (job state, event, now, config) tested with plain values.

Owns ``JobState`` and its transitions: after a cycle (``after_cycle``, from its typed ``Ended``),
after a report of spooled diffs (``after_report``), the operator's pause (``pause``), and the
conditions' bookkeeping (``observe``). Their rules:

- a reported, spooled or discarded diff is a success: failures and backoff clear, the interval starts;
- a failure backs off with full jitter under a doubling cap (``backoff_delay``);
- a rejection of the worker that has just reported is read as "averaging in progress": the node keeps
  that cycle open (and the worker assigned to it) until it has averaged, so the request is retried
  shortly, at ``f``, 1.25 ``f``, 1.56 ``f``, 1.95 ``f`` after the report, then doubling (each gap less
  up to a fifth of jitter), for at most ``AVERAGING_CAP_S``; past that, or for any other worker, the
  node's answer is taken as it is. ``f`` is learned from the node: it starts at ``AVERAGING_FIRST_S``;
  a cycle accepted at the first retry halves it (by a fifth once a first retry has been too early;
  down to ``AVERAGING_MIN_S``), one accepted at the k-th retry sets it to that retry's time (up to
  ``AVERAGING_LEARNED_MAX_S``). A node that averages in 5 ms is asked again after about 10 ms, one
  that averages in 0.2 s after about 0.25 s, with one or two rejections each;
- a rejection with a positive timeout waits for it plus ``rejection_jitter_s``; a zero or negative
  timeout (the cycle's end has passed), or the same rejection repeated without an accepted cycle in
  between, waits at least a growing jittered backoff (half of it fixed) up to ``backoff_max_s``;
- a rejection without a timeout (the process looks finished) retries every ``finished_retry_s``,
  or stops when ``on_finished = "stop"``;
- an expiry needs no backoff unless the cycle itself was too big (budget, memory); one by the
  operator pauses the job until a trigger, the next schedule window, or a constraint lost;
- a regained condition counts from when it was regained, never earlier than when it was lost.

Pure: no I/O, no clock of its own. Does not own deciding (``policy.decide``) nor the constraint checks
(``constraints``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from syftd.conditions.value import Conditions
from syftd.config import ConstraintsConfig, ScheduleConfig
from syftd.constraints import Since, expiry_reason, track
from syftd.outcomes import CycleOutcome, Ended, ExpiryReason, Rejection, ReportOutcome

__all__ = [
    "AVERAGING_CAP_S",
    "AVERAGING_FIRST_S",
    "AVERAGING_LEARNED_MAX_S",
    "AVERAGING_MIN_S",
    "JobState",
    "after_cycle",
    "after_expired",
    "after_failure",
    "after_finished",
    "after_rejection",
    "after_report",
    "after_success",
    "backoff_delay",
    "observe",
    "pause",
]

AVERAGING_FIRST_S = 0.25
"""The first retry after a rejection read as "averaging in progress", until the node has shown how long
it averages (a real PyGrid node starts about 0.2 s after its answer)."""
AVERAGING_MIN_S = 0.01
"""The shortest first retry learned (bounds the rejected requests a fast node gets)."""
AVERAGING_LEARNED_MAX_S = 5.0
"""The longest first retry learned."""
AVERAGING_GROWTH = 1.25
"""Each of the first ``AVERAGING_FINE_RETRIES`` retries comes this many times as long after the report
as the one before; later ones twice as long."""
AVERAGING_FINE_RETRIES = 4
AVERAGING_CAP_S = 30.0
"""How long after its report a rejection of the same worker is read as averaging (syftd cannot see
``min_diffs``/``max_diffs``: a node waiting for more diffs keeps the cycle open for hours)."""


@dataclass(frozen=True, slots=True)
class JobState:
    """What the caller knows about one job; monotonic times. Built and advanced by the caller."""

    last_success: float | None = None
    failures: int = 0
    backoff_until: float | None = None
    rejected_until: float | None = None
    rejections: int = 0
    """Rejections since the last cycle the node accepted, not counting those read as averaging."""
    averaging_retries: int = 0
    """Rejections read as "averaging in progress" since the last report."""
    last_report_at: float | None = None
    """When this job's worker last reported a diff into a cycle (the node may still be averaging it)."""
    averaging_first_s: float = AVERAGING_FIRST_S
    """The first retry after a report's rejection, learned from how this node's averaging went."""
    averaging_too_early: bool = False
    """Whether a learned first retry has once come before the node had averaged."""
    finished_until: float | None = None
    finished_stopped: bool = False
    paused_at: float | None = None
    """When the operator expired the job (``syftd expire``, SIGUSR2); None when not paused."""
    spool_pending: int = 0
    running: bool = False
    running_since: float | None = None
    triggered: bool = False
    forced: bool = False
    started_at: float | None = None
    """When the daemon began watching the conditions for this job."""
    constraint_since: Mapping[str, Since] = field(default_factory=lambda: MappingProxyType({}))


def backoff_delay(failures: int, initial_s: float, max_s: float, u: float) -> float:
    """Full-jitter backoff: ``u * min(max_s, initial_s * 2**(failures - 1))``; 0 without failures."""
    if failures <= 0:
        return 0.0
    cap = min(max_s, initial_s * 2.0 ** min(failures - 1, 1000))
    return min(max(u, 0.0), 1.0) * cap


def _settled(state: JobState) -> JobState:
    return dataclasses.replace(state, running=False, running_since=None, triggered=False, forced=False)


def after_success(state: JobState, now: float, *, reported: bool = False) -> JobState:
    """A diff reported (``reported``), spooled or discarded: failures and backoff clear, the interval starts."""
    return dataclasses.replace(
        _settled(state),
        last_success=now,
        failures=0,
        backoff_until=None,
        finished_until=None,
        finished_stopped=False,
        last_report_at=now if reported else state.last_report_at,
    )


def after_failure(state: JobState, now: float, schedule: ScheduleConfig, u: float) -> JobState:
    """A cycle or report failed (node down, protocol error, trainer crash): back off with jitter."""
    failures = state.failures + 1
    delay = backoff_delay(failures, schedule.backoff_initial_s, schedule.backoff_max_s, u)
    return dataclasses.replace(_settled(state), failures=failures, backoff_until=now + delay)


def after_rejection(
    state: JobState, now: float, timeout_s: float | None, schedule: ScheduleConfig, u: float
) -> JobState:
    """The node rejected the request; ``timeout_s`` as it sent it (None: no timeout). See the module rules."""
    u = min(max(u, 0.0), 1.0)
    since_report = None if state.last_report_at is None else now - state.last_report_at
    if since_report is not None and since_report < AVERAGING_CAP_S:
        retries = state.averaging_retries + 1
        first = state.averaging_first_s
        gap = _averaging_retry_at(first, retries) - _averaging_retry_at(first, retries - 1)
        delay = min(gap, AVERAGING_CAP_S) * (0.8 + 0.2 * u)
        until = now + min(delay, AVERAGING_CAP_S - since_report)
        return dataclasses.replace(_settled(state), averaging_retries=retries, rejected_until=until)
    rejections = state.rejections + 1
    base = dataclasses.replace(_settled(state), rejections=rejections)
    if timeout_s is None:
        return after_finished(base, now, schedule)
    wait = max(0.0, timeout_s) + u * schedule.rejection_jitter_s
    if timeout_s <= 0 or rejections > 1:
        cap = min(schedule.backoff_max_s, schedule.backoff_initial_s * 2.0 ** min(rejections - 1, 1000))
        wait = max(wait, (0.5 + 0.5 * u) * cap)
    return dataclasses.replace(base, rejected_until=now + wait)


def after_finished(state: JobState, now: float, schedule: ScheduleConfig) -> JobState:
    """Rejected without a timeout: retry every ``finished_retry_s``, or stop when ``on_finished = "stop"``."""
    stop = schedule.on_finished == "stop"
    return dataclasses.replace(
        _settled(state),
        finished_until=None if stop else now + schedule.finished_retry_s,
        finished_stopped=stop,
    )


def after_expired(state: JobState, now: float, reason: ExpiryReason, schedule: ScheduleConfig, u: float) -> JobState:
    """Expired: eligible again when the constraints hold; an over-budget or over-memory cycle backs off;
    one expired by the operator pauses the job."""
    if reason in (ExpiryReason.BUDGET, ExpiryReason.MEMORY):
        return after_failure(state, now, schedule, u)
    if reason is ExpiryReason.MANUAL:
        return pause(_settled(state), now)
    return _settled(state)


def _averaging_retry_at(first: float, k: int) -> float:
    """When the k-th averaging retry is due after the report (0 for the request right after it)."""
    if k <= 0:
        return 0.0
    fine = min(k, AVERAGING_FINE_RETRIES)
    return first * AVERAGING_GROWTH ** (fine - 1) * 2.0 ** min(k - fine, 64)


def _learned_averaging(state: JobState) -> JobState:
    """The first averaging retry for the next report, from the retries this accepted cycle took.

    Accepted at the first retry: the next comes sooner, by half until a first retry has once been too
    early, by a fifth from then on; accepted at a later retry: the next starts there. Learned only
    when every rejection since the report was read as averaging: a cycle kept open for more diffs,
    past ``AVERAGING_CAP_S``, says nothing about how long the node averages.
    """
    retries, first = state.averaging_retries, state.averaging_first_s
    if state.last_report_at is None or state.rejections or retries == 0:
        return state
    too_early = state.averaging_too_early or retries > 1
    if retries == 1:
        learned = first * (0.8 if too_early else 0.5)
    else:
        learned = _averaging_retry_at(first, retries)
    learned = min(max(learned, AVERAGING_MIN_S), AVERAGING_LEARNED_MAX_S)
    return dataclasses.replace(state, averaging_first_s=learned, averaging_too_early=too_early)


def after_cycle(state: JobState, ended: Ended, now: float, schedule: ScheduleConfig, u: float) -> JobState:
    """What follows a cycle's end: the next state, from its typed outcome alone."""
    if ended.accepted:
        # the node gave this worker a cycle: the rejections are over, its last report is averaged
        state = dataclasses.replace(_learned_averaging(state), rejections=0, averaging_retries=0, last_report_at=None)
    match ended.outcome:
        case CycleOutcome.DONE:
            return after_success(state, now, reported=True)
        case CycleOutcome.SPOOLED | CycleOutcome.DISCARDED:
            return after_success(state, now)
        case CycleOutcome.REJECTED if ended.rejection is Rejection.TIMEOUT:
            return after_rejection(state, now, ended.timeout_s, schedule, u)
        case CycleOutcome.REJECTED:
            return after_rejection(state, now, None, schedule, u)
        case CycleOutcome.EXPIRED:
            return after_expired(state, now, ended.expiry or ExpiryReason.MANUAL, schedule, u)
        case _:
            return after_failure(state, now, schedule, u)


def after_report(
    state: JobState, outcomes: tuple[ReportOutcome, ...], now: float, schedule: ScheduleConfig, u: float
) -> JobState:
    """What follows a report of spooled diffs: a failure backs off, an abort changes nothing (the
    conditions hold the job), settled diffs count as a success (a reported one as a report)."""
    if ReportOutcome.PENDING in outcomes:
        return after_failure(state, now, schedule, u)
    if ReportOutcome.ABORTED in outcomes or not outcomes:
        return dataclasses.replace(state, running=False, running_since=None)
    return after_success(state, now, reported=ReportOutcome.REPORTED in outcomes)


def pause(state: JobState, now: float) -> JobState:
    """The operator expired the job: no new cycle until a trigger, the next window, or a constraint lost."""
    return state if state.paused_at is not None else dataclasses.replace(state, paused_at=now)


def observe(state: JobState, conditions: Conditions, constraints: ConstraintsConfig, now: float) -> JobState:
    """Fold a conditions snapshot into the state: the since-times, and the end of an operator's pause
    once one of the job's constraints is known lost (it counts again once regained and stable)."""
    tracked = track(state.constraint_since, conditions, constraints, now)
    paused_at = state.paused_at
    if paused_at is not None and expiry_reason(conditions, constraints) is not None:
        paused_at = None
    return dataclasses.replace(state, constraint_since=tracked, paused_at=paused_at)
