"""PyGrid's rules over the local node's FL processes, cycles and workers (docs/protocol.md §2, §7).

Owns the in-memory tables (processes with their plans and checkpoint numbers, cycles, workers,
worker-cycle assignments with the number of the report holding their diff) and the decisions
PyGrid dev@657f124 takes on them: which process an authenticate or a cycle-request names, accept or
reject (with a timedelta-string timeout, without one, or with an error), which download is allowed,
where a report is recorded, when a cycle is ready to average.
Does not own the rows and what each says of itself (``records``), transport (``node``), the checkpoint
and diff bytes (``store``), JWT checks (``auth``), tensor arithmetic (``averaging``) or clocks: every
decision that needs the time takes ``now``.
"""

from __future__ import annotations

import hashlib
import itertools
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from syftd.errors import SyftdError, WireError
from syftd.grid import wire
from syftd.node.records import SPEED_MINIMUMS, Assignment, Cycle, PlanRecord, Process, Worker

__all__ = ["NOT_FOUND", "HostingRefused", "NodeState", "Refusal"]

NOT_FOUND = "Not found any process related with this cycle and worker ID."
_SPEED_FIELDS = ("ping", "download", "upload")


class Refusal(Exception):
    """A request the node answers with an error: ``status`` for HTTP, ``message`` as PyGrid words it.

    A value for the transport layer, never raised out of the node.
    """

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


class HostingRefused(SyftdError):
    """Hosting an FL process failed; the message is PyGrid's (``FL Process already exists.``, …)."""


