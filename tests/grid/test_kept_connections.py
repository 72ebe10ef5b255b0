"""Connections kept across requests and cycles (issue 15): a node closes idle kept-alive connections on
its own schedule (gunicorn after 2 s, uvicorn after 5 s, often shorter than a cycle's training), so a
POST may meet a connection the node has just closed. A real HTTP server on 127.0.0.1, written on raw
sockets so that it can close a kept connection exactly when the next request arrives."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest
from grid.test_client_hostile import grid_for
from structlog.testing import capture_logs
from support.harness import eventually

from syftd import events
from syftd.config import JobConfig
from syftd.errors import GridUnavailable
from syftd.grid.client import GridClient
from syftd.grid.kept import KeptClients

pytestmark = pytest.mark.timeout(30)

_ANSWER = json.dumps({"status": "success", "worker_id": "w-1", "requires_speed_test": False}).encode()


def _job(url: str) -> JobConfig:
    return JobConfig(name="tiny", grid=grid_for(url, transport="http"))


class ClosingNode:
    """Answers HTTP requests with keep-alive; closes a connection without answering when a request
    arrives on it after ``answer_per_connection`` answered ones (as a node whose keep-alive timer fired
    just as the request came). ``requests`` lists (connection number, body) of every request read."""

    def __init__(self, answer_per_connection: int) -> None:
        self.answer_per_connection = answer_per_connection
        self.requests: list[tuple[int, bytes]] = []
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ClosingNode:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number, answered = self.connections, 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(length)
                self.requests.append((number, body))
                if answered == self.answer_per_connection:
                    return  # closed without an answer: the node never handled this request
                answered += 1
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(_ANSWER)}\r\n\r\n".encode()
                    + _ANSWER
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


async def test_a_post_meeting_a_kept_connection_the_node_closed_is_sent_again_on_a_fresh_one() -> None:
    """The node answers one request per connection, then closes the kept connection as the next request
    arrives: the second authenticate is sent once more, on a new connection, and succeeds; logged once."""
    async with ClosingNode(answer_per_connection=1) as node, GridClient(grid_for(node.url, transport="http")) as client:
        with capture_logs() as logs:
            assert (await client.authenticate()).worker_id == "w-1"
            assert (await client.authenticate()).worker_id == "w-1"
    assert [number for number, _body in node.requests] == [1, 1, 2]
    renewed = [e for e in logs if e["event"] == events.GRID_CONNECTION_RENEWED]
    assert len(renewed) == 1 and renewed[0]["op"] == "authenticate", logs


async def test_a_post_failing_on_a_fresh_connection_is_not_sent_again() -> None:
    """The node closes every connection at its first request: the first POST of a client had no kept
    connection to lose, so it fails at once (GridUnavailable) after exactly one request."""
    async with ClosingNode(answer_per_connection=0) as node, GridClient(grid_for(node.url, transport="http")) as client:
        with pytest.raises(GridUnavailable, match="authenticate"):
            await client.authenticate()
    assert len(node.requests) == 1


async def test_a_report_streamed_from_its_file_is_sent_whole_again(tmp_path: Path) -> None:
    """The report meets the closed kept connection: the body is streamed afresh from the file, and the
    node reads the same complete body on the new connection."""
    diff = tmp_path / "c1.diff"
    diff.write_bytes(bytes(range(256)) * 4096)  # 1 MiB: several pieces
    async with ClosingNode(answer_per_connection=1) as node, GridClient(grid_for(node.url, transport="http")) as client:
        await client.authenticate()
        await client.report_file("w-1", "key-1", diff)
    (first, _), (lost, lost_body), (fresh, fresh_body) = node.requests
    assert (first, lost, fresh) == (1, 1, 2)
    assert lost_body == fresh_body
    assert json.loads(fresh_body)["request_key"] == "key-1"


async def test_a_job_keeps_its_client_across_cycles_until_its_grid_table_changes(tmp_path: Path) -> None:
    """Two lendings of one job get the same started client (its connections are kept); a changed
    ``[grid]`` gives a new client and closes the old one; ``close()`` closes the rest."""
    clients = KeptClients()
    job = _job("http://127.0.0.1:9")
    async with clients(job, None) as first:
        pass
    async with clients(job, None) as again:
        assert again is first
        assert first.connection._session is not None  # type: ignore[attr-defined]
    changed = _job("http://127.0.0.1:10")
    async with clients(changed, None) as other:
        assert other is not first
    await eventually(lambda: first.connection._session is None, timeout=5)  # type: ignore[attr-defined]
    await clients.close()
    assert other.connection._session is None  # type: ignore[attr-defined]


async def test_an_idle_client_is_closed_and_started_again_by_the_next_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    """After its last lending the client is closed once ``IDLE_CLOSE_S`` passes (no socket held while the
    job waits); the next lending starts it again."""
    from syftd.grid import kept

    monkeypatch.setattr(kept, "IDLE_CLOSE_S", 0.0)
    clients = KeptClients()
    job = _job("http://127.0.0.1:9")
    async with clients(job, None) as client:
        assert client.connection._session is not None  # type: ignore[attr-defined]
    await eventually(lambda: client.connection._session is None, timeout=5)  # type: ignore[attr-defined]
    async with clients(job, None) as again:
        assert again is client and client.connection._session is not None  # type: ignore[attr-defined]
    await clients.close()


async def test_a_cycle_starting_while_the_idle_close_is_under_way_waits_for_it_then_starts_afresh() -> None:
    """The idle close has begun (the client's stop is in flight) when the next cycle borrows the client: the
    lending waits for the stop to finish and starts the client again, instead of failing "started twice"
    (found by ``make run``, whose cycles come about 2 s apart, the idle close's delay)."""
    clients = KeptClients()
    job = _job("http://127.0.0.1:9")
    async with clients(job, None) as client:
        pass
    kept = clients._kept["tiny"]  # type: ignore[attr-defined]
    clients._stop(kept)  # type: ignore[attr-defined]  # what the idle timer calls
    async with clients(job, None) as again:
        assert again is client and client.connection._session is not None  # type: ignore[attr-defined]
    await clients.close()
