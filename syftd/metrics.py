"""Metrics, opt in: counters and gauges in the Prometheus text format over a tiny HTTP server.

Owns the registry (``Metrics``: counters the daemon feeds through ``observe_*`` calls, and gauges
read at scrape time from callbacks), its text rendering (Prometheus exposition format 0.0.4, which
OpenMetrics scrapers read too) and ``MetricsServer``, which answers ``GET /metrics`` on the
``[daemon] metrics_listen`` address with plain asyncio streams. Does not own where the numbers come
from (the cycle's record, the job table, the condition monitor); the daemon wires those in.

Only imported and started when ``metrics_listen`` is set: with it unset nothing listens and this module
is never loaded. Pure except for ``MetricsServer``; the registry takes ``now`` from its clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from syftd import events
from syftd.log import get_logger
from syftd.service import ServiceContext

__all__ = ["CONTENT_TYPE", "Metrics", "MetricsServer", "Sample", "parse_listen", "status_gauges"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_log = get_logger("syftd.metrics")
_MAX_REQUEST_BYTES = 8192
_REQUEST_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One gauge value read at scrape time: ``name{labels} value``."""

    name: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


# name -> (type, help); every metric syftd exposes is declared here
_FAMILIES: dict[str, tuple[str, str]] = {
    "syftd_cycles_total": ("counter", "Cycles finished, by job, outcome and reason."),
    "syftd_trained_seconds_total": ("counter", "Seconds spent training, by job."),
    "syftd_steps_total": ("counter", "Training steps taken, by job."),
    "syftd_downloaded_bytes_total": ("counter", "Bytes downloaded from the grid for cycles, by job."),
    "syftd_uploaded_bytes_total": ("counter", "Bytes of diffs uploaded to the grid, by job."),
    "syftd_energy_joules_total": (
        "counter",
        "CPU package energy over cycles, by job; scope=package (whole machine) or trainer (its CPU-time share).",
    ),
    "syftd_energy_unavailable_total": ("counter", "Cycles whose energy could not be read (no RAPL access), by job."),
    "syftd_trainer_starts_total": ("counter", "Trainer processes used for a cycle, by job and start (cold or warm)."),
    "syftd_last_success_timestamp_seconds": ("gauge", "Unix time of the job's last successful cycle."),
    "syftd_next_run_seconds": ("gauge", "Seconds until the job may next run (0 = now); absent when unknown."),
    "syftd_spool_depth": ("gauge", "Trained diffs waiting in the spool to be reported, by job."),
    "syftd_condition": ("gauge", "A yes/no condition: 1 yes, 0 no; absent when unknown."),
    "syftd_condition_value": ("gauge", "A numeric condition (battery_percent, temperature_c, free_disk_mb)."),
    "syftd_connectivity": ("gauge", "1 for the current internet connectivity state."),
}

_SUCCESS = frozenset({"done", "spooled"})


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` or ``"[::1]:9464"`` → (host, port).

    Raises:
        ValueError: not host:port.
    """
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f'metrics_listen must look like "127.0.0.1:9464", got {value!r}')
    return host, int(port)


class Metrics:
    """The registry: counters fed by the daemon (from any thread), gauges collected at each scrape."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._collectors: list[Callable[[], Iterable[Sample]]] = []
        # the history tells cycles from a worker thread (its file I/O is off the loop); scrapes run on the loop
        self._lock = threading.Lock()

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` (>= 0) to a counter."""
        if name not in _FAMILIES or _FAMILIES[name][0] != "counter":
            raise KeyError(f"{name} is not a declared counter")
        if amount < 0 or math.isnan(amount):
            raise ValueError(f"counter {name} cannot move by {amount}")
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a gauge the daemon updates itself (others come from collectors)."""
        if name not in _FAMILIES or _FAMILIES[name][0] != "gauge":
            raise KeyError(f"{name} is not a declared gauge")
        with self._lock:
            self._gauges[(name, tuple(sorted(labels.items())))] = value

    def add_collector(self, collect: Callable[[], Iterable[Sample]]) -> None:
        """``collect()`` is called at each scrape; its samples are gauges of the moment."""
        self._collectors.append(collect)

    def observe_cycle(self, entry: Mapping[str, Any]) -> None:
        """Count one finished cycle from its history entry (``cycle.CycleRecord.as_dict()`` and energy)."""
        job = str(entry.get("job") or "?")
        outcome = str(entry.get("outcome") or "unknown")
        self.inc("syftd_cycles_total", job=job, outcome=outcome, reason=str(entry.get("reason") or ""))
        for name, key in (
            ("syftd_trained_seconds_total", "train_s"),
            ("syftd_steps_total", "steps"),
            ("syftd_downloaded_bytes_total", "bytes_down"),
            ("syftd_uploaded_bytes_total", "bytes_up"),
        ):
            value = entry.get(key)
            if isinstance(value, int | float) and value > 0:
                self.inc(name, float(value), job=job)
        energy = entry.get("energy_j")
        if isinstance(energy, int | float):
            self.inc("syftd_energy_joules_total", float(energy), job=job, scope="package")
            trainer = entry.get("trainer_energy_j")
            if isinstance(trainer, int | float):
                self.inc("syftd_energy_joules_total", float(trainer), job=job, scope="trainer")
        elif energy is not None:
            self.inc("syftd_energy_unavailable_total", job=job)
        if outcome in _SUCCESS:
            self.set("syftd_last_success_timestamp_seconds", float(entry.get("time") or self._clock()), job=job)

    def observe_trainer_start(self, job: str, *, warm: bool) -> None:
        """Count a trainer taken for a cycle: a warm one reused, or a cold one started."""
        self.inc("syftd_trainer_starts_total", job=job, start="warm" if warm else "cold")

    def render(self) -> str:
        """The exposition text: every family with HELP and TYPE, samples sorted by labels."""
        values: dict[str, list[tuple[tuple[tuple[str, str], ...], float]]] = {}
        with self._lock:
            fed = [*self._counters.items(), *self._gauges.items()]
        for (name, labels), value in fed:
            values.setdefault(name, []).append((labels, value))
        for collect in self._collectors:
            try:
                samples = list(collect())
            except Exception as exc:  # noqa: BLE001 - one broken collector must not empty the scrape
                _log.warning(events.METRICS_COLLECTOR_FAILED, error=repr(exc))
                continue
            for sample in samples:
                if sample.name not in _FAMILIES:
                    raise KeyError(f"collector returned undeclared metric {sample.name}")
                values.setdefault(sample.name, []).append((tuple(sorted(sample.labels)), sample.value))
        lines = []
        for name, (kind, text) in _FAMILIES.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            for labels, value in sorted(values.get(name, [])):
                lines.append(f"{name}{_labels(labels)} {_number(value)}")
        return "\n".join(lines) + "\n"


