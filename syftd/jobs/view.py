"""What a job is doing, in words: the ``STATUS=`` line, the rows of ``syftd status``, ``syftd why``.

Owns every text derived from a ``JobRuntime``, among them the phase words of a running cycle
(``starting trainer``, ``loading data``, ``training 340/1000, loss 0.41``, ``reporting``; never
"training" before the first step). Pure presentation: does not decide or change anything (the
manager), nor keep state (``runtime``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from syftd import policy
from syftd.conditions.value import Conditions
from syftd.constraints import duration_text
from syftd.jobs.cycle import CycleRun
from syftd.jobs.runtime import JobRuntime
from syftd.jobs.states import CycleState, TrainerPhase
from syftd.outcomes import Failure

if TYPE_CHECKING:
    from syftd.flower.run import FlowerRun

__all__ = ["job_text", "phase_text", "status_line", "status_rows", "why"]


def status_line(jobs: Mapping[str, JobRuntime], now: float) -> str:
    """One line for ``STATUS=``, e.g. ``mnist: training 340/1000, loss 0.41``."""
    if not jobs:
        return "idle: no jobs configured"
    return "; ".join(f"{name}: {job_text(job, now)}" for name, job in jobs.items())


def job_text(job: JobRuntime, now: float) -> str:
    """What one job is doing, in a few words."""
    run = job.run
    if job.token_error is not None:
        return f"token refused ({job.token_error})"
    if job.cannot_train is not None:
        return job.cannot_train
    if run is not None:
        return phase_text(run)
    if job.report is not None:
        return "reporting spooled diff"
    return _decision_text(job, now) + _failed_write(job)


def _decision_text(job: JobRuntime, now: float) -> str:
    decision = job.decision
    if decision is None:
        return "starting"
    if decision.action is policy.Action.WAIT_FOR:
        return "waiting: " + ", ".join(u.what for u in decision.unmet)
    if decision.action is policy.Action.WAIT_UNTIL and decision.at is not None:
        return f"waiting ({decision.reason.value}) until {_wall(decision.at, now)}"
    return decision.action.value if not decision.text else decision.text


def _failed_write(job: JobRuntime) -> str:
    """The state directory refused the last cycle's write: said until a cycle ends otherwise."""
    last = job.last or {}
    if last.get("reason") != Failure.STORAGE.value:
        return ""
    return f"; last write failed: {str(last.get('error') or 'state directory not writable')[:160]}"


def phase_text(run: CycleRun | FlowerRun) -> str:
    """The running cycle's phase in words: the trainer's phase while it trains (a flower run's own
    words: starting, joined as node N, leaving)."""
    if not isinstance(run, CycleRun) or run.state is not CycleState.TRAINING:
        return str(run.state.value)
    progress = run.progress
    if run.trainer_phase is TrainerPhase.TRAINING and progress is not None and progress.step > 0:
        loss = f", loss {progress.loss:.2f}" if progress.loss is not None else ""
        return f"training {progress.step}/{progress.steps_total}{loss}"
    return str(run.trainer_phase.value)


def status_rows(jobs: Mapping[str, JobRuntime], now: float) -> list[dict[str, Any]]:
    """One row per job for ``syftd status``."""
    rows = []
    for name, job in jobs.items():
        decision = job.decision
        next_run, next_run_in_s = None, None
        if job.task is None and decision is not None and job.cannot_train is None:
            if decision.action is policy.Action.WAIT_UNTIL and decision.at is not None:
                next_run, next_run_in_s = _wall(decision.at, now), round(max(0.0, decision.at - now), 3)
            elif decision.action is policy.Action.START:
                next_run, next_run_in_s = "now", 0.0
        last = job.last
        rows.append(
            {
                "name": name,
                "state": job_text(job, now),
                "last_outcome": _outcome_text(last),
                "last": last,
                "next_run": next_run,
                "next_run_in_s": next_run_in_s,
                "cycles": job.cycles,
                "spool_pending": job.state.spool_pending,
                "simulated": dict(job.overrides),
            }
        )
    return rows


def why(name: str, job: JobRuntime, now: float, conditions: Conditions) -> dict[str, Any]:
    """Why the job is or is not running, with since-times (``syftd why``)."""
    answer: dict[str, Any] = {"job": name, "summary": job_text(job, now), "reasons": []}
    if job.run is not None:
        run = job.run
        answer["summary"] = f"running: {job_text(job, now)}"
        answer["reasons"] = [f"cycle {run.cycle_id} is {phase_text(run)}"]
        if job.state.running_since is not None:
            answer["reasons"].append(f"started {duration_text(now - job.state.running_since)} ago")
    elif job.decision is not None:
        explained = policy.explain(job.decision)
        answer.update({k: v for k, v in explained.items() if k != "summary"})
        answer["summary"] = explained.get("summary", answer["summary"])
        answer["reasons"] = list(explained.get("reasons", []))
    if job.token_error is not None:
        answer["reasons"].insert(0, f"token refused: {job.token_error}")
    if job.cannot_train is not None:
        answer["summary"] = job.cannot_train  # the decision's reasons still follow: what else is unmet
    if job.overrides:
        answer["reasons"].append(f"simulated: {job.overrides}")
    answer["conditions"] = conditions.as_dict()
    return answer


def _outcome_text(last: dict[str, Any] | None) -> str | None:
    if not last:
        return None
    reason = f" ({last['reason']})" if last.get("reason") else ""
    return f"{last.get('outcome')}{reason}"


def _wall(at: float, now: float) -> str:
    moment = dt.datetime.now().astimezone() + dt.timedelta(seconds=max(0.0, at - now))
    return moment.strftime("%Y-%m-%d %H:%M:%S")
