"""What the jobs need from the rest of the daemon, as Protocols: a reader can follow a cycle from the
decision to the report through these types, and tests plug in real objects of their own.

Owns the shapes only: ``GridSession`` (one node conversation, ``syftd.grid.client.GridClient``),
``ClientFactory``, ``Conditions`` publishing and the sleep lock (``ConditionsSource``, the
``ConditionsMonitor``), and the trainer side (``Trainers``, the ``TrainerPool``). The spool, the
history and the identity are used as their real types. Does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from syftd.conditions.value import Conditions
    from syftd.config import JobConfig
    from syftd.grid.answers import Accepted, Auth
    from syftd.grid.speedtest import Speed
    from syftd.trainer.flag import ExpiryFlag
    from syftd.trainer.messages import Progress, TrainerStage, TrainingResult

__all__ = ["ClientFactory", "ConditionsSource", "GridSession", "Trainers"]


class GridSession(Protocol):
    """One conversation with the job's node: an async context manager with the protocol's steps."""

    async def __aenter__(self) -> GridSession: ...
    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    async def authenticate(self) -> Auth: ...
    async def speed_test(self, worker_id: str) -> Speed: ...
    async def speed(self, worker_id: str) -> Speed: ...
    def speed_test_bytes(self) -> int: ...
    async def cycle_request(self, worker_id: str, *, speed: Speed | None = None) -> Accepted: ...
    async def get_model(self, worker_id: str, request_key: str, model_id: int) -> bytes: ...
    async def get_plan(self, worker_id: str, request_key: str, plan_id: int) -> bytes: ...
    async def get_model_and_plan(self, worker_id: str, accepted: Accepted) -> tuple[bytes, bytes]: ...
    async def report(self, worker_id: str, request_key: str, diff: bytes) -> None: ...
    async def download_cycle_to(self, model_path: Path, plan_path: Path, worker_id: str, accepted: Accepted) -> int: ...
    async def report_file(self, worker_id: str, request_key: str, path: Path, *, size: int | None = None) -> None: ...


ClientFactory = Callable[["JobConfig", "str | None"], AbstractAsyncContextManager[GridSession]]
"""A session with the job's node for one ``async with``, given the job and its auth token (the daemon
lends one kept across cycles, ``syftd.grid.kept``)."""


class ConditionsSource(Protocol):
    """The conditions monitor as the jobs use it: the value, its changes, thermal polling, the sleep lock."""

    @property
    def current(self) -> Conditions: ...
    def subscribe(self, callback: Callable[[Conditions], None]) -> Callable[[], None]: ...
    def set_thermal_active(self, active: bool) -> None: ...
    async def hold_sleep_lock(self) -> bool: ...
    def release_sleep_lock_soon(self) -> None: ...
    def release_sleep_lock(self) -> None: ...


class Trainers(Protocol):
    """The trainer pool as a cycle uses it."""

    async def prepare(self, job: JobConfig) -> None: ...
    def discard_prepared(self, job: JobConfig, term_at: float | None = None) -> None: ...
    async def train(
        self,
        job: JobConfig,
        *,
        model: bytes,
        plan: bytes,
        client_config: dict[str, object],
        flag: ExpiryFlag,
        on_progress: Callable[[Progress], None],
        cycle_id: str,
        on_stage: Callable[[TrainerStage], None] = ...,
        files: tuple[Path, Path, Path] | None = ...,
    ) -> TrainingResult: ...
