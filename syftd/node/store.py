"""The local node's bytes on disk: every checkpoint and every reported diff, behind a bounded cache.

Owns the directory layout (``<root>/<name>/<version>/checkpoint-N.pb`` and ``.../diffs/cycle-C-R.pb``,
names and versions quoted into single path components), atomic file replacement, and an LRU cache of
recently used files bounded in bytes, so the node's memory does not grow with the number of cycles.
Without a root it uses a temporary directory that ``close`` removes. Does not own which checkpoint is
the latest or which diffs belong to a cycle (``state``), nor durability: the node's tables live in
memory, so a file need not survive a crash that loses them (no fsync).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from urllib.parse import quote

__all__ = ["Store"]


class Store:
    """Files under ``root`` (a new temporary directory if None); reads go through an LRU cache of ``cache_bytes``.

    Thread-safe: the node reads and writes from its event loop and from worker threads.
    """

    def __init__(self, root: Path | None = None, *, cache_bytes: int) -> None:
        if cache_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {cache_bytes}")
        self._temporary = root is None
        self.root = Path(tempfile.mkdtemp(prefix="syftd-node-")) if root is None else root
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[Path, bytes] = OrderedDict()
        self._cached = 0
        self._lock = threading.Lock()

    def checkpoint_path(self, name: str, version: str, number: int) -> Path:
        """Where checkpoint ``number`` of process (``name``, ``version``) is kept."""
        return self._process_dir(name, version) / f"checkpoint-{number}.pb"

    def diff_path(self, name: str, version: str, cycle: int, report: int) -> Path:
        """Where the diff of report ``report`` (node-wide sequence number) into ``cycle`` is kept."""
        return self._process_dir(name, version) / "diffs" / f"cycle-{cycle}-{report}.pb"

    def write(self, path: Path, data: bytes, *, cache: bool = True) -> None:
        """Replace ``path`` with ``data`` (whole or not at all); keep it in the cache if ``cache``."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if cache:
            self._remember(path, data)
        else:
            self.forget(path)

    def read(self, path: Path, *, cache: bool = True) -> bytes:
        """The bytes at ``path``, from the cache or the file (which then enters the cache if ``cache``).

        Raises:
            FileNotFoundError: nothing was written there (or the store was closed).
        """
        with self._lock:
            data = self._cache.get(path)
            if data is not None:
                self._cache.move_to_end(path)
                return data
        data = path.read_bytes()
        if cache:
            self._remember(path, data)
        return data

    def cached(self, path: Path) -> bytes | None:
        """The bytes at ``path`` if they are in the cache (no I/O), else None."""
        with self._lock:
            data = self._cache.get(path)
            if data is not None:
                self._cache.move_to_end(path)
            return data

    @property
    def cached_bytes(self) -> int:
        """How many bytes the cache holds now (at most ``cache_bytes``)."""
        return self._cached

    def close(self) -> None:
        """Empty the cache; remove the directory if the store made it. Idempotent."""
        with self._lock:
            self._cache.clear()
            self._cached = 0
        if self._temporary:
            shutil.rmtree(self.root, ignore_errors=True)

    def forget(self, path: Path) -> None:
        """Drop ``path`` from the cache (the file stays)."""
        with self._lock:
            old = self._cache.pop(path, None)
            if old is not None:
                self._cached -= len(old)

    def _remember(self, path: Path, data: bytes) -> None:
        with self._lock:
            old = self._cache.pop(path, None)
            if old is not None:
                self._cached -= len(old)
            if len(data) > self.cache_bytes:
                return
            self._cache[path] = data
            self._cached += len(data)
            while self._cached > self.cache_bytes:
                _, evicted = self._cache.popitem(last=False)
                self._cached -= len(evicted)

    def _process_dir(self, name: str, version: str) -> Path:
        return self.root / _component(name) / _component(version)


def _component(text: str) -> str:
    """``text`` as one safe path component: ``/`` and other specials quoted, ``.`` and ``..`` escaped."""
    quoted = quote(text, safe="")
    if quoted in ("", ".", ".."):
        return quoted.replace(".", "%2E") or "%00"
    return quoted
