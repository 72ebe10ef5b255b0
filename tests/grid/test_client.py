"""GridClient against a stub node on 127.0.0.1 that replays the recorded PyGrid answers (golden-cycle)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import WSMsgType, web
from conftest import FIXTURES

from syftd import log as syftd_log
from syftd.config import GridConfig
from syftd.errors import (
    GridAuthFailed,
    GridCycleGone,
    GridError,
    GridFinished,
    GridProtocolError,
    GridRejected,
    GridUnavailable,
    GridWorkerUnknown,
    TokenError,
)
from syftd.grid.client import Accepted, Auth, GridClient, Speed, parse_timeout, read_token

GOLDEN = FIXTURES / "golden-cycle"
MODEL = (GOLDEN / "012-http-GET-model-centric_get-model.response.bin").read_bytes()
PLAN = (GOLDEN / "013-http-GET-model-centric_get-plan.response.bin").read_bytes()
DIFF = (GOLDEN / "016-ws-model-centric_report.request.diff.base64-decoded.bin").read_bytes()


def recorded(name: str) -> Any:
    return json.loads((GOLDEN / name).read_bytes())


Answer = Callable[[dict[str, Any]], Any]


class StubNode:
    """Serves WS at / and HTTP under /<prefix>/; answers come from ``ws``/``http`` tables a test may change.

    ``events`` records ("ws-open" | "ws-close" | op, payload) in order, so tests can see what the
    client sent and when WebSockets opened and closed.
    """

    def __init__(self, prefix: str = "model-centric") -> None:
        self.prefix = prefix
        self.events: list[tuple[str, Any]] = []
        self.echo_request_id = True
        self.ws: dict[str, Answer] = {
            "authenticate": lambda _: recorded("003-ws-model-centric_authenticate.response.json"),
            "cycle-request": lambda _: recorded("011-ws-model-centric_cycle-request.response.json"),
            "report": lambda _: recorded("016-ws-model-centric_report.response.json"),
        }
        self.http: dict[str, Callable[[web.Request, Any], Any]] = {
            "authenticate": lambda _r, _b: web.json_response(
                recorded("http/002-http-POST-model-centric_authenticate.response.json")
            ),
            "cycle-request": lambda _r, _b: web.json_response(
                recorded("http/010-http-POST-model-centric_cycle-request.response.json")
            ),
            "report": lambda _r, _b: web.json_response(
                recorded("http/013-http-POST-model-centric_report.response.json")
            ),
            "get-model": lambda _r, _b: web.Response(body=MODEL, content_type="application/octet-stream"),
            "get-plan": lambda _r, _b: web.Response(body=PLAN, content_type="application/octet-stream"),
        }
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self._changed: asyncio.Condition | None = None
        self.stopping: asyncio.Event | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ops(self) -> list[str]:
        return [kind for kind, _ in self.events]

    def sent(self, op: str) -> list[Any]:
        return [payload for kind, payload in self.events if kind == op]

    async def record(self, kind: str, payload: Any) -> None:
        self.events.append((kind, payload))
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (bounded) until ``predicate()`` holds, re-checking on each recorded event."""
        assert self._changed is not None
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def start(self) -> None:
        self._changed = asyncio.Condition()
        self.stopping = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/", self._websocket)
        app.router.add_route("*", f"/{self.prefix}/{{op}}", self._route)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.stopping is not None:
            self.stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def stop_websockets(self) -> None:
        """Close every open WebSocket from the node's side (a restart, an idle timeout)."""
        for ws in list(self._sockets):
            await ws.close()

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024)
        await ws.prepare(request)
        self._sockets.add(ws)
        await self.record("ws-open", None)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            message = json.loads(msg.data)
            op = message["type"].split("/", 1)[1]
            await self.record(op, message)
            answer = self.ws[op](message)
            if isinstance(answer, dict) and self.echo_request_id and "request_id" in message:
                answer = {**answer, "request_id": message["request_id"]}
            if answer is None:
                await ws.close()
                break
            if answer == "hang":
                assert self.stopping is not None
                await self.stopping.wait()
                break
            if isinstance(answer, bytes):
                await ws.send_bytes(answer)
            else:
                await ws.send_str(answer if isinstance(answer, str) else json.dumps(answer))
        self._sockets.discard(ws)
        await self.record("ws-close", None)
        return ws

    async def _route(self, request: web.Request) -> web.StreamResponse:
        op = request.match_info["op"]
        if op == "speed-test":
            return await _speed_test(request)
        body = await request.json() if request.method == "POST" else dict(request.query)
        await self.record(op, body)
        answer = self.http[op](request, body)
        if asyncio.iscoroutine(answer):
            answer = await answer
        return answer  # type: ignore[no-any-return]


