"""A PyGrid-compatible node for model-centric FL, in one asyncio process (``syftd node serve``).

Owns the node object: its lifecycle on a TCP port (``start``/``stop``), hosting, the worker
operations independent of transport (authenticate, cycle-request, report, downloads, host-training)
and the test controls (hold reports, fail the next requests, set the averaging delay, close the cycle
now, restart forgetting the workers, observe reports and checkpoints). Checkpoints and diffs go to the
node's ``store`` on disk, the reports' records to ``reports``; the cycles are completed by ``cycles``.
Implements ``operations.NodeOperations``. Does not own HTTP/WebSocket wiring or the node revisions'
wire differences (``routes``), the options (``options``), the tables and PyGrid's rules (``state``),
when a cycle completes (``cycles``), the files (``store``), what is kept of each report
(``reports``), the hold point and injected failures behind the test controls (``controls``) or JWT
checks (``auth``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import socket
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

from aiohttp import web

from syftd import events
from syftd.log import get_logger
from syftd.node import auth
from syftd.node.controls import Controls
from syftd.node.cycles import CycleEvaluator
from syftd.node.operations import NodeStopping, WorkerGone
from syftd.node.options import NodeOptions, Revision
from syftd.node.records import Process
from syftd.node.reports import ReportLog, ReportRecord
from syftd.node.routes import build_app
from syftd.node.state import NOT_FOUND, HostingRefused, NodeState, Refusal
from syftd.node.store import Store
from syftd.service import ServiceContext

__all__ = ["GridNode", "HostingRefused", "NodeOptions", "NodeStopping", "Revision", "WorkerGone"]

_log = get_logger("syftd.node")


class GridNode(ServiceContext):
    """The node: ``async with GridNode() as node:`` serves on 127.0.0.1 at a free port (``node.url``)."""

    def __init__(self, options: NodeOptions | None = None, *, clock: Callable[[], datetime] = datetime.now) -> None:
        self.options = options or NodeOptions()
        self.state = NodeState()
        self.store = Store(self.options.checkpoint_dir, cache_bytes=self.options.cache_bytes)
        self._clock = clock
        self._controls = Controls()
        self._cycles = CycleEvaluator(
            self.state, self.store, clock=clock, delay_s=self.options.averaging_delay_s, on_change=self._notify
        )
        self._reports = ReportLog(self.store)
        self._runner: web.AppRunner | None = None
        self.host_address = "127.0.0.1"
        self.port = 0

    @property
    def url(self) -> str:
        """The HTTP base URL, e.g. ``http://127.0.0.1:41234``."""
        host = f"[{self.host_address}]" if ":" in self.host_address else self.host_address
        return f"http://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The WebSocket URL (path ``/``)."""
        return "ws" + self.url[len("http") :] + "/"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (0 picks a free port, see ``.port``); returns once accepting."""
        if self._runner is not None:
            raise RuntimeError("GridNode.start() called twice; create one node per run")
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        except BaseException:
            sock.close()
            raise
        runner = web.AppRunner(build_app(self), shutdown_timeout=2.0, access_log=None)
        try:
            await runner.setup()
            await web.SockSite(runner, sock).start()
        except BaseException:
            await runner.cleanup()
            sock.close()
            raise
        self._runner = runner
        self.host_address, self.port = host, int(sock.getsockname()[1])
        _log.info(events.GRID_NODE_STARTED, url=self.url, revision=self.options.revision.value)

    async def stop(self) -> None:
        """Drop held reports (not stored), close sockets, stop listening, let a running evaluation end
        (at most 10 s) and remove a temporary store; idempotent."""
        runner, self._runner = self._runner, None
        self._controls.stop()
        if runner is not None:
            await runner.cleanup()
            await self._cycles.stop(timeout=10)
            self.store.close()
            _log.info(events.GRID_NODE_STOPPED, url=self.url)

    async def restart(self, down_s: float = 0.0) -> None:
        """Restart as a node on an empty worker table does (the test control): stop listening, cutting every
        connection, forget every worker and its unreported rows, and listen on the same port after ``down_s``."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self.state.forget_workers()
        self._notify()
        await asyncio.sleep(down_s)
        await self.start(self.host_address, self.port)

    @property
    def averaging_delay_s(self) -> float:
        """Seconds from a report's answer to its cycle's evaluation."""
        return self._cycles.delay_s

    def host(
        self,
        name: str,
        version: str,
        model: bytes,
        plans: Mapping[str, bytes],
        client_config: Mapping[str, Any],
        server_config: Mapping[str, Any],
        *,
        protocols: Mapping[str, bytes] | None = None,
        averaging_plan: bytes | None = None,
    ) -> Process:
        """Host an FL process (model State bytes, Plan bytes with TorchScript in field 7).

        Raises:
            HostingRefused: PyGrid's hosting errors; also a JWT configuration without PyJWT.
        """
        config = {"name": name, "version": version, **client_config}
        if (config["name"], config["version"]) != (name, version):
            raise HostingRefused("client_config name/version differ from the hosted name/version")
        try:
            auth.check_available(server_config)
        except RuntimeError as exc:
            raise HostingRefused(str(exc)) from None
        process = self.state.host(
            model=model,
            plans=plans,
            client_config=config,
            server_config=server_config,
            protocols=protocols,
            averaging_plan=averaging_plan,
            now=self._clock(),
        )
        if averaging_plan is not None:
            _log.info(events.GRID_NODE_AVERAGING_PLAN_IGNORED, model=name, version=version)
        self.store.write(self.store.checkpoint_path(name, version, 1), bytes(model))
        _log.info(events.GRID_NODE_HOSTED, model=name, version=version, plans=sorted(plans))
        self._notify()
        return process

    def host_training(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """The ``model-centric/host-training`` operation: hex State and Plans plus configs."""
        try:
            client_config, server_config = dict(data["client_config"]), dict(data["server_config"])
            self.host(
                str(client_config.get("name")),
                str(client_config.get("version")),
                bytes.fromhex(data["model"]),
                {n: bytes.fromhex(h) for n, h in dict(data.get("plans") or {}).items()},
                client_config,
                server_config,
                protocols={n: bytes.fromhex(h) for n, h in dict(data.get("protocols") or {}).items()},
                averaging_plan=bytes.fromhex(data["averaging_plan"]) if data.get("averaging_plan") else None,
            )
        except KeyError as exc:
            return {"error": str(exc)}
        except (HostingRefused, ValueError, TypeError) as exc:
            return {"error": str(exc)}
        return {"status": "success"}

    async def authenticate(self, data: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
        """The authenticate operation; returns the answer and its HTTP status (docs/protocol.md §2.1)."""
        version = data.get("model_version")
        process = self.state.find(str(data.get("model_name")), str(version) if version else None)
        if process is None:
            return {"error": NOT_FOUND}, 401
        problem = await auth.verify(data.get("auth_token"), process.server_config)
        if problem is not None:
            return {"error": problem}, 400
        worker = self.state.new_worker()
        return {"status": "success", "worker_id": worker.id, "requires_speed_test": process.requires_speed_test}, 200

    def cycle_request(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """The cycle-request operation (docs/protocol.md §2.2).

        A rejection carries no reason on the wire (PyGrid's carries none); the node's log line says it,
        e.g. "already assigned to cycle 3".
        """
        answer = self.state.cycle_request(data, self._clock())
        if answer.get("status") == "rejected" and "error" not in answer:
            worker_id, name, version = (str(data.get(k)) for k in ("worker_id", "model", "version"))
            reason = self.state.rejection_reason(worker_id, name, version)
            _log.info(events.GRID_NODE_CYCLE_REJECTED, model=name, worker_id=worker_id, reason=reason, **answer)
        self._notify()
        return answer

    async def report(
        self, data: Mapping[str, Any], transport: Literal["ws", "http"], *, is_gone: Callable[[], bool] = lambda: False
    ) -> dict[str, Any]:
        """The report operation: store the diff, then complete the cycle if it is ready (docs/protocol.md §2.6, §7).

        A report held by the test control whose worker hung up meanwhile is dropped, as if the network
        cut had lost it on the way (``is_gone`` tells); a real node never sees such a request.

        Raises:
            NodeStopping: the report was held and the node stopped meanwhile.
            WorkerGone: the worker hung up while its report was held.
        """
        text = data.get("diff")
        if not isinstance(text, str):
            return {"error": "'NoneType' object has no attribute 'encode'"}
        try:
            diff = base64.b64decode(text)
        except (binascii.Error, ValueError) as exc:
            return {"error": str(exc)}
        await self._controls.hold_point()
        if is_gone():
            _log.info(
                events.GRID_NODE_REPORT_DROPPED, worker_id=data.get("worker_id"), reason="worker hung up while held"
            )
            raise WorkerGone("the worker hung up while its report was held")
        worker_id, request_key = str(data.get("worker_id")), str(data.get("request_key"))
        try:
            cycle = self.state.assignment(worker_id, request_key).cycle
        except Refusal as refusal:
            return {"error": refusal.message}
        record = await self._reports.keep(worker_id, request_key, cycle, diff, transport)
        self.state.record_report(worker_id, request_key, record.number)
        _log.info(events.GRID_NODE_REPORT_RECEIVED, model=record.model, cycle=record.cycle, size=len(diff))
        self._notify()
        self._cycles.trigger(cycle)  # PyGrid answers first and evaluates in a background thread (docs/protocol.md §7)
        return {"status": "success"}

    async def settled(self) -> None:
        """Return once every cycle evaluation started by a report so far has finished (tests use it).

        A report's evaluation starts ``averaging_delay_s`` after its answer; this waits for it.
        """
        await self._cycles.settled()

    def hold_reports(self) -> None:
        """From now on, reports (WS and HTTP) wait before they are stored, until ``release_reports``."""
        self._controls.hold()

    def release_reports(self) -> None:
        """Stop holding; the held reports proceed."""
        self._controls.release()

    def set_averaging_delay(self, seconds: float) -> None:
        """Evaluate cycles ``seconds`` after the reports that trigger them from now on (0: at once).

        Raises:
            ValueError: ``seconds`` is negative or not finite.
        """
        if not 0 <= seconds < float("inf"):
            raise ValueError(f"the averaging delay must be a finite number of seconds >= 0, got {seconds}")
        self._cycles.delay_s = seconds
        self._notify()

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next ``count`` HTTP requests (WebSocket handshakes included) with ``status``."""
        self._controls.fail_next(count, status)

    def take_failure(self) -> int | None:
        """The status to fail the current request with, if a failure is pending."""
        return self._controls.take_failure()

    async def close_cycle(self, name: str | None = None, version: str | None = None) -> bool:
        """Complete the current cycle of a process now (default: the last hosted).

        Averages the valid diffs reported so far into a new checkpoint (none reported: no new
        checkpoint), then opens the next cycle unless ``num_cycles`` is reached. False if no cycle is open.
        """
        process = self.state.find_or_last(name, version)
        cycle = process.current_cycle() if process is not None else None
        if cycle is None:
            return False
        await self._cycles.close_now(cycle)
        self._notify()
        return True

    @property
    def reports(self) -> list[ReportRecord]:
        """Every report stored so far, in arrival order."""
        return self._reports.records

    @property
    def held_reports(self) -> int:
        """How many reports are waiting at the hold point now."""
        return self._controls.held

    def checkpoint_number(self, name: str, version: str | None = None) -> int:
        """The latest checkpoint number of a process (1 after hosting).

        Raises:
            KeyError: no such process.
        """
        process = self.state.find(name, version)
        if process is None:
            raise KeyError(f"no FL process {name!r} {version or ''}".rstrip())
        return process.checkpoint_number

    def snapshot(self) -> dict[str, Any]:
        """What the test controls report: processes, cycles, checkpoints, reports, held and failing."""
        return {
            "revision": self.options.revision.value,
            "averaging_delay_s": self.averaging_delay_s,
            "held": self._controls.held,
            "holding": self._controls.holding,
            "failing": self._controls.failing,
            "processes": [p.summary() for p in self.state.processes],
            "reports": [r.summary() for r in self._reports.records],
        }

    async def download(self, kind: str, query: Mapping[str, str]) -> bytes:
        """The validated body of ``get-model`` or ``get-plan`` (kind ``model``/``plan``; docs/protocol.md §2.3).

        Raises:
            Refusal: PyGrid's 400/401 answers.
        """
        process, body = self.state.download(kind, query)
        return body if body is not None else await self._checkpoint(process, process.checkpoint_number)

    async def retrieve(self, name: str, version: str | None, which: str | None) -> bytes:
        """A checkpoint for ``retrieve-model``: a number, or the alias ``latest`` (default).

        Raises:
            Refusal: 404 for an unknown process or checkpoint.
        """
        return await self._checkpoint(*self.state.checkpoint(name, version, which))

    async def _checkpoint(self, process: Process, number: int) -> bytes:
        path = self.store.checkpoint_path(process.name, process.version, number)
        cached = self.store.cached(path)
        return cached if cached is not None else await asyncio.to_thread(self.store.read, path)

    async def wait_for(
        self, *, reports: int, held: int, checkpoint: int, name: str | None, version: str | None, timeout: float
    ) -> bool:
        """Wait until the node has at least these reports, held reports and checkpoint number (of ``name``)."""

        def reached() -> bool:
            process = self.state.find_or_last(name, version)
            current = process.checkpoint_number if process is not None else 0
            return len(self._reports) >= reports and self._controls.held >= held and current >= checkpoint

        return await self.wait_until(reached, timeout)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds (re-checked on every change of the node); False on timeout."""
        return await self._controls.wait_until(predicate, timeout)

    def _notify(self) -> None:
        self._controls.notify()
