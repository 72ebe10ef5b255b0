"""The scheduler: a pure decision of whether a job's cycle starts now, later, or not at all.

Owns ``decide`` (conditions, job state, monotonic ``now``, local ``wall`` time and the job's config in;
a ``Decision`` out) and ``explain`` for ``syftd why``. The job state and its transitions after each
outcome live in ``syftd.jobstate``, the constraint checks (``unmet``, ``stable_at``, ``track``,
``expiry_reason``) in ``syftd.constraints``; both are re-exported here. Does not own reading the
system, clocks, randomness, timers or running anything: the caller passes ``now``, ``wall`` and a
uniform ``u`` in [0, 1), and acts on the ``Decision``.

Rules, in the order ``decide`` applies them:

- a disabled job is stopped; a job with a running cycle is running;
- a job that answered "finished" with ``on_finished = "stop"`` is stopped until triggered;
- a pending spooled diff is reported before any new cycle: it needs only the network (and an unmetered
  link when the job requires one) and honours the failure backoff; nothing else gates it;
- a job the operator expired waits, until triggered, until its next schedule window opens, or until
  one of its constraints is lost (the caller folds that in, ``observe``);
- an unmet or unknown constraint, or the machine going to sleep, makes the job wait for conditions;
  a lost condition counts at once, a regained one (or one seen since the daemon started) only after
  holding ``stable_for_s``;
- then the time gates: the node's rejection timeout, backoff, the finished retry period, the interval
  after a success, ``earliest_start``, and the windows (local time; ``"22:00-07:00"`` wraps midnight,
  ``"00:00-24:00"`` and a zero-length window are the whole day); the job waits until the latest;
- last, at most ``max_running`` cycles run at once.

``triggered`` skips the schedule (backoff, interval, finished, earliest_start, windows) but not the
constraints nor the node's rejection timeout; ``forced`` skips both, except the concurrency limit.
Wall-clock gates become monotonic times from ``wall`` at the moment of deciding; monotonic time stops
while the machine sleeps, so the caller decides afresh after a resume.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any

from syftd.conditions.value import Conditions
from syftd.config import ConstraintsConfig, JobConfig, ScheduleConfig
from syftd.constraints import Since, Unmet, duration_text, expiry_reason, stable_at, track, unmet
from syftd.jobstate import (
    AVERAGING_CAP_S,
    AVERAGING_FIRST_S,
    JobState,
    after_cycle,
    after_expired,
    after_failure,
    after_finished,
    after_rejection,
    after_report,
    after_success,
    backoff_delay,
    observe,
    pause,
)

__all__ = [
    "AVERAGING_CAP_S",
    "AVERAGING_FIRST_S",
    "Action",
    "Decision",
    "JobState",
    "Reason",
    "Since",
    "Unmet",
    "Wait",
    "after_cycle",
    "after_expired",
    "after_failure",
    "after_finished",
    "after_rejection",
    "after_report",
    "after_success",
    "backoff_delay",
    "decide",
    "expiry_reason",
    "explain",
    "observe",
    "pause",
    "stable_at",
    "track",
    "unmet",
]


class Action(enum.Enum):
    """What the caller should do."""

    START = "start"
    REPORT = "report"
    WAIT_UNTIL = "wait_until"
    WAIT_FOR = "wait_for"
    RUNNING = "running"
    STOPPED = "stopped"


class Reason(enum.Enum):
    """Why a decision is what it is."""

    DUE = "due"
    TRIGGERED = "triggered"
    FORCED = "forced"
    SPOOL = "spool"
    RUNNING = "running"
    DISABLED = "disabled"
    FINISHED_STOP = "finished_stop"
    PAUSED = "paused"
    CONDITIONS = "conditions"
    SLOTS = "slots"
    STABILIZING = "stabilizing"
    REJECTED = "rejected"
    BACKOFF = "backoff"
    FINISHED = "finished"
    INTERVAL = "interval"
    EARLIEST_START = "earliest_start"
    WINDOW = "window"


@dataclass(frozen=True, slots=True)
class Wait:
    """One time gate that is still closed: why, and the monotonic time it opens."""

    reason: Reason
    at: float
    what: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of ``decide``; ``at`` is set for WAIT_UNTIL (monotonic), ``unmet`` for WAIT_FOR."""

    action: Action
    reason: Reason
    now: float
    wall: dt.datetime
    at: float | None = None
    unmet: tuple[Unmet, ...] = ()
    waits: tuple[Wait, ...] = ()
    text: str = ""

    @property
    def starts(self) -> bool:
        """True when a cycle should start now."""
        return self.action is Action.START


# ------------------------------------------------------------------------------------------ windows


def _parse_window(text: str) -> tuple[int, int]:
    start, _, end = text.partition("-")
    sh, sm = start.split(":")
    eh, em = end.split(":")
    return int(sh) * 60 + int(sm), int(eh) * 60 + int(em)


