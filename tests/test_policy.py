"""The scheduler, with plain values: conditions, job state, an injected clock and wall time."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syftd.conditions.value import Conditions, Connectivity
from syftd.config import ConstraintsConfig, GridConfig, JobConfig, ScheduleConfig
from syftd.outcomes import CycleOutcome, Ended, ExpiryReason, Failure, Rejection, ReportOutcome
from syftd.policy import (
    Action,
    Decision,
    JobState,
    Reason,
    after_cycle,
    after_expired,
    after_failure,
    after_finished,
    after_rejection,
    after_report,
    after_success,
    backoff_delay,
    decide,
    expiry_reason,
    explain,
    stable_at,
    track,
    unmet,
)

WALL = dt.datetime(2026, 3, 10, 12, 0, 0)
T0 = 1000.0


def job(**sections: Any) -> JobConfig:
    """A job with the given constraints/schedule keyword overrides (stable_for_s 30 by default)."""
    constraints = ConstraintsConfig(**sections.pop("constraints", {}))
    schedule = ScheduleConfig(**sections.pop("schedule", {}))
    grid = GridConfig(url="http://127.0.0.1:5000", model="mnist", version="1.0")
    return JobConfig(name="mnist", grid=grid, constraints=constraints, schedule=schedule, **sections)


def good(at: float = 0.0) -> Conditions:
    """On AC and online since ``at`` (long before T0)."""
    return Conditions().updated(
        at, "test", on_external_power=True, online=True, connectivity=Connectivity.FULL, metered=False, sleeping=False
    )


def run(
    c: Conditions,
    state: JobState | None = None,
    now: float = T0,
    wall: dt.datetime = WALL,
    j: JobConfig | None = None,
    **kw: Any,
) -> Decision:
    return decide(c, state or JobState(), now, wall, j or job(), **kw)


class TestStart:
    def test_due_when_every_constraint_held_long_enough(self) -> None:
        """Plugged in and online for longer than stable_for_s: start now."""
        d = run(good())
        assert (Action.START, Reason.DUE) == (d.action, d.reason)
        assert d.starts

    def test_disabled_job_is_stopped_even_when_forced(self) -> None:
        """A disabled job never runs."""
        d = run(good(), JobState(forced=True), j=job(enabled=False))
        assert (Action.STOPPED, Reason.DISABLED) == (d.action, d.reason)

    def test_running_job_reports_running(self) -> None:
        """While a cycle runs the decision is RUNNING, whatever else holds."""
        assert Action.RUNNING == run(Conditions(), JobState(running=True)).action

    def test_concurrency_limit_waits_for_a_slot(self) -> None:
        """With max_running cycles of other jobs running, a due job waits for a slot; a free slot starts it."""
        d = run(good(), running=1, max_running=1)
        assert (Action.WAIT_FOR, Reason.SLOTS) == (d.action, d.reason)
        assert "max_concurrent_jobs" == d.unmet[0].constraint
        assert run(good(), running=1, max_running=2).starts


class TestConstraints:
    def test_on_battery_is_unmet_with_since(self) -> None:
        """Unplugged: wait for conditions, the unmet power constraint says since when."""
        c = good().updated(990.0, "test", on_external_power=False)
        d = run(c)
        assert (Action.WAIT_FOR, Reason.CONDITIONS) == (d.action, d.reason)
        assert [("external_power", 990.0)] == [(u.constraint, u.since) for u in d.unmet]
        assert "on battery since 11:59:50" == d.unmet[0].describe(T0, WALL)
        assert "on battery for 10 s" == d.unmet[0].describe(T0)

    def test_unknown_facts_are_named_unknown(self) -> None:
        """Nothing known yet: each required fact is reported as unknown, and nothing starts."""
        d = run(
            Conditions(),
            j=job(
                constraints={
                    "requires_unmetered": True,
                    "requires_idle": True,
                    "max_temperature_c": 80.0,
                    "min_free_disk_mb": 100.0,
                }
            ),
        )
        texts = {u.constraint: u.what for u in d.unmet}
        assert {
            "external_power": "power source unknown",
            "network": "network state unknown",
            "unmetered": "metered status unknown",
            "idle": "idle state unknown",
            "temperature": "temperature unknown",
            "disk": "free disk unknown",
        } == texts
        assert all(u.unknown for u in d.unmet)

    @pytest.mark.parametrize(
        ("facts", "constraints", "text", "reason"),
        [
            ({"online": False}, {}, "network offline", ExpiryReason.NETWORK_LOST),
            (
                {"online": False, "connectivity": Connectivity.PORTAL},
                {},
                "network offline (captive portal)",
                ExpiryReason.NETWORK_LOST,
            ),
            (
                {"online": False, "connectivity": Connectivity.LIMITED},
                {},
                "network offline (limited connectivity)",
                ExpiryReason.NETWORK_LOST,
            ),
            ({"metered": True}, {"requires_unmetered": True}, "metered link", ExpiryReason.METERED),
            (
                {"on_external_power": False, "battery_percent": 12.0},
                {"min_battery_percent": 20, "requires_external_power": False},
                "battery 12% < 20%",
                ExpiryReason.BATTERY_LOW,
            ),
            ({"idle": False}, {"requires_idle": True}, "not idle", ExpiryReason.IDLE_LOST),
            ({"temperature_c": 91.0}, {"max_temperature_c": 80.0}, "too hot 91°C > 80°C", ExpiryReason.THERMAL),
            ({"free_disk_mb": 50.0}, {"min_free_disk_mb": 100.0}, "disk 50 MB free < 100 MB", ExpiryReason.DISK_LOW),
            ({"sleeping": True}, {}, "machine going to sleep", ExpiryReason.SLEEP),
            ({"on_external_power": False}, {}, "on battery", ExpiryReason.POWER_LOST),
        ],
    )
    def test_each_loss_has_a_text_and_an_expiry_reason(
        self, facts: dict[str, Any], constraints: dict[str, Any], text: str, reason: ExpiryReason
    ) -> None:
        """Each lost constraint is named in words, and expires a running cycle with its own reason."""
        c = good().updated(T0, "test", **facts)
        k = ConstraintsConfig(**constraints)
        assert [text] == [u.what for u in unmet(c, k, T0)]
        assert reason == expiry_reason(c, k)

    def test_charge_limited_battery_on_ac_is_powered(self) -> None:
        """On AC at 80% and not charging (a charge limit) is powered: nothing unmet, no expiry."""
        c = good().updated(0.0, "test", battery_percent=80.0)
        assert [] == unmet(c, ConstraintsConfig(min_battery_percent=20), T0)
        assert expiry_reason(c, ConstraintsConfig(min_battery_percent=20)) is None

    def test_battery_minimum_without_a_battery_on_ac_holds(self) -> None:
        """A desktop (no battery reading) on AC satisfies min_battery_percent; unknown power does not."""
        k = ConstraintsConfig(min_battery_percent=20)
        assert [] == unmet(good(), k, T0)
        names = [u.constraint for u in unmet(Conditions(), k, T0)]
        assert ["external_power", "network", "battery"] == names

    def test_unknown_does_not_expire_a_running_cycle(self) -> None:
        """A fact that became unknown (its monitor left) does not expire; only a known loss does."""
        c = good().updated(T0, "test", on_external_power=None, online=None)
        assert expiry_reason(c, ConstraintsConfig()) is None

    def test_constraints_not_required_are_ignored(self) -> None:
        """A job that requires neither power nor network runs on battery and offline."""
        c = Conditions().updated(0.0, "t", on_external_power=False, online=False)
        j = job(constraints={"requires_external_power": False, "requires_network": False})
        assert run(c, j=j).starts
        assert expiry_reason(c, j.constraints) is None

    def test_expiry_is_immediate_without_debounce(self) -> None:
        """A loss expires at the very instant it was published."""
        c = good().updated(T0, "test", on_external_power=False)
        assert ExpiryReason.POWER_LOST == expiry_reason(c, ConstraintsConfig(stable_for_s=3600))


class TestDebounce:
    def test_regained_condition_waits_until_stable(self) -> None:
        """Replugged 10 s ago with stable_for_s 30: wait until replug + 30, not 'unmet'; then start."""
        c = good().updated(990.0, "t", on_external_power=False).updated(T0 - 10, "t", on_external_power=True)
        d = run(c)
        assert (Action.WAIT_UNTIL, Reason.STABILIZING, T0 + 20) == (d.action, d.reason, d.at)
        assert [] == list(d.unmet)
        assert run(c, now=T0 + 20).starts

    def test_flapping_charger_never_starts_then_stable_starts(self) -> None:
        """200 flips at random intervals under stable_for_s never start a cycle; holding long enough does."""
        rng = random.Random(7)
        k_job = job(constraints={"stable_for_s": 2.0})
        c, now, tracked = good(), T0, JobState().constraint_since
        starts = 0
        for i in range(200):
            now += rng.uniform(0.01, 1.9)
            c = c.updated(now, "upower", on_external_power=i % 2 == 1)
            tracked = track(tracked, c, k_job.constraints, now)
            for probe in (now, now + rng.uniform(0, 1.99)):
                d = decide(c, JobState(constraint_since=tracked), probe, WALL, k_job)
                starts += d.starts
        assert 0 == starts
        assert c.on_external_power is True
        d = decide(c, JobState(constraint_since=tracked), now + 1.0, WALL, k_job)
        assert Action.WAIT_UNTIL == d.action
        assert pytest.approx(now + 2.0) == d.at
        assert decide(c, JobState(constraint_since=tracked), now + 2.0, WALL, k_job).starts

    def test_numeric_fact_stability_counts_from_the_threshold_crossing(self) -> None:
        """Temperature moving while staying below the limit does not restart the stability wait."""
        k = ConstraintsConfig(max_temperature_c=80.0, stable_for_s=30.0)
        c = good().updated(0.0, "t", temperature_c=90.0)
        tracked = track({}, c, k, 0.0)
        c = c.updated(100.0, "t", temperature_c=70.0)
        tracked = track(tracked, c, k, 100.0)
        for t in range(110, 200, 10):
            c = c.updated(float(t), "t", temperature_c=70.0 + t % 3)
            tracked = track(tracked, c, k, float(t))
        assert stable_at(c, k, 200.0, tracked) is None
        assert stable_at(c, k, 200.0) is not None
        assert (True, 100.0) == tracked["temperature"]

    def test_stable_for_zero_starts_at_once(self) -> None:
        """stable_for_s = 0: a regained condition counts immediately."""
        c = good().updated(T0, "t", on_external_power=True, online=True)
        assert run(c, j=job(constraints={"stable_for_s": 0.0})).starts

    def test_unmet_since_comes_from_tracking_for_numbers(self) -> None:
        """The 'since' of a low battery is when it went below the minimum, not its last percent change."""
        k = ConstraintsConfig(min_battery_percent=20, requires_external_power=False)
        c = good().updated(10.0, "t", battery_percent=25.0, on_external_power=False)
        tracked = track({}, c, k, 10.0)
        c = c.updated(20.0, "t", battery_percent=19.0)
        tracked = track(tracked, c, k, 20.0)
        c = c.updated(30.0, "t", battery_percent=18.0)
        tracked = track(tracked, c, k, 30.0)
        assert [20.0] == [u.since for u in unmet(c, k, 40.0, tracked)]


class TestSchedule:
    def test_interval_after_success(self) -> None:
        """interval_s after a success: wait until last success + interval, then start."""
        j = job(schedule={"interval_s": 600})
        state = after_success(JobState(running=True), T0)
        d = run(good(), state, now=T0 + 1, j=j)
        assert (Action.WAIT_UNTIL, Reason.INTERVAL, T0 + 600) == (d.action, d.reason, d.at)
        assert run(good(), state, now=T0 + 600, j=j).starts

    def test_backoff_after_failure_then_start(self) -> None:
        """A failure backs off by the jittered delay; after it the job starts."""
        state = after_failure(JobState(), T0, ScheduleConfig(), u=0.5)
        assert (1, T0 + 15.0) == (state.failures, state.backoff_until)
        d = run(good(), state, now=T0 + 1)
        assert (Action.WAIT_UNTIL, Reason.BACKOFF, T0 + 15.0) == (d.action, d.reason, d.at)
        assert run(good(), state, now=T0 + 15.0).starts

    def test_rejection_timeout_plus_jitter_is_honoured_even_when_triggered(self) -> None:
        """The node's timeout (plus jitter) holds even for a trigger; only force skips it."""
        state = after_rejection(JobState(), T0, 120.0, ScheduleConfig(rejection_jitter_s=10.0), u=0.5)
        assert T0 + 125.0 == state.rejected_until
        d = run(good(), dataclasses.replace(state, triggered=True), now=T0 + 1)
        assert (Action.WAIT_UNTIL, Reason.REJECTED, T0 + 125.0) == (d.action, d.reason, d.at)
        assert run(good(), dataclasses.replace(state, forced=True), now=T0 + 1).starts
        assert run(good(), state, now=T0 + 125.0).starts

    def test_finished_retries_every_period_by_default(self) -> None:
        """Rejected without timeout and on_finished = retry: next attempt after finished_retry_s."""
        state = after_finished(JobState(), T0, ScheduleConfig(finished_retry_s=3600))
        d = run(good(), state, now=T0 + 1)
        assert (Action.WAIT_UNTIL, Reason.FINISHED, T0 + 3600) == (d.action, d.reason, d.at)

    def test_finished_stop_is_stopped_until_triggered(self) -> None:
        """on_finished = stop: stopped, and a trigger runs it once more."""
        state = after_finished(JobState(), T0, ScheduleConfig(on_finished="stop"))
        d = run(good(), state)
        assert (Action.STOPPED, Reason.FINISHED_STOP) == (d.action, d.reason)
        assert run(good(), dataclasses.replace(state, triggered=True)).starts

    def test_earliest_start_in_the_future(self) -> None:
        """earliest_start 2026-03-10T14:30 at 12:00: wait 2.5 h."""
        j = job(schedule={"earliest_start": "2026-03-10T14:30:00"})
        d = run(good(), j=j)
        assert (Action.WAIT_UNTIL, Reason.EARLIEST_START, T0 + 9000) == (d.action, d.reason, d.at)
        assert run(good(), j=j, wall=dt.datetime(2026, 3, 10, 14, 30)).starts

    def test_earliest_start_with_an_aware_wall(self) -> None:
        """A naive earliest_start is read in the wall's zone; an aware one is compared as is."""
        tz = dt.timezone(dt.timedelta(hours=2))
        wall = WALL.replace(tzinfo=tz)
        d = run(good(), wall=wall, j=job(schedule={"earliest_start": "2026-03-10T13:00:00"}))
        assert T0 + 3600 == d.at
        d = run(good(), wall=wall, j=job(schedule={"earliest_start": "2026-03-10T12:00:00+01:00"}))
        assert T0 + 3600 == d.at

    @pytest.mark.parametrize(
        ("window", "wall", "wait_s"),
        [
            ("22:00-07:00", dt.datetime(2026, 3, 10, 12, 0), 10 * 3600),
            ("22:00-07:00", dt.datetime(2026, 3, 10, 23, 0), 0),
            ("22:00-07:00", dt.datetime(2026, 3, 11, 6, 59), 0),
            ("22:00-07:00", dt.datetime(2026, 3, 11, 7, 0), 15 * 3600),
            ("00:00-24:00", dt.datetime(2026, 3, 10, 23, 59, 59), 0),
            ("09:00-17:00", dt.datetime(2026, 3, 10, 8, 59, 30), 30),
            ("09:00-17:00", dt.datetime(2026, 3, 10, 17, 0), 16 * 3600),
            ("10:00-10:00", dt.datetime(2026, 3, 10, 3, 0), 0),
        ],
    )
    def test_windows(self, window: str, wall: dt.datetime, wait_s: float) -> None:
        """Windows in local time, wrapping midnight; outside one the job waits for it to open."""
        d = run(good(), wall=wall, j=job(schedule={"windows": (window,)}))
        if wait_s == 0:
            assert d.starts
        else:
            assert (Action.WAIT_UNTIL, Reason.WINDOW, T0 + wait_s) == (d.action, d.reason, d.at)

    def test_nearest_of_several_windows(self) -> None:
        """Of two windows the next one to open counts."""
        j = job(schedule={"windows": ("22:00-23:00", "13:00-14:00")})
        assert T0 + 3600 == run(good(), j=j).at

    def test_window_counted_after_other_gates(self) -> None:
        """A backoff ending after today's window closed waits for the window's next opening."""
        j = job(schedule={"windows": ("12:00-13:00",)})
        state = JobState(failures=3, backoff_until=T0 + 7200)
        d = run(good(), state, j=j)
        assert (Reason.WINDOW, T0 + 24 * 3600) == (d.reason, d.at)
        assert {Reason.BACKOFF, Reason.WINDOW} == {w.reason for w in d.waits}

    def test_trigger_skips_schedule_not_constraints(self) -> None:
        """A trigger skips interval, backoff, earliest start and windows, but waits for power."""
        j = job(schedule={"interval_s": 600, "windows": ("01:00-02:00",), "earliest_start": "2030-01-01T00:00:00"})
        state = JobState(last_success=T0 - 1, failures=2, backoff_until=T0 + 50, triggered=True)
        assert Reason.TRIGGERED == run(good(), state, j=j).reason
        on_battery = good().updated(T0, "t", on_external_power=False)
        assert Action.WAIT_FOR == run(on_battery, state, j=j).action

    def test_force_skips_constraints_and_debounce(self) -> None:
        """Force starts with power lost and a condition not yet stable."""
        c = good().updated(T0, "t", on_external_power=False, online=True)
        d = run(c, JobState(forced=True))
        assert (Action.START, Reason.FORCED) == (d.action, d.reason)

    def test_conditions_outrank_time_gates(self) -> None:
        """Unmet conditions and a backoff: waiting for conditions, the backoff listed too."""
        c = good().updated(T0, "t", online=False)
        d = run(c, JobState(failures=1, backoff_until=T0 + 30))
        assert Action.WAIT_FOR == d.action
        assert [Reason.BACKOFF] == [w.reason for w in d.waits]


