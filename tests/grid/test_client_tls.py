"""TLS: a node whose certificate comes from a private CA (trustme) is refused with a typed error unless
grid.ca_file names that CA; then both wss (authenticate) and https (get-model) work."""

from __future__ import annotations

import dataclasses
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from aiohttp import WSMsgType, web
from conftest import FIXTURES

from syftd.config import GridConfig
from syftd.errors import ConfigError, GridTLSError, GridUnavailable
from syftd.grid.client import GridClient

GOLDEN = FIXTURES / "golden-cycle"
AUTHENTICATED = (GOLDEN / "003-ws-model-centric_authenticate.response.json").read_text()
MODEL = (GOLDEN / "012-http-GET-model-centric_get-model.response.bin").read_bytes()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_node(ca: trustme.CA) -> AsyncIterator[int]:
    """A node stub serving wss://127.0.0.1 and https://127.0.0.1 with a certificate issued by ``ca``."""

    async def websocket(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                echo = {"request_id": json.loads(msg.data)["request_id"]}
                await ws.send_str(json.dumps({**json.loads(AUTHENTICATED), **echo}))
        return ws

    async def get_model(_request: web.Request) -> web.Response:
        return web.Response(body=MODEL, content_type="application/octet-stream")

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    app = web.Application()
    app.router.add_get("/", websocket)
    app.router.add_get("/model-centric/get-model", get_model)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await runner.cleanup()


def grid_for(port: int, ca_file: Path | None = None) -> GridConfig:
    base = GridConfig(url=f"https://127.0.0.1:{port}", model="mnist", version="1.0", timeout_s=5.0)
    return dataclasses.replace(base, ca_file=ca_file)


@pytest.mark.parametrize("transport", ["ws", "http"])
async def test_untrusted_certificate_is_a_tls_error(tls_node: int, transport: str) -> None:
    """Verification is on by default: the private CA's certificate → GridTLSError (a GridUnavailable)."""
    grid = dataclasses.replace(grid_for(tls_node), transport=transport)
    async with GridClient(grid) as client:
        with pytest.raises(GridTLSError, match="ca_file") as caught:
            await client.authenticate()
        assert isinstance(caught.value, GridUnavailable)
        with pytest.raises(GridTLSError):
            await client.get_model("w", "k", 1)


async def test_configured_ca_file_is_trusted(tls_node: int, ca: trustme.CA, tmp_path: Path) -> None:
    """With grid.ca_file = the test CA, authenticate over wss and get-model over https succeed."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with GridClient(grid_for(tls_node, ca_file)) as client:
        auth = await client.authenticate()
        assert auth.worker_id == "9d0eeeec-2d22-41e7-8c0f-574bbb5450e8"
        assert await client.get_model(auth.worker_id, "k", 1) == MODEL


async def test_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    """A ca_file that cannot be loaded fails start() with a ConfigError naming grid.ca_file."""
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"grid\.ca_file"):
        async with GridClient(grid_for(1, bad)):
            pass
