"""Cooperative stop for Flower ClientApps run by syftd: copy this file into your app package.

syftd runs ``flower-supernode`` only while the machine's owner allows it (on AC power, online, inside
a schedule...). When that stops holding, syftd writes a *stop file* whose path it passed to the
SuperNode as ``--node-config 'syftd-stop-file="…"'``, waits a short grace, then terminates the
SuperNode. A ClientApp that checks the file once per batch can use the grace to return a partial
update (or raise, so the ServerApp sees syftd's reason) instead of being killed mid-batch::

    from .syftd_stop import should_stop, stop_request

    for batch in batches:
        if should_stop(context):
            break                      # return what was trained so far, with its smaller weight
        train_one(batch)

Owns only reading the file; it has no dependency on syftd or on anything outside the standard
library, and works with any object that has a ``node_config`` mapping (Flower's ``Context``).
Without the key (not run by syftd) every call answers "keep going".

The file, written atomically by syftd, is JSON: ``{"reason": "on_battery", "deadline": "<ISO 8601
UTC>", "deadline_unix": <seconds since the epoch>}``; ``deadline`` is when the SuperNode is
terminated. The same path is also in the environment as ``SYFTD_STOP_FILE``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["ENV_KEY", "NODE_CONFIG_KEY", "StopRequest", "should_stop", "stop_file", "stop_request"]

NODE_CONFIG_KEY = "syftd-stop-file"
"""The ``context.node_config`` key that names the stop file."""
ENV_KEY = "SYFTD_STOP_FILE"
"""The environment variable that names it too (fallback when node_config lacks the key)."""

_last: tuple[Any, str | None] = (None, None)


@dataclass(frozen=True)
class StopRequest:
    """What the stop file says: why syftd stops this node, and by when the SuperNode is terminated."""

    reason: str
    deadline_unix: float | None

    def seconds_left(self, now: float | None = None) -> float | None:
        """Seconds until the SuperNode is terminated (may be negative), or None when unknown."""
        if self.deadline_unix is None:
            return None
        return self.deadline_unix - (time.time() if now is None else now)


def stop_file(context: Any) -> str | None:
    """The stop file's path for this context, or None when syftd named none (remembered for the last context)."""
    global _last
    if _last[0] is context and context is not None:
        return _last[1]
    node_config = getattr(context, "node_config", None) or {}
    value = node_config.get(NODE_CONFIG_KEY) if hasattr(node_config, "get") else None
    path = value if isinstance(value, str) and value else os.environ.get(ENV_KEY) or None
    _last = (context, path)
    return path


def should_stop(context: Any) -> bool:
    """True once syftd asked this node to stop: one ``stat`` per call, cheap enough for every batch."""
    path = stop_file(context)
    if path is None:
        return False
    try:
        os.stat(path)
    except OSError:
        return False
    return True


def stop_request(context: Any) -> StopRequest | None:
    """The reason and deadline syftd wrote, or None while no stop is asked for.

    A file that exists but cannot be parsed still means "stop" (reason ``unknown``).
    """
    path = stop_file(context)
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    except OSError:
        return StopRequest("unknown", None)
    try:
        data = json.loads(text)
    except ValueError:
        return StopRequest("unknown", None)
    if not isinstance(data, dict):
        return StopRequest("unknown", None)
    reason = data.get("reason")
    deadline = data.get("deadline_unix")
    return StopRequest(
        reason if isinstance(reason, str) and reason else "unknown",
        float(deadline) if isinstance(deadline, int | float) and not isinstance(deadline, bool) else None,
    )
