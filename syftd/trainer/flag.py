"""The shared expiration flag: one named shared-memory byte per cycle, written by the daemon only.

Owns both ends of the flag. ``ExpiryFlag`` is the daemon's end: it creates the block, writes the
first reason (one-way, level-triggered, never reset) with the moment it was set and the moment a
trainer still running must get SIGTERM (the moment plus the grace; a stopping daemon can only bring
it forward, ``hasten``), offers ``await flag.wait()`` and ``await flag.wait_term()`` so the process
manager watches it, and closes/unlinks the block. ``ExpiryView`` is the trainer's
end: it attaches by name and only reads, raising ``Expired`` at its checkpoints. The flag crosses the
process boundary as shared memory, never as messages that can queue up; a warm trainer is handed a
fresh flag per cycle by name. Does not own the reasons (``syftd.outcomes``), who sets the flag and
when (the cycle, ``syftd.jobs.cycle``) nor the checkpoints
(``training`` lists them).

The block is the POSIX shared-memory object ``multiprocessing.shared_memory`` would create
(``/syftd-<creator pid>-<hex>``, via the same ``_posixshmem``), opened directly: before Python 3.13 that class
registers every block with a resource-tracker helper process, which would stay beside the daemon for
its whole life and, in the trainer, remove the daemon's block when the trainer exits (cpython issue
82300). Removal is ours: ``ExpiryFlag.close()``, and after a ``kill -9`` of the daemon,
``remove_orphan_flags()`` at the next start (blocks whose creator pid is no longer alive; Linux, where
the blocks are visible under ``/dev/shm``).
"""

from __future__ import annotations

import _posixshmem  # type: ignore[import-not-found]  # the module SharedMemory itself uses on POSIX
import asyncio
import mmap
import os
import re
import secrets
import time
from pathlib import Path
from types import TracebackType

from syftd.outcomes import ExpiryReason

__all__ = ["Expired", "ExpiryFlag", "ExpiryView", "remove_orphan_flags"]

_SIZE = 1
_LIVE = 0
_SHM_DIR = Path("/dev/shm")
_NAME = re.compile(r"^syftd-(\d+)-[0-9a-f]{16}$")


class Expired(BaseException):
    """Raised at a trainer checkpoint; a BaseException (like CancelledError) so ``except Exception`` can't eat it."""

    def __init__(self, reason: ExpiryReason) -> None:
        self.reason = reason
        super().__init__(reason.label)


class ExpiryFlag:
    """The daemon's end of one cycle's flag; the event loop is its only writer. A context manager closes it."""

    def __init__(self) -> None:
        self._name = f"syftd-{os.getpid()}-{secrets.token_hex(8)}"
        fd = _posixshmem.shm_open("/" + self._name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
        try:
            os.ftruncate(fd, _SIZE)
            self._map: mmap.mmap | None = mmap.mmap(fd, _SIZE)
        except BaseException:
            _posixshmem.shm_unlink("/" + self._name)
            raise
        finally:
            os.close(fd)
        self._event = asyncio.Event()
        self._changed = asyncio.Event()
        self._closed_value = _LIVE
        self.expired_at: float | None = None
        """When the flag was set (``time.monotonic()``), or None."""
        self.term_at: float | None = None
        """When a trainer still running gets SIGTERM (``time.monotonic()``), or None."""

    def __enter__(self) -> ExpiryFlag:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def name(self) -> str:
        """The block's name, handed to the trainer (``ExpiryView(name)``)."""
        return self._name

    @property
    def reason(self) -> ExpiryReason | None:
        """The first reason given, or None while the cycle may run."""
        value = self._map[0] if self._map is not None else self._closed_value
        return ExpiryReason(value) if value != _LIVE else None

    @property
    def is_expired(self) -> bool:
        """True once ``expire`` was called with any reason."""
        return self.reason is not None

    def expire(self, reason: ExpiryReason, grace_s: float = 0.0) -> bool:
        """Set the flag; a trainer still running after ``grace_s`` gets SIGTERM. True if this call set
        it, False if an earlier reason already won (its grace stands).

        Raises:
            RuntimeError: after ``close()``.
        """
        if self._map is None:
            raise RuntimeError("ExpiryFlag.expire() after close(); create one flag per cycle")
        if self._map[0] != _LIVE:
            return False
        self._map[0] = int(reason)
        self.expired_at = time.monotonic()
        self.term_at = self.expired_at + max(0.0, grace_s)
        self._event.set()
        self._changed.set()
        return True

    def hasten(self, term_at: float) -> None:
        """Bring the SIGTERM moment forward to ``term_at`` (monotonic) if it is later; no-op while unset."""
        if self.term_at is not None and term_at < self.term_at:
            self.term_at = term_at
            self._changed.set()

    async def wait(self) -> ExpiryReason:
        """Return the reason once the flag is set (at once if it already is)."""
        await self._event.wait()
        reason = self.reason
        assert reason is not None
        return reason

    async def wait_term(self) -> None:
        """Return once the flag is set and its SIGTERM moment has come (``hasten`` is followed)."""
        await self._event.wait()
        while True:
            assert self.term_at is not None
            remaining = self.term_at - time.monotonic()
            if remaining <= 0:
                return
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def close(self) -> None:
        """Unmap and remove the block (a trainer's mapping stays valid); idempotent. The reason stays readable."""
        if self._map is None:
            return
        self._closed_value = self._map[0]
        self._map.close()
        self._map = None
        try:
            _posixshmem.shm_unlink("/" + self._name)
        except FileNotFoundError:
            pass


class ExpiryView:
    """The trainer's read-only end of a flag, attached by name."""

    def __init__(self, name: str) -> None:
        self._map = _attach(name)

    @property
    def reason(self) -> ExpiryReason | None:
        """The reason the daemon wrote, or None."""
        value = self._map[0]
        return ExpiryReason(value) if value != _LIVE else None

    def check(self) -> None:
        """A checkpoint.

        Raises:
            Expired: once the daemon has set the flag.
        """
        value = self._map[0]
        if value != _LIVE:
            raise Expired(ExpiryReason(value))

    def close(self) -> None:
        """Drop the mapping; the daemon owns the block's removal."""
        self._map.close()


def remove_orphan_flags(shm_dir: Path = _SHM_DIR) -> list[str]:
    """Unlink the flags of daemons that died without closing them (their creator pid is gone).

    Returns the names removed; nothing where ``shm_dir`` does not exist (macOS). A block whose creator
    still runs (another daemon, or a reused pid) is left alone.
    """
    try:
        names = [entry.name for entry in os.scandir(shm_dir)]
    except OSError:
        return []
    removed = []
    for name in names:
        match = _NAME.match(name)
        if match is None or _alive(int(match.group(1))):
            continue
        try:
            _posixshmem.shm_unlink("/" + name)
        except OSError:
            continue
        removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _attach(name: str) -> mmap.mmap:
    """Map the daemon's block read-only."""
    fd = _posixshmem.shm_open("/" + name, os.O_RDONLY, mode=0o600)
    try:
        return mmap.mmap(fd, _SIZE, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