async def _speed_test(request: web.Request) -> web.StreamResponse:
    if "is_ping" in request.query or request.method == "POST":
        await request.read()
        return web.json_response({})
    response = web.StreamResponse()
    await response.prepare(request)
    for _ in range(64):
        await response.write(b"x" * 65536)
    return response


@pytest.fixture
async def node() -> AsyncIterator[StubNode]:
    stub = StubNode()
    await stub.start()
    yield stub
    await stub.stop()


def grid_for(url: str, **changes: Any) -> GridConfig:
    base = GridConfig(url=url, model="mnist", version="1.0", timeout_s=5.0, speed_test_max_mb=0.5)
    return dataclasses.replace(base, **changes)


def _types(obj: dict[str, Any]) -> dict[str, type]:
    return {k: type(v) for k, v in obj.items()}


async def test_ws_cycle_sends_the_recorded_keys_and_types_with_a_request_id(node: StubNode) -> None:
    """Over WS, authenticate / cycle-request / report carry the recorded keys, value types and a request_id."""
    async with GridClient(grid_for(node.url)) as client:
        auth = await client.authenticate()
        speed = await client.speed_test(auth.worker_id)
        accepted = await client.cycle_request(auth.worker_id, speed=speed)
        await client.report(auth.worker_id, accepted.request_key, DIFF)
    assert auth == Auth("9d0eeeec-2d22-41e7-8c0f-574bbb5450e8", True)
    response = recorded("011-ws-model-centric_cycle-request.response.json")["data"]
    assert accepted == Accepted(
        request_key=response["request_key"],
        model_id=1,
        plans={"training_plan": 2},
        client_config=response["client_config"],
        version="1.0",
        model="mnist",
    )
    for op, name in [
        ("authenticate", "003-ws-model-centric_authenticate.request.json"),
        ("cycle-request", "011-ws-model-centric_cycle-request.request.json"),
    ]:
        [sent] = node.sent(op)
        want = recorded(name)
        assert sent["type"] == want["type"]
        assert _types(sent["data"]) == _types(want["data"])
        assert isinstance(sent["request_id"], str) and sent["request_id"]
    [report] = node.sent("report")
    want = json.loads((GOLDEN / "016-ws-model-centric_report.request.json").read_bytes())
    assert report["type"] == want["type"] and _types(report["data"]) == _types(want["data"])
    assert report["data"]["diff"] == want["data"]["diff"]
    assert isinstance(report["request_id"], str)


async def test_one_websocket_serves_the_whole_cycle_and_closes_with_the_client(node: StubNode) -> None:
    """authenticate, cycle-request and report share one WebSocket (issue 15); stop() closes it."""
    async with GridClient(grid_for(node.url)) as client:
        auth = await client.authenticate()
        accepted = await client.cycle_request(auth.worker_id)
        assert await client.get_model(auth.worker_id, accepted.request_key, accepted.model_id) == MODEL
        assert await client.get_plan(auth.worker_id, accepted.request_key, accepted.plans["training_plan"]) == PLAN
        await client.report(auth.worker_id, accepted.request_key, DIFF)
    await node.until(lambda: node.ops().count("ws-close") == 1)
    assert node.ops() == [
        "ws-open", "authenticate", "cycle-request",
        "get-model", "get-plan",
        "report", "ws-close",
    ]  # fmt: skip
    assert "ping" not in node.sent("cycle-request")[0]["data"]
    [model_query] = node.sent("get-model")
    assert model_query == {"worker_id": auth.worker_id, "request_key": accepted.request_key, "model_id": "1"}
    [plan_query] = node.sent("get-plan")
    assert plan_query["plan_id"] == "2" and plan_query["receive_operations_as"] == "torchscript"