class TestSpool:
    def test_pending_spool_reports_before_any_cycle_even_on_battery(self) -> None:
        """A spooled diff needs only the network: on battery it is reported, no new cycle starts."""
        c = good().updated(0.0, "t", on_external_power=False)
        d = run(c, JobState(spool_pending=1))
        assert (Action.REPORT, Reason.SPOOL) == (d.action, d.reason)

    def test_pending_spool_offline_waits_for_network(self) -> None:
        """Offline with a spooled diff: wait for the network only."""
        c = good().updated(T0, "t", online=False, on_external_power=False)
        d = run(c, JobState(spool_pending=1))
        assert (Action.WAIT_FOR, Reason.SPOOL) == (d.action, d.reason)
        assert ["network"] == [u.constraint for u in d.unmet]

    def test_pending_spool_honours_backoff(self) -> None:
        """A failed report backs off before the next attempt."""
        d = run(good(), JobState(spool_pending=1, failures=1, backoff_until=T0 + 10))
        assert (Action.WAIT_UNTIL, Reason.BACKOFF, T0 + 10) == (d.action, d.reason, d.at)


class TestTransitions:
    def test_expired_by_condition_is_eligible_again_without_backoff(self) -> None:
        """power_lost expiry: no failure counted; budget expiry: a failure with backoff."""
        s = ScheduleConfig()
        state = after_expired(JobState(running=True), T0, ExpiryReason.POWER_LOST, s, 0.9)
        assert (0, None, False) == (state.failures, state.backoff_until, state.running)
        state = after_expired(JobState(running=True), T0, ExpiryReason.BUDGET, s, 0.9)
        assert 1 == state.failures
        assert state.backoff_until is not None

    def test_success_clears_failures(self) -> None:
        """After a success, failures, backoff and finished markers are gone."""
        state = after_success(JobState(failures=4, backoff_until=T0 + 5, finished_until=T0 + 9), T0)
        assert (0, None, None, T0) == (state.failures, state.backoff_until, state.finished_until, state.last_success)


