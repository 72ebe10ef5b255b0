"""The stop file: how syftd tells a cooperating ClientApp that its SuperNode is about to be stopped.

Owns the file's format (JSON ``{"reason", "deadline", "deadline_unix"}``, written atomically so a
reader never sees half of it) and its removal before a SuperNode starts. The reader is the
standalone ``contrib/flower/syftd_stop.py``, which the ClientApp's author copies in.
Does not decide when to stop (``supervisor``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from pathlib import Path

__all__ = ["clear", "write"]


def write(path: Path, *, reason: str, deadline_unix: float) -> None:
    """Write the stop file: ``reason`` and the wall-clock time the SuperNode gets SIGTERM."""
    deadline = dt.datetime.fromtimestamp(deadline_unix, tz=dt.timezone.utc)
    body = {"reason": reason, "deadline": deadline.isoformat(timespec="milliseconds"), "deadline_unix": deadline_unix}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(body) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def clear(path: Path) -> None:
    """Remove the stop file (and a leftover temporary one); missing files are fine."""
    for stale in (path, path.with_name(f".{path.name}.tmp")):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
