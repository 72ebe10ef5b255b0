"""Ends a SuperNode's process group when the daemon that started it dies, even by ``kill -9``.

Run by the supervisor as its own small process (``python -I reaper.py PGID KILL_AFTER_S OUTPUT_FD``,
standard library only, in a session of its own) with its stdin a pipe from the daemon; OUTPUT_FD is
the read end of the SuperNode's output pipe, held open and drained once the daemon is gone, so the
SuperNode's last log lines do not fail on a broken pipe before it has deactivated. One byte ``q`` means
the daemon has dealt with the group itself: exit. End of file means the daemon is gone: SIGTERM the
SuperNode once (it deactivates at the SuperLink; a second SIGTERM during flwr's graceful exit would
cut it short, measured), SIGKILL the group ``KILL_AFTER_S`` later, and end the SuperNode's helpers at
once after it. Works the same on Linux and macOS, with or without systemd.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["group_answers", "main"]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            stat = handle.read()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X")


def group_answers(pgid: int) -> bool:
    """The kernel still knows process group ``pgid`` (``killpg(pgid, 0)``; zombies count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait(predicate: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while predicate() and time.monotonic() < deadline:
        time.sleep(0.05)


def _drain(fd: int) -> None:
    with contextlib.suppress(OSError):
        while os.read(fd, 65536):
            pass


def main(argv: list[str]) -> int:
    """Wait for the daemon's word or its death; on death, end the group."""
    pgid, kill_after_s, output_fd = int(argv[1]), float(argv[2]), int(argv[3])
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # only the daemon's end of the pipe ends this process
    if os.read(0, 1) == b"q":
        return 0
    threading.Thread(target=_drain, args=(output_fd,), daemon=True).start()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pgid, signal.SIGTERM)  # the SuperNode leads its group: it leaves the federation
    _wait(lambda: _alive(pgid), kill_after_s)
    _signal_group(pgid, signal.SIGTERM)
    _wait(lambda: group_answers(pgid), 1.0)
    _signal_group(pgid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
