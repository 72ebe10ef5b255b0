"""The local grid node for tests: in-process (``running_node``) or as a child process (``NodeProcess``).

Both listen on 127.0.0.1 at a free port. ``NodeControl`` drives the loopback-only ``/_test/...``
controls over HTTP (for the child process; the in-process ``GridNode`` has the same as methods).
``host_over_ws`` hosts a process the way PyGrid's hosts do (``model-centric/host-training``).
``RawWorker`` speaks the worker protocol with plain aiohttp requests (no syftd client), for tests of
the node itself. ``small_process`` builds a torch-free process (a tiny float32 model and the recorded TorchScript
plan) for tests that do not train.

Usage::

    async with running_node(revision="pg-master") as node:
        node.host("mnist", "1.0", *small_process())
        ...                                   # node.url, node.ws_url, node.reports, node.hold_reports()

    async with NodeProcess("--host-mnist", "--num-cycles", "2") as proc:
        await proc.control.hold_reports()     # proc.url, proc.ws_url
        state = await proc.control.wait(held=1, timeout=10)
"""

from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from syftd.demo import node_command
from syftd.grid import wire
from syftd.node.cli import LISTENING
from syftd.node.node import GridNode, NodeOptions, Revision
from syftd.service import ServiceContext

__all__ = [
    "NodeControl",
    "NodeProcess",
    "RawWorker",
    "assert_model_minus",
    "diff_of",
    "floats",
    "host_over_ws",
    "running_node",
    "small_process",
]

_REPO = Path(__file__).resolve().parents[2]
_GOLDEN = _REPO / "tests" / "fixtures" / "golden-cycle"
_RECORDED_PLAN = _GOLDEN / "013-http-GET-model-centric_get-plan.response.bin"


def small_process(
    *,
    shapes: Sequence[tuple[int, ...]] = ((3, 2), (3,)),
    server_config: Mapping[str, Any] | None = None,
    client_config: Mapping[str, Any] | None = None,
) -> tuple[bytes, dict[str, bytes], dict[str, Any], dict[str, Any]]:
    """(model, plans, client_config, server_config): float32 tensors 0.0, 0.1, 0.2, … and the recorded plan."""
    tensors = []
    start = 0
    for shape in shapes:
        numel = 1
        for d in shape:
            numel *= d
        values = [(start + i) / 10 for i in range(numel)]
        tensors.append(wire.Tensor("float32", tuple(shape), _f32(values)))
        start += numel
    plans = {"training_plan": _RECORDED_PLAN.read_bytes()}
    client = {"batch_size": 2, "lr": 0.1, "max_updates": 1, **(client_config or {})}
    server = {"cycle_length": 60, "num_cycles": 5, "min_diffs": 1, "max_diffs": 1, **(server_config or {})}
    return wire.encode_state(tensors), plans, client, server


def floats(tensor: wire.Tensor) -> array.array[float]:
    return array.array("f", tensor.data)


def diff_of(model: bytes, scale: float = 0.5) -> bytes:
    """A valid diff for ``model``: every element i gets scale * (i % 7 - 3)."""
    tensors = wire.parse_state(model)
    out = []
    for t in tensors:
        values = array.array("f", [scale * (i % 7 - 3) for i in range(t.numel)])
        out.append(wire.Tensor("float32", t.shape, values.tobytes()))
    return wire.encode_state(out)


def assert_model_minus(after: bytes, before: bytes, diffs: list[bytes]) -> None:
    got, old = wire.parse_state(after), wire.parse_state(before)
    parsed = [wire.parse_state(d) for d in diffs]
    assert [t.shape for t in got] == [t.shape for t in old]
    for i, (g, o) in enumerate(zip(got, old, strict=True)):
        assert g.dtype == "float32"
        columns = [floats(p[i]) for p in parsed]
        for j, (gv, ov) in enumerate(zip(floats(g), floats(o), strict=True)):
            mean = sum(c[j] for c in columns) / len(columns)
            assert abs(gv - (ov - mean)) <= 1e-7 + 1e-6 * abs(ov), (i, j)


def _f32(values: Sequence[float]) -> bytes:
    import array

    return array.array("f", values).tobytes()


@contextlib.asynccontextmanager
async def running_node(
    revision: str = "pg-dev", *, clock: Callable[[], datetime] | None = None, **options: Any
) -> AsyncIterator[GridNode]:
    """An in-process node on 127.0.0.1 at a free port, stopped on exit.

    ``options`` are ``NodeOptions`` fields, e.g. ``averaging_delay_s=0`` (the default is the real node's
    0.2 s; ``await node.settled()`` waits for it); ``clock`` replaces the node's ``datetime.now``.
    """
    opts = NodeOptions(revision=Revision(revision), **options)
    node = GridNode(opts) if clock is None else GridNode(opts, clock=clock)
    await node.start("127.0.0.1", 0)
    try:
        yield node
    finally:
        await node.stop()


