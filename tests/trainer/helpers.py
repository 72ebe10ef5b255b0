"""Values shared by the trainer tests: where the recorded cycle is, and a job factory."""

from __future__ import annotations

import dataclasses
from typing import Any

from conftest import FIXTURES

from syftd.config import BudgetConfig, DataConfig, GridConfig, JobConfig, TrainerConfig

GOLDEN = FIXTURES / "golden-cycle"
STEP = GOLDEN / "step"
CLIENT_CONFIG = {"name": "mnist", "version": "1.0", "batch_size": 64, "lr": 0.005, "max_updates": 100}


def make_job(
    *, data: dict[str, Any] | None = None, trainer: dict[str, Any] | None = None, grace_s: float = 5.0
) -> JobConfig:
    """A job on the local synthetic digits unless ``data`` says otherwise."""
    return JobConfig(
        name="mnist",
        grid=GridConfig(url="http://127.0.0.1:1", model="mnist", version="1.0"),
        data=dataclasses.replace(DataConfig(samples=1200), **(data or {})),
        trainer=dataclasses.replace(TrainerConfig(idle_exit_s=30.0, progress_interval_s=0.0), **(trainer or {})),
        budget=BudgetConfig(expiry_grace_s=grace_s),
    )