class TestBackoff:
    def test_defaults_double_from_30s_to_5h(self) -> None:
        """With u just under 1 the delay follows 30, 60, 120 ... capped at 18000 s."""
        s = ScheduleConfig()
        delays = [backoff_delay(n, s.backoff_initial_s, s.backoff_max_s, 1.0) for n in range(1, 12)]
        assert [30, 60, 120, 240, 480, 960, 1920, 3840, 7680, 15360, 18000] == delays
        assert 0.0 == backoff_delay(0, 30, 18000, 0.5)

    @given(
        st.integers(min_value=-5, max_value=10_000),
        st.floats(0.01, 86400),
        st.floats(0.01, 7 * 86400),
        st.floats(0.0, 1.0, exclude_max=True),
    )
    def test_within_bounds(self, failures: int, initial: float, cap: float, u: float) -> None:
        """0 <= delay <= max_s, and the cap before jitter never decreases with failures."""
        d = backoff_delay(failures, initial, cap, u)
        assert 0.0 <= d <= cap
        assert backoff_delay(failures, initial, cap, 0.999999) <= backoff_delay(failures + 1, initial, cap, 0.999999)


class TestExplain:
    def test_explain_wait_for_is_json_with_since_times(self) -> None:
        """why: a summary, one reason per unmet constraint with its local since-time; JSON-able."""
        c = good().updated(T0 - 57, "t", on_external_power=False)
        out = explain(run(c, JobState(failures=1, backoff_until=T0 + 90)))
        json.dumps(out)
        assert "wait_for" == out["action"]
        assert "on battery since 11:59:03" == out["reasons"][0]
        assert "backoff after 1 failure(s): until 12:01:30 (in 1 min 30 s)" == out["reasons"][1]
        assert 57.0 == out["unmet"][0]["since_s"]

    def test_explain_wait_until(self) -> None:
        """why while waiting for a window: when, and in how long."""
        out = explain(run(good(), j=job(schedule={"windows": ("22:00-07:00",)})))
        assert out["summary"].startswith("waiting until 22:00:00 (in 10 h 0 min)")
        assert 36000.0 == out["in_s"]


