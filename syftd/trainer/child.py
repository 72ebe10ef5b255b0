"""One trainer process as the daemon holds it: spawning it, signalling it, closing its socket, reaping it.

Owns ``Trainer`` (the process, its socket, the task relaying its output, the cycle it serves) and
``spawn()``: ``python -m syftd.trainer.worker`` in its own session, with a socketpair end as its only
passed descriptor, an environment without the service manager's variables, and its output read and
re-emitted in a fresh context. ``Trainer.reap()`` is the bounded end of one process: end of file, then
SIGTERM, then SIGKILL ``KILL_AFTER_TERM_S`` later. Does not own which trainer serves a cycle or stays
warm (``process``), the exchange of one run (``session``), nor what happens in the child (``worker``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from syftd.config import JobConfig
from syftd.log import get_logger
from syftd.relay import log_to, relay

__all__ = ["KILL_AFTER_TERM_S", "WORKER_MODULE", "Trainer", "spawn"]

KILL_AFTER_TERM_S = 2.0
"""SIGKILL follows SIGTERM after this long."""
WORKER_MODULE = "syftd.trainer.worker"
"""The module a trainer process runs (``python -m``)."""

_relay_emit = log_to(get_logger("syftd.trainer"))
_SYFTD_ROOT = str(Path(__file__).resolve().parents[2])
_CHILD_ENV_DROP = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


class Trainer:
    """One trainer process, its socket, the task relaying its output, and the cycle it serves."""

    def __init__(self, job: JobConfig, process: asyncio.subprocess.Process, reader: Any, writer: Any) -> None:
        self.job, self.process, self.reader, self.writer = job, process, reader, writer
        self.cycle_id: str | None = None
        self.served = 0
        self.cpu_charged = 0.0  # CPU seconds its results already reported (a warm trainer serves several)
        self.output: asyncio.Task[None] | None = None

    @property
    def is_alive(self) -> bool:
        """Whether the process has not been reaped yet."""
        return self.process.returncode is None

    def send_signal(self, signum: int) -> None:
        """Send ``signum``; a process already gone is not an error."""
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signum)

    def close(self) -> None:
        """Close the daemon's end of the socket (the trainer reads end of file); idempotent."""
        if not self.writer.is_closing():
            self.writer.close()

    async def reap(self, term_at: float | None = None) -> None:
        """End of file now, SIGTERM at ``term_at`` (monotonic; default ``KILL_AFTER_TERM_S`` from now),
        SIGKILL ``KILL_AFTER_TERM_S`` after that; returns once the process is reaped."""
        self.close()
        wait_s = KILL_AFTER_TERM_S if term_at is None else max(0.0, term_at - time.monotonic())
        try:
            await asyncio.wait_for(self.process.wait(), wait_s)
        except asyncio.TimeoutError:
            self.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), KILL_AFTER_TERM_S)
            except asyncio.TimeoutError:
                self.send_signal(signal.SIGKILL)
                await self.process.wait()


async def spawn(job: JobConfig, *, python: str, worker_module: str, log_args: list[str]) -> Trainer:
    """Start a trainer process for ``job`` and the task relaying its output (``Trainer.output``)."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    settings = job.trainer
    argv = [
        "-m", worker_module,
        "--fd", str(child.fileno()),
        "--job", job.name,
        "--idle-exit-s", repr(settings.idle_exit_s),
        "--threads", str(settings.threads),
        "--nice", str(settings.nice),
        *(["--sched-idle"] if settings.sched_idle else []),
        *log_args,
    ]  # fmt: skip
    try:
        process = await asyncio.create_subprocess_exec(
            python,
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
    trainer = Trainer(job, process, reader, writer)
    assert process.stdout is not None
    context = {"job": job.name, "trainer_pid": process.pid}
    # a fresh context: the spawning cycle's bound job and cycle must not stick to a warm trainer
    trainer.output = contextvars.Context().run(
        asyncio.create_task,
        relay(process.stdout, _relay_emit, lambda: {**context, "cycle": trainer.cycle_id}),
        name=f"syftd.trainer-output.{process.pid}",
    )
    return trainer


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CHILD_ENV_DROP}
    paths = [_SYFTD_ROOT, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env
