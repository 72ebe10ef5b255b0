"""What the daemon starts and stops: the service protocol, and the ``async with`` every service offers.

Owns ``Service`` (``start()`` returns once ready and undoes its own partial work on failure; ``stop()``
is idempotent, bounded and safe in ``finally``) and ``ServiceContext``, the mixin that turns
``start``/``stop`` into an async context manager. Does not own any service.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, TypeVar

__all__ = ["Service", "ServiceContext"]

S = TypeVar("S", bound="ServiceContext")


class Service(Protocol):
    """What the daemon starts and stops."""

    async def start(self) -> None:
        """Return once ready; undo partial work on failure."""

    async def stop(self) -> None:
        """Idempotent and bounded."""


class ServiceContext:
    """``async with service:`` is ``await service.start()`` … ``await service.stop()``."""

    async def start(self) -> None:
        """Start the service (subclasses implement it)."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Stop the service (subclasses implement it)."""
        raise NotImplementedError

    async def __aenter__(self: S) -> S:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
