"""The jobs of the running daemon: what each is doing, and the operator's verbs on them.

Owns the per-job state table that ``syftd status`` and ``syftd why`` show, and the entry points the
daemon calls for signals and control verbs (trigger, expire, simulate, reconfigure). Until the cycle
machinery exists it only records and logs; it does not decide or run anything itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from syftd.config import Config, JobConfig
from syftd.log import get_logger

__all__ = ["ExpiryReasonName", "JobManager"]

_log = get_logger("syftd.jobs")

ExpiryReasonName = str


@dataclass(slots=True)
class _JobEntry:
    config: JobConfig
    state: str = "waiting"
    since: float = 0.0
    last_outcome: str | None = None
    next_run: str | None = None


class JobManager:
    """Keeps one entry per configured job and answers the operator's verbs."""

    def __init__(self, config: Config) -> None:
        self._jobs: dict[str, _JobEntry] = {}
        self.reconfigure(config)

    async def start(self) -> None:
        """Nothing to start until cycles exist."""

    async def stop(self, reason: ExpiryReasonName = "shutdown") -> None:
        """Expire every running cycle with ``reason``; idempotent."""
        for name in self._jobs:
            _log.debug("job.stopped", job=name, reason=reason)

    def reconfigure(self, config: Config) -> dict[str, list[str]]:
        """Apply a new configuration; returns the names of added, removed and changed jobs."""
        old = {name: entry.config for name, entry in self._jobs.items()}
        new = {job.name: job for job in config.job}
        changes = {
            "added": sorted(new.keys() - old.keys()),
            "removed": sorted(old.keys() - new.keys()),
            "changed": sorted(n for n in new.keys() & old.keys() if new[n] != old[n]),
        }
        now = time.time()
        for name in changes["removed"]:
            del self._jobs[name]
        for name, job in new.items():
            entry = self._jobs.get(name)
            if entry is None:
                self._jobs[name] = _JobEntry(job, state="waiting" if job.enabled else "disabled", since=now)
            else:
                entry.config = job
                entry.state = "waiting" if job.enabled else "disabled"
        return changes

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
        """Run jobs now as if their schedule were due (still gated unless ``force``)."""
        names = self.names(job)
        for name in names:
            _log.info("job.triggered", job=name, force=force)
        return names

    def expire(self, job: str | None = None, reason: ExpiryReasonName = "manual") -> list[str]:
        """Expire the running cycle of jobs; there is none until cycles exist."""
        names = self.names(job)
        for name in names:
            _log.info("job.expire_requested", job=name, reason=reason, running=False)
        return names

    def simulate(self, event: str, for_s: float | None, job: str | None) -> list[str]:
        """Override conditions for jobs; recorded only until cycles exist."""
        names = self.names(job)
        _log.info("conditions.simulated", simulated=event, for_s=for_s, jobs=names)
        return names

    def status(self) -> list[dict[str, Any]]:
        """One row per job for ``syftd status``."""
        return [
            {
                "name": name,
                "state": entry.state,
                "since": entry.since,
                "last_outcome": entry.last_outcome,
                "next_run": entry.next_run,
            }
            for name, entry in self._jobs.items()
        ]

    def why(self, job: str) -> dict[str, Any]:
        """Why ``job`` is or is not running.

        Raises:
            LookupError: no job has that name.
        """
        self.names(job)
        entry = self._jobs[job]
        return {"job": job, "summary": entry.state, "reasons": []}

    def status_line(self) -> str:
        """A one-line summary for ``STATUS=``."""
        if not self._jobs:
            return "idle: no jobs configured"
        return "; ".join(f"{name}: {entry.state}" for name, entry in self._jobs.items())
