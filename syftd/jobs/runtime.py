"""What the job manager keeps per job while the daemon runs: ``JobRuntime``.

Owns the record only: the job's config and ``policy.JobState``, the running cycle or report and the
task that runs it, the last decision and the last outcome, the token, simulated overrides and their
timer, and whether the job is ready to decide on (its token and spool were read). Does not decide or
change anything (the manager), nor put it into words (``view``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from syftd import policy
from syftd.config import JobConfig
from syftd.jobs.cycle import CycleRun
from syftd.jobs.report import ReportRun

if TYPE_CHECKING:
    from syftd.flower.run import FlowerRun

__all__ = ["JobRuntime"]


@dataclass(slots=True)
class JobRuntime:
    """The job manager's record of one job."""

    config: JobConfig
    state: policy.JobState = field(default_factory=policy.JobState)
    run: CycleRun | FlowerRun | None = None
    report: ReportRun | None = None
    task: asyncio.Task[None] | None = None
    decision: policy.Decision | None = None
    last: dict[str, Any] | None = None
    token: str | None = None
    token_error: str | None = None
    cannot_train: str | None = None  # why this installation cannot train the job (no cycle is requested)
    is_ready: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    override_timer: asyncio.TimerHandle | None = None
    cycles: int = 0
