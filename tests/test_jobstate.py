"""The job state's transitions with plain values: what a real node's rejections, the operator's
expiry and regained conditions do to the next cycle (syftd.jobstate, through syftd.policy)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from syftd.conditions.value import Conditions, Connectivity
from syftd.config import ConstraintsConfig, GridConfig, JobConfig, ScheduleConfig
from syftd.jobstate import AVERAGING_FIRST_S, AVERAGING_LEARNED_MAX_S, AVERAGING_MIN_S
from syftd.outcomes import CycleOutcome, Ended, ExpiryReason, Failure, Rejection
from syftd.policy import (
    AVERAGING_CAP_S,
    Action,
    JobState,
    Reason,
    after_cycle,
    decide,
    explain,
    observe,
    pause,
)

WALL = dt.datetime(2026, 3, 10, 12, 0, 0)
T0 = 1000.0
S = ScheduleConfig(backoff_initial_s=30.0, backoff_max_s=18000.0, rejection_jitter_s=5.0, finished_retry_s=3600.0)
DONE = Ended(CycleOutcome.DONE, accepted=True)


def rejected(timeout_s: float | None) -> Ended:
    """A cycle request rejected with the node's timeout as sent (None: without one)."""
    if timeout_s is None:
        return Ended(CycleOutcome.REJECTED, rejection=Rejection.FINISHED)
    return Ended(CycleOutcome.REJECTED, rejection=Rejection.TIMEOUT, timeout_s=timeout_s)


def job(windows: tuple[str, ...] = (), stable_for_s: float = 30.0) -> JobConfig:
    grid = GridConfig(url="http://127.0.0.1:5000", model="mnist", version="1.0")
    return JobConfig(
        name="mnist",
        grid=grid,
        constraints=ConstraintsConfig(stable_for_s=stable_for_s),
        schedule=dataclasses.replace(S, windows=windows),
    )


def good(at: float = 0.0) -> Conditions:
    return Conditions().updated(
        at, "test", on_external_power=True, online=True, connectivity=Connectivity.FULL, metered=False, sleeping=False
    )