async def test_a_kept_websocket_the_node_closed_is_replaced_once(node: StubNode) -> None:
    """The node closing the kept WebSocket between requests costs a reconnect, not a failed request;
    close_connections() releases it so nothing is held during training."""
    async with GridClient(grid_for(node.url)) as client:
        auth = await client.authenticate()
        await node.stop_websockets()
        await node.until(lambda: "ws-close" in node.ops())
        await client.cycle_request(auth.worker_id)
        await client.close_connections()
        await node.until(lambda: node.ops().count("ws-close") == 2)
        await client.report(auth.worker_id, "k", DIFF)
    assert node.ops() == [
        "ws-open", "authenticate", "ws-close",
        "ws-open", "cycle-request", "ws-close",
        "ws-open", "report", "ws-close",
    ]  # fmt: skip


async def test_http_transport_unwraps_the_pg_dev_envelope(node: StubNode) -> None:
    """Over HTTP: flat authenticate, enveloped cycle-request/report (recorded PG-dev bodies) both understood."""
    async with GridClient(grid_for(node.url, transport="http", model="mnist-http")) as client:
        auth = await client.authenticate()
        accepted = await client.cycle_request(auth.worker_id)
        await client.report(auth.worker_id, accepted.request_key, DIFF)
    assert auth == Auth("564fe8b7-c0af-41df-a19f-b594cb28517a", False)
    assert (accepted.model_id, accepted.plans, accepted.client_config["batch_size"]) == (3, {"training_plan": 6}, 32)
    want = recorded("http/002-http-POST-model-centric_authenticate.request.json")
    assert _types(node.sent("authenticate")[0]) == _types(want)
    assert set(node.sent("report")[0]) == {"worker_id", "request_key", "diff"}
    assert "ws-open" not in node.ops()


async def test_pg_master_flat_answers_without_request_id_echo(node: StubNode) -> None:
    """A node that neither envelopes HTTP answers nor echoes request_id (PG-master) works too."""
    node.echo_request_id = False
    flat = recorded("http/010-http-POST-model-centric_cycle-request.response.json")["data"]
    node.http["cycle-request"] = lambda _r, _b: web.json_response(flat)
    async with GridClient(grid_for(node.url)) as client:
        auth = await client.authenticate()
        assert (await client.cycle_request(auth.worker_id)).model_id == 1
    async with GridClient(grid_for(node.url, transport="http")) as client:
        assert (await client.cycle_request("w")).model_id == 3


async def test_route_prefix_and_ws_url_follow_the_config(node: StubNode) -> None:
    """grid.prefix names both the HTTP routes and the WS message types; a ws:// URL still downloads over HTTP."""
    await node.stop()
    old = StubNode(prefix="model_centric")
    await old.start()
    try:
        async with GridClient(grid_for(f"ws://127.0.0.1:{old.port}", prefix="model_centric")) as client:
            auth = await client.authenticate()
            accepted = await client.cycle_request(auth.worker_id)
            assert await client.get_model(auth.worker_id, accepted.request_key, 1) == MODEL
        assert old.sent("authenticate")[0]["type"] == "model_centric/authenticate"
    finally:
        await old.stop()


