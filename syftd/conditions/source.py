"""What every condition source is to the monitor: a publisher of partial facts with start/refresh/stop.

Owns the ``Source`` protocol, the ``Publish`` callback type, the facts of each area, and the
``FixedSource`` used where a source is switched off (``"none"``) or no better one exists. Does not
own any reading of the system.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Protocol

__all__ = ["AREA_FACTS", "FixedSource", "PolledSource", "Publish", "Source"]

Publish = Callable[[str, Mapping[str, Any]], None]
"""``publish(source_name, facts)``: a partial update of ``Conditions`` from one source."""

AREA_FACTS: Mapping[str, tuple[str, ...]] = {
    "power": ("on_external_power", "battery_percent"),
    "network": ("online", "connectivity", "metered"),
    "sleep": ("sleeping", "idle"),
    "thermal": ("temperature_c", "free_disk_mb"),
}


class Source(Protocol):
    """A condition source; ``start()`` returns after its first snapshot was published."""

    name: str

    async def start(self) -> None:
        """Begin following the system; publish the first snapshot before returning."""

    async def refresh(self) -> None:
        """Read everything afresh and publish what changed."""

    async def stop(self) -> None:
        """Stop following; idempotent and bounded."""


class PolledSource:
    """A source with no change events: publishes a reading at start, then one every ``interval_s``.

    Subclasses set ``name`` and implement ``refresh()``.
    """

    name = "polled"

    def __init__(self, publish: Publish, interval_s: float) -> None:
        self._publish = publish
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Read and publish (the subclass's reading)."""
        raise NotImplementedError

    async def start(self) -> None:
        """Publish a reading, then poll."""
        await self.refresh()
        self._task = asyncio.ensure_future(self._poll())

    async def stop(self) -> None:
        """Stop polling; idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.refresh()


class FixedSource:
    """Publishes fixed facts once: an assumption, not a reading (``power_source = "none"`` = on AC)."""

    def __init__(self, name: str, publish: Publish, facts: Mapping[str, Any]) -> None:
        self.name = name
        self._publish = publish
        self._facts = dict(facts)

    async def start(self) -> None:
        """Publish the fixed facts."""
        self._publish(self.name, self._facts)

    async def refresh(self) -> None:
        """Publish the fixed facts again."""
        self._publish(self.name, self._facts)

    async def stop(self) -> None:
        """Nothing to stop."""
