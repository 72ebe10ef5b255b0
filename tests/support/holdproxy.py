"""An HTTP proxy on 127.0.0.1 in front of the local grid node that can hold one protocol step.

The daemon talks to the node through it (``grid.transport = "http"``); a test calls ``hold("get-model")``
and the next request whose path ends with that step waits at the proxy, the node untouched, until
``release()``. ``entered(step)`` is awaited to know the cycle is in that phase. Requests are forwarded
byte for byte (method, path, query, body, content type); redirects are not followed.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
from aiohttp import web

__all__ = ["HoldProxy"]


class HoldProxy:
    """Forward to ``upstream``; hold the steps named by ``hold``. An async context manager."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.seen: Counter[str] = Counter()
        self._held: set[str] = set()
        self._release = asyncio.Event()
        self._entered: dict[str, asyncio.Event] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def __aenter__(self) -> HoldProxy:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._session = aiohttp.ClientSession()
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def hold(self, step: str) -> None:
        """From now on, requests for ``step`` (``authenticate``, ``cycle-request``, ``get-model``, …) wait."""
        self._held.add(step)
        self._release = asyncio.Event()

    def release(self) -> None:
        """Let every held request through and stop holding."""
        self._held.clear()
        self._release.set()

    async def entered(self, step: str, timeout: float = 60) -> None:
        """Return once a request for ``step`` is being held."""
        await asyncio.wait_for(self._entered.setdefault(step, asyncio.Event()).wait(), timeout)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        step = request.path.rsplit("/", 1)[-1]
        self.seen[step] += 1
        if step in self._held:
            self._entered.setdefault(step, asyncio.Event()).set()
            await self._release.wait()
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "authorization")}
        async with self._session.request(
            request.method,
            f"{self.upstream}{request.path_qs}",
            data=body,
            headers=headers,
            allow_redirects=False,
        ) as answer:
            payload = await answer.read()
            return web.Response(
                status=answer.status, body=payload, content_type=answer.content_type or "application/octet-stream"
            )
