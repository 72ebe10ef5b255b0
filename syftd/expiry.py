"""Why a running cycle was expired: the reasons of the shared expiration flag.

Owns the ``ExpiryReason`` enum (stable integer values: they cross the process boundary in shared
memory). The flag itself lives in ``syftd.trainer.expiry``.
"""

from __future__ import annotations

import enum

__all__ = ["ExpiryReason"]


class ExpiryReason(enum.IntEnum):
    """One reason per thing that can end a cycle early; 0 is reserved for "not expired"."""

    POWER_LOST = 1
    NETWORK_LOST = 2
    METERED = 3
    BATTERY_LOW = 4
    IDLE_LOST = 5
    THERMAL = 6
    MEMORY = 7
    BUDGET = 8
    SLEEP = 9
    SHUTDOWN = 10
    MANUAL = 11
    CONFIG_CHANGED = 12
    DISK_LOW = 13

    @property
    def label(self) -> str:
        """The lowercase name used in logs, history and ``syftd status`` (``power_lost``)."""
        return self.name.lower()
