"""The operator's verbs on the running jobs: ``trigger``, ``expire``, ``simulate``, ``status``, ``why``.

Owns ``OperatorVerbs``, the part of ``JobManager`` the control socket and the signals call: each verb
validates the job name, changes the job's state through the pure ``policy`` functions, and wakes the
manager's loop; the words come from ``view``. Does not own the loop, cycles or reports (``manager``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

from syftd import events, policy
from syftd.conditions.value import Conditions
from syftd.jobs import view
from syftd.jobs.runtime import JobRuntime
from syftd.log import get_logger
from syftd.outcomes import ExpiryReason

__all__ = ["OperatorVerbs"]

_log = get_logger("syftd.jobs")
_SIMULATED = {"power-loss": ("on_external_power", False), "network-loss": ("online", False)}


class OperatorVerbs:
    """Mixed into ``JobManager``; every method is called on the event loop."""

    _jobs: dict[str, JobRuntime]
    _wake: asyncio.Event
    _clock: Callable[[], float]
    _conditions: Conditions

    def _expire(self, job: JobRuntime, reason: ExpiryReason) -> bool:
        raise NotImplementedError

    def _on_conditions(self, conditions: Conditions) -> None:
        raise NotImplementedError

    def names(self, job: str | None) -> list[str]:
        """The enabled jobs a verb applies to: ``job`` alone, or every enabled job.

        Raises:
            LookupError: no job has that name.
        """
        if job is None:
            return [name for name, entry in self._jobs.items() if entry.config.enabled]
        if job not in self._jobs:
            raise LookupError(f"no job named {job!r}; configured: {', '.join(sorted(self._jobs)) or 'none'}")
        return [job]

    def trigger(self, job: str | None = None, *, force: bool = False) -> list[str]:
        """Run jobs now as if their schedule were due; still gated by constraints unless ``force``."""
        names = self.names(job)
        for name in names:
            entry = self._jobs[name]
            entry.state = dataclasses.replace(
                entry.state, triggered=True, forced=force, finished_stopped=False, paused_at=None
            )
            _log.info(events.JOB_TRIGGERED, job=name, force=force)
            if force:
                _log.warning(events.JOB_FORCE_REQUESTED, job=name, note="the next cycle ignores the constraints")
        self._wake.set()
        return names

    def expire(self, job: str | None = None, reason: ExpiryReason = ExpiryReason.MANUAL) -> list[str]:
        """Expire the running cycle of jobs (SIGUSR2, ``syftd expire``); by the operator, the job then
        holds until a trigger, its next window, or a constraint lost and regained."""
        names = self.names(job)
        for name in names:
            entry = self._jobs[name]
            running = self._expire(entry, reason)
            if reason is ExpiryReason.MANUAL:
                entry.state = policy.pause(entry.state, self._clock())
            _log.info(events.JOB_EXPIRE_REQUESTED, job=name, reason=reason.label, running=running)
        self._wake.set()
        return names

    def simulate(self, event: str, for_s: float | None, job: str | None) -> list[str]:
        """Override a condition for jobs through the real decision path (``clear`` removes overrides)."""
        names = self.names(job)
        loop = asyncio.get_running_loop()
        for name in names:
            entry = self._jobs[name]
            if entry.override_timer is not None:
                entry.override_timer.cancel()
                entry.override_timer = None
            if event == "clear":
                entry.overrides.clear()
            else:
                fact, value = _SIMULATED[event]
                entry.overrides[fact] = value
                if for_s is not None:
                    entry.override_timer = loop.call_later(for_s, self._clear_override, name)
            _log.warning(events.CONDITIONS_SIMULATED, job=name, simulated=event, for_s=for_s)
        self._on_conditions(self._conditions)
        return names

    def _clear_override(self, name: str) -> None:
        entry = self._jobs.get(name)
        if entry is not None:
            entry.overrides.clear()
            entry.override_timer = None
            _log.info(events.CONDITIONS_SIMULATION_ENDED, job=name)
            self._on_conditions(self._conditions)

    def status(self) -> list[dict[str, Any]]:
        """One row per job for ``syftd status``."""
        return view.status_rows(self._jobs, self._clock())

    def why(self, job: str) -> dict[str, Any]:
        """Why ``job`` is or is not running, with since-times.

        Raises:
            LookupError: no job has that name.
        """
        self.names(job)
        return view.why(job, self._jobs[job], self._clock(), self._conditions)
