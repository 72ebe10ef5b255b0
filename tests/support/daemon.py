"""Run the real daemon as a child process: a NOTIFY_SOCKET the test owns, JSON log lines collected.

Used by the lifecycle tests, the service tests and the end-to-end cycle tests. Every wait takes a
timeout and fails with what was seen so far, so a hanging daemon fails a test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from support.waiting import Changes

PROJECT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


@dataclass
class Notification:
    """One sd_notify datagram."""

    at: float
    fields: dict[str, str]

    def __contains__(self, key: str) -> bool:
        return key in self.fields


class NotifySocket:
    """A datagram socket standing in for systemd's notification socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[Notification] = []
        self._changed = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append(Notification(time.monotonic(), fields))
        self._changed.set()

    async def wait_for(
        self, predicate: Callable[[Notification], bool], *, after: int = 0, timeout: float = 10
    ) -> tuple[int, Notification]:
        """The first message at index >= ``after`` matching ``predicate``; its index too."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(after, len(self.messages)):
                if predicate(self.messages[i]):
                    return i, self.messages[i]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [m.fields for m in self.messages[after:]]
                raise AssertionError(f"no matching sd_notify message within {timeout} s; saw {seen}")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def close(self) -> None:
        """Stop reading and close the socket."""
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


@dataclass
class DaemonProcess:
    """``python -m syftd run`` as a child; ``logs`` holds every JSON line it printed."""

    proc: asyncio.subprocess.Process
    logs: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    changes: Changes = field(default_factory=Changes)
    """Notified of each line the daemon prints (and of its end of output)."""
    _reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        config: Path,
        *,
        notify: NotifySocket | None = None,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = ("run",),
        python: str = sys.executable,
    ) -> DaemonProcess:
        """Start the daemon with ``config``; JSON logs are forced so the test can parse them."""
        child_env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        child_env["PYTHONUNBUFFERED"] = "1"
        if notify is not None:
            child_env["NOTIFY_SOCKET"] = str(notify.path)
        child_env.update(env or {})
        proc = await asyncio.create_subprocess_exec(
            python,
            "-m",
            "syftd",
            "--config",
            str(config),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=child_env,
            cwd=PROJECT,
        )
        daemon = cls(proc)
        daemon._reader = asyncio.create_task(daemon._read())
        return daemon

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            text = line.decode(errors="replace").rstrip("\n")
            self.raw.append(text)
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(text)
                if isinstance(value, dict):
                    self.logs.append(value)
            self._changed.set()
            self.changes.notify()
        self._changed.set()
        self.changes.notify()

    @property
    def pid(self) -> int:
        """The child's pid."""
        return self.proc.pid

    def events(self, name: str) -> list[dict[str, Any]]:
        """Every log line with ``event == name``."""
        return [entry for entry in self.logs if entry.get("event") == name]

    async def wait_log(self, event: str, *, timeout: float = 10, after: int = 0, **match: Any) -> dict[str, Any]:
        """The first log line (index >= ``after``) with this event and these key values."""
        deadline = time.monotonic() + timeout
        while True:
            for entry in self.logs[after:]:
                if entry.get("event") == event and all(entry.get(k) == v for k, v in match.items()):
                    return entry
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.proc.returncode is not None and self._reader and self._reader.done()):
                tail = "\n".join(self.raw[-40:])
                raise AssertionError(f"no log event {event} {match} within {timeout} s; last output:\n{tail}")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def until(self, predicate: Callable[[], T], *, what: str, timeout: float = 10) -> T:
        """The first truthy ``predicate()``, re-checked on each line the daemon prints (its logs, ``events``)."""
        try:
            return await self.changes.until(predicate, what=what, timeout=timeout)
        except AssertionError as exc:
            tail = "\n".join(self.raw[-40:])
            raise AssertionError(f"{exc}; last output:\n{tail}") from None

    def signal(self, signum: signal.Signals) -> None:
        """Send ``signum`` to the daemon."""
        self.proc.send_signal(signum)

    async def wait_exit(self, timeout: float = 15) -> int:
        """Wait for the exit status; on timeout kill it and fail."""
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            tail = "\n".join(self.raw[-40:])
            raise AssertionError(f"daemon did not exit within {timeout} s; last output:\n{tail}") from None
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)
        return code

    async def stop(self) -> None:
        """SIGTERM if still running, then wait (kill after a timeout); safe in ``finally``."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(AssertionError):
                await self.wait_exit(30)
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()


def write_config(path: Path, state: Path, *, jobs: str = "", daemon_extra: str = "") -> Path:
    """A small config with its state and runtime directories under ``state``."""
    path.write_text(
        f"""
[daemon]
state_dir = "{state / "state"}"
runtime_dir = "{state / "run"}"
log_format = "json"
log_level = "debug"
{daemon_extra}
{jobs}
"""
    )
    return path


MNIST_JOB = """
[[job]]
name = "mnist"
[job.grid]
url = "http://127.0.0.1:9"
model = "mnist"
version = "1.0"
"""