@pytest.mark.parametrize(
    ("answer", "error", "text"),
    [
        (recorded("024-ws-model-centric_cycle-request.response.json"), GridRejected, "retry in 59 s"),
        ({"type": "x", "data": {"status": "rejected", "timeout": "-1 day, 23:59:59.5"}}, GridRejected,
         r"the cycle's end passed 0\.5 s ago"),
        ({"type": "x", "data": {"status": "rejected"}}, GridFinished, "finished"),
        ({"data": {"status": "rejected", "error": "Worker ID not found!\nTraceback ..."}, "type": "t"},
         GridWorkerUnknown, "Worker ID not found!$"),
        ({"data": {"status": "rejected", "error": "'ping' is required\nTraceback"}, "type": "t"},
         GridUnavailable, "'ping' is required$"),
        ({"error": "'request_id'"}, GridUnavailable, "'request_id'"),
        ({"data": {"status": "maybe"}, "type": "t"}, GridProtocolError, "unexpected status 'maybe'"),
    ],
)  # fmt: skip
async def test_cycle_request_outcomes_are_typed(node: StubNode, answer: Any, error: type, text: str) -> None:
    """Rejected with a timedelta (incl. negative) → GridRejected; without → GridFinished; errors by kind."""
    node.ws["cycle-request"] = lambda _: answer
    async with GridClient(grid_for(node.url)) as client:
        with pytest.raises(error, match=text) as caught:
            await client.cycle_request("w")
    if error is GridRejected:
        overdue = "-1 day" in json.dumps(answer)
        assert caught.value.timeout_s == pytest.approx(-0.5 if overdue else 58.651826)
        assert caught.value.cycle_end_passed is overdue


async def test_authenticate_failures_are_auth_failed_without_traceback(node: StubNode) -> None:
    """The recorded unknown-model and invalid-token answers give GridAuthFailed with the first line only."""
    names = [
        "020-ws-model-centric_authenticate.response.json",
        "auth-jwt-rsa/016-ws-model-centric_authenticate.response.json",
    ]
    for name in names:
        node.ws["authenticate"] = lambda _, n=name: recorded(n)  # type: ignore[misc]
        async with GridClient(grid_for(node.url)) as client:
            with pytest.raises(GridAuthFailed) as caught:
                await client.authenticate()
        assert "Traceback" not in str(caught.value)
    node.http["authenticate"] = lambda _r, _b: web.json_response({"error": "Not found any process"}, status=401)
    async with GridClient(grid_for(node.url, transport="http")) as client:
        with pytest.raises(GridAuthFailed, match="Not found any process"):
            await client.authenticate()


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, recorded("021-http-GET-model-centric_get-model.response.json"), GridCycleGone),
        (401, {"error": "Invalid request key!"}, GridCycleGone),
        (400, {"error": "Worker ID not found!"}, GridWorkerUnknown),
        (400, {"error": "Model ID not found!"}, GridCycleGone),
        (400, {"error": "Plan ID not found!"}, GridCycleGone),
        (400, {"error": "(sqlite3.OperationalError) database is locked"}, GridUnavailable),
        (500, {"error": "boom"}, GridUnavailable),
        (503, "<html>busy</html>", GridUnavailable),
        (404, "404: Not Found", GridProtocolError),
        (302, "", GridProtocolError),
        (418, "teapot", GridProtocolError),
    ],
)
async def test_download_errors_are_typed(node: StubNode, status: int, body: Any, error: type) -> None:
    """get-model / get-plan: the node's text decides (answers.classify): Cycle not found, Invalid request key,
    Model/Plan ID not found → cycle gone; Worker ID not found → worker unknown; 5xx or another error →
    transient; a redirect, a 404 route, a teapot → protocol."""
    payload = json.dumps(body) if isinstance(body, dict) else body
    node.http["get-model"] = node.http["get-plan"] = lambda _r, _b: web.Response(
        status=status, text=payload, headers={"Location": "/elsewhere"} if status == 302 else None
    )
    async with GridClient(grid_for(node.url)) as client:
        with pytest.raises(error):
            await client.get_model("w", "k", 1)
        with pytest.raises(error):
            await client.get_plan("w", "k", 2)


