"""One cycle's training run inside the trainer process: model and plan in, a result value out.

Owns the loop of docs/protocol.md §6.3 as the daemon does it: exactly ``max_updates`` steps (``max_updates + 1``
with ``trainer.steps = "plus-one"``) of full ``batch_size`` batches, the updated parameters fed back
each step, float32 kept, and the diff ``original − trained`` checked on its tensors (``plan.check_diff``:
``wire.check_diff``'s checks at torch speed) and encoded through ``syftd.grid.wire`` before it is
returned or written. Checkpoints, where the expiration flag is read: before each batch is taken, after
it is taken (a slow ``__getitem__`` may have outlived the cycle), and before the diff is written.
Exceptions never leave ``run``: it returns a value. Imports torch. Does not own the process, its
governance or the socket (``worker``).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from syftd import events
from syftd.config import DataConfig
from syftd.errors import DiffUnwritable, TrainerError, WireError
from syftd.grid import wire
from syftd.log import get_logger
from syftd.spool import SPARE_DIFF
from syftd.statedir import atomic_write, rewrite_from
from syftd.trainer.data import BatchSource, load_source
from syftd.trainer.flag import Expired, ExpiryView
from syftd.trainer.messages import (
    DIFF_UNWRITABLE,
    Outcome,
    Progress,
    Request,
    Stage,
    TrainerStage,
    TrainingResult,
    failure_of,
)
from syftd.trainer.plan import PlanRunner, check_diff, from_wire, load_plan, to_wire

__all__ = ["MEMORY_DIFF_MAX", "Trainer"]

_log = get_logger("syftd.trainer")

MEMORY_DIFF_MAX = 64 * 1024 * 1024
"""The largest diff returned in memory when the disk refuses its file (above it the cycle fails storage)."""


class Trainer:
    """Runs cycles one after another, keeping the last plan and data source loaded for the next."""

    def __init__(self, rss: Callable[[], int]) -> None:
        self._rss = rss
        self._plan_key: bytes | None = None
        self._plan: Any = None
        self._data_key: DataConfig | None = None
        self._data: BatchSource | None = None

    def run(self, request: Request, flag: ExpiryView, report: Callable[[Progress | Stage], None]) -> TrainingResult:
        """Train one cycle; returns COMPLETED, EXPIRED or FAILED, never raises (but ``Exception``s of ``report``)."""
        started = time.perf_counter()
        losses: list[float] = []
        accuracies: list[float] = []
        step_time_s = 0.0

        def result(outcome: Outcome, **fields: Any) -> TrainingResult:
            return TrainingResult(
                outcome=outcome,
                steps=len(losses),
                losses=tuple(losses),
                accuracies=tuple(accuracies),
                step_time_s=step_time_s,
                duration_s=time.perf_counter() - started,
                **fields,
            )

        try:
            flag.check()
            report(Stage(TrainerStage.LOADING_DATA))
            batch_size, lr, steps_total = _hyperparameters(request)
            model, plan = _inputs(request)
            runner, original = self._prepare(request.job.trainer.device, model, plan, batch_size, lr)
            batches = self._source(request.job.data).batches(batch_size, salt=request.cycle_id)
            report(Progress(0, steps_total, None, None, self._rss(), 0.0))
            interval_s = request.job.trainer.progress_interval_s
            reported_at = time.perf_counter()
            for step in range(1, steps_total + 1):
                flag.check()
                begun = time.perf_counter()
                x, y = next(batches)
                flag.check()
                loss, accuracy = runner.step(runner.fit_input(x), y)
                elapsed = time.perf_counter() - begun
                if not math.isfinite(loss):
                    raise TrainerError(f"the loss is {loss} at step {step}; the diff would corrupt the model")
                step_time_s += elapsed
                losses.append(loss)
                accuracies.append(accuracy)
                now = time.perf_counter()
                if now - reported_at >= interval_s or step == steps_total:
                    report(Progress(step, steps_total, loss, accuracy, self._rss(), elapsed))
                    reported_at = now
            flag.check()
            report(Stage(TrainerStage.WRITING_DIFF))
            trained = [p.to("cpu") for p in runner.params]
            differences = [o - t for o, t in zip(original, trained, strict=True)]
            # the one check of the diff before it is spooled, on its tensors: the daemon trusts it (issue 15)
            check_diff(differences, original)
            diff = wire.encode_state(to_wire(differences))
            if request.diff_path is not None:
                try:
                    _write_diff(Path(request.diff_path), diff)
                except DiffUnwritable as exc:
                    if len(diff) > MEMORY_DIFF_MAX:
                        raise
                    # the disk is full or read-only: the diff comes back whole, to be reported from the
                    # daemon's memory rather than lost (the daemon logs cycle.diff_unspooled with the error)
                    return result(Outcome.COMPLETED, diff=diff, diff_size=len(diff), error=str(exc))
        except Expired as exc:
            _log.info(events.TRAINER_EXPIRED, reason=exc.reason.label, steps=len(losses))
            return result(Outcome.EXPIRED, reason=exc.reason)
        except (TrainerError, WireError) as exc:
            _log.warning(events.TRAINER_FAILED, error=str(exc), steps=len(losses))
            return result(Outcome.FAILED, error=str(exc), failure=failure_of(exc))
        except MemoryError:
            _log.warning(events.TRAINER_FAILED, error="out of memory", steps=len(losses))
            return result(Outcome.FAILED, error="the trainer ran out of memory")
        except Exception as exc:  # noqa: BLE001 - exceptions never cross the boundary; a FAILED value does
            _log.exception(events.TRAINER_CRASHED, steps=len(losses))
            return result(Outcome.FAILED, error=f"{type(exc).__name__} in the trainer: {exc}")
        _log.info(events.TRAINER_COMPLETED, steps=len(losses), loss=losses[-1] if losses else None)
        if request.diff_path is not None:
            return result(Outcome.COMPLETED, diff_size=len(diff), diff_written=True)
        return result(Outcome.COMPLETED, diff=diff)

    def _prepare(
        self, device_name: str, model: bytes, plan: bytes, batch_size: int, lr: float
    ) -> tuple[PlanRunner, list[Any]]:
        """The plan's runner and the model's parameters as torch tensors."""
        key = hashlib.sha256(plan).digest()
        if key != self._plan_key:
            self._plan, self._plan_key = load_plan(wire.plan_torchscript(plan)), key
        try:
            original = from_wire(wire.parse_state(model))
        except WireError as exc:
            raise TrainerError(f"the model is not a readable State: {exc}") from exc
        if not original:
            raise TrainerError("the model has no tensors")
        device = _device(device_name)
        runner = PlanRunner(self._plan, [t.clone() for t in original], batch_size=batch_size, lr=lr, device=device)
        return runner, original

    def preload(self, config: DataConfig) -> None:
        """Load and keep a data source ahead of its cycle; a problem is left for the cycle to report."""
        try:
            self._source(config)
        except Exception as exc:  # noqa: BLE001 - the cycle's run loads it again and returns FAILED naming it
            _log.info(events.TRAINER_PRELOAD_FAILED, error=str(exc))

    def _source(self, config: DataConfig) -> BatchSource:
        if config != self._data_key or self._data is None:
            self._data, self._data_key = None, None
            self._data = load_source(config)
            self._data_key = config
        return self._data


def _inputs(request: Request) -> tuple[bytes, bytes]:
    """Model and plan bytes: from the request, or from the files the daemon streamed them into."""
    if request.model_path is None or request.plan_path is None:
        return request.model, request.plan
    try:
        return Path(request.model_path).read_bytes(), Path(request.plan_path).read_bytes()
    except OSError as exc:
        raise TrainerError(f"the downloaded model or plan cannot be read: {exc}") from exc


def _write_diff(path: Path, diff: bytes) -> None:
    """Write the diff into the spool (temp file, rename, no fsync, no hash): over the spool's spare, the
    last settled diff's file, when there is one (its pages are cached: 1.25 MB takes 0.03 ms instead of
    0.84 ms, issue 15), else into a new file.

    Nothing is fsynced or hashed here: the daemon's commit hashes the file, fsyncs it, its ``.json``
    and the directory while the report is already on its way, and the entry is pending only from then
    on. A crash before the commit loses a diff that was never pending, as a crash during an fsync here would.

    Raises:
        DiffUnwritable: the disk refused the write (nothing is left at ``path``).
    """
    try:
        if not rewrite_from(path.parent / SPARE_DIFF, path, diff):
            atomic_write(path, diff, durable=False)
    except OSError as exc:
        raise DiffUnwritable(f"{DIFF_UNWRITABLE} to {path}: {exc}") from exc


def _hyperparameters(request: Request) -> tuple[int, float, int]:
    config = request.client_config
    batch_size = config.get("batch_size")
    lr = config.get("lr")
    override = request.job.trainer.max_updates
    max_updates = override if override is not None else config.get("max_updates")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise TrainerError(f"client_config.batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(lr, int | float) or isinstance(lr, bool) or not math.isfinite(lr):
        raise TrainerError(f"client_config.lr must be a number, got {lr!r}")
    if not isinstance(max_updates, int) or isinstance(max_updates, bool) or max_updates < 1:
        raise TrainerError(f"client_config.max_updates must be a positive integer, got {max_updates!r}")
    extra = 1 if request.job.trainer.steps == "plus-one" else 0
    return batch_size, float(lr), max_updates + extra


def _device(wanted: str) -> Any:
    if wanted == "cuda":
        if torch.cuda.is_available():
            return torch.device("cuda")
        _log.warning(events.TRAINER_CUDA_UNAVAILABLE)
    return torch.device("cpu")
