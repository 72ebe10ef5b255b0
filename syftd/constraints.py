"""The job's constraints against the machine's ``Conditions``: which hold, since when, and which loss
expires a running cycle.

Owns the constraint checks (power, network, metered, battery, idle, temperature, disk, sleep), the
"since when" bookkeeping that makes a regained condition count only after ``stable_for_s``
(``track``, ``stable_at``), and the mapping of a lost constraint to its ``ExpiryReason``. Pure: no
I/O, no clock of its own. Does not own scheduling (``policy``) or reading the system (``conditions``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeAlias

from syftd.conditions.value import Conditions, Connectivity
from syftd.config import ConstraintsConfig
from syftd.outcomes import ExpiryReason

__all__ = ["Since", "Unmet", "duration_text", "expiry_reason", "stable_at", "track", "unmet"]

Since: TypeAlias = "tuple[bool | None, float]"
"""Per constraint: whether it held (None = unknown) and since when (monotonic)."""


@dataclass(frozen=True, slots=True)
class Unmet:
    """One constraint that does not hold: its name, the facts behind it, a text, and since when."""

    constraint: str
    facts: tuple[str, ...]
    what: str
    since: float | None = None
    unknown: bool = False

    def describe(self, now: float, wall: dt.datetime | None = None) -> str:
        """``what`` plus since when: a local time of day when ``wall`` is given, else a duration."""
        if self.since is None:
            return self.what
        if wall is not None:
            at = wall - dt.timedelta(seconds=max(0.0, now - self.since))
            return f"{self.what} since {at:%H:%M:%S}"
        return f"{self.what} for {duration_text(now - self.since)}"


def _checks(c: Conditions, k: ConstraintsConfig) -> list[tuple[str, tuple[str, ...], bool | None, str]]:
    """(constraint, facts, holds (None = unknown), text when it does not hold) for each active one."""
    out: list[tuple[str, tuple[str, ...], bool | None, str]] = []
    if c.sleeping:
        out.append(("sleep", ("sleeping",), False, "machine going to sleep"))
    if k.requires_external_power:
        power = c.on_external_power
        out.append(
            ("external_power", ("on_external_power",), power, "power source unknown" if power is None else "on battery")
        )
    if k.requires_network:
        out.append(("network", ("online", "connectivity"), c.online, _offline_text(c)))
    if k.requires_unmetered:
        metered = c.metered
        out.append(
            (
                "unmetered",
                ("metered",),
                None if metered is None else not metered,
                "metered status unknown" if metered is None else "metered link",
            )
        )
    if k.min_battery_percent > 0:
        pct = c.battery_percent
        if pct is None:
            holds: bool | None = True if c.on_external_power else None
            out.append(("battery", ("battery_percent", "on_external_power"), holds, "battery level unknown"))
        else:
            out.append(
                (
                    "battery",
                    ("battery_percent",),
                    pct >= k.min_battery_percent,
                    f"battery {pct:g}% < {k.min_battery_percent:g}%",
                )
            )
    if k.requires_idle:
        idle = c.idle
        out.append(("idle", ("idle",), idle, "idle state unknown" if idle is None else "not idle"))
    if k.max_temperature_c is not None:
        temp = c.temperature_c
        out.append(
            (
                "temperature",
                ("temperature_c",),
                None if temp is None else temp <= k.max_temperature_c,
                "temperature unknown" if temp is None else f"too hot {temp:g}°C > {k.max_temperature_c:g}°C",
            )
        )
    if k.min_free_disk_mb > 0:
        free = c.free_disk_mb
        out.append(
            (
                "disk",
                ("free_disk_mb",),
                None if free is None else free >= k.min_free_disk_mb,
                "free disk unknown" if free is None else f"disk {free:g} MB free < {k.min_free_disk_mb:g} MB",
            )
        )
    return out


def _offline_text(c: Conditions) -> str:
    if c.online is None:
        return "network state unknown"
    if c.connectivity is Connectivity.PORTAL:
        return "network offline (captive portal)"
    if c.connectivity is Connectivity.LIMITED:
        return "network offline (limited connectivity)"
    return "network offline"


def _changed(c: Conditions, facts: tuple[str, ...]) -> float | None:
    times = [t for f in facts if (t := c.changed_at.get(f)) is not None]
    return max(times) if times else None


def track(
    previous: Mapping[str, Since], conditions: Conditions, constraints: ConstraintsConfig, now: float
) -> Mapping[str, Since]:
    """Fold one published snapshot into per-constraint (holds, since) times; call it on every snapshot.

    A numeric fact (battery, temperature, disk) changes value without crossing its threshold, so its
    ``changed_at`` is not when the constraint began to hold; this records the crossing instead. A flip
    never dates from before the previous one (``syftd simulate clear`` restores a fact whose own
    ``changed_at`` is old: the regained constraint counts from the moment it is restored).
    """
    out: dict[str, Since] = {}
    for name, facts, holds, _text in _checks(conditions, constraints):
        old = previous.get(name)
        if old is not None and old[0] == holds:
            out[name] = old
        else:
            changed = _changed(conditions, facts)
            since = now if changed is None else min(changed, now)
            if old is not None and since < old[1]:
                # a change cannot predate the last one seen: a simulation cleared, a fact restored to a
                # value it had before; it counts from now (a regained condition must hold stable_for_s)
                since = now
            out[name] = (holds, since)
    return MappingProxyType(out)


def _since(
    name: str, facts: tuple[str, ...], holds: bool | None, c: Conditions, tracked: Mapping[str, Since] | None
) -> float | None:
    if tracked is not None and (entry := tracked.get(name)) is not None and entry[0] == holds:
        return entry[1]
    return _changed(c, facts)


def unmet(
    conditions: Conditions,
    constraints: ConstraintsConfig,
    now: float,
    tracked: Mapping[str, Since] | None = None,
) -> list[Unmet]:
    """Each constraint that does not hold now (unknown facts count, named as unknown), with since when.

    ``now`` is accepted for symmetry with ``stable_at``; losing a condition counts at once.
    """
    del now
    return [
        Unmet(name, facts, text, _since(name, facts, holds, conditions, tracked), unknown=holds is None)
        for name, facts, holds, text in _checks(conditions, constraints)
        if holds is not True
    ]


def stable_at(
    conditions: Conditions,
    constraints: ConstraintsConfig,
    now: float,
    tracked: Mapping[str, Since] | None = None,
) -> tuple[float, tuple[str, ...]] | None:
    """When every holding constraint will have held ``stable_for_s``, if later than ``now``, and which."""
    stable = constraints.stable_for_s
    latest, names = now, []
    for name, facts, holds, _text in _checks(conditions, constraints):
        if holds is not True:
            continue
        since = _since(name, facts, holds, conditions, tracked)
        if since is not None and since + stable > now:
            names.append(name)
            latest = max(latest, since + stable)
    return (latest, tuple(names)) if names else None


_EXPIRY = {
    "sleep": ExpiryReason.SLEEP,
    "external_power": ExpiryReason.POWER_LOST,
    "network": ExpiryReason.NETWORK_LOST,
    "unmetered": ExpiryReason.METERED,
    "battery": ExpiryReason.BATTERY_LOW,
    "idle": ExpiryReason.IDLE_LOST,
    "temperature": ExpiryReason.THERMAL,
    "disk": ExpiryReason.DISK_LOW,
}


def expiry_reason(conditions: Conditions, constraints: ConstraintsConfig) -> ExpiryReason | None:
    """The reason to expire a running cycle now: the first constraint known to be lost, no debounce.

    A fact that became unknown (a monitor went away and its fallback has not reported yet) does not
    expire a cycle; only a known loss does.
    """
    for name, _facts, holds, _text in _checks(conditions, constraints):
        if holds is False:
            return _EXPIRY[name]
    return None


def duration_text(seconds: float) -> str:
    """A short human duration: "42 s", "3 min 5 s", "2 h 10 min", "1 d 4 h"."""
    if not math.isfinite(seconds):
        return "forever"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"
