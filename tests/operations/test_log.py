"""The log stream: every line written whole (one JSON object per line with concurrent writers), and the
journald priority prefix exactly when JOURNAL_STREAM names the stream."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import structlog
from support.daemon import MNIST_JOB, write_config

from syftd import log

PROJECT = Path(__file__).resolve().parents[2]

WRITER = """
import sys, time
from syftd import log
log.configure("json", "debug")
logger = log.get_logger("load")
deadline = time.monotonic() + float(sys.argv[2])
i = 0
while time.monotonic() < deadline:
    logger.info("test.line", writer=sys.argv[1], i=i, padding="x" * (i % 3000))
    logger.warning("test.other", writer=sys.argv[1], i=i)
    i += 1
"""


def test_three_processes_sharing_one_pipe_never_run_lines_together() -> None:
    """Three writers on one pipe for 3 s (lines up to 3 KiB): every line parses as one JSON object."""
    read_fd, write_fd = os.pipe()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(n), "3"], stdout=write_fd, stderr=subprocess.PIPE, cwd=PROJECT
        )
        for n in range(3)
    ]
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    for child in children:
        assert child.wait(timeout=30) == 0, child.stderr.read() if child.stderr else ""
    lines = data.split(b"\n")
    assert lines[-1] == b""
    parsed = [json.loads(line) for line in lines[:-1]]  # raises on any line holding two objects or half of one
    writers = {entry["writer"] for entry in parsed}
    assert writers == {"0", "1", "2"} and len(parsed) > 300
    print(f"\n{len(parsed)} lines from 3 writers, all whole")


def test_priority_prefix_only_on_the_stream_journal_stream_names(tmp_path: Path) -> None:
    """JOURNAL_STREAM=dev:inode of this stream: <6> info, <4> warning, <3> error; another inode: none."""
    target = tmp_path / "out"
    with target.open("w") as stream:
        info = os.fstat(stream.fileno())
        assert log.journal_priority_wanted(stream, {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"})
        assert not log.journal_priority_wanted(stream, {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino + 1}"})
        assert not log.journal_priority_wanted(stream, {})
        assert not log.journal_priority_wanted(io.StringIO(), {"JOURNAL_STREAM": "1:2"})


def test_string_streams_get_one_write_per_line() -> None:
    """A stream without a descriptor (tests) gets each line with its newline in one write() call."""
    calls: list[str] = []

    class Recorder(io.StringIO):
        def write(self, s: str) -> int:
            calls.append(s)
            return len(s)

    log.configure("json", "info", stream=Recorder())
    try:
        log.get_logger("t").info("test.line", a=1)
    finally:
        structlog.reset_defaults()
    assert len(calls) == 1 and calls[0].endswith("}\n") and json.loads(calls[0])["a"] == 1


async def test_the_daemon_prefixes_priorities_under_journal_stream(tmp_path: Path) -> None:
    """The real daemon, its stdout a pipe named by JOURNAL_STREAM: info lines <6>, debug <7>, warnings <4>."""
    config = write_config(tmp_path / "syftd.toml", tmp_path, jobs=MNIST_JOB)
    read_fd, write_fd = os.pipe()
    info = os.fstat(write_fd)
    env = {**os.environ, "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}", "PYTHONUNBUFFERED": "1"}
    env.pop("NOTIFY_SOCKET", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syftd", "--config", str(config), "run",
        stdout=write_fd, stderr=write_fd, env=env, cwd=PROJECT,
    )  # fmt: skip
    os.close(write_fd)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb"))
    lines: list[str] = []
    try:

        async def until(event: str) -> None:
            while True:
                raw = await reader.readline()
                assert raw, f"the daemon ended before {event}; saw {lines[-10:]}"
                lines.append(raw.decode().rstrip("\n"))
                if f'"event": "{event}"' in lines[-1]:
                    return

        await asyncio.wait_for(until("daemon.ready"), 30)
        simulate = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "syftd", "--config", str(config), "simulate", "power-loss", cwd=PROJECT
        )
        assert await asyncio.wait_for(simulate.wait(), 30) == 0
        await asyncio.wait_for(until("conditions.simulated"), 30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        transport.close()
    by_event = {json.loads(line[3:])["event"]: line[:3] for line in lines}
    assert all(line[:3] in ("<3>", "<4>", "<6>", "<7>") for line in lines), lines
    assert by_event["daemon.ready"] == "<6>"
    assert by_event["conditions.simulated"] == "<4>"
    assert "<7>" in by_event.values()  # debug lines (log_level = "debug" in the test config)
