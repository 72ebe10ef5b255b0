"""Supervising one ``flower-supernode``: start it, follow it, stop it gracefully, restart it on failure.

Owns one job's sessions: the SuperNode started as the leader of its own process group (``group``,
whose watcher ends the group when the daemon dies, so a ``kill -9`` of the daemon still makes the
SuperNode leave, outside systemd too; a parent-death signal was tried: Linux sends it once per exiting
thread of a multithreaded daemon, and flwr's second SIGTERM cuts its graceful exit short, before
DeactivateNode), its output read for the node id and the replies it pushes, and the stop sequence:
``leave(reason)`` writes the stop file, waits the grace (cut short once no ClientApp is working and
its last reply had time to be picked up), sends SIGTERM so the SuperNode deactivates at the SuperLink,
and SIGKILLs the group ``kill_after_s`` later. It never SIGSTOPs. A SuperNode that exits on its own
while wanted is restarted after a doubling delay. Each session ends in one ``SessionResult``.
Does not own spawning, watching and ending the process group (``group``), the argv (``command``),
or when the node should run (the job's constraints, schedule and budget decide); never imports flwr.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

from syftd import events
from syftd.flower import group, stopfile
from syftd.flower.command import SupernodeSpec, command, environment
from syftd.flower.session import (
    REPLY_PICKUP_S,
    OutputReader,
    Phase,
    SessionOutcome,
    SessionResult,
    classify,
    restart_delay,
)
from syftd.log import get_logger
from syftd.service import ServiceContext

__all__ = ["SupernodeSupervisor"]

_log = get_logger("syftd.flower")


class SupernodeSupervisor(ServiceContext):
    """One job's SuperNode. ``join()`` makes it run (and keep running), ``leave(reason)`` stops it;
    ``stop()`` (and ``async with`` exit) leaves with reason ``shutdown``."""

    def __init__(
        self,
        spec: SupernodeSpec,
        *,
        job: str,
        expiry_grace_s: float,
        kill_after_s: float = 10.0,
        backoff_initial_s: float = 30.0,
        backoff_max_s: float = 1800.0,
        on_result: Callable[[SessionResult], None] | None = None,
        on_change: Callable[[], None] | None = None,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.spec, self.job = spec, job
        self.expiry_grace_s, self.kill_after_s = expiry_grace_s, kill_after_s
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self._on_result, self._on_change = on_result, on_change
        self._base_env = dict(os.environ if base_env is None else base_env)
        self.phase = Phase.WAITING
        self.reader = OutputReader()
        self.results: list[SessionResult] = []
        self.process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[Any] | None = None
        self._stop: tuple[str, float] | None = None  # (reason, grace) once leave() was asked
        self._stopping = asyncio.Event()
        self._nudge = asyncio.Event()  # output or a shorter grace: re-check the grace wait
        self._grace_until = 0.0
        self._last_reply_at: float | None = None  # time.monotonic() of the last owed "Sent successfully"
        self._owed: int | None = None  # while leaving: messages received before the stop was asked

    # ------------------------------------------------------------------ the interface

    @property
    def running(self) -> bool:
        """A session is wanted or still winding down."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Nothing runs until ``join()``."""

    async def stop(self) -> None:
        """Leave with reason ``shutdown``; idempotent, bounded by the grace + ``kill_after_s`` + a few s."""
        await self.leave("shutdown")

    def join(self) -> None:
        """Run the SuperNode, restarting it after failures, until ``leave``."""
        if self.running:
            return
        self._stop = None
        self._stopping.clear()
        self._task = asyncio.create_task(self._serve(), name=f"flower-supernode[{self.job}]")

    async def run_once(self) -> SessionResult:
        """One session without restarts, in the caller's task (a job kind's run): it ends when the
        SuperNode exits on its own or after ``request_stop``; the caller decides what comes next."""
        if self.running:
            raise RuntimeError(f"the SuperNode of {self.job} is already supervised")
        self._stop = None
        self._stopping.clear()
        self._task = asyncio.current_task()
        try:
            return self._ended(await self._session())
        finally:
            self._task = None
            self._set_phase(Phase.WAITING)

    def request_stop(self, reason: str, grace_s: float | None = None) -> bool:
        """Start leaving (stop file, grace — ``expiry_grace_s`` unless given — SIGTERM, SIGKILL) and
        return at once; True when a session was running. A second request may only shorten the
        grace (e.g. the machine is going to sleep); the first reason stays."""
        if not self.running:
            return False
        grace = self.expiry_grace_s if grace_s is None else max(0.0, grace_s)
        if self._stop is None:
            self._stop = (reason, grace)
            self._grace_until = time.monotonic() + grace
        elif grace < self._stop[1]:
            self._stop = (self._stop[0], grace)
            self._grace_until = min(self._grace_until, time.monotonic() + grace)
            self._nudge.set()
        self._stopping.set()
        return True

    async def leave(self, reason: str, grace_s: float | None = None) -> SessionResult | None:
        """``request_stop`` and wait until the SuperNode is gone; its session's result, or None when
        no session was running."""
        task = self._task
        count = len(self.results)
        if task is None or not self.request_stop(reason, grace_s):
            return None
        await asyncio.shield(task)
        return self.results[-1] if len(self.results) > count else None

    # ------------------------------------------------------------------ the loop

    def _set_phase(self, phase: Phase) -> None:
        if phase is not self.phase:
            self.phase = phase
            if self._on_change is not None:
                self._on_change()

    async def _serve(self) -> None:
        failures = 0
        try:
            while not self._stopping.is_set():
                result = self._ended(await self._session())
                if self._stopping.is_set():
                    return
                failures = 1 if result.replies else failures + 1
                delay = restart_delay(failures, initial_s=self.backoff_initial_s, max_s=self.backoff_max_s)
                _log.warning(events.FLOWER_SUPERNODE_RESTARTING, job=self.job, in_s=round(delay, 3), failures=failures)
                self._set_phase(Phase.RESTARTING)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
        finally:
            self._set_phase(Phase.WAITING)

    def _stop_reason(self) -> str | None:
        return self._stop[0] if self._stop is not None else None

    def _ended(self, result: SessionResult) -> SessionResult:
        self.results.append(result)
        if self._on_result is not None:
            self._on_result(result)
        return result

    async def _session(self) -> SessionResult:
        loop = asyncio.get_running_loop()
        began = loop.time()
        spec = self.spec
        stopfile.clear(spec.stop_file)
        spec.flwr_home.mkdir(parents=True, exist_ok=True)
        self.reader = reader = OutputReader()
        self._owed, self._last_reply_at = None, None
        self._set_phase(Phase.STARTING)
        try:
            process, transport, exited = await group.spawn(command(spec), environment(spec, self._base_env))
        except OSError as exc:
            _log.error(events.FLOWER_SUPERNODE_EXITED, job=self.job, error=str(exc))
            return SessionResult(SessionOutcome.FAILED, f"cannot start {spec.executable}: {exc}", None, None, 0, 0.0)
        reaper = await group.start_reaper(process.pid, transport, kill_after_s=self.kill_after_s, job=self.job)
        self.process = process
        _log.info(events.FLOWER_SUPERNODE_STARTED, job=self.job, pid=process.pid, superlink=spec.superlink)
        assert process.stdout is not None
        pump = asyncio.create_task(self._pump(process.stdout, reader))
        exited_at: list[float] = []
        exited.add_done_callback(lambda _: exited_at.append(loop.time()))
        asked = asyncio.create_task(self._stopping.wait())
        first: set[asyncio.Future[Any]] = {exited, asked}
        await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        asked.cancel()
        stop_reason = self._stop_reason()
        leave_s: float | None = None
        gone_s: float | None = None
        if stop_reason is not None:
            self._set_phase(Phase.LEAVING)
            stop_began = loop.time()
            killed = await self._leave(process, exited, reader, stop_reason)
            leave_s = (exited_at[0] if exited_at else loop.time()) - stop_began
            gone_s = loop.time() - stop_began
        else:
            killed = await group.end_group(process.pid, exited, loop.time(), job=self.job)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(pump), 1.0)
        pump.cancel()
        await group.dismiss_reaper(reaper)
        self.process = None
        outcome, why = classify(stop_reason=stop_reason, replies=reader.replies, exit_status=process.returncode)
        result = SessionResult(
            outcome, why, process.returncode, reader.node_id, reader.replies, loop.time() - began,
            leave_s, gone_s, killed, tuple(reader.tail), tuple(reader.exit_message),
        )  # fmt: skip
        log = _log.info if outcome is not SessionOutcome.FAILED else _log.warning
        log(
            events.FLOWER_SUPERNODE_EXITED, job=self.job, outcome=outcome.value, reason=why,
            exit_status=process.returncode, node_id=reader.node_id, replies=reader.replies,
            leave_s=None if leave_s is None else round(leave_s, 3),
            gone_s=None if gone_s is None else round(gone_s, 3), killed=killed,
            output_tail=list(reader.tail[-5:]) if outcome is SessionOutcome.FAILED else None,
            exit_message=reader.exit_message or None,
        )  # fmt: skip
        return result

    async def _leave(
        self, process: asyncio.subprocess.Process, exited: asyncio.Future[int], reader: OutputReader, reason: str
    ) -> bool:
        """The stop sequence; True when SIGKILL was needed."""
        loop = asyncio.get_running_loop()
        grace = self._stop[1] if self._stop is not None else 0.0
        stopfile.write(self.spec.stop_file, reason=reason, deadline_unix=time.time() + grace)
        _log.info(events.FLOWER_SUPERNODE_LEAVING, job=self.job, reason=reason, grace_s=grace, busy=reader.busy)
        # only messages received before the stop are waited for: one arriving meanwhile (the next
        # round samples the node while it lingers) gets the stop file at once, and SIGTERM ends it
        self._owed = owed = reader.received
        written_grace = grace
        while not exited.done():
            now = time.monotonic()
            until = self._grace_until
            if reader.replies >= owed:  # no owed ClientApp working: stay until its last reply was picked up
                until = min(until, (self._last_reply_at or 0.0) + REPLY_PICKUP_S)
            if now >= until:
                break
            if self._stop is not None and self._stop[1] < written_grace:  # cut for sleep: say so
                written_grace = self._stop[1]
                stopfile.write(self.spec.stop_file, reason=reason, deadline_unix=time.time() + until - now)
            self._nudge.clear()
            nudged = asyncio.create_task(self._nudge.wait())
            either: set[asyncio.Future[Any]] = {exited, nudged}
            await asyncio.wait(either, timeout=until - now, return_when=asyncio.FIRST_COMPLETED)
            nudged.cancel()
        # the SuperNode alone: it deactivates within ~0.1 s, its helpers follow through their parent
        # monitors (SIGTERM to the whole group made flwr 1.42's SuperNode hang until SIGKILL, measured)
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        return await group.end_group(process.pid, exited, loop.time() + self.kill_after_s, job=self.job)

    async def _pump(self, stream: asyncio.StreamReader, reader: OutputReader) -> None:
        """Read the group's output to its end, line by line."""
        pending = b""
        while chunk := await stream.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            pending = pending[-65536:]
            for line in lines:
                self._on_line(reader, line.decode("utf-8", "replace"))
        if pending:
            self._on_line(reader, pending.decode("utf-8", "replace"))

    def _on_line(self, reader: OutputReader, line: str) -> None:
        said = reader.feed(line)
        _log.debug(events.FLOWER_SUPERNODE_OUTPUT, job=self.job, line=reader.tail[-1])
        if said == "joined":
            _log.info(events.FLOWER_SUPERNODE_JOINED, job=self.job, node_id=reader.node_id)
            if self.phase is Phase.STARTING:
                self._set_phase(Phase.JOINED)
        elif said == "replied":
            if self._owed is None or reader.replies <= self._owed:
                self._last_reply_at = time.monotonic()
            _log.info(events.FLOWER_REPLY_SENT, job=self.job, node_id=reader.node_id, replies=reader.replies)
            self._nudge.set()
            if self._on_change is not None:
                self._on_change()
