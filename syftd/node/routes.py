"""The local node's HTTP and WebSocket surface, as each PyGrid revision speaks it (docs/protocol.md §0.2, §1, §4.1).

Owns the aiohttp application serving a node (any ``operations.NodeOperations``): the WebSocket at
``/`` (text frames, ``type`` routing, ``request_id`` rules per revision), the ``/model-centric/...``
HTTP routes (flat bodies or the PG-dev envelope, 500 on 09-14 nodes), raw binary downloads, the
speed test, and the loopback-only ``/_test/...`` controls. Does not own what an operation does: that
is the node's (``node.GridNode``).
"""

from __future__ import annotations

import ipaddress
import json
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from syftd.node.operations import NodeOperations, NodeStopping, WorkerGone
from syftd.node.options import Revision
from syftd.node.state import Refusal

__all__ = ["build_app"]

_AUTHENTICATE, _CYCLE_REQUEST, _REPORT, _HOST_TRAINING = "authenticate", "cycle-request", "report", "host-training"
_MAX_BODY = 512 * 1024 * 1024
_CHUNK = 64 * 1024
_NODE: web.AppKey[NodeOperations] = web.AppKey("node")
_SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("websockets")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(node: NodeOperations) -> web.Application:
    """The aiohttp application serving ``node``."""
    app = web.Application(client_max_size=_MAX_BODY, middlewares=[_injected_failures])
    app[_NODE] = node
    app[_SOCKETS] = weakref.WeakSet()
    prefix = node.options.prefix
    app.router.add_get("/", _websocket)
    app.router.add_post(f"/{prefix}/{_AUTHENTICATE}", _http_authenticate)
    app.router.add_post(f"/{prefix}/{_CYCLE_REQUEST}", _http_operation)
    app.router.add_post(f"/{prefix}/{_REPORT}", _http_operation)
    app.router.add_get(f"/{prefix}/get-model", _download)
    app.router.add_get(f"/{prefix}/get-plan", _download)
    app.router.add_get(f"/{prefix}/get-protocol", _get_protocol)
    app.router.add_get(f"/{prefix}/retrieve-model", _retrieve_model)
    app.router.add_route("GET", f"/{prefix}/speed-test", _speed_test)
    app.router.add_route("POST", f"/{prefix}/speed-test", _speed_test)
    if node.options.test_controls:
        for method, name, handler in _CONTROLS:
            app.router.add_route(method, f"/_test/{name}", _loopback_only(handler))
    app.on_shutdown.append(_close_websockets)
    return app


def _node(request: web.Request) -> NodeOperations:
    return request.app[_NODE]


