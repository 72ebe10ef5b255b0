"""One run's exchange with a trainer process, watched by the expiry flag from the first byte sent.

Owns ``run()``: sending the request while already reading the trainer's frames, relaying progress and
stages to the caller's callbacks (``Observers``; a faulty one is logged, never ends the run), the memory
ceiling from the reported resident size (expiring the flag with MEMORY), and, once the flag's SIGTERM
moment comes, SIGTERM then SIGKILL ``KILL_AFTER_TERM_S`` after it, with the result that says which
signal ended the run unless the trainer still sent its own. Does not own which trainer serves the run,
whether it stays warm or what a run without a result becomes (``process``), nor spawning and reaping
the process (``child``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import time
from collections.abc import Callable

from syftd import events
from syftd.config import JobConfig
from syftd.log import get_logger
from syftd.outcomes import ExpiryReason
from syftd.trainer.child import KILL_AFTER_TERM_S, Trainer
from syftd.trainer.flag import ExpiryFlag
from syftd.trainer.messages import (
    HEADER,
    Outcome,
    Progress,
    Request,
    Stage,
    TrainerStage,
    TrainingResult,
    decode_from_trainer,
    encode,
)

__all__ = ["Observers", "run"]

_RESULT_AFTER_EXIT_S = 0.5

_log = get_logger("syftd.trainer")


class Observers:
    """The caller's progress and stage callbacks; a faulty one is logged, never ends the run."""

    def __init__(self, on_progress: Callable[[Progress], None], on_stage: Callable[[TrainerStage], None]) -> None:
        self._on_progress, self._on_stage = on_progress, on_stage

    def progress(self, progress: Progress, job: str) -> None:
        """Call the progress callback."""
        try:
            self._on_progress(progress)
        except Exception:  # noqa: BLE001 - a faulty observer must not end the run without a result
            _log.exception(events.TRAINER_PROGRESS_CALLBACK_FAILED, job=job)

    def stage(self, stage: TrainerStage, job: str) -> None:
        """Call the stage callback."""
        try:
            self._on_stage(stage)
        except Exception:  # noqa: BLE001 - a faulty observer must not end the run without a result
            _log.exception(events.TRAINER_PROGRESS_CALLBACK_FAILED, job=job)


async def run(
    trainer: Trainer,
    request: Request,
    flag: ExpiryFlag,
    observers: Observers,
    seen: list[Progress],
) -> TrainingResult | None:
    """The run's result, or None at end of file before one; ``seen`` collects the progress frames.

    The flag is watched from the first byte sent: the request (over a megabyte) is read by the
    trainer only after its imports and data load, so nothing here waits on the trainer alone.
    Cancelled or failing, it kills the trainer before it returns.
    """
    session = asyncio.ensure_future(_session(trainer, request, flag, observers, seen))
    term = asyncio.ensure_future(flag.wait_term())
    is_done = False
    try:
        try:
            await asyncio.wait({session, term}, return_when=asyncio.FIRST_COMPLETED)
            if session.done():
                result = session.result()
            else:
                result = await _stop_for_sure(trainer, flag, seen, session)
        finally:
            term.cancel()
            session.cancel()
        is_done = True
    finally:
        if not is_done and trainer.is_alive:
            trainer.process.kill()
    return result


async def _session(
    trainer: Trainer,
    request: Request,
    flag: ExpiryFlag,
    observers: Observers,
    seen: list[Progress],
) -> TrainingResult | None:
    """Send the request while reading frames; the result, or None at end of file."""
    reading = asyncio.ensure_future(_read(trainer, request.job, flag, observers, seen))
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
    trainer: Trainer,
    job: JobConfig,
    flag: ExpiryFlag,
    observers: Observers,
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
            trainer.send_signal(signal.SIGKILL)
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
            _log.warning(events.TRAINER_MEMORY_EXCEEDED, job=job.name, rss_mb=message.rss_bytes >> 20, max_mb=ceiling)
        observers.progress(message, job.name)


async def _stop_for_sure(
    trainer: Trainer,
    flag: ExpiryFlag,
    seen: list[Progress],
    session: asyncio.Future[TrainingResult | None],
) -> TrainingResult:
    """SIGTERM now, SIGKILL ``KILL_AFTER_TERM_S`` after the flag's SIGTERM moment; a result the
    trainer still sent wins, else the result says which signal ended it."""
    outcome = Outcome.TERMINATED
    children_cpu = _children_cpu_s()
    trainer.send_signal(signal.SIGTERM)
    term_at = flag.term_at if flag.term_at is not None else time.monotonic()
    try:
        await asyncio.wait_for(trainer.process.wait(), max(0.0, term_at + KILL_AFTER_TERM_S - time.monotonic()))
    except asyncio.TimeoutError:
        outcome = Outcome.KILLED
        trainer.send_signal(signal.SIGKILL)
        await trainer.process.wait()
    # reaped: its whole life's CPU time joined this process's children times (the energy share)
    cpu_s = max(0.0, _children_cpu_s() - children_cpu - trainer.cpu_charged)
    with contextlib.suppress(asyncio.TimeoutError, Exception):
        sent = await asyncio.wait_for(asyncio.shield(session), _RESULT_AFTER_EXIT_S)
        if sent is not None and outcome is Outcome.TERMINATED:
            trainer.close()
            return sent
    trainer.close()
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


def _children_cpu_s() -> float:
    times = os.times()
    return times.children_user + times.children_system
