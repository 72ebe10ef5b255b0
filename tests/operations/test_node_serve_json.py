"""`syftd node serve --json`: every stdout line is one JSON object, the start-up line
(``grid_node.listening``) names the URL, host, port and pid a script needs, and a refusal is a JSON
line too, the same logging the daemon's `run --json` uses."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp

PROJECT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60  # a cold interpreter importing aiohttp and numpy on a loaded 2-core machine


async def serve(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syftd",
        "node",
        "serve",
        "--json",
        "--host",
        "127.0.0.1",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=PROJECT,
    )


async def next_json(child: asyncio.subprocess.Process) -> dict[str, Any]:
    assert child.stdout is not None
    line = await asyncio.wait_for(child.stdout.readline(), START_TIMEOUT_S)
    assert line, "stdout closed before the line came"
    value = json.loads(line)
    assert isinstance(value, dict) and {"event", "level", "timestamp"} <= value.keys(), value
    return value


async def test_serve_json_start_up_line_names_the_url_and_every_line_is_json() -> None:
    """On port 0 the listening line carries the port the kernel picked (a request to its URL is
    answered); the lines before it and the stop line after SIGTERM are JSON objects as well."""
    child = await serve("--port", "0")
    try:
        lines = [await next_json(child)]
        while lines[-1]["event"] != "grid_node.listening":
            assert len(lines) < 5, lines
            lines.append(await next_json(child))
        listening = lines[-1]
        assert listening["port"] > 0 and listening["host"] == "127.0.0.1" and listening["pid"] == child.pid
        assert listening["url"] == f"http://127.0.0.1:{listening['port']}" and listening["revision"] == "pg-dev"
        async with aiohttp.ClientSession() as session, session.get(listening["url"] + "/model-centric/nothing") as r:
            assert r.status == 404  # the node answers on the URL it named
        child.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(child.communicate(), START_TIMEOUT_S)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    rest = [json.loads(line) for line in out.decode().splitlines()]
    assert child.returncode == 0 and err == b"", err.decode()[-2000:]
    assert rest[-1]["event"] == "grid_node.stopped" and all("event" in line for line in rest)


async def test_serve_json_refusal_is_one_json_line() -> None:
    """A port already taken: exit 1 with one ``grid_node.start_failed`` line naming the address, no text."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        child = await serve("--port", str(port))
        out, err = await asyncio.wait_for(child.communicate(), START_TIMEOUT_S)
    finally:
        taken.close()
    assert child.returncode == 1 and err == b"", err.decode()[-2000:]
    (line,) = [json.loads(text) for text in out.decode().splitlines()]
    assert line["event"] == "grid_node.start_failed" and line["level"] == "error" and line["exit_status"] == 1
    assert f"cannot listen on 127.0.0.1:{port}" in line["problem"]
