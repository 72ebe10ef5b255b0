"""Robustness: whatever a node answers (malformed, truncated, oversized, wrong-typed; hypothesis-generated),
GridClient returns a typed value or raises a GridError, never another exception and never hangs."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from conftest import FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syftd.config import GridConfig
from syftd.errors import GridError
from syftd.grid.answers import Accepted, Auth, auth_of, cycle_outcome, unwrap
from syftd.grid.client import GridClient

GOLDEN = FIXTURES / "golden-cycle"
ACCEPTED = json.loads((GOLDEN / "011-ws-model-centric_cycle-request.response.json").read_bytes())
AUTHENTICATED = json.loads((GOLDEN / "003-ws-model-centric_authenticate.response.json").read_bytes())

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
known_keys = sorted(set(ACCEPTED["data"]) | set(AUTHENTICATED["data"]) | {"error", "timeout", "request_id"})


@st.composite
def answers(draw: st.DrawFn) -> Any:
    """Arbitrary JSON, or a recorded answer with some fields replaced, dropped or re-typed, maybe enveloped."""
    kind = draw(st.sampled_from(["arbitrary", "mutated", "keys"]))
    if kind == "arbitrary":
        return draw(json_values)
    if kind == "keys":
        data = draw(st.dictionaries(st.sampled_from(known_keys), json_values, max_size=6))
    else:
        data = dict(draw(st.sampled_from([ACCEPTED, AUTHENTICATED]))["data"])
        for key in draw(st.lists(st.sampled_from(sorted(data)), max_size=3)):
            if draw(st.booleans()):
                data[key] = draw(json_values)
            else:
                data.pop(key, None)
    return {"type": "model-centric/x", "data": data} if draw(st.booleans()) else data


@settings(max_examples=400, deadline=None)
@given(answers())
def test_answer_interpretation_is_total(answer: Any) -> None:
    """unwrap + auth_of / cycle_outcome on any JSON: Auth/Accepted or a GridError."""
    for interpret in (lambda d: auth_of(d, str), lambda d: cycle_outcome(d, "training_plan", str)):
        try:
            result = interpret(unwrap(answer, "op"))
        except GridError:
            continue
        assert isinstance(result, Auth | Accepted)


@dataclasses.dataclass
class Script:
    """What the threaded stub answers next: a WS frame, and an HTTP status and body."""

    frame: str | bytes = ""
    status: int = 200
    body: bytes = b""


class ThreadedStub:
    """An aiohttp node stub on 127.0.0.1 in its own thread, so synchronous hypothesis tests can drive it."""

    def __init__(self) -> None:
        self.script = Script()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10), "stub node did not start"

    def stop(self) -> None:
        future = asyncio.run_coroutine_threadsafe(self._cleanup(), self._loop)
        future.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._websocket)
        app.router.add_route("*", "/model-centric/{op}", self._http)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                frame = self.script.frame
                await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
        return ws

    async def _http(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(status=self.script.status, body=self.script.body)


@pytest.fixture(scope="module")
def stub() -> Iterator[ThreadedStub]:
    server = ThreadedStub()
    server.start()
    yield server
    server.stop()


async def _exercise(port: int, transport: str) -> list[object]:
    grid = GridConfig(
        url=f"http://127.0.0.1:{port}",
        model="mnist",
        version="1.0",
        transport=transport,  # type: ignore[arg-type]
        timeout_s=2.0,
        max_download_mb=0.05,
    )
    outcomes: list[object] = []
    async with GridClient(grid) as client:
        for call in (
            client.authenticate,
            lambda: client.cycle_request("w"),
            lambda: client.get_model("w", "k", 1),
            lambda: client.report("w", "k", b"\x00"),
        ):
            try:
                outcomes.append(await call())  # type: ignore[operator]
            except GridError as exc:
                outcomes.append(exc)
    return outcomes


def _run(port: int, transport: str) -> list[object]:
    return asyncio.run(asyncio.wait_for(_exercise(port, transport), 30))


bodies = st.one_of(
    answers().map(lambda a: json.dumps(a).encode()),
    st.binary(max_size=64),
    st.integers(0, len(json.dumps(ACCEPTED))).map(lambda n: json.dumps(ACCEPTED).encode()[:n]),
    st.just(b" " * 70_000 + b"{}"),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, status=st.sampled_from([200, 200, 400, 401, 404, 500, 503]), binary=st.booleans())
def test_any_answer_over_real_sockets_is_typed(stub: ThreadedStub, body: bytes, status: int, binary: bool) -> None:
    """Generated bodies as WS frames and HTTP answers (any status): only results or GridErrors come back."""
    frame: str | bytes = body if binary else body.decode("utf-8", "replace")
    stub.script = Script(frame=frame, status=status, body=body)
    for transport in ("ws", "http"):
        for outcome in _run(stub.port, transport):
            assert isinstance(outcome, GridError | Auth | Accepted | bytes | type(None)), repr(outcome)
