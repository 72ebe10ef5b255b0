"""The trainer process's entry point: ``python -m syftd.trainer.worker --fd N …``.

Owns the process side of the boundary: governance (nice, ``SCHED_IDLE``, torch threads) applied
before torch is imported so every torch thread inherits it, its own structlog set-up bound to the
job and each cycle, and the request loop on the inherited socket: wait for a ``Request`` (at most
``--idle-exit-s``; end of file means the daemon is gone), run it, send progress frames and exactly
one result frame. After anything but COMPLETED the process exits, so an expired or failed trainer
never serves another cycle; it leaves with ``os._exit`` once its output is flushed, skipping the
interpreter's slow teardown with torch loaded (0.5–2 s). Signals are left at their defaults: SIGTERM
ends it, whatever it is doing (importing torch, loading data, in a stuck ``__getitem__``). The trainer
dies with its daemon even when a plan hangs and never reads the socket: on Linux the kernel sends it
SIGKILL when the daemon exits (``PR_SET_PDEATHSIG``), elsewhere a thread watches the parent pid. Does
not own the training itself (``training``) or deciding when to stop it (``process``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import structlog

from syftd import events, log
from syftd.trainer.flag import ExpiryView
from syftd.trainer.messages import Outcome, Preload, Request, Stage, TrainerStage, encode, receive_from_daemon

__all__ = ["main"]

_log = log.get_logger("syftd.trainer")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def main(argv: Sequence[str] | None = None) -> int:
    """Serve cycles on the socket until idle, expired, failed or orphaned; returns the exit status."""
    args = _parse(argv)
    log.configure(args.log_format, args.log_level, stream=sys.stderr)
    structlog.contextvars.bind_contextvars(job=args.job, trainer_pid=os.getpid())
    _die_with_daemon(args.fd)
    _govern(nice=args.nice, is_sched_idle=args.sched_idle)
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from syftd.trainer.training import Trainer

    sock = socket.socket(fileno=args.fd)
    trainer = Trainer(_ResidentSize())
    _log.info(events.TRAINER_STARTED, threads=torch.get_num_threads())
    cpu_mark = 0.0  # the first run is charged the imports and the data load too
    while True:
        request = _receive(sock, timeout_s=args.idle_exit_s)
        if request is None:
            _log.info(events.TRAINER_IDLE_EXITED)
            return 0
        if isinstance(request, Preload):
            _send_quietly(sock, Stage(TrainerStage.LOADING_DATA))
            trainer.preload(request.data)
            continue
        with structlog.contextvars.bound_contextvars(cycle_id=request.cycle_id):
            flag = ExpiryView(request.flag_name)
            try:
                result = trainer.run(request, flag, lambda p: sock.sendall(encode(p)))
            finally:
                flag.close()
            result = dataclasses.replace(result, cpu_s=round(time.process_time() - cpu_mark, 3))
            cpu_mark = time.process_time()
            try:
                sock.sendall(encode(result))
            except OSError:
                _log.warning(events.TRAINER_DAEMON_GONE)
                return 0
        if result.outcome is not Outcome.COMPLETED:
            return 0


def _send_quietly(sock: socket.socket, message: Stage) -> None:
    """A frame nobody may be waiting for (the daemon may have let this trainer go)."""
    try:
        sock.sendall(encode(message))
    except OSError:
        pass


def exit_now(status: int) -> None:
    """Flush what was written and leave at once: no interpreter teardown with torch loaded."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def _parse(argv: Sequence[str] | None) -> Any:
    parser = argparse.ArgumentParser(prog="syftd.trainer.worker")
    parser.add_argument("--fd", type=int, required=True, help="the socket inherited from the daemon")
    parser.add_argument("--job", required=True)
    parser.add_argument("--idle-exit-s", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--nice", type=int, default=19)
    parser.add_argument("--sched-idle", action="store_true")
    parser.add_argument("--log-format", default="auto")
    parser.add_argument("--log-level", default="info")
    return parser.parse_args(argv)


def _die_with_daemon(fd: int) -> None:
    """Have this process killed when the daemon dies, whatever the plan is doing."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) == 0:
            # the daemon may have died before the prctl: its end of the socket is closed then
            poller = select.poll()
            poller.register(fd, select.POLLRDHUP | select.POLLHUP)
            if any(mask & (select.POLLRDHUP | select.POLLHUP) for _fd, mask in poller.poll(0)):
                _log.warning(events.TRAINER_DAEMON_GONE)
                os._exit(0)
            return
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="syftd-parent-watch", daemon=True).start()


def _govern(*, nice: int, is_sched_idle: bool) -> None:
    """Lower this process's priority; on Linux both settings are per thread and inherited by new ones."""
    try:
        current = os.getpriority(os.PRIO_PROCESS, 0)
        if nice > current:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as exc:
        _log.warning(events.TRAINER_NICE_REFUSED, nice=nice, error=str(exc))
    if is_sched_idle and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError as exc:
            _log.warning(events.TRAINER_SCHED_IDLE_REFUSED, error=str(exc))


def _receive(sock: socket.socket, *, timeout_s: float) -> Request | Preload | None:
    """The next message, or None after ``timeout_s`` idle or when the daemon closed the socket."""
    message = receive_from_daemon(sock, timeout_s=timeout_s)
    if message is not None and not isinstance(message, Request | Preload):
        raise TypeError(f"the daemon sent a {type(message).__name__}, not a Request")
    return message


class _ResidentSize:
    """This process's resident bytes: /proc/self/statm kept open (one pread per report), else the peak."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self._fd = None

    def __call__(self) -> int:
        if self._fd is not None:
            return int(os.pread(self._fd, 256, 0).split()[1]) * _PAGE
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


if __name__ == "__main__":
    exit_now(main())