def _in_window(minute: int, start: int, end: int) -> bool:
    if start == end or (start == 0 and end == 1440):
        return True
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end


def _window_opens(windows: tuple[str, ...], wall: dt.datetime) -> dt.datetime:
    """The earliest wall time at or after ``wall`` inside one of ``windows`` (minute resolution)."""
    if not windows:
        return wall
    best: dt.datetime | None = None
    minute = wall.hour * 60 + wall.minute
    for text in windows:
        start, end = _parse_window(text)
        if _in_window(minute, start, end):
            return wall
        day = wall.replace(hour=0, minute=0, second=0, microsecond=0)
        opens = day + dt.timedelta(minutes=start)
        if opens <= wall:
            opens += dt.timedelta(days=1)
        best = opens if best is None else min(best, opens)
    assert best is not None
    return best


def _earliest(text: str, wall: dt.datetime) -> dt.datetime:
    at = dt.datetime.fromisoformat(text)
    if at.tzinfo is None and wall.tzinfo is not None:
        return at.replace(tzinfo=wall.tzinfo)
    if at.tzinfo is not None and wall.tzinfo is None:
        return at.astimezone().replace(tzinfo=None)
    return at


# ------------------------------------------------------------------------------------------ decide


def decide(
    conditions: Conditions,
    state: JobState,
    now: float,
    wall: dt.datetime,
    job: JobConfig,
    *,
    running: int = 0,
    max_running: int = 1,
) -> Decision:
    """What ``job`` should do now; ``running`` counts the cycles of other jobs running now.

    ``wall`` is the local wall-clock time matching ``now`` (``datetime.now().astimezone()``).
    """
    forced, triggered = state.forced, state.triggered or state.forced
    k, tracked = job.constraints, state.constraint_since

    def made(action: Action, reason: Reason, text: str, **kw: Any) -> Decision:
        return Decision(action, reason, now, wall, text=text, **kw)

    def waiting(waits: list[Wait]) -> Decision:
        latest = max(waits, key=lambda w: w.at)
        return made(Action.WAIT_UNTIL, latest.reason, latest.what, at=latest.at, waits=tuple(waits))

    if not job.enabled:
        return made(Action.STOPPED, Reason.DISABLED, "job disabled in the configuration")
    if state.running:
        return made(Action.RUNNING, Reason.RUNNING, "cycle running")
    if state.finished_stopped and not triggered:
        return made(
            Action.STOPPED,
            Reason.FINISHED_STOP,
            'the process looks finished and schedule.on_finished = "stop"; trigger to retry',
        )
    if state.spool_pending:
        lost = [] if forced else unmet(conditions, _network_only(k), now, tracked)
        if lost:
            return made(Action.WAIT_FOR, Reason.SPOOL, "a spooled diff waits for the network", unmet=tuple(lost))
        backoff = [w for w in _schedule_waits(state, now, wall, job.schedule) if w.reason is Reason.BACKOFF]
        if backoff and not triggered:
            return waiting(backoff)
        return made(Action.REPORT, Reason.SPOOL, f"{state.spool_pending} spooled diff(s) to report")

    if state.paused_at is not None and not triggered:
        paused = _paused(state.paused_at, now, wall, job.schedule.windows)
        if paused is not None:
            return paused
    waits = [] if triggered else _schedule_waits(state, now, wall, job.schedule)
    if state.rejected_until is not None and state.rejected_until > now and not forced:
        what = (
            "the node is averaging this worker's last report"
            if state.averaging_retries
            else "the node's rejection timeout"
        )
        waits.append(Wait(Reason.REJECTED, state.rejected_until, what))
    lost = [] if forced else unmet(conditions, k, now, tracked)
    if lost:
        return made(Action.WAIT_FOR, Reason.CONDITIONS, "waiting for conditions", unmet=tuple(lost), waits=tuple(waits))
    if not forced and (settling := stable_at(conditions, k, now, tracked)) is not None:
        names = ", ".join(settling[1])
        holding = [tracked[n][1] for n in settling[1] if n in tracked]
        if state.started_at is not None and holding and max(holding) <= state.started_at:
            text = f"{names} must hold {k.stable_for_s:g} s since the daemon started"
        else:
            text = f"{names} regained, must hold {k.stable_for_s:g} s"
        waits.append(Wait(Reason.STABILIZING, settling[0], text))
    if not triggered and job.schedule.windows:
        after = max((w.at for w in waits), default=now)
        opens = _window_opens(job.schedule.windows, wall + dt.timedelta(seconds=after - now))
        at = now + (opens - wall).total_seconds()
        if at > after:
            waits.append(Wait(Reason.WINDOW, at, f"window {', '.join(job.schedule.windows)} opens {opens:%H:%M}"))
    if waits:
        return waiting(waits)
    if running >= max_running:
        slot = Unmet("max_concurrent_jobs", (), f"{running} of {max_running} cycle slot(s) in use")
        return made(Action.WAIT_FOR, Reason.SLOTS, "waiting for a free cycle slot", unmet=(slot,))
    if forced:
        return made(Action.START, Reason.FORCED, "forced by the operator: constraints ignored")
    if triggered:
        return made(Action.START, Reason.TRIGGERED, "triggered by the operator")
    return made(Action.START, Reason.DUE, "due: every constraint holds")


