"""The daemon's side of training: spawning trainers, keeping one warm per job, stopping them for sure.

Owns ``TrainerPool``: one per daemon. ``train()`` hands a cycle to a trainer process (a warm one of
the same job and configuration when there is one, else a fresh ``python -m syftd.trainer.worker``),
sends the request while already reading the trainer's frames, enforces the memory ceiling from the
reported resident size (expiring the flag with MEMORY), and watches the flag the whole time, from the
first byte written: once the flag's SIGTERM moment comes (set + ``expiry_grace_s``, or earlier when the
daemon stops) a trainer still running gets SIGTERM, then SIGKILL ``KILL_AFTER_TERM_S`` later, whether
it is importing torch, loading data, training or writing the diff. Every run ends with exactly one
``TrainingResult``. A trainer stays warm only after COMPLETED and exits by itself after
``trainer.idle_exit_s``. Torch-free: the daemon never maps libtorch. Does not own the flag's lifecycle
(the cycle creates, expires and closes it) nor what happens in the child (``worker``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import os
import pickle
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from syftd import events
from syftd.config import JobConfig
from syftd.log import get_logger
from syftd.outcomes import ExpiryReason
from syftd.relay import log_to, relay
from syftd.service import ServiceContext
from syftd.trainer.flag import ExpiryFlag
from syftd.trainer.messages import (
    HEADER,
    Outcome,
    Preload,
    Progress,
    Request,
    Stage,
    TrainerStage,
    TrainingResult,
    decode_from_trainer,
    encode,
)

__all__ = ["KILL_AFTER_TERM_S", "WORKER_MODULE", "TrainerPool"]

KILL_AFTER_TERM_S = 2.0
"""SIGKILL follows SIGTERM after this long."""
WORKER_MODULE = "syftd.trainer.worker"
"""The module a trainer process runs (``python -m``)."""
_RESULT_AFTER_EXIT_S = 0.5

_log = get_logger("syftd.trainer")
_relay_emit = log_to(get_logger("syftd.trainer"))
_OUTPUT_DRAIN_S = 1.0
_SYFTD_ROOT = str(Path(__file__).resolve().parents[2])
_SIGNALLED = {-signal.SIGTERM: Outcome.TERMINATED, -signal.SIGKILL: Outcome.KILLED}
_CHILD_ENV_DROP = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


class _Trainer:
    """One trainer process, its socket, the task relaying its output, and the cycle it serves."""

    def __init__(self, job: JobConfig, process: asyncio.subprocess.Process, reader: Any, writer: Any) -> None:
        self.job, self.process, self.reader, self.writer = job, process, reader, writer
        self.cycle_id: str | None = None
        self.served = 0
        self.cpu_charged = 0.0  # CPU seconds its results already reported (a warm trainer serves several)
        self.output: asyncio.Task[None] | None = None

    @property
    def is_alive(self) -> bool:
        return self.process.returncode is None


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
        self._warm: dict[str, _Trainer] = {}
        self._live: set[_Trainer] = set()
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
        empty ``model`` and ``plan``) and writes the diff durably into the third, returning only its
        size and sha256. Cancelling this coroutine kills the trainer; expire ``flag`` instead for a
        graceful stop.
        """
        self._check_running()
        started = asyncio.get_running_loop().time()
        paths = (None, None, None) if files is None else tuple(str(p) for p in files)
        request = Request(job, model, plan, client_config, flag.name, cycle_id, *paths)
        observers = _Observers(on_progress, on_stage)
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
                _signal(trainer, signal.SIGTERM)
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

    async def _take(self, job: JobConfig) -> tuple[_Trainer, bool]:
        """The job's warm (or prepared) trainer if it fits, else a new one; and whether it was reused."""
        trainer = self._warm.pop(job.name, None)
        if trainer is not None and trainer.is_alive and trainer.job == job:
            return trainer, True
        if trainer is not None:
            self._retire(trainer)
        return await self._spawn(job), False

    def _serving(self, trainer: _Trainer, cycle_id: str) -> _Trainer:
        """Mark ``trainer`` as serving ``cycle_id`` (its relayed output names it); count a cold or warm start."""
        if self._on_trainer_start is not None:
            self._on_trainer_start(trainer.job.name, trainer.served > 0)
        trainer.cycle_id = cycle_id
        trainer.served += 1
        return trainer

    async def _spawn(self, job: JobConfig) -> _Trainer:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        settings = job.trainer
        argv = [
            "-m", self._worker_module,
            "--fd", str(child.fileno()),
            "--job", job.name,
            "--idle-exit-s", repr(settings.idle_exit_s),
            "--threads", str(settings.threads),
            "--nice", str(settings.nice),
            *(["--sched-idle"] if settings.sched_idle else []),
            *self._log_args,
        ]  # fmt: skip
        try:
            process = await asyncio.create_subprocess_exec(
                self._python,
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                # its output (log lines, warnings, tracebacks) is read and re-emitted by the daemon
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                pass_fds=(child.fileno(),),
                start_new_session=True,
                env=_child_env(),
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        trainer = _Trainer(job, process, reader, writer)
        assert process.stdout is not None
        context = {"job": job.name, "trainer_pid": process.pid}
        # a fresh context: the spawning cycle's bound job and cycle must not stick to a warm trainer
        trainer.output = contextvars.Context().run(
            asyncio.create_task,
            relay(process.stdout, _relay_emit, lambda: {**context, "cycle": trainer.cycle_id}),
            name=f"syftd.trainer-output.{process.pid}",
        )
        self._outputs.add(trainer.output)
        trainer.output.add_done_callback(self._outputs.discard)
        self._live.add(trainer)
        _log.info(events.TRAINER_SPAWNED, job=job.name, pid=process.pid)
        return trainer

    async def _run(
        self,
        trainer: _Trainer,
        request: Request,
        flag: ExpiryFlag,
        observers: _Observers,
        *,
        may_retry: bool,
    ) -> TrainingResult | None:
        """The run's result, or None if a reused trainer had gone before it took the request.

        The flag is watched from the first byte sent: the request (over a megabyte) is read by the
        trainer only after its imports and data load, so nothing here waits on the trainer alone.
        """
        seen: list[Progress] = []
        session = asyncio.ensure_future(self._session(trainer, request, flag, observers, seen))
        term = asyncio.ensure_future(flag.wait_term())
        is_done = False
        try:
            try:
                await asyncio.wait({session, term}, return_when=asyncio.FIRST_COMPLETED)
                if session.done():
                    result = session.result()
                else:
                    result = await self._stop_for_sure(trainer, flag, seen, session)
            finally:
                term.cancel()
                session.cancel()
            is_done = True
        finally:
            if not is_done:
                if trainer.is_alive:
                    trainer.process.kill()
                self._retire(trainer)
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

    async def _session(
        self,
        trainer: _Trainer,
        request: Request,
        flag: ExpiryFlag,
        observers: _Observers,
        seen: list[Progress],
    ) -> TrainingResult | None:
        """Send the request while reading frames; the result, or None at end of file."""
        reading = asyncio.ensure_future(self._read(trainer, request.job, flag, observers, seen))
        try:
            try:
                trainer.writer.write(encode(request))
                await trainer.writer.drain()
            except OSError:
                pass  # the trainer is gone: reading ends at end of file and says so
            return await reading
        finally:
            reading.cancel()

    async def _read(
        self,
        trainer: _Trainer,
        job: JobConfig,
        flag: ExpiryFlag,
        observers: _Observers,
        seen: list[Progress],
    ) -> TrainingResult | None:
        """Frames until the result; None at end of file."""
        ceiling = job.trainer.memory_max_mb
        while True:
            try:
                header = await trainer.reader.readexactly(HEADER.size)
                body = await trainer.reader.readexactly(HEADER.unpack(header)[0])
            except (asyncio.IncompleteReadError, ConnectionError):
                return None
            try:
                message = decode_from_trainer(body)
            except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
                _signal(trainer, signal.SIGKILL)
                return TrainingResult(Outcome.FAILED, flag.reason, error=f"the trainer sent an unreadable frame: {exc}")
            if isinstance(message, TrainingResult):
                return message
            if isinstance(message, Stage):
                observers.stage(message.stage, job.name)
                continue
            seen.append(message)
            if (
                ceiling is not None
                and message.rss_bytes > ceiling * 1024 * 1024
                and flag.expire(ExpiryReason.MEMORY, job.budget.expiry_grace_s)
            ):
                _log.warning(
                    events.TRAINER_MEMORY_EXCEEDED, job=job.name, rss_mb=message.rss_bytes >> 20, max_mb=ceiling
                )
            observers.progress(message, job.name)

    async def _stop_for_sure(
        self,
        trainer: _Trainer,
        flag: ExpiryFlag,
        seen: list[Progress],
        session: asyncio.Future[TrainingResult | None],
    ) -> TrainingResult:
        """SIGTERM now, SIGKILL ``KILL_AFTER_TERM_S`` after the flag's SIGTERM moment; a result the
        trainer still sent wins, else the result says which signal ended it."""
        outcome = Outcome.TERMINATED
        children_cpu = _children_cpu_s()
        _signal(trainer, signal.SIGTERM)
        term_at = flag.term_at if flag.term_at is not None else time.monotonic()
        try:
            await asyncio.wait_for(trainer.process.wait(), max(0.0, term_at + KILL_AFTER_TERM_S - time.monotonic()))
        except asyncio.TimeoutError:
            outcome = Outcome.KILLED
            _signal(trainer, signal.SIGKILL)
            await trainer.process.wait()
        # reaped: its whole life's CPU time joined this process's children times (the energy share)
        cpu_s = max(0.0, _children_cpu_s() - children_cpu - trainer.cpu_charged)
        with contextlib.suppress(asyncio.TimeoutError, Exception):
            sent = await asyncio.wait_for(asyncio.shield(session), _RESULT_AFTER_EXIT_S)
            if sent is not None and outcome is Outcome.TERMINATED:
                self._close(trainer)
                return sent
        self._close(trainer)
        losses = tuple(p.loss for p in seen if p.loss is not None)
        accuracies = tuple(p.accuracy for p in seen if p.accuracy is not None)
        _log.warning(events.TRAINER_STOPPED, job=trainer.job.name, outcome=outcome.value, pid=trainer.process.pid)
        return TrainingResult(
            outcome,
            flag.reason,
            steps=len(losses),
            losses=losses,
            accuracies=accuracies,
            step_time_s=sum(p.step_time_s for p in seen),
            cpu_s=round(cpu_s, 3),
        )

    def _retire(self, trainer: _Trainer, term_at: float | None = None) -> None:
        """Let ``trainer`` go in the background: end of file, then SIGTERM, then SIGKILL, bounded."""
        if trainer not in self._live:
            return
        self._live.discard(trainer)
        task = asyncio.ensure_future(self._reap(trainer, term_at))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _reap(self, trainer: _Trainer, term_at: float | None = None) -> None:
        self._live.discard(trainer)
        self._close(trainer)
        wait_s = KILL_AFTER_TERM_S if term_at is None else max(0.0, term_at - time.monotonic())
        try:
            await asyncio.wait_for(trainer.process.wait(), wait_s)
        except asyncio.TimeoutError:
            _signal(trainer, signal.SIGTERM)
            try:
                await asyncio.wait_for(trainer.process.wait(), KILL_AFTER_TERM_S)
            except asyncio.TimeoutError:
                _signal(trainer, signal.SIGKILL)
                await trainer.process.wait()

    @staticmethod
    def _close(trainer: _Trainer) -> None:
        if not trainer.writer.is_closing():
            trainer.writer.close()


class _Observers:
    """The caller's progress and stage callbacks; a faulty one is logged, never ends the run."""

    def __init__(self, on_progress: Callable[[Progress], None], on_stage: Callable[[TrainerStage], None]) -> None:
        self._on_progress, self._on_stage = on_progress, on_stage

    def progress(self, progress: Progress, job: str) -> None:
        try:
            self._on_progress(progress)
        except Exception:  # noqa: BLE001 - a faulty observer must not end the run without a result
            _log.exception(events.TRAINER_PROGRESS_CALLBACK_FAILED, job=job)

    def stage(self, stage: TrainerStage, job: str) -> None:
        try:
            self._on_stage(stage)
        except Exception:  # noqa: BLE001 - a faulty observer must not end the run without a result
            _log.exception(events.TRAINER_PROGRESS_CALLBACK_FAILED, job=job)


def _children_cpu_s() -> float:
    times = os.times()
    return times.children_user + times.children_system


def _signal(trainer: _Trainer, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        trainer.process.send_signal(signum)


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CHILD_ENV_DROP}
    paths = [_SYFTD_ROOT, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env
