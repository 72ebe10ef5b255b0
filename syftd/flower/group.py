"""The SuperNode's process group: started in a session of its own, watched, and ended to the last helper.

Owns spawning the SuperNode as the leader of a new process group (``spawn``; its ``exited`` future
resolves when the SuperNode itself exits, as asyncio's ``Process.wait()`` also waits for the output
pipe its children keep open), the small watcher process that ends the group when the daemon dies
(``start_reaper``/``dismiss_reaper``, running ``syftd.flower.reaper``, which holds the read end of the
group's output pipe to drain it then), ending the group (``end_group``: wait for the SuperNode until a
deadline, SIGKILL the group then, and SIGTERM, then SIGKILL, the helpers left behind) and
``group_alive``. Does not own when to stop, the stop file or the grace before SIGTERM
(``supervisor``), nor the argv and environment (``command``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path

from syftd import events
from syftd.flower import reaper as reaper_module
from syftd.log import get_logger

__all__ = ["dismiss_reaper", "end_group", "group_alive", "spawn", "start_reaper"]

_log = get_logger("syftd.flower")
_POLL_S = 0.05
_STRAGGLER_S = 1.0  # once the SuperNode is gone, its helpers get this long after SIGTERM, then SIGKILL


async def spawn(
    argv: Sequence[str], env: Mapping[str, str]
) -> tuple[asyncio.subprocess.Process, asyncio.SubprocessTransport, asyncio.Future[int]]:
    """Start ``argv`` in a new session (its pid is the group's id), output piped, stdin from /dev/null:
    the process, its transport and the future of its own exit status.

    Raises:
        OSError: it could not be started.
    """
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.subprocess_exec(
        lambda: _ExitProtocol(loop),
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(env),
        start_new_session=True,
    )
    return asyncio.subprocess.Process(transport, protocol, loop), transport, protocol.exited


async def end_group(pgid: int, exited: asyncio.Future[int], deadline: float, *, job: str) -> bool:
    """Wait for the SuperNode (the group's leader) until ``deadline`` (event loop time), SIGKILL its
    group then; then end what is left of the group (its helpers only retry to reach the gone
    SuperNode): SIGTERM, SIGKILL ``_STRAGGLER_S`` later. True when the SuperNode itself needed SIGKILL."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(exited), max(0.0, deadline - loop.time()))
    killed = not exited.done()
    if killed:
        _log.warning(events.FLOWER_SUPERNODE_KILLED, job=job, pgid=pgid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(exited), 5.0)
    for sig, patience in ((signal.SIGTERM, _STRAGGLER_S), (signal.SIGKILL, 5.0)):
        if not group_alive(pgid):
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        until = loop.time() + patience
        while group_alive(pgid) and loop.time() < until:  # noqa: ASYNC110 - no event says a group is empty
            await asyncio.sleep(_POLL_S)
    return killed


async def start_reaper(
    pgid: int, transport: asyncio.SubprocessTransport, *, kill_after_s: float, job: str
) -> asyncio.subprocess.Process | None:
    """The watcher that ends the group if this process dies (``syftd.flower.reaper``); it holds
    the read end of the group's output pipe, to drain it then."""
    pipe = transport.get_pipe_transport(1)
    output = pipe.get_extra_info("pipe") if pipe is not None else None
    fd = output.fileno() if output is not None else -1
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-I", reaper_module.__file__, str(pgid), repr(kill_after_s), str(fd),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True, pass_fds=(fd,) if fd >= 0 else (),
        )  # fmt: skip
    except OSError as exc:
        _log.warning(events.FLOWER_REAPER_FAILED, job=job, error=str(exc))
        return None


async def dismiss_reaper(reaper: asyncio.subprocess.Process | None) -> None:
    """Tell the watcher the group ended as planned, and wait for it (killed after 2 s)."""
    if reaper is None or reaper.stdin is None:
        return
    with contextlib.suppress(OSError):
        reaper.stdin.write(b"q")
        reaper.stdin.close()
    try:
        await asyncio.wait_for(reaper.wait(), 2.0)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            reaper.kill()
        await reaper.wait()


class _ExitProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """The usual stream protocol plus ``exited``, resolved when the SuperNode itself exits: asyncio's
    ``Process.wait()`` (3.11) also waits for the output pipe, which its children keep open."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2**16, loop=loop)
        self.exited: asyncio.Future[int] = loop.create_future()
        self._process: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._process = typing.cast(asyncio.SubprocessTransport, transport)

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done() and self._process is not None:
            code = self._process.get_returncode()
            self.exited.set_result(-1 if code is None else code)


def group_alive(pgid: int) -> bool:
    """A process of group ``pgid`` is still alive (zombies, which no one may reap here, do not count)."""
    proc = Path("/proc")
    if not sys.platform.startswith("linux") or not proc.is_dir():
        return reaper_module.group_answers(pgid)
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp ...
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False