@web.middleware
async def _injected_failures(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/_test/"):
        status = _node(request).take_failure()
        if status is not None:
            return web.json_response({"error": "injected failure (syftd node test control)"}, status=status)
    return await handler(request)


async def _websocket(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(max_msg_size=_MAX_BODY)
    if not ws.can_prepare(request).ok:
        return web.Response(text="syftd node (PyGrid model-centric FL); WebSocket at /\n")
    await ws.prepare(request)
    request.app[_SOCKETS].add(ws)
    node = _node(request)
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            try:
                reply = await _ws_reply(node, message.data, is_gone=lambda: _is_gone(request, ws))
            except NodeStopping:
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"node shutting down")
                break
            except WorkerGone:
                break
        elif message.type == WSMsgType.BINARY:
            reply = {"error": "binary frames are data-centric messages; this node serves model-centric FL only"}
        else:
            continue
        try:
            await ws.send_str(json.dumps(reply))
        except ConnectionResetError:
            break
    return ws


def _is_gone(request: web.Request, ws: web.WebSocketResponse | None = None) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing() or (ws is not None and ws.closed)


async def _ws_reply(node: NodeOperations, text: str, *, is_gone: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    try:
        message = json.loads(text)
    except ValueError as exc:
        return {"error": str(exc)}
    if not isinstance(message, dict):
        return {"error": f"expected a JSON object, got {type(message).__name__}"}
    revision = node.options.revision
    request_id = message.get("request_id")
    kind = message.get("type")
    scope, _, op = str(kind).rpartition("/")
    if scope != node.options.prefix:
        op = ""
    needs_id = op in (_CYCLE_REQUEST, _REPORT)
    echo = revision is Revision.PG_DEV or (revision is Revision.R0914 and needs_id)

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        if echo and request_id:
            body["request_id"] = request_id
        return body

    if kind == "socket-ping":
        return answer({"alive": "True"})
    if op not in (_AUTHENTICATE, _CYCLE_REQUEST, _REPORT, _HOST_TRAINING):
        return answer({"error": repr(kind)})
    if revision is Revision.R0914 and needs_id and "request_id" not in message:
        return {"error": "'request_id'"}
    data = message.get("data")
    if not isinstance(data, dict):
        return answer({"error": "'data'"})
    if op == _AUTHENTICATE:
        body, _status = await node.authenticate(data)
    elif op == _CYCLE_REQUEST:
        body = node.cycle_request(data)
    elif op == _REPORT:
        body = await node.report(data, "ws", is_gone=is_gone)
    else:
        body = node.host_training(data)
    return answer({"type": kind, "data": body})


async def _read_object(request: web.Request) -> dict[str, Any]:
    data = json.loads(await request.read())
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    return data


async def _http_authenticate(request: web.Request) -> web.StreamResponse:
    try:
        data = await _read_object(request)
    except ValueError:
        return web.Response(status=500, text="<h1>Internal Server Error</h1>", content_type="text/html")
    body, status = await _node(request).authenticate(data)
    return web.json_response(body, status=status)


async def _http_operation(request: web.Request) -> web.StreamResponse:
    node = _node(request)
    kind = request.path.lstrip("/")
    op = kind.rpartition("/")[2]
    if node.options.revision is Revision.R0914:
        return web.json_response({"error": "'request_id'"}, status=500)
    try:
        data = await _read_object(request)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    try:
        if op == _CYCLE_REQUEST:
            body = node.cycle_request(data)
        else:
            body = await node.report(data, "http", is_gone=lambda: _is_gone(request))
    except NodeStopping as exc:
        return web.json_response({"error": str(exc)}, status=503)
    except WorkerGone as exc:
        return web.json_response({"error": str(exc)}, status=499)
    if node.options.revision is Revision.PG_DEV:
        return web.json_response({"type": kind, "data": body})
    return web.json_response(body)


async def _download(request: web.Request) -> web.StreamResponse:
    kind = "model" if request.path.endswith("get-model") else "plan"
    try:
        body = await _node(request).download(kind, request.query)
    except Refusal as refusal:
        return web.json_response({"error": refusal.message}, status=refusal.status)
    return web.Response(body=body, content_type="application/octet-stream")


async def _get_protocol(request: web.Request) -> web.StreamResponse:
    return web.json_response({"error": "'list' object has no attribute 'fl_process_id'"}, status=500)


async def _retrieve_model(request: web.Request) -> web.StreamResponse:
    query = request.query
    if not query.get("name"):
        return web.json_response({"error": "'name'"}, status=400)
    try:
        body = await _node(request).retrieve(query["name"], query.get("version"), query.get("checkpoint"))
    except Refusal as refusal:
        return web.json_response({"error": refusal.message}, status=refusal.status)
    return web.Response(body=body, content_type="application/octet-stream")


async def _speed_test(request: web.Request) -> web.StreamResponse:
    query = request.query
    if "worker_id" not in query or "random" not in query:
        return web.json_response({"error": "speed-test needs worker_id and random"}, status=500)
    if request.method == "POST":
        async for _chunk in request.content.iter_chunked(_CHUNK):
            pass
        return web.json_response({})
    if "is_ping" in query:
        return web.json_response({})
    boundary = uuid.uuid4().hex
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="sample"\r\n\r\n'.encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = _node(request).options.speed_test_bytes
    response = web.StreamResponse(headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    response.content_length = len(head) + size + len(tail)
    await response.prepare(request)
    chunk = b"x" * _CHUNK
    try:
        await response.write(head)
        for offset in range(0, size, _CHUNK):
            await response.write(chunk[: min(_CHUNK, size - offset)])
        await response.write(tail)
        await response.write_eof()
    except ConnectionResetError:
        pass
    return response


async def _close_websockets(app: web.Application) -> None:
    sockets: weakref.WeakSet[web.WebSocketResponse] = app[_SOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"node shutting down")


def _is_loopback(remote: str | None) -> bool:
    try:
        address = ipaddress.ip_address((remote or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _loopback_only(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        if not _is_loopback(request.remote):
            return web.json_response({"error": "test controls are for loopback peers only"}, status=403)
        return await handler(request)

    return guarded


def _int_query(request: web.Request, name: str, default: int) -> int:
    value = request.query.get(name)
    return default if value is None else int(value)


async def _control_state(request: web.Request) -> web.StreamResponse:
    return web.json_response(_node(request).snapshot())


async def _control_hold(request: web.Request) -> web.StreamResponse:
    _node(request).hold_reports()
    return web.json_response(_node(request).snapshot())


async def _control_release(request: web.Request) -> web.StreamResponse:
    _node(request).release_reports()
    return web.json_response(_node(request).snapshot())


async def _control_fail(request: web.Request) -> web.StreamResponse:
    try:
        count, status = _int_query(request, "n", 1), _int_query(request, "status", 503)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    _node(request).fail_next(count, status)
    return web.json_response(_node(request).snapshot())


async def _control_averaging_delay(request: web.Request) -> web.StreamResponse:
    try:
        _node(request).set_averaging_delay(float(request.query.get("seconds", "")))
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(_node(request).snapshot())


async def _control_close(request: web.Request) -> web.StreamResponse:
    node = _node(request)
    closed = await node.close_cycle(request.query.get("name"), request.query.get("version"))
    return web.json_response({"closed": closed, **node.snapshot()})


async def _control_wait(request: web.Request) -> web.StreamResponse:
    """Long-poll until every given threshold is reached: reports, held, checkpoint (of ``name``)."""
    node = _node(request)
    try:
        reports, held = _int_query(request, "reports", 0), _int_query(request, "held", 0)
        checkpoint = _int_query(request, "checkpoint", 0)
        timeout = float(request.query.get("timeout", "10"))
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    name, version = request.query.get("name"), request.query.get("version")
    ok = await node.wait_for(
        reports=reports, held=held, checkpoint=checkpoint, name=name, version=version, timeout=timeout
    )
    return web.json_response(node.snapshot(), status=200 if ok else 408)


_CONTROLS: list[tuple[str, str, Handler]] = [
    ("GET", "state", _control_state),
    ("GET", "wait", _control_wait),
    ("POST", "hold-reports", _control_hold),
    ("POST", "release-reports", _control_release),
    ("POST", "fail-next", _control_fail),
    ("POST", "close-cycle", _control_close),
    ("POST", "averaging-delay", _control_averaging_delay),
]