def _paused(paused_at: float, now: float, wall: dt.datetime, windows: tuple[str, ...]) -> Decision | None:
    """The wait of a job the operator expired, or None once its next window has opened."""
    hold = "expired by the operator; holds until a trigger"
    if not windows:
        what = f"{hold} or a constraint lost and regained"
        operator = Unmet("operator", (), what, since=paused_at)
        return Decision(Action.WAIT_FOR, Reason.PAUSED, now, wall, unmet=(operator,), text=what)
    paused_wall = wall - dt.timedelta(seconds=now - paused_at)
    opens = _next_window_start(windows, paused_wall)
    at = now + (opens - wall).total_seconds()
    if at <= now:
        return None
    what = f"{hold}, the window opening {opens:%H:%M}, or a constraint lost and regained"
    return Decision(
        Action.WAIT_UNTIL, Reason.PAUSED, now, wall, at=at, waits=(Wait(Reason.PAUSED, at, what),), text=what
    )


def _next_window_start(windows: tuple[str, ...], after: dt.datetime) -> dt.datetime:
    """The first start of one of ``windows`` strictly after ``after`` (a whole-day window: the next midnight)."""
    day = after.replace(hour=0, minute=0, second=0, microsecond=0)
    starts = []
    for text in windows:
        start, _end = _parse_window(text)
        opens = day + dt.timedelta(minutes=start % 1440)
        if opens <= after:
            opens += dt.timedelta(days=1)
        starts.append(opens)
    return min(starts)


def _network_only(k: ConstraintsConfig) -> ConstraintsConfig:
    return dataclasses.replace(
        k,
        requires_external_power=False,
        min_battery_percent=0.0,
        requires_idle=False,
        max_temperature_c=None,
        min_free_disk_mb=0.0,
    )


def _schedule_waits(state: JobState, now: float, wall: dt.datetime, schedule: ScheduleConfig) -> list[Wait]:
    waits = []
    if state.backoff_until is not None and state.backoff_until > now:
        waits.append(Wait(Reason.BACKOFF, state.backoff_until, f"backoff after {state.failures} failure(s)"))
    if state.finished_until is not None and state.finished_until > now:
        waits.append(Wait(Reason.FINISHED, state.finished_until, "the process looked finished; retry later"))
    if state.last_success is not None and state.last_success + schedule.interval_s > now:
        interval = duration_text(schedule.interval_s)
        waits.append(Wait(Reason.INTERVAL, state.last_success + schedule.interval_s, f"{interval} after a success"))
    if schedule.earliest_start is not None:
        earliest = _earliest(schedule.earliest_start, wall)
        if earliest > wall:
            waits.append(
                Wait(
                    Reason.EARLIEST_START,
                    now + (earliest - wall).total_seconds(),
                    f"earliest start {schedule.earliest_start}",
                )
            )
    return waits


# ------------------------------------------------------------------------------------------ explain


def explain(decision: Decision) -> dict[str, Any]:
    """A JSON-able account for ``syftd why``: a summary line and one reason per line, with times."""
    now, wall = decision.now, decision.wall
    reasons = [u.describe(now, wall) for u in decision.unmet]
    for w in sorted(decision.waits, key=lambda w: w.at):
        reasons.append(f"{w.what}: until {_at(w.at, now, wall)}")
    summary = decision.text
    if decision.action is Action.WAIT_UNTIL and decision.at is not None:
        summary = f"waiting until {_at(decision.at, now, wall)} ({decision.reason.value}: {decision.text})"
    elif decision.action is Action.WAIT_FOR:
        summary = f"{decision.text}: {len(decision.unmet)} unmet"
    return {
        "action": decision.action.value,
        "reason": decision.reason.value,
        "summary": summary,
        "reasons": reasons,
        "at": decision.at,
        "in_s": None if decision.at is None else max(0.0, decision.at - now),
        "unmet": [
            {
                "constraint": u.constraint,
                "text": u.what,
                "unknown": u.unknown,
                "since_s": None if u.since is None else max(0.0, now - u.since),
            }
            for u in decision.unmet
        ],
    }


def _at(at: float, now: float, wall: dt.datetime) -> str:
    when = wall + dt.timedelta(seconds=at - now)
    fmt = "%H:%M:%S" if when.date() == wall.date() else "%Y-%m-%d %H:%M:%S"
    return f"{when:{fmt}} (in {duration_text(at - now)})"
