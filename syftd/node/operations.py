"""The contract between the node and its HTTP/WebSocket surface: what ``routes`` may call on a node.

Owns the ``NodeOperations`` protocol (the worker operations, downloads and test controls, independent
of transport) and the two ways a held report can end without an answer (``NodeStopping``,
``WorkerGone``). ``node`` implements it and ``routes`` serves it, so neither imports the other's module
for its types. Does not own any behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

from syftd.node.options import NodeOptions

__all__ = ["NodeOperations", "NodeStopping", "WorkerGone"]


class NodeStopping(Exception):
    """A held report was dropped because the node is stopping; the transport drops the request."""


class WorkerGone(Exception):
    """The worker's connection closed while its report was held; nothing is stored."""


class NodeOperations(Protocol):
    """What the transport layer calls on a node."""

    @property
    def options(self) -> NodeOptions:
        """The node's options (revision, prefix, speed-test size, controls)."""

    def take_failure(self) -> int | None:
        """The status to fail the current request with, if an injected failure is pending."""

    async def authenticate(self, data: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
        """The authenticate operation: the answer and its HTTP status."""

    def cycle_request(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """The cycle-request operation."""

    async def report(
        self, data: Mapping[str, Any], transport: Literal["ws", "http"], *, is_gone: Callable[[], bool] = ...
    ) -> dict[str, Any]:
        """The report operation (may raise ``NodeStopping`` or ``WorkerGone`` when held)."""

    def host_training(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """The host-training operation."""

    async def download(self, kind: str, query: Mapping[str, str]) -> bytes:
        """The body of get-model / get-plan (raises ``state.Refusal``)."""

    async def retrieve(self, name: str, version: str | None, which: str | None) -> bytes:
        """A checkpoint for retrieve-model (raises ``state.Refusal``)."""

    def snapshot(self) -> dict[str, Any]:
        """The test controls' view of the node."""

    def hold_reports(self) -> None:
        """Hold reports until released."""

    def release_reports(self) -> None:
        """Release held reports."""

    def set_averaging_delay(self, seconds: float) -> None:
        """Evaluate cycles this long after their triggering reports (raises ValueError if negative)."""

    def fail_next(self, count: int, status: int = 503) -> None:
        """Fail the next ``count`` HTTP requests with ``status``."""

    async def close_cycle(self, name: str | None = None, version: str | None = None) -> bool:
        """Complete the current cycle of a process now."""

    async def wait_for(
        self, *, reports: int, held: int, checkpoint: int, name: str | None, version: str | None, timeout: float
    ) -> bool:
        """Wait until these thresholds are reached; False on timeout."""
