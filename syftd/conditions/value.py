"""The ``Conditions`` value: what the machine's state is, each fact possibly unknown, with change times.

Owns the value and how a partial update from one monitor merges into it. Does not own reading the
system (the monitors) or deciding anything from it (``syftd.policy``). Times are ``loop.time()`` /
``time.monotonic()`` seconds (CLOCK_MONOTONIC: does not count time asleep).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["FACTS", "Conditions", "Connectivity"]


class Connectivity(enum.Enum):
    """Internet reachability as NetworkManager reports it (NMConnectivityState, 0-based)."""

    UNKNOWN = "unknown"
    NONE = "none"
    PORTAL = "portal"
    LIMITED = "limited"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class Conditions:
    """One snapshot; ``None`` means unknown. ``changed_at[fact]`` is when that fact last changed."""

    on_external_power: bool | None = None
    battery_percent: float | None = None
    online: bool | None = None
    connectivity: Connectivity | None = None
    metered: bool | None = None
    idle: bool | None = None
    sleeping: bool | None = None
    temperature_c: float | None = None
    free_disk_mb: float | None = None
    changed_at: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    sources: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def updated(self, now: float, source: str = "", **facts: Any) -> Conditions:
        """A copy with ``facts`` applied; a fact's change time moves only when its value changed.

        Raises:
            TypeError: a name that is not a fact (a programming error in a monitor).
        """
        unknown = facts.keys() - FACTS
        if unknown:
            raise TypeError(f"Conditions has no fact(s) {sorted(unknown)}; facts are {sorted(FACTS)}")
        changed = {name: now for name, value in facts.items() if getattr(self, name) != value}
        if not changed and all(self.sources.get(name) == source for name in facts):
            return self
        return dataclasses.replace(
            self,
            **facts,
            changed_at=MappingProxyType({**self.changed_at, **changed}),
            sources=MappingProxyType({**self.sources, **dict.fromkeys(facts, source)}),
        )

    def held_since(self, fact: str) -> float | None:
        """When ``fact`` took its current value (None if it never changed from unknown)."""
        return self.changed_at.get(fact)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (for ``syftd status`` and logs)."""
        out: dict[str, Any] = {}
        for name in sorted(FACTS):
            value = getattr(self, name)
            out[name] = value.value if isinstance(value, enum.Enum) else value
        return out


FACTS = frozenset(f.name for f in dataclasses.fields(Conditions) if f.name not in ("changed_at", "sources"))