def status_gauges(rows: Iterable[Mapping[str, Any]], conditions: Mapping[str, Any]) -> list[Sample]:
    """Gauges of the moment from ``syftd status`` rows and ``Conditions.as_dict()``."""
    samples = []
    for row in rows:
        job = (("job", str(row.get("name"))),)
        samples.append(Sample("syftd_spool_depth", float(row.get("spool_pending") or 0), job))
        next_run_in_s = row.get("next_run_in_s")
        if isinstance(next_run_in_s, int | float):
            samples.append(Sample("syftd_next_run_seconds", float(next_run_in_s), job))
    for fact, value in conditions.items():
        if isinstance(value, bool):
            samples.append(Sample("syftd_condition", 1.0 if value else 0.0, (("fact", fact),)))
        elif isinstance(value, int | float):
            samples.append(Sample("syftd_condition_value", float(value), (("fact", fact),)))
        elif fact == "connectivity" and isinstance(value, str):
            samples.append(Sample("syftd_connectivity", 1.0, (("state", value),)))
    return samples


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    escaped = (v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for _k, v in labels)
    return "{" + ",".join(f'{k}="{v}"' for (k, _v), v in zip(labels, escaped, strict=True)) + "}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


class MetricsServer(ServiceContext):
    """``GET /metrics`` on one TCP address; any other request gets 404 or 405. Bounded stop."""

    def __init__(self, listen: str, metrics: Metrics) -> None:
        self.host, self.port = parse_listen(listen)
        self._metrics = metrics
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (the real port when 0 was asked for)."""
        if self._server is None or not self._server.sockets:
            return self.host, self.port
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        """Listen on the address.

        Raises:
            OSError: the address cannot be bound (in use, not local).
        """
        if self._server is not None:
            raise RuntimeError("MetricsServer.start() called twice")
        self._server = await asyncio.start_server(self._on_client, self.host, self.port, reuse_address=True)
        _log.info(events.METRICS_LISTENING, host=self.address[0], port=self.address[1])

    async def stop(self) -> None:
        """Stop listening and drop open connections; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._clients):
            task.cancel()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout=2)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        try:
            status, body, kind = await self._answer(reader)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await asyncio.wait_for(writer.drain(), _REQUEST_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            if task is not None:
                self._clients.discard(task)

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[str, bytes, str]:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _REQUEST_TIMEOUT_S)
        if len(head) > _MAX_REQUEST_BYTES:
            return "431 Request Header Fields Too Large", b"", "text/plain"
        method, _, rest = head.decode("latin-1").partition(" ")
        path = rest.split(" ", 1)[0].split("?", 1)[0]
        if path != "/metrics":
            return "404 Not Found", b"GET /metrics\n", "text/plain"
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", b"", "text/plain"
        body = self._metrics.render().encode()
        return "200 OK", b"" if method == "HEAD" else body, CONTENT_TYPE