class TestAveragingInProgress:
    """A real node averages ~0.2 s after answering a report and keeps the worker assigned until then."""

    @pytest.mark.parametrize("timeout_s", [None, -3600.0, 0.0, 28792.0])
    def test_a_rejection_right_after_a_report_is_retried_shortly_whatever_the_timeout(
        self, timeout_s: float | None
    ) -> None:
        state = after_cycle(JobState(), DONE, T0, S, 0.5)
        state = after_cycle(state, rejected(timeout_s), T0 + 0.01, S, 1.0)
        assert state.rejected_until is not None and state.rejected_until - (T0 + 0.01) == pytest.approx(0.25)
        assert state.finished_until is None and state.failures == 0

    def test_the_retries_grow_and_stop_being_read_as_averaging_after_the_cap(self) -> None:
        state, now, delays = after_cycle(JobState(), DONE, T0, S, 0.5), T0, []
        while True:
            now += 0.01
            state = after_cycle(state, rejected(None), now, S, 1.0)
            if state.finished_until is not None:
                break
            assert state.rejected_until is not None
            delays.append(state.rejected_until - now)
            now = state.rejected_until
        # retries at 0.25, 0.3125, 0.390625, 0.48828125 s after the report, then twice as long each
        assert delays[:6] == pytest.approx([0.25, 0.0625, 0.078125, 0.09765625, 0.48828125, 0.9765625])
        assert delays[1:-1] == sorted(delays[1:-1])  # the last one is cut at the cap
        assert now - T0 == pytest.approx(AVERAGING_CAP_S, abs=0.2)
        assert state.finished_until == pytest.approx(now + 3600.0)  # the node's answer, taken as it is

    def test_a_node_that_averages_fast_is_asked_again_sooner_each_cycle_down_to_the_floor(self) -> None:
        """Accepted at the first retry every time: the first retry halves per cycle, down to 10 ms."""
        state, now, firsts = JobState(), T0, []
        for _ in range(20):
            state = after_cycle(state, DONE, now, S, 0.5)
            state = after_cycle(state, rejected(4.0), now + 0.001, S, 1.0)
            assert state.rejected_until is not None
            firsts.append(state.rejected_until - (now + 0.001))
            now = state.rejected_until + 0.1
        assert firsts[:3] == pytest.approx([0.25, 0.125, 0.0625])
        assert firsts[-1] == pytest.approx(AVERAGING_MIN_S)

    def test_once_a_first_retry_was_too_early_it_shrinks_by_a_fifth_only(self) -> None:
        """0.25 s halves to 0.125 s; that retry is too early (accepted at the second, 1.25 × 0.125 s after
        the report): the next starts there, and an acceptance at the first retry then shrinks it by 0.8."""
        state, now = JobState(), T0
        for rejections in (1, 2, 1):  # accepted at the first, then the second, then the first retry
            state = after_cycle(state, DONE, now, S, 0.5)
            for _ in range(rejections):
                state = after_cycle(state, rejected(4.0), now + 0.001, S, 1.0)
                assert state.rejected_until is not None
                now = state.rejected_until
        state = after_cycle(state, DONE, now, S, 0.5)
        assert state.averaging_too_early
        assert state.averaging_first_s == pytest.approx(0.125 * 1.25 * 0.8)

    def test_a_node_that_averages_slowly_is_first_asked_again_where_it_last_answered(self) -> None:
        """Accepted at the third retry (1.5625 times the first after the report): the next report's first
        retry comes there; never later than AVERAGING_LEARNED_MAX_S."""
        state, now = JobState(), T0
        for _ in range(3):
            state = after_cycle(state, DONE, now, S, 0.5)
            for _ in range(3):  # the request right after the report, then two retries: all rejected
                state = after_cycle(state, rejected(4.0), now + 0.001, S, 1.0)
                assert state.rejected_until is not None
                now = state.rejected_until
        assert state.averaging_first_s == pytest.approx(0.25 * 1.5625**2)
        state = after_cycle(state, DONE, now, S, 0.5)
        state = after_cycle(state, rejected(4.0), now + 0.001, S, 1.0)
        assert state.rejected_until == pytest.approx(now + 0.001 + 0.25 * 1.5625**3)
        for _ in range(5):  # accepted at the sixth retry, 7.5 s after the report: learned as 5 s
            assert state.rejected_until is not None
            state = after_cycle(state, rejected(4.0), state.rejected_until, S, 1.0)
        state = after_cycle(state, DONE, state.rejected_until or 0.0, S, 0.5)
        assert state.averaging_first_s == AVERAGING_LEARNED_MAX_S

    def test_a_cycle_kept_open_past_the_cap_teaches_nothing_about_averaging(self) -> None:
        state = after_cycle(JobState(), DONE, T0, S, 0.5)
        state = after_cycle(state, rejected(28792.0), T0 + 0.01, S, 1.0)
        state = after_cycle(state, rejected(28792.0), T0 + AVERAGING_CAP_S + 1, S, 0.0)
        assert state.rejections == 1
        state = after_cycle(state, DONE, T0 + 28800, S, 0.5)
        assert state.averaging_first_s == AVERAGING_FIRST_S

    def test_after_the_cap_a_positive_timeout_is_honoured(self) -> None:
        state = after_cycle(JobState(), DONE, T0, S, 0.5)
        now = T0 + AVERAGING_CAP_S + 1
        state = after_cycle(state, rejected(28792.0), now, S, 0.0)
        assert state.rejected_until == pytest.approx(now + 28792.0)

    def test_an_accepted_cycle_ends_the_averaging_reading(self) -> None:
        state = after_cycle(JobState(), DONE, T0, S, 0.5)
        state = after_cycle(state, Ended.failed(Failure.UNAVAILABLE), T0 + 1, S, 0.5)
        assert state.last_report_at == T0  # a failure before acceptance: the report may still be averaged
        state = after_cycle(
            state, Ended(CycleOutcome.EXPIRED, expiry=ExpiryReason.POWER_LOST, accepted=True), T0 + 2, S, 0.5
        )
        assert state.last_report_at is None and state.averaging_retries == 0
        state = after_cycle(state, rejected(4.0), T0 + 3, S, 0.0)
        assert state.rejected_until == pytest.approx(T0 + 3 + 4.0)


class TestRejectionTimeouts:
    """Not right after a report: the node's timeout as it sent it."""

    def test_a_positive_timeout_waits_for_it_plus_jitter(self) -> None:
        state = after_cycle(JobState(), rejected(120.0), T0, S, 0.5)
        assert state.rejected_until == pytest.approx(T0 + 120.0 + 2.5)

    @pytest.mark.parametrize("timeout_s", [0.0, -1.0, -86400.0 + 43152.266])
    def test_a_zero_or_negative_timeout_backs_off_never_a_fixed_short_retry(self, timeout_s: float) -> None:
        first = after_cycle(JobState(), rejected(timeout_s), T0, S, 0.0)
        assert first.rejected_until is not None and first.rejected_until - T0 >= 15.0  # half the first backoff
        delays = []
        state = JobState()
        for _ in range(12):
            state = after_cycle(state, rejected(timeout_s), T0, S, 0.0)
            assert state.rejected_until is not None
            delays.append(state.rejected_until - T0)
        assert delays == sorted(delays) and delays[-1] == pytest.approx(9000.0)  # half of backoff_max_s at u = 0
        assert len(set(delays)) > 5

    def test_the_same_small_positive_timeout_repeated_without_progress_backs_off(self) -> None:
        state = JobState()
        waits = []
        for _ in range(5):
            state = after_cycle(state, rejected(2.0), T0, S, 0.0)
            assert state.rejected_until is not None
            waits.append(state.rejected_until - T0)
        assert waits[0] == pytest.approx(2.0) and waits[1] >= 30.0 and waits == sorted(waits)

    def test_jitter_spreads_the_backoff(self) -> None:
        low = after_cycle(JobState(rejections=3), rejected(-5.0), T0, S, 0.0).rejected_until
        high = after_cycle(JobState(rejections=3), rejected(-5.0), T0, S, 1.0).rejected_until
        assert low is not None and high is not None and high - T0 == pytest.approx(2 * (low - T0))

    def test_no_timeout_applies_the_finished_rule(self) -> None:
        state = after_cycle(JobState(), rejected(None), T0, S, 0.5)
        assert state.finished_until == T0 + 3600.0 and state.rejected_until is None