_facts = st.fixed_dictionaries(
    {
        "on_external_power": st.none() | st.booleans(),
        "battery_percent": st.none() | st.floats(0, 100),
        "online": st.none() | st.booleans(),
        "connectivity": st.none() | st.sampled_from(Connectivity),
        "metered": st.none() | st.booleans(),
        "idle": st.none() | st.booleans(),
        "sleeping": st.none() | st.booleans(),
        "temperature_c": st.none() | st.floats(-20, 120),
        "free_disk_mb": st.none() | st.floats(0, 1e6),
    }
)
_constraints = st.builds(
    ConstraintsConfig,
    requires_external_power=st.booleans(),
    requires_network=st.booleans(),
    requires_unmetered=st.booleans(),
    min_battery_percent=st.floats(0, 100),
    requires_idle=st.booleans(),
    max_temperature_c=st.none() | st.floats(-50, 200),
    min_free_disk_mb=st.floats(0, 1e6),
    stable_for_s=st.floats(0, 100),
)
_schedule = st.builds(
    ScheduleConfig,
    interval_s=st.floats(0, 1e5),
    backoff_initial_s=st.floats(0.01, 100),
    backoff_max_s=st.floats(100, 1e5),
    windows=st.lists(st.sampled_from(["22:00-07:00", "00:00-24:00", "09:00-17:00", "12:00-12:00"]), max_size=2).map(
        tuple
    ),
    earliest_start=st.none() | st.sampled_from(["2026-03-10T11:00:00", "2026-03-11T00:00:00+05:00"]),
    on_finished=st.sampled_from(["retry", "stop"]),
)
_state = st.builds(
    JobState,
    last_success=st.none() | st.floats(0, 2000),
    failures=st.integers(0, 50),
    backoff_until=st.none() | st.floats(0, 5000),
    rejected_until=st.none() | st.floats(0, 5000),
    finished_until=st.none() | st.floats(0, 5000),
    finished_stopped=st.booleans(),
    spool_pending=st.integers(0, 2),
    running=st.booleans(),
    triggered=st.booleans(),
    forced=st.booleans(),
)