@pytest.mark.parametrize("transport", ["ws", "http"])
@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("Cycle not found!", GridCycleGone),
        ("Invalid request key!", GridCycleGone),
        ("Model ID not found!", GridCycleGone),
        ("Worker ID not found!\nTraceback ...", GridWorkerUnknown),
        ("(sqlite3.OperationalError) database is locked", GridUnavailable),
        ("\nTraceback ... ProcessLookupError", GridUnavailable),
        ("Incorrect padding", GridUnavailable),
    ],
)
async def test_report_refusals_are_classified_and_only_cycle_gone_discards(
    node: StubNode, transport: str, error: str, kind: type
) -> None:
    """A report error is cycle gone only when the node says so; "database is locked" or an empty
    ProcessLookupError is transient (the diff stays), "Worker ID not found!" is worker unknown (issue 14.2)."""
    refusal = {"type": "model-centric/report", "data": {"error": error}}
    node.ws["report"] = lambda _: refusal
    node.http["report"] = lambda _r, _b: web.json_response(refusal)
    async with GridClient(grid_for(node.url, transport=transport)) as client:
        with pytest.raises(GridError) as caught:
            await client.report("w", "k", b"\x00")
    assert type(caught.value) is kind
    assert isinstance(caught.value, GridCycleGone) is (kind is not GridUnavailable)


async def test_download_size_cap_is_enforced(node: StubNode) -> None:
    """A model larger than grid.max_download_mb is refused as a protocol error (streamed or announced)."""
    async with GridClient(grid_for(node.url, max_download_mb=0.5)) as client:
        with pytest.raises(GridProtocolError, match="exceeds the cap"):
            await client.get_model("w", "k", 1)

    async def streamed(request: web.Request, _b: Any) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(40):
            await response.write(b"\0" * 65536)
        return response

    node.http["get-model"] = streamed
    async with GridClient(grid_for(node.url, max_download_mb=1.0)) as client:
        with pytest.raises(GridProtocolError, match="exceeds the cap"):
            await client.get_model("w", "k", 1)


async def test_silent_node_times_out_as_unavailable(node: StubNode) -> None:
    """A node that never answers (WS or a stalled download) gives GridUnavailable after grid.timeout_s."""
    node.ws["authenticate"] = lambda _: "hang"

    async def stall(_r: web.Request, _b: Any) -> web.Response:
        assert node.stopping is not None
        await node.stopping.wait()
        return web.Response(status=503)

    node.http["get-plan"] = stall
    async with GridClient(grid_for(node.url, timeout_s=0.3)) as client:
        with pytest.raises(GridUnavailable, match=r"no answer within 0\.3 s"):
            await client.authenticate()
        with pytest.raises(GridUnavailable):
            await client.get_plan("w", "k", 1)


