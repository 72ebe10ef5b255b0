"""The daemon's side of training: which trainer process serves a cycle, and which stays warm.

Owns ``TrainerPool``: one per daemon. ``train()`` hands a cycle to a trainer process (a warm one of
the same job and configuration when there is one, else a fresh ``python -m syftd.trainer.worker``),
retries once on a fresh trainer when a warm one reached its idle exit just as the request went, and
turns a run that ended without a result into one saying how the trainer exited: every run ends with
exactly one ``TrainingResult``. A trainer stays warm only after COMPLETED and exits by itself after
``trainer.idle_exit_s``; ``prepare()`` starts one while the cycle downloads; ``stop()`` ends every
trainer, bounded. Torch-free: the daemon never maps libtorch. Does not own one run's exchange, the
memory ceiling or the flag's SIGTERM/SIGKILL watch (``session``), spawning and reaping one process
(``child``), the flag's lifecycle (the cycle creates, expires and closes it), nor what happens in the
child (``worker``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from syftd import events
from syftd.config import JobConfig
from syftd.log import get_logger
from syftd.service import ServiceContext
from syftd.trainer import session
from syftd.trainer.child import KILL_AFTER_TERM_S, WORKER_MODULE, Trainer, spawn
from syftd.trainer.flag import ExpiryFlag
from syftd.trainer.messages import Outcome, Preload, Progress, Request, TrainerStage, TrainingResult, encode

__all__ = ["KILL_AFTER_TERM_S", "WORKER_MODULE", "TrainerPool"]

_log = get_logger("syftd.trainer")
_OUTPUT_DRAIN_S = 1.0
_SIGNALLED = {-signal.SIGTERM: Outcome.TERMINATED, -signal.SIGKILL: Outcome.KILLED}


class TrainerPool(ServiceContext):
    """Runs training cycles in child processes; at most one warm trainer per job."""

    def __init__(
        self,
        *,
        python: str = sys.executable,
        worker_module: str = WORKER_MODULE,
        log_format: str = "auto",
        log_level: str = "info",
        on_trainer_start: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._on_trainer_start = on_trainer_start  # (job, warm): a trainer took a cycle (the metrics)
        self._python = python
        self._worker_module = worker_module
        self._log_args = ["--log-format", log_format, "--log-level", log_level]
        self._warm: dict[str, Trainer] = {}
        self._live: set[Trainer] = set()
        self._retiring: set[asyncio.Task[None]] = set()
        self._outputs: set[asyncio.Task[None]] = set()
        self._is_stopped = False

    @property
    def warm_pids(self) -> dict[str, int]:
        """The process id of each job's warm (or prepared) trainer that is still running."""
        return {name: t.process.pid for name, t in self._warm.items() if t.is_alive}

    async def start(self) -> None:
        """Nothing runs until a cycle is due; present for the service protocol."""
        if self._is_stopped:
            raise RuntimeError("TrainerPool.start() after stop(); create one pool per daemon run")

    async def prepare(self, job: JobConfig) -> None:
        """Start a trainer for ``job`` now: torch imports and the data loads while the cycle downloads.

        A no-op if the job has a warm trainer. The trainer waits ``trainer.idle_exit_s`` for its cycle.
        """
        self._check_running()
        current = self._warm.get(job.name)
        if current is not None and current.is_alive and current.job == job:
            return
        if current is not None:
            self._retire(self._warm.pop(job.name))
        trainer = await self._spawn(job)
        trainer.writer.write(encode(Preload(job.data)))
        self._warm[job.name] = trainer

    def discard_prepared(self, job: JobConfig, term_at: float | None = None) -> None:
        """Let the job's prepared or warm trainer go (its cycle ended before training): end of file,
        SIGTERM at ``term_at`` (monotonic; default ``KILL_AFTER_TERM_S`` from now), SIGKILL 2 s later."""
        trainer = self._warm.pop(job.name, None)
        if trainer is not None:
            self._retire(trainer, term_at)

    async def train(
        self,
        job: JobConfig,
        *,
        model: bytes,
        plan: bytes,
        client_config: dict[str, Any],
        flag: ExpiryFlag,
        on_progress: Callable[[Progress], None],
        cycle_id: str,
        on_stage: Callable[[TrainerStage], None] = lambda _stage: None,
        files: tuple[Path, Path, Path] | None = None,
    ) -> TrainingResult:
        """Train one cycle in a trainer process and return its one result.

        ``files``: (model, plan, diff) paths: the trainer reads model and plan from the files (pass
        empty ``model`` and ``plan``) and writes the diff into the third (the commit makes it durable),
        returning only its size and sha256. Cancelling this coroutine kills the trainer; expire ``flag`` instead for a
        graceful stop.
        """
        self._check_running()
        started = asyncio.get_running_loop().time()
        paths = (None, None, None) if files is None else tuple(str(p) for p in files)
        request = Request(job, model, plan, client_config, flag.name, cycle_id, *paths)
        observers = session.Observers(on_progress, on_stage)
        trainer, is_reused = await self._take(job)
        result = await self._run(self._serving(trainer, cycle_id), request, flag, observers, may_retry=is_reused)
        if result is None:
            # the warm trainer reached its idle exit just as the request was sent: start a fresh one
            self._check_running()
            fresh = self._serving(await self._spawn(job), cycle_id)
            result = await self._run(fresh, request, flag, observers, may_retry=False)
        assert result is not None
        result = dataclasses.replace(result, duration_s=asyncio.get_running_loop().time() - started)
        _log.info(
            events.TRAINER_RESULT_RECEIVED,
            job=job.name,
            cycle_id=cycle_id,
            outcome=result.outcome.value,
            reason=result.reason.label if result.reason else None,
            steps=result.steps,
            duration_s=round(result.duration_s, 3),
        )
        return result

    async def stop(self) -> None:
        """Stop every trainer, bounded in time: idle ones get end of file, busy ones SIGTERM; idempotent.

        Expires nothing itself: the job manager stops first and expires the running cycles' flags for
        EXPIRED results; a run still busy here ends TERMINATED (or KILLED 2 s later).
        """
        self._is_stopped = True
        idle = set(self._warm.values())
        self._warm.clear()
        for trainer in list(self._live):
            if trainer not in idle:
                trainer.send_signal(signal.SIGTERM)
            self._retire(trainer)
        while self._retiring:
            await asyncio.gather(*list(self._retiring), return_exceptions=True)
        if self._outputs:  # the trainers are gone: their pipes end; a grandchild holding one is cut off
            _done, pending = await asyncio.wait(list(self._outputs), timeout=_OUTPUT_DRAIN_S)
            for task in pending:
                task.cancel()

    # ------------------------------------------------------------------------------------- internals

    def _check_running(self) -> None:
        if self._is_stopped:
            raise RuntimeError("TrainerPool used after stop(); create one pool per daemon run")

    async def _take(self, job: JobConfig) -> tuple[Trainer, bool]:
        """The job's warm (or prepared) trainer if it fits, else a new one; and whether it was reused."""
        trainer = self._warm.pop(job.name, None)
        if trainer is not None and trainer.is_alive and trainer.job == job:
            return trainer, True
        if trainer is not None:
            self._retire(trainer)
        return await self._spawn(job), False

    def _serving(self, trainer: Trainer, cycle_id: str) -> Trainer:
        """Mark ``trainer`` as serving ``cycle_id`` (its relayed output names it); count a cold or warm start."""
        if self._on_trainer_start is not None:
            self._on_trainer_start(trainer.job.name, trainer.served > 0)
        trainer.cycle_id = cycle_id
        trainer.served += 1
        return trainer

    async def _spawn(self, job: JobConfig) -> Trainer:
        trainer = await spawn(job, python=self._python, worker_module=self._worker_module, log_args=self._log_args)
        assert trainer.output is not None
        self._outputs.add(trainer.output)
        trainer.output.add_done_callback(self._outputs.discard)
        self._live.add(trainer)
        _log.info(events.TRAINER_SPAWNED, job=job.name, pid=trainer.process.pid)
        return trainer

    async def _run(
        self,
        trainer: Trainer,
        request: Request,
        flag: ExpiryFlag,
        observers: session.Observers,
        *,
        may_retry: bool,
    ) -> TrainingResult | None:
        """The run's result, or None if a reused trainer had gone before it took the request."""
        seen: list[Progress] = []
        try:
            result = await session.run(trainer, request, flag, observers, seen)
        except BaseException:
            self._retire(trainer)
            raise
        if result is None:
            if may_retry and not seen and not flag.is_expired and not self._is_stopped:
                self._retire(trainer)
                return None
            await self._reap(trainer)
            status = trainer.process.returncode
            outcome = _SIGNALLED.get(status or 0, Outcome.FAILED)
            return TrainingResult(
                outcome,
                flag.reason,
                steps=max((p.step for p in seen), default=0),
                error=f"the trainer exited with status {status} before returning a result",
            )
        trainer.cpu_charged += result.cpu_s or 0.0
        if result.outcome is Outcome.COMPLETED and trainer.is_alive and not self._is_stopped:
            self._warm[request.job.name] = trainer
        elif result.outcome in (Outcome.TERMINATED, Outcome.KILLED):
            self._live.discard(trainer)
        else:
            self._retire(trainer)
        return result

    def _retire(self, trainer: Trainer, term_at: float | None = None) -> None:
        """Let ``trainer`` go in the background: end of file, then SIGTERM, then SIGKILL, bounded."""
        if trainer not in self._live:
            return
        self._live.discard(trainer)
        task = asyncio.ensure_future(self._reap(trainer, term_at))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _reap(self, trainer: Trainer, term_at: float | None = None) -> None:
        self._live.discard(trainer)
        await trainer.reap(term_at)