class TestProperties:
    @settings(max_examples=400, deadline=None)
    @given(
        _facts,
        st.floats(0, 2000),
        _constraints,
        _schedule,
        _state,
        st.floats(0, 3000),
        st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2027, 1, 1)),
        st.integers(0, 3),
    )
    def test_decide_never_raises_and_never_starts_on_a_lost_condition(
        self,
        facts: dict[str, Any],
        changed: float,
        k: ConstraintsConfig,
        s: ScheduleConfig,
        state: JobState,
        now: float,
        wall: dt.datetime,
        running: int,
    ) -> None:
        """Any input gives a decision; a known-lost or unknown required condition never starts unless forced;
        a WAIT_UNTIL is in the future; explain is JSON-able."""
        c = Conditions().updated(changed, "h", **facts)
        j = job(constraints=dataclasses.asdict(k), schedule=dataclasses.asdict(s))
        d = decide(c, state, now, wall, j, running=running, max_running=2)
        json.dumps(explain(d))
        if d.starts and not state.forced:
            assert [] == unmet(c, k, now)
            assert expiry_reason(c, k) is None
            assert running < 2
        if d.action is Action.WAIT_UNTIL:
            assert d.at is not None
            assert d.at > now
        if not state.running and d.action is Action.RUNNING:
            pytest.fail("RUNNING without a running cycle")


