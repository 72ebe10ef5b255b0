"""The state directory: owner-only files written atomically (temp file, fsync, rename, fsync dir).

Owns how bytes reach the disk safely. Does not own what the files mean (worker ids, the spool and
the history belong to the cycle modules).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["StateDir", "atomic_write"]


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600, durable: bool = True, sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file, whole.

    ``durable=False`` skips both fsyncs, for bookkeeping that guards nothing (the history): readers
    still never see a half-written file, but a crash may lose the write or leave the file empty.
    ``sync_dir=False`` skips the directory's fsync only, for a file whose name a later write's
    directory fsync makes durable before anything relies on it (the spool's diff, then its ``.json``).
    """
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if not durable or not sync_dir:
        return
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class StateDir:
    """A directory of owner-only files; sub-directories per job are created on demand."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def ensure(self) -> Path:
        """Create the root (mode 0700) if missing and return it."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self.root

    def subdir(self, *parts: str) -> Path:
        """A sub-directory, created with mode 0700."""
        path = self.root.joinpath(*parts)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    def write_bytes(self, relative: str | Path, data: bytes) -> Path:
        """Atomically write ``data`` under the root; returns the path."""
        path = self.root / relative
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(path, data)
        return path

    def write_json(self, relative: str | Path, value: Any) -> Path:
        """Atomically write ``value`` as JSON."""
        return self.write_bytes(relative, json.dumps(value, indent=1, sort_keys=True).encode() + b"\n")

    def read_json(self, relative: str | Path, default: Any = None) -> Any:
        """Read a JSON file written by ``write_json``; ``default`` if it is missing or unreadable."""
        try:
            return json.loads((self.root / relative).read_bytes())
        except (FileNotFoundError, json.JSONDecodeError):
            return default