class TestOperatorPause:
    """``syftd expire`` / SIGUSR2: the job holds until a trigger, its next window, or a constraint lost."""

    def test_an_operator_expiry_pauses_the_job_and_why_says_so(self) -> None:
        state = after_cycle(JobState(running=True), Ended.expired(ExpiryReason.MANUAL), T0, S, 0.5)
        assert state.paused_at == T0
        decision = decide(good(), state, T0 + 3600, WALL, job())
        assert (decision.action, decision.reason) == (Action.WAIT_FOR, Reason.PAUSED)
        assert "expired by the operator; holds until a trigger" in " ".join(explain(decision)["reasons"])

    def test_a_trigger_runs_it(self) -> None:
        state = dataclasses.replace(pause(JobState(), T0), triggered=True)
        assert decide(good(), state, T0 + 1, WALL, job()).action is Action.START

    def test_other_expiries_do_not_pause(self) -> None:
        state = after_cycle(JobState(running=True), Ended.expired(ExpiryReason.POWER_LOST), T0, S, 0.5)
        assert state.paused_at is None

    def test_a_constraint_lost_ends_the_pause_and_regained_it_counts_after_stable_for_s(self) -> None:
        j = job(stable_for_s=30.0)
        state = observe(pause(JobState(), T0), good(), j.constraints, T0)
        assert state.paused_at == T0
        unplugged = good().updated(T0 + 10, "test", on_external_power=False)
        state = observe(state, unplugged, j.constraints, T0 + 10)
        assert state.paused_at is None
        replugged = unplugged.updated(T0 + 20, "test", on_external_power=True)
        state = observe(state, replugged, j.constraints, T0 + 20)
        decision = decide(replugged, state, T0 + 25, WALL, j)
        assert (decision.action, decision.reason, decision.at) == (Action.WAIT_UNTIL, Reason.STABILIZING, T0 + 50)

    def test_the_next_window_ends_the_pause(self) -> None:
        j = job(windows=("22:00-07:00",))
        state = pause(JobState(), T0)  # paused at 12:00, outside the window
        decision = decide(good(), state, T0 + 60, WALL + dt.timedelta(seconds=60), j)
        assert (decision.action, decision.reason) == (Action.WAIT_UNTIL, Reason.PAUSED)
        assert decision.at == pytest.approx(T0 + 10 * 3600)
        at_window = decide(good(), state, T0 + 10 * 3600, WALL + dt.timedelta(hours=10), j)
        assert at_window.action is Action.START

    def test_paused_inside_a_window_holds_until_the_next_one(self) -> None:
        j = job(windows=("00:00-24:00",))
        decision = decide(good(), pause(JobState(), T0), T0 + 60, WALL + dt.timedelta(seconds=60), j)
        assert decision.reason is Reason.PAUSED and decision.at == pytest.approx(T0 + 12 * 3600)


class TestRegainedConditions:
    def test_a_simulation_cleared_counts_the_regained_condition_from_the_clear(self) -> None:
        """The real fact changed long ago; the override made it lost: cleared, it must hold stable_for_s anew."""
        j = job(stable_for_s=30.0)
        real = good(at=0.0)
        state = observe(JobState(started_at=0.0), real, j.constraints, T0)
        simulated = real.updated(T0 + 1, "simulated", on_external_power=False)
        state = observe(state, simulated, j.constraints, T0 + 1)
        state = observe(state, real, j.constraints, T0 + 5)  # `syftd simulate clear`: back to the real value
        decision = decide(real, state, T0 + 6, WALL, j)
        assert (decision.action, decision.reason, decision.at) == (Action.WAIT_UNTIL, Reason.STABILIZING, T0 + 35)

    def test_right_after_start_why_says_since_the_daemon_started(self) -> None:
        j = job(stable_for_s=30.0)
        seen = good(at=T0)  # the monitor's first snapshot, at the daemon's start
        state = observe(JobState(started_at=T0), seen, j.constraints, T0)
        decision = decide(seen, state, T0 + 1, WALL, j)
        assert decision.reason is Reason.STABILIZING
        assert "since the daemon started" in decision.text and "regained" not in decision.text


def test_why_says_the_node_is_averaging_while_the_retry_waits() -> None:
    state = after_cycle(JobState(), DONE, T0, S, 0.5)
    state = after_cycle(state, rejected(None), T0 + 0.01, S, 1.0)
    decision = decide(good(), state, T0 + 0.05, WALL, job(stable_for_s=0.0))
    assert decision.reason is Reason.REJECTED and "averaging" in decision.text