async def test_refused_connection_is_unavailable() -> None:
    """Nothing listening on the port → GridUnavailable, over WS and over HTTP."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for transport in ("ws", "http"):
        async with GridClient(grid_for(f"http://127.0.0.1:{port}", transport=transport)) as client:
            with pytest.raises(GridUnavailable):
                await client.authenticate()
            with pytest.raises(GridUnavailable):
                await client.get_model("w", "k", 1)


async def test_ws_closed_without_answer_is_unavailable(node: StubNode) -> None:
    """The node closing the WebSocket instead of answering is a lost connection."""
    node.ws["authenticate"] = lambda _: None
    async with GridClient(grid_for(node.url)) as client:
        with pytest.raises(GridUnavailable, match="closed the WebSocket"):
            await client.authenticate()


@pytest.mark.parametrize(
    ("answer", "text"),
    [
        ("not json", "not JSON"),
        (b"\x00binary", "binary frame"),
        ("[1, 2]", "JSON list"),
        ({"type": "x", "data": []}, "envelope data"),
        ({"type": "x", "data": {"status": "success", "worker_id": 7}}, "worker_id must be a JSON str"),
        ({"type": "x", "data": {"status": "success", "worker_id": "w", "requires_speed_test": "yes"}}, "boolean"),
        ({"type": "x", "data": {"status": "success", "worker_id": "w"}, "request_id": "someone-else"}, "request_id"),
        ("x" * (5 * 1024 * 1024), "larger than"),
    ],
)
async def test_malformed_ws_answers_are_protocol_errors(node: StubNode, answer: Any, text: str) -> None:
    """Non-JSON, binary, wrong shapes and types, a foreign request_id, an oversized frame → GridProtocolError."""
    node.echo_request_id = False
    node.ws["authenticate"] = lambda _: answer
    async with GridClient(grid_for(node.url)) as client:
        with pytest.raises(GridProtocolError, match=text):
            await client.authenticate()


@pytest.mark.parametrize(
    ("change", "text"),
    [
        ({"model_id": "1"}, "model_id must be an integer"),
        ({"model_id": True}, "model_id must be an integer"),
        ({"plans": ["training_plan"]}, "plans must be a JSON dict"),
        ({"plans": {"training_plan": "2"}}, "integer ids"),
        ({"plans": {"other": 2}}, "not 'training_plan'"),
        ({"request_key": ""}, "request_key is empty"),
        ({"client_config": None}, "client_config must be"),
    ],
)
async def test_accepted_answer_with_wrong_types_is_a_protocol_error(
    node: StubNode, change: dict[str, Any], text: str
) -> None:
    """An 'accepted' answer whose fields have the wrong JSON types, or lacks grid.plan, is refused."""
    answer = recorded("011-ws-model-centric_cycle-request.response.json")
    answer["data"].update(change)
    node.ws["cycle-request"] = lambda _: answer
    async with GridClient(grid_for(node.url)) as client:
        with pytest.raises(GridProtocolError, match=text):
            await client.cycle_request("w")


async def test_token_is_sent_but_never_logged(node: StubNode) -> None:
    """The token reaches the node in auth_token, yet no log line or error text contains it."""
    token = "eyJ-secret-token-0123456789"
    node.ws["authenticate"] = lambda m: {
        "type": "t",
        "data": {"error": f"The 'auth_token' you sent is invalid: {m['data']['auth_token']}"},
    }
    stream = io.StringIO()
    syftd_log.configure("json", "debug", stream=stream)
    try:
        async with GridClient(grid_for(node.url), token=token) as client:
            with pytest.raises(GridAuthFailed) as caught:
                await client.authenticate()
            node.ws["authenticate"] = lambda _: recorded("003-ws-model-centric_authenticate.response.json")
            auth = await client.authenticate()
            await client.cycle_request(auth.worker_id)
    finally:
        structlog.reset_defaults()
    assert node.sent("authenticate")[0]["data"]["auth_token"] == token
    output = stream.getvalue()
    assert "grid.authenticated" in output and "grid.request_failed" in output
    assert token not in output and token not in str(caught.value)
    assert auth.worker_id not in output


async def test_client_misuse_prescribes_the_fix() -> None:
    """Calling before start, or starting twice, raises RuntimeError saying what to do; stop is idempotent."""
    client = GridClient(grid_for("http://127.0.0.1:9"))
    with pytest.raises(RuntimeError, match="not started"):
        await client.get_model("w", "k", 1)
    await client.start()
    with pytest.raises(RuntimeError, match="called twice"):
        await client.start()
    await client.stop()
    await client.stop()


def test_read_token_accepts_owner_only_file_and_strips(tmp_path: Path) -> None:
    """A 0600 file's token is returned without surrounding whitespace."""
    path = tmp_path / "token"
    path.write_text("  abc.def.ghi\n")
    path.chmod(0o600)
    assert read_token(path) == "abc.def.ghi"