class TestWindowProperty:
    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.tuples(st.integers(0, 23), st.integers(0, 59), st.integers(0, 24), st.integers(0, 59)),
            min_size=1,
            max_size=3,
        ),
        st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2027, 1, 1)),
    )
    def test_a_window_wait_ends_inside_a_window(
        self, spans: list[tuple[int, int, int, int]], wall: dt.datetime
    ) -> None:
        """Whatever the windows and the time, the job starts now inside one, or waits less than a day
        until a moment inside one."""
        windows = tuple(f"{sh:02d}:{sm:02d}-{eh:02d}:{0 if eh == 24 else em:02d}" for sh, sm, eh, em in spans)
        d = run(good(), wall=wall, j=job(schedule={"windows": windows}))
        if d.starts:
            return
        assert (Action.WAIT_UNTIL, Reason.WINDOW) == (d.action, d.reason)
        assert d.at is not None
        assert 0 < d.at - T0 <= 86400
        later = wall + dt.timedelta(seconds=d.at - T0)
        assert run(good(), wall=later, j=job(schedule={"windows": windows})).starts


class TestExplainOthers:
    @pytest.mark.parametrize(
        ("state", "action"),
        [
            (JobState(spool_pending=2), "report"),
            (JobState(finished_stopped=True), "stopped"),
            (JobState(running=True), "running"),
            (JobState(), "start"),
        ],
    )
    def test_summary_for_each_action(self, state: JobState, action: str) -> None:
        """Every action explains itself with a non-empty summary and a JSON-able body."""
        out = explain(run(good(), state))
        json.dumps(out)
        assert action == out["action"]
        assert out["summary"]


