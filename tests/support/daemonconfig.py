"""The daemon configuration the end-to-end tests and the soak run with: one MNIST job on the local node,
condition monitors on the private bus's mocks.

Owns the keys both worlds share and how they are written as TOML; a caller changes a key by naming its
table (``{"job.schedule": {"interval_s": 0}}``) and may append raw lines to ``[daemon]`` and after the
last table. Does not own the node, the bus or the daemon process (``harness``, ``soak.world``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["daemon_config"]


def daemon_config(
    *,
    base: Path,
    bus_address: str,
    url: str,
    model: str,
    values: Mapping[str, Mapping[str, Any]] | None = None,
    daemon: str = "",
    job: str = "",
) -> str:
    """The configuration text: state in ``base/state``, the control socket in ``base/run``, the job
    ``mnist`` on ``url``; ``values`` overrides or adds keys per table, ``daemon`` and ``job`` are raw
    lines appended to ``[daemon]`` and after ``[job.trainer]``."""
    tables: dict[str, dict[str, Any]] = {
        "daemon": {
            "state_dir": base / "state",
            "runtime_dir": base / "run",
            "log_format": "json",
            "log_level": "debug",
            "shutdown_grace_s": 4.0,
        },
        "daemon.conditions": {
            "bus_address": bus_address,
            "power_source": "upower",
            "network_source": "networkmanager",
            "sleep_source": "logind",
        },
        "[job]": {"name": "mnist"},
        "job.grid": {"url": url, "model": model, "version": "1.0"},
        "job.data": {"source": "synthetic-digits", "samples": 256},
        "job.constraints": {"stable_for_s": 0.2},
        "job.schedule": {"interval_s": 3600, "backoff_initial_s": 0.5, "rejection_jitter_s": 0.2},
        "job.budget": {"max_cycle_s": 120, "expiry_grace_s": 2.0},
        "job.trainer": {"threads": 1, "idle_exit_s": 30},
    }
    for table, keys in (values or {}).items():
        tables[table].update(keys)
    lines: list[str] = []
    for table, keys in tables.items():
        lines += ["", f"[{table}]", *(f"{key} = {_toml(value)}" for key, value in keys.items())]
        if table == "daemon" and daemon:
            lines.append(daemon)
    if job:
        lines.append(job)
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a TOML basic string