class NodeState:
    """Every table of the node, and PyGrid's rules over them."""

    def __init__(self) -> None:
        self.processes: list[Process] = []
        self.workers: dict[str, Worker] = {}
        self._by_key: dict[tuple[str, str], Assignment] = {}
        self._ids = itertools.count(1)
        self._plan_ids = itertools.count(1)

    def host(
        self,
        *,
        model: bytes,
        plans: Mapping[str, bytes],
        client_config: Mapping[str, Any],
        server_config: Mapping[str, Any],
        protocols: Mapping[str, bytes] | None = None,
        averaging_plan: bytes | None = None,
        now: datetime,
    ) -> Process:
        """Create an FL process with checkpoint 1 and cycle 1 (``model-centric/host-training``).

        The caller keeps ``model`` as checkpoint 1; the tables keep only its number.

        Raises:
            HostingRefused: a config key is missing, the model or a plan is not valid, or the
                (name, version) exists already.
        """
        for key in ("name", "version"):
            if key not in client_config:
                raise HostingRefused(f"'{key}'")
        if "cycle_length" not in server_config:
            raise HostingRefused("'cycle_length'")
        name, version = str(client_config["name"]), str(client_config["version"])
        if any(p.name == name and p.version == version for p in self.processes):
            raise HostingRefused("FL Process already exists.")
        try:
            wire.parse_state(model)
        except WireError as exc:
            raise HostingRefused(f"Model is not valid: {exc}") from None
        for plan_name, data in plans.items():
            try:
                wire.plan_torchscript(data)
            except WireError as exc:
                raise HostingRefused(f"Plan is not valid: {plan_name}: {exc}") from None
        if averaging_plan is not None:
            next(self._plan_ids)
        process = Process(
            id=next(self._ids),
            name=name,
            version=version,
            model_id=0,
            client_config=dict(client_config),
            server_config=dict(server_config),
            plans={n: PlanRecord(next(self._plan_ids), n, bytes(d)) for n, d in plans.items()},
            protocols={n: bytes(d) for n, d in (protocols or {}).items()},
            averaging_plan=averaging_plan,
        )
        process.model_id = process.id
        self.processes.append(process)
        self._new_cycle(process, now)
        return process

    def find(self, name: str, version: str | None) -> Process | None:
        """The process with this name and version; with no version, the last hosted of that name."""
        matches = [p for p in self.processes if p.name == name and (not version or p.version == version)]
        return matches[-1] if matches else None

    def find_or_last(self, name: str | None, version: str | None) -> Process | None:
        """``find(name, version)``, or with no name the last process hosted."""
        if name:
            return self.find(name, version)
        return self.processes[-1] if self.processes else None

    def new_worker(self) -> Worker:
        """A fresh worker row (every authenticate makes one)."""
        worker = Worker(str(uuid.uuid4()))
        self.workers[worker.id] = worker
        return worker

    def forget_workers(self) -> None:
        """Drop every worker and its unreported rows (a node restarted on an empty worker table)."""
        self.workers.clear()
        for key, assignment in list(self._by_key.items()):
            if not assignment.completed:
                del self._by_key[key]
                assignment.cycle.assignments.pop(assignment.worker_id, None)

    def cycle_request(self, data: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        """Answer a cycle-request: accepted, rejected (± timeout) or rejected with an error (docs/protocol.md §2.2).

        The answer carries no reason, as PyGrid's does not; ``rejection_reason`` says why for the log.
        """
        worker = self.workers.get(str(data.get("worker_id")))
        if worker is None:
            return {"status": "rejected", "error": "Worker ID not found!"}
        version = data.get("version")
        process = self.find(str(data.get("model")), None if version is None else str(version))
        if process is None or version is None:
            return {"status": "rejected", "error": NOT_FOUND}
        for name in _SPEED_FIELDS:
            value = data.get(name)
            if value is None:
                if process.requires_speed_test:
                    return {"status": "rejected", "error": f"'{name}' is required"}
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                return {"status": "rejected", "error": f"'{name}' needs to be a positive number"}
            setattr(worker, name, float(value))
        cycle = process.current_cycle()
        if cycle is None:
            return {"status": "rejected"}
        if worker.id not in cycle.assignments and _bandwidth_ok(process, worker):
            assignment = Assignment(worker.id, _request_key(), cycle)
            cycle.assignments[worker.id] = assignment
            self._by_key[(worker.id, assignment.request_key)] = assignment
            return {
                "status": "accepted",
                "request_key": assignment.request_key,
                "version": process.version,
                "model": process.name,
                "plans": {name: plan.id for name, plan in process.plans.items()},
                "protocols": {name: i for i, name in enumerate(process.protocols, 1)},
                "client_config": process.client_config,
                "model_id": process.model_id,
            }
        return _rejection(process, cycle, now)

    def rejection_reason(self, worker_id: str, name: str, version: str) -> str:
        """Why a worker would be rejected from the process's open cycle now (for the node's log)."""
        process = self.find(name, version)
        cycle = process.current_cycle() if process is not None else None
        if process is None or cycle is None:
            return "no open cycle"
        assignment = cycle.assignments.get(worker_id)
        if assignment is not None:
            state = "reported" if assignment.completed else "not reported yet"
            return f"already assigned to cycle {cycle.number} ({state})"
        return "bandwidth below the minimum"

    def download(self, kind: str, query: Mapping[str, str]) -> tuple[Process, bytes | None]:
        """Validate ``get-model`` (kind ``model``) or ``get-plan`` (kind ``plan``) (docs/protocol.md §2.3).

        Returns the process and the plan's bytes; None for a model: its latest checkpoint is the body.

        Raises:
            Refusal: 400 Model/Plan/Worker ID not found or Cycle not found, 401 Invalid request key.
        """
        process, body = self._asset(kind, query.get(f"{kind}_id", ""))
        cycle = process.current_cycle()
        if cycle is None:
            raise Refusal(400, "Cycle not found!")
        worker_id = query.get("worker_id", "")
        if worker_id not in self.workers:
            raise Refusal(400, "Worker ID not found!")
        assignment = cycle.assignments.get(worker_id)
        if assignment is None:
            raise Refusal(400, "Cycle not found!")
        if query.get("request_key") != assignment.request_key:
            raise Refusal(401, "Invalid request key!")
        return process, body

    def assignment(self, worker_id: str, request_key: str) -> Assignment:
        """The worker-cycle row of a report, open cycle or not (docs/protocol.md §2.6).

        Raises:
            Refusal: no worker-cycle row has this worker id and request key.
        """
        assignment = self._by_key.get((worker_id, request_key))
        if assignment is None:
            raise Refusal(200, "ProcessLookupError: no worker cycle for this worker_id and request_key")
        return assignment

    def record_report(self, worker_id: str, request_key: str, report: int) -> Assignment:
        """Mark a worker-cycle row reported with report number ``report``, open cycle or not (docs/protocol.md §2.6).

        Raises:
            Refusal: no worker-cycle row has this worker id and request key.
        """
        assignment = self.assignment(worker_id, request_key)
        assignment.report, assignment.completed, assignment.valid = report, True, None
        return assignment

    def ready(self, cycle: Cycle, now: datetime) -> bool:
        """PyGrid's readiness rule for averaging a cycle (docs/protocol.md §7)."""
        config = cycle.process.server_config
        done = len(cycle.reported())
        min_diffs, max_diffs = config.get("min_diffs"), config.get("max_diffs")
        if min_diffs is not None and done < min_diffs:
            return False
        if max_diffs is None and cycle.end is None:
            return True
        return (max_diffs is not None and done >= max_diffs) or (cycle.end is not None and now >= cycle.end)

    def finish(self, cycle: Cycle, averaged: bool, now: datetime) -> None:
        """Complete a cycle: the next checkpoint number if diffs were ``averaged``, then the next cycle unless done."""
        process = cycle.process
        if averaged:
            process.checkpoint_number += 1
        cycle.completed = True
        num_cycles = process.server_config.get("num_cycles") or 0
        if num_cycles == 0 or process.completed_cycles < num_cycles:
            self._new_cycle(process, now)

    def checkpoint(self, name: str, version: str | None, which: str | None) -> tuple[Process, int]:
        """Which checkpoint ``retrieve-model`` names: a number, or the alias ``latest`` (default).

        Raises:
            Refusal: 404 Model ID not found! for an unknown process or checkpoint.
        """
        process = self.find(name, version)
        if process is not None:
            if which in (None, "", "latest"):
                return process, process.checkpoint_number
            if which.isdigit() and 1 <= int(which) <= process.checkpoint_number:
                return process, int(which)
        raise Refusal(404, "Model ID not found!")

    def _asset(self, kind: str, raw_id: str) -> tuple[Process, bytes | None]:
        wanted = int(raw_id) if raw_id.isdigit() else -1
        for process in self.processes:
            if kind == "model" and process.model_id == wanted:
                return process, None
            for plan in process.plans.values() if kind == "plan" else ():
                if plan.id == wanted:
                    return process, plan.data
        raise Refusal(400, f"{kind.capitalize()} ID not found!")

    def _new_cycle(self, process: Process, now: datetime) -> None:
        length = process.server_config.get("cycle_length")
        end = None if length is None else now + timedelta(seconds=length)
        process.cycles.append(Cycle(process, len(process.cycles) + 1, now, end))


def _request_key() -> str:
    return hashlib.sha256(uuid.uuid4().hex.encode()).hexdigest()


def _bandwidth_ok(process: Process, worker: Worker) -> bool:
    for key, attribute in SPEED_MINIMUMS.items():
        minimum = process.server_config.get(key)
        if minimum is None:
            continue
        measured = getattr(worker, attribute)
        if measured is None or not measured >= minimum:
            return False
    return True


def _rejection(process: Process, cycle: Cycle, now: datetime) -> dict[str, Any]:
    """Rejected; with ``str(end - now)`` only while completed cycles < num_cycles (so never for 0)."""
    if "num_cycles" not in process.server_config:
        return {"status": "rejected", "error": "'num_cycles'"}
    if process.completed_cycles >= (process.server_config["num_cycles"] or 0):
        return {"status": "rejected"}
    if cycle.end is None:
        return {
            "status": "rejected",
            "error": "unsupported operand type(s) for -: 'NoneType' and 'datetime.datetime'",
        }
    return {"status": "rejected", "timeout": str(cycle.end - now)}