@pytest.mark.parametrize(
    ("mode", "content", "text"),
    [(0o644, "t", "readable by group or others"), (0o640, "t", "mode 0640"), (0o600, " \n", "is empty")],
)
def test_read_token_refuses_open_or_empty_files(tmp_path: Path, mode: int, content: str, text: str) -> None:
    """Group- or world-readable, or empty (after stripping): TokenError."""
    path = tmp_path / "token"
    path.write_text(content)
    path.chmod(mode)
    with pytest.raises(TokenError, match=text):
        read_token(path)


def test_read_token_refuses_missing_and_non_regular(tmp_path: Path) -> None:
    """A missing path, a directory and a FIFO (which must not block) are TokenErrors."""
    with pytest.raises(TokenError, match="does not exist"):
        read_token(tmp_path / "absent")
    (tmp_path / "dir").mkdir(mode=0o700)
    with pytest.raises(TokenError):
        read_token(tmp_path / "dir")
    os.mkfifo(tmp_path / "fifo", 0o600)
    with pytest.raises(TokenError, match="not a regular file"):
        read_token(tmp_path / "fifo")


def test_read_token_refuses_a_symlink_even_to_a_good_file(tmp_path: Path) -> None:
    """A token path whose last component is a symlink is refused (issue 14.10): the content of whatever
    it points at (another user's secret, say) must not be sent as the token."""
    target = tmp_path / "elsewhere"
    target.write_text("someone-elses-secret")
    target.chmod(0o600)
    (tmp_path / "token").symlink_to(target)
    with pytest.raises(TokenError, match="is a symlink") as caught:
        read_token(tmp_path / "token")
    assert "someone-elses-secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7:59:58.123456", 7 * 3600 + 59 * 60 + 58.123456),
        ("0:00:58.651826", 58.651826),
        ("2 days, 1:00:00", 2 * 86400 + 3600),
        ("1 day, 0:00:01", 86401),
        ("-1 day, 23:59:59.5", -0.5),
        ("-1 day, 23:59:12.266190", -47.73381),
        ("-1 day, 0:00:00", -86400.0),
        (" 12:00:00 ", 43200),
        (30, 30.0),
        (2.5, 2.5),
        (-4, -4.0),
        (0, 0.0),
        ("90", 90.0),
        ("1.5", 1.5),
    ],
)
def test_parse_timeout_reads_timedelta_strings_and_numbers(value: object, seconds: float) -> None:
    """PyGrid's str(timedelta) forms, incl. 'N days,' ones, and plain numbers; a negative value stays
    negative (the cycle's end has passed), distinct from zero (issue 12)."""
    timeout = parse_timeout(value)
    assert timeout.seconds == pytest.approx(seconds)
    assert timeout.cycle_end_passed is (seconds < 0)
    assert timeout.wait_s == pytest.approx(max(seconds, 0.0))


@pytest.mark.parametrize("value", [True, None, "soon", "1:2:3", float("nan"), float("inf"), [], "-1 days, 25:00"])
def test_parse_timeout_refuses_other_values(value: object) -> None:
    """Booleans, null, text that is no duration, non-finite numbers: GridProtocolError."""
    with pytest.raises(GridProtocolError):
        parse_timeout(value)


def test_speed_fields_follow_the_cycle_request_names() -> None:
    """Speed maps to the cycle-request keys ping, download, upload."""
    assert Speed(1.0, 2.0, 3.0).fields() == {"ping": 1.0, "download": 2.0, "upload": 3.0}


async def test_speed_test_is_bounded_and_reports_in_the_configured_unit(node: StubNode) -> None:
    """The download and upload stop at speed_test_max_mb; values are finite, positive, unit as configured."""
    async with GridClient(grid_for(node.url, speed_unit="kbps", speed_test_max_mb=0.25)) as client:
        speed = await client.speed_test("w")
    assert speed.unit == "kbps"
    assert 0 < speed.ping_ms < 5000 and speed.download > 0 and speed.upload > 0