class TestAfterCycle:
    """What follows a cycle, from its typed end alone: plain values in, a JobState out."""

    S = ScheduleConfig(backoff_initial_s=10.0, backoff_max_s=100.0, rejection_jitter_s=4.0, finished_retry_s=3600.0)
    BUSY = JobState(running=True, running_since=T0 - 5, failures=2, backoff_until=T0 - 1)

    @pytest.mark.parametrize("outcome", [CycleOutcome.DONE, CycleOutcome.SPOOLED, CycleOutcome.DISCARDED])
    def test_a_finished_diff_is_a_success(self, outcome: CycleOutcome) -> None:
        state = after_cycle(self.BUSY, Ended(outcome), T0, self.S, 0.5)
        assert (state.last_success, state.failures, state.backoff_until, state.running) == (T0, 0, None, False)

    def test_a_rejection_with_a_timeout_waits_for_it_plus_jitter(self) -> None:
        ended = Ended(CycleOutcome.REJECTED, rejection=Rejection.TIMEOUT, timeout_s=120.0)
        state = after_cycle(self.BUSY, ended, T0, self.S, 0.5)
        assert state.rejected_until == T0 + 120.0 + 2.0
        assert state.failures == 2 and state.last_success is None

    def test_a_rejection_without_a_timeout_applies_the_finished_rule(self) -> None:
        ended = Ended(CycleOutcome.REJECTED, rejection=Rejection.FINISHED)
        state = after_cycle(self.BUSY, ended, T0, self.S, 0.5)
        assert (state.finished_until, state.rejected_until) == (T0 + 3600.0, None)

    @pytest.mark.parametrize(
        ("reason", "backs_off"),
        [(ExpiryReason.POWER_LOST, False), (ExpiryReason.MANUAL, False), (ExpiryReason.SHUTDOWN, False),
         (ExpiryReason.BUDGET, True), (ExpiryReason.MEMORY, True)],
    )  # fmt: skip
    def test_an_expiry_backs_off_only_when_the_cycle_itself_was_too_big(
        self, reason: ExpiryReason, backs_off: bool
    ) -> None:
        state = after_cycle(self.BUSY, Ended.expired(reason), T0, self.S, 0.5)
        assert state.running is False
        assert (state.failures == 3) is backs_off
        if backs_off:
            assert state.backoff_until == T0 + 0.5 * min(100.0, 10.0 * 2**2)

    @pytest.mark.parametrize("failure", list(Failure))
    def test_every_failure_backs_off_with_jitter_under_a_doubling_cap(self, failure: Failure) -> None:
        state = after_cycle(self.BUSY, Ended.failed(failure), T0, self.S, 0.25)
        assert state.failures == 3 and state.backoff_until == T0 + 0.25 * 40.0

    def test_the_reason_word_comes_from_the_typed_detail(self) -> None:
        assert Ended.expired(ExpiryReason.POWER_LOST).reason == "power_lost"
        assert Ended.failed(Failure.UNAVAILABLE).reason == "unavailable"
        assert Ended(CycleOutcome.REJECTED, rejection=Rejection.FINISHED).reason == "finished"
        assert Ended(CycleOutcome.DONE).reason is None

    def test_after_a_report_a_failure_backs_off_an_abort_waits_and_settled_diffs_count_as_success(self) -> None:
        busy = JobState(running=True)
        failed = after_report(busy, (ReportOutcome.REPORTED, ReportOutcome.PENDING), T0, self.S, 0.5)
        assert failed.failures == 1 and failed.backoff_until == T0 + 5.0
        aborted = after_report(busy, (ReportOutcome.ABORTED,), T0, self.S, 0.5)
        assert (aborted.running, aborted.failures, aborted.last_success) == (False, 0, None)
        settled = after_report(busy, (ReportOutcome.REPORTED, ReportOutcome.DISCARDED), T0, self.S, 0.5)
        assert settled.last_success == T0


def test_the_pure_core_imports_no_io_code() -> None:
    """policy, constraints, outcomes and the Conditions value load no event loop, network, D-Bus, logging
    or trainer code."""
    import subprocess
    import sys

    code = (
        "import sys, syftd.policy, syftd.jobstate, syftd.constraints, syftd.outcomes, syftd.conditions.value;"
        "print(' '.join(sorted(sys.modules)))"
    )
    loaded = set(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    )
    forbidden = {"asyncio", "aiohttp", "dbus_fast", "structlog", "socket", "syftd.grid", "syftd.trainer", "syftd.log"}
    assert loaded & forbidden == set()
