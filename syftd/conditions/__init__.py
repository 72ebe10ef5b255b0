"""Condition monitors: power, network, sleep, idle, temperature and disk, published as ``Conditions``.

The value (``syftd.conditions.value``) is pure; the monitor and its D-Bus, netlink and sysfs sources
are imported only when ``ConditionsMonitor`` is asked for, so the pure core loads no I/O code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from syftd.conditions.value import FACTS, Conditions, Connectivity

if TYPE_CHECKING:
    from syftd.conditions.monitor import ConditionsMonitor

__all__ = ["FACTS", "Conditions", "ConditionsMonitor", "Connectivity"]


def __getattr__(name: str) -> Any:
    if name == "ConditionsMonitor":
        from syftd.conditions.monitor import ConditionsMonitor

        return ConditionsMonitor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