async def host_over_ws(
    ws_url: str,
    model: bytes,
    plans: Mapping[str, bytes],
    client_config: Mapping[str, Any],
    server_config: Mapping[str, Any],
    *,
    averaging_plan: bytes | None = None,
) -> dict[str, Any]:
    """Send ``model-centric/host-training`` (hex State and Plans) and return the node's answer."""
    data: dict[str, Any] = {
        "model": model.hex(),
        "plans": {name: plan.hex() for name, plan in plans.items()},
        "protocols": {},
        "client_config": dict(client_config),
        "server_config": dict(server_config),
    }
    if averaging_plan is not None:
        data["averaging_plan"] = averaging_plan.hex()
    message = {"type": "model-centric/host-training", "data": data, "request_id": uuid.uuid4().hex}
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
        await ws.send_str(json.dumps(message))
        answer: dict[str, Any] = json.loads(await asyncio.wait_for(ws.receive_str(), 60))
    return answer


class NodeControl:
    """The ``/_test/...`` controls of a node at ``url``, over HTTP."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def _call(
        self, method: str, control: str, /, *, http_timeout: float = 30.0, **params: Any
    ) -> tuple[int, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        query = {k: str(v) for k, v in params.items() if v is not None}
        async with self._session.request(
            method, f"{self.url}/_test/{control}", params=query, timeout=aiohttp.ClientTimeout(total=http_timeout)
        ) as response:
            return response.status, await response.json()

    async def state(self) -> dict[str, Any]:
        """The node's snapshot: processes (checkpoint, cycle, …), reports, held, failing."""
        return (await self._call("GET", "state"))[1]  # type: ignore[no-any-return]

    async def hold_reports(self) -> None:
        """Hold every report until ``release_reports``."""
        await self._call("POST", "hold-reports")

    async def release_reports(self) -> None:
        """Let held reports through and stop holding."""
        await self._call("POST", "release-reports")

    async def fail_next(self, n: int, status: int = 503) -> None:
        """Fail the next ``n`` HTTP requests (WebSocket handshakes included) with ``status``."""
        await self._call("POST", "fail-next", n=n, status=status)

    async def set_averaging_delay(self, seconds: float) -> None:
        """Evaluate cycles ``seconds`` after their triggering reports from now on (0: at once)."""
        status, body = await self._call("POST", "averaging-delay", seconds=seconds)
        if status != 200:
            raise ValueError(body.get("error"))

    async def close_cycle(self, name: str | None = None, version: str | None = None) -> bool:
        """Complete the current cycle now; False if none was open."""
        return bool((await self._call("POST", "close-cycle", name=name, version=version))[1]["closed"])

    async def wait(
        self,
        *,
        reports: int = 0,
        held: int = 0,
        checkpoint: int = 0,
        name: str | None = None,
        version: str | None = None,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Wait until the node has at least these reports / held reports / checkpoint number.

        Raises:
            TimeoutError: not reached within ``timeout`` (the message holds the node's snapshot).
        """
        status, body = await self._call(
            "GET",
            "wait",
            http_timeout=timeout + 10,
            reports=reports,
            held=held,
            checkpoint=checkpoint,
            name=name,
            version=version,
            timeout=timeout,
        )
        if status != 200:
            raise TimeoutError(f"node did not reach reports>={reports} held>={held} checkpoint>={checkpoint}: {body}")
        return body  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class NodeProcess(ServiceContext):
    """``python -m syftd node serve --port 0 ARGS`` as a child process; ``start`` returns once it listens."""

    def __init__(self, *args: str, env: Mapping[str, str] | None = None) -> None:
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.output: list[str] = []
        self.url = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None
        self.control = NodeControl("http://127.0.0.1")

    @property
    def ws_url(self) -> str:
        """The WebSocket URL of the node."""
        return "ws" + self.url[len("http") :] + "/"

    @property
    def pid(self) -> int:
        """The child's process id."""
        assert self._proc is not None, "NodeProcess.start() first"
        return self._proc.pid

    async def start(self, timeout: float = 60.0) -> None:
        """Spawn the node and wait for its "listening on URL" line.

        Raises:
            RuntimeError: the node exited or did not listen within ``timeout`` (with its output).
        """
        self._proc = await asyncio.create_subprocess_exec(
            *node_command(0, *self.args),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
            cwd=_REPO,
        )
        listening = asyncio.get_running_loop().create_future()
        self._drain = asyncio.create_task(self._read_output(listening))
        try:
            self.url = await asyncio.wait_for(asyncio.shield(listening), timeout)
        except asyncio.TimeoutError:
            self.url = ""
        if not self.url:
            await self.stop()
            raise RuntimeError("grid node did not start listening:\n" + "\n".join(self.output))
        self.control = NodeControl(self.url)

    async def _read_output(self, listening: asyncio.Future[str]) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for raw in self._proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.output.append(line)
            if line.startswith(LISTENING) and not listening.done():
                listening.set_result(line[len(LISTENING) :].strip())
        if not listening.done():
            listening.set_result("")

    async def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; returns the exit status. Idempotent."""
        await self.control.close()
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        if self._drain is not None:
            await self._drain
        return proc.returncode


class RawWorker:
    """A worker made of plain aiohttp calls; ``transport`` picks WS or HTTP for the three JSON operations.

    ``op`` returns the raw JSON answer (no envelope unwrapping); the helpers unwrap ``data``.
    """

    def __init__(
        self, url: str, transport: str = "ws", *, request_ids: bool = True, prefix: str = "model-centric"
    ) -> None:
        self.url = url.rstrip("/")
        self.prefix = prefix
        self.transport = transport
        self.request_ids = request_ids
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.worker_id = ""
        self.cycle: dict[str, Any] = {}

    async def __aenter__(self) -> RawWorker:
        self.session = aiohttp.ClientSession()
        if self.transport == "ws":
            self.ws = await self.session.ws_connect("ws" + self.url[len("http") :] + "/", max_msg_size=0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()

    async def ws_send(self, message: Mapping[str, Any] | str) -> Any:
        """Send one text frame and return the decoded answer."""
        assert self.ws is not None
        await self.ws.send_str(message if isinstance(message, str) else json.dumps(message))
        return json.loads(await asyncio.wait_for(self.ws.receive_str(), 30))

    async def op(self, name: str, data: Mapping[str, Any]) -> tuple[int, Any]:
        """One JSON operation (``authenticate``, ``cycle-request``, ``report``): (HTTP status or 0, answer)."""
        kind = f"{self.prefix}/{name}"
        if self.transport == "ws":
            message: dict[str, Any] = {"type": kind, "data": dict(data)}
            if self.request_ids:
                message["request_id"] = uuid.uuid4().hex
            return 0, await self.ws_send(message)
        assert self.session is not None
        async with self.session.post(f"{self.url}/{kind}", json=dict(data)) as response:
            return response.status, await response.json(content_type=None)

    async def authenticate(self, model: str = "mnist", version: str | None = "1.0", token: str | None = None) -> Any:
        """Authenticate; remembers the worker id on success; returns the unwrapped answer."""
        data = {"auth_token": token, "model_name": model, "model_version": version}
        answer = _unwrap((await self.op("authenticate", data))[1])
        self.worker_id = answer.get("worker_id", self.worker_id)
        return answer

    async def cycle_request(self, model: str = "mnist", version: str = "1.0", **speeds: float) -> Any:
        """Ask for a cycle; remembers an accepted cycle; returns the unwrapped answer."""
        data = {"worker_id": self.worker_id, "model": model, "version": version, **speeds}
        answer = _unwrap((await self.op("cycle-request", data))[1])
        if answer.get("status") == "accepted":
            self.cycle = answer
        return answer

    async def get(self, path: str, /, **params: Any) -> tuple[int, bytes]:
        """A GET under /PREFIX/: (status, body)."""
        assert self.session is not None
        query = {k: str(v) for k, v in params.items()}
        async with self.session.get(f"{self.url}/{self.prefix}/{path}", params=query) as response:
            return response.status, await response.read()

    async def get_model(self, **override: Any) -> tuple[int, bytes]:
        """get-model for the accepted cycle (override any query value)."""
        query = {
            "worker_id": self.worker_id,
            "request_key": self.cycle.get("request_key"),
            "model_id": self.cycle.get("model_id"),
            **override,
        }
        return await self.get("get-model", **query)

    async def get_plan(self, name: str = "training_plan", **override: Any) -> tuple[int, bytes]:
        """get-plan (torchscript) for the accepted cycle (override any query value)."""
        query = {
            "worker_id": self.worker_id,
            "request_key": self.cycle.get("request_key"),
            "plan_id": self.cycle.get("plans", {}).get(name),
            "receive_operations_as": "torchscript",
            **override,
        }
        return await self.get("get-plan", **query)

    async def report(self, diff: bytes, /, **override: Any) -> Any:
        """Report ``diff`` (standard base64) for the accepted cycle; returns the unwrapped answer."""
        data = {
            "worker_id": self.worker_id,
            "request_key": self.cycle.get("request_key"),
            "diff": base64.b64encode(diff).decode(),
            **override,
        }
        return _unwrap((await self.op("report", data))[1])


def _unwrap(answer: Any) -> Any:
    if isinstance(answer, dict) and "type" in answer and "data" in answer:
        return answer["data"]
    return answer
