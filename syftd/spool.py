"""The spool: finished diffs kept on disk until the node has them, so no crash or network cut loses work.

Owns the files under ``<state_dir>/jobs/<job>/spool/``: per cycle a ``<cycle_id>.diff`` (the bytes) and
a ``<cycle_id>.json`` (format, job, cycle id, worker id, request key, plan id, model id, created time,
size, sha256), the ``<cycle_id>.reported`` / ``.discarded`` markers, and ``quarantine/``. Does not own
checking the diff (the trainer checks its tensors with ``trainer.plan.check_diff`` before it writes), asking
the node whether the cycle is open, or reporting.

Each step is crash-safe, every file written with ``atomic_write`` (0600, in 0700 directories):

- ``add``: the diff first, then its ``.json``; the ``.json`` is the commit point, so a crash before
  it leaves an orphan diff that is not pending (``recover`` removes it);
- ``diff_file`` / ``commit``: the same two steps when the trainer writes the diff file itself
  (renamed into place, neither fsynced nor hashed: the trainer's result comes back without waiting
  for the disk) and the daemon commits it: the diff's bytes hashed and fsynced, then the ``.json``'s,
  then one directory fsync that makes both names durable. ``entry`` builds the record before the
  commit, so a report can go out while the commit runs (the marker after the report waits for it);
- ``mark_reported`` / ``discard``: the marker first (its name made durable by one directory fsync:
  only its existence counts), then the diff (renamed to ``SPARE_DIFF``, for the trainer to write the
  next diff over), the ``.json``, the marker (``tidy``, which may come later); an entry with a marker
  is never pending again, whichever step a crash interrupted;
- ``discard_aged`` discards what waited longer than the job's ``schedule.spool_max_age_s``;
- ``load_diff`` and ``verified_file`` (in 1 MiB reads) check size and sha256; a mismatch moves the
  entry to ``quarantine/`` with a ``spool.quarantined`` log line and raises, so a damaged diff is
  never sent.

Nothing foreign in the directory can stop the daemon: a directory, symlink, FIFO or socket under one
of the spool's names goes to ``quarantine/`` (logged), a file named ``quarantine`` is moved aside, and
files are opened with ``O_NOFOLLOW | O_NONBLOCK`` and read only when regular. The ``.json``'s fields and
formats are ``syftd.spoolentry``'s; a newer format is left in place, logged once, and not reported.

The methods do blocking file I/O with fsync; call them through ``asyncio.to_thread`` from the loop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from syftd import events
from syftd.errors import WireError
from syftd.log import get_logger
from syftd.spoolentry import NewerFormat, SpoolEntry
from syftd.statedir import ForeignEntry, atomic_write, ensure_dir, kind_of, read_regular

__all__ = ["SPARE_DIFF", "Spool", "file_sha256", "job_dir"]

_log = get_logger("syftd.spool")

_JOB = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_CYCLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_MARKERS = ("reported", "discarded")
_OWN_SUFFIXES = (".json", ".diff", ".reported", ".discarded", ".tmp")
_META_CAP = 1 << 20
SPARE_DIFF = ".spare.diff.tmp"
"""A settled entry's diff file, kept for the next diff of the job to be written over in place
(``statedir.rewrite_from``): its pages are in the page cache already (issue 15). ``recover``
removes it at startup, unlogged (a crash did not leave it)."""


def job_dir(state_dir: Path, job: str) -> Path:
    """``<state_dir>/jobs/<job>``, created with mode 0700 at every level below ``state_dir``.

    Raises:
        ValueError: ``job`` is not a valid job name (it would escape the state directory).
    """
    if not _JOB.match(job):
        raise ValueError(f"invalid job name {job!r}")
    return _mkdirs(state_dir, "jobs", job)


def _mkdirs(root: Path, *parts: str) -> Path:
    path = root
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for part in parts:
        path = ensure_dir(path, part)  # a symlink in the way is moved aside, never followed
    return path


class Spool:
    """Pending diffs per job under ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._newer_logged: set[Path] = set()

    def _dir(self, job: str) -> Path:
        return _mkdirs(job_dir(self.state_dir, job), "spool")

    def _paths(self, job: str, cycle_id: str) -> tuple[Path, Path]:
        if not _CYCLE.match(cycle_id):
            raise ValueError(f"invalid cycle id {cycle_id!r}: letters, digits, _ . - only, at most 128")
        spool = self._dir(job)
        return spool / f"{cycle_id}.json", spool / f"{cycle_id}.diff"

    def add(
        self,
        job: str,
        cycle_id: str,
        diff: bytes,
        *,
        worker_id: str,
        request_key: str,
        plan_id: int | str,
        model_id: int | str,
        created: float | None = None,
    ) -> SpoolEntry:
        """Spool ``diff`` (already checked with ``wire.check_diff``); returns once it is durable.

        Raises:
            ValueError: an invalid job name or cycle id.
            OSError: the disk refused the write (nothing is pending then).
        """
        meta, data = self._paths(job, cycle_id)
        for marker in _MARKERS:
            _unlink(meta.with_suffix(f".{marker}"))
        entry = SpoolEntry(
            job=job,
            cycle_id=cycle_id,
            worker_id=worker_id,
            request_key=request_key,
            plan_id=plan_id,
            model_id=model_id,
            created=time.time() if created is None else created,
            size=len(diff),
            sha256=hashlib.sha256(diff).hexdigest(),
        )
        atomic_write(data, diff)
        atomic_write(meta, json.dumps(entry.as_dict(), indent=1, sort_keys=True).encode() + b"\n")
        _log.info(events.SPOOL_ADDED, job=job, cycle_id=cycle_id, size=entry.size, sha256=entry.sha256[:16])
        return entry

    def diff_file(self, job: str, cycle_id: str) -> Path:
        """Where the trainer writes the cycle's diff itself (``commit`` makes it durable); stale markers cleared.

        Raises:
            ValueError: an invalid job name or cycle id.
        """
        meta, data = self._paths(job, cycle_id)
        for marker in _MARKERS:
            _unlink(meta.with_suffix(f".{marker}"))
        return data

    def entry(
        self,
        job: str,
        cycle_id: str,
        *,
        size: int,
        worker_id: str,
        request_key: str,
        plan_id: int | str,
        model_id: int | str,
        sha256: str = "",
    ) -> SpoolEntry:
        """The record of the diff the trainer wrote at ``diff_file``, not yet committed (no I/O).

        ``sha256``: empty for the commit to fill in from the file (the trainer does not hash, issue 15);
        given, the commit checks the file against it."""
        return SpoolEntry(
            job=job,
            cycle_id=cycle_id,
            worker_id=worker_id,
            request_key=request_key,
            plan_id=plan_id,
            model_id=model_id,
            created=time.time(),
            size=size,
            sha256=sha256,
        )

    def commit(self, job: str, cycle_id: str, **fields: Any) -> SpoolEntry:
        """``commit_entry`` of ``entry(job, cycle_id, **fields)``."""
        return self.commit_entry(self.entry(job, cycle_id, **fields))

    def commit_entry(self, entry: SpoolEntry) -> SpoolEntry:
        """Make the diff the trainer wrote at ``diff_file`` pending, durably: its bytes hashed (1 MiB
        reads) and fsynced, then its ``.json`` (the commit point), whose directory fsync also makes the
        diff's name durable. Returns the entry with the file's sha256.

        Raises:
            ValueError: an invalid job name or cycle id.
            OSError: the diff file is missing, not ``entry.size`` bytes or not of ``entry.sha256`` when
                that was given, or the disk refused the write.
        """
        meta, data = self._paths(entry.job, entry.cycle_id)
        fd = os.open(data, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            found = os.fstat(fd).st_size
            if found != entry.size:
                raise OSError(f"{data} has {found} bytes, the trainer wrote {entry.size}")
            digest, _size = _file_sha256(fd)
            if entry.sha256 and digest != entry.sha256:
                raise OSError(f"{data} has sha256 {digest[:16]}, the trainer wrote {entry.sha256[:16]}")
            os.fsync(fd)
        finally:
            os.close(fd)
        entry = dataclasses.replace(entry, sha256=digest)
        atomic_write(meta, json.dumps(entry.as_dict(), indent=1, sort_keys=True).encode() + b"\n")
        _log.info(events.SPOOL_ADDED, job=entry.job, cycle_id=entry.cycle_id, size=entry.size, sha256=entry.sha256[:16])
        return entry

    def verified_file(self, entry: SpoolEntry) -> Path:
        """The diff's file, verified against the recorded size and sha256 in 1 MiB reads (flat in memory).

        Raises:
            WireError: the diff is missing or damaged; the entry was quarantined and is no longer pending.
        """
        meta, data = self._paths(entry.job, entry.cycle_id)
        try:
            fd = os.open(data, os.O_RDONLY)
        except FileNotFoundError:
            problem = "diff file missing"
        else:
            try:
                digest, size = _file_sha256(fd)
            finally:
                os.close(fd)
            if size == entry.size and digest == entry.sha256:
                return data
            problem = (
                f"diff damaged: {size} bytes sha256 {digest[:16]}, "
                f"expected {entry.size} bytes sha256 {entry.sha256[:16]}"
            )
        self._quarantine(meta.parent, entry.cycle_id, entry.job, problem)
        raise WireError(f"spooled diff of job {entry.job} cycle {entry.cycle_id}: {problem}; quarantined")

    def pending(self, job: str) -> list[SpoolEntry]:
        """The diffs of ``job`` not yet reported or discarded, oldest first; finishes interrupted marks.

        A ``.json`` that cannot be parsed is quarantined (logged) and left out.
        """
        spool = self._dir(job)
        self._sweep(spool, job)
        entries = []
        for meta in sorted(spool.glob("*.json")):
            if meta.name.startswith("."):
                continue
            cycle_id = meta.name[: -len(".json")]
            marker = next((m for m in _MARKERS if meta.with_suffix(f".{m}").exists()), None)
            if marker is not None:
                self._finish(spool, cycle_id)
                continue
            try:
                entry = SpoolEntry.from_dict(json.loads(read_regular(meta, max_bytes=_META_CAP)))
                if (entry.job, entry.cycle_id) != (job, cycle_id):
                    raise ValueError(f"names job {entry.job!r} cycle {entry.cycle_id!r}")
            except FileNotFoundError:
                continue
            except NewerFormat as exc:
                if meta not in self._newer_logged:
                    self._newer_logged.add(meta)
                    _log.warning(events.SPOOL_FORMAT_UNKNOWN, job=job, cycle_id=cycle_id, problem=str(exc))
                continue
            except (ValueError, UnicodeDecodeError) as exc:
                self._quarantine(spool, cycle_id, job, f"unreadable metadata: {exc}")
                continue
            entries.append(entry)
        return sorted(entries, key=lambda e: (e.created, e.cycle_id))

    def load_diff(self, entry: SpoolEntry) -> bytes:
        """The diff's bytes, verified against the recorded size and sha256.

        Raises:
            WireError: the diff is missing or damaged; the entry was quarantined and is no longer pending.
        """
        meta, data = self._paths(entry.job, entry.cycle_id)
        try:
            diff = read_regular(data)
        except FileNotFoundError:
            problem = "diff file missing"
        except ForeignEntry as exc:
            problem = str(exc)
        else:
            digest = hashlib.sha256(diff).hexdigest()
            if len(diff) == entry.size and digest == entry.sha256:
                return diff
            problem = (
                f"diff damaged: {len(diff)} bytes sha256 {digest[:16]}, "
                f"expected {entry.size} bytes sha256 {entry.sha256[:16]}"
            )
        self._quarantine(meta.parent, entry.cycle_id, entry.job, problem)
        raise WireError(f"spooled diff of job {entry.job} cycle {entry.cycle_id}: {problem}; quarantined")

    def mark_reported(self, entry: SpoolEntry, *, tidy: bool = True) -> None:
        """The node accepted the diff: it is never pending again (durably, when this returns).

        ``tidy=False`` leaves the entry's files for ``tidy`` (or the next ``pending``) to remove, so the
        removals need not be on the path to the next cycle.
        """
        self._mark(entry, "reported", None)
        if tidy:
            self.tidy(entry)
        _log.info(events.SPOOL_REPORTED, job=entry.job, cycle_id=entry.cycle_id)

    def tidy(self, entry: SpoolEntry) -> None:
        """Remove a marked entry's files (diff, ``.json``, marker); nothing to do when they are gone."""
        meta, _data = self._paths(entry.job, entry.cycle_id)
        self._finish(meta.parent, entry.cycle_id, durable=False)

    def discard(self, entry: SpoolEntry, reason: str) -> None:
        """Drop the diff unsent (the node closed its cycle): it is never pending again."""
        self._mark(entry, "discarded", reason)
        self.tidy(entry)
        _log.warning(events.SPOOL_DISCARDED, job=entry.job, cycle_id=entry.cycle_id, reason=reason)

    def discard_aged(self, job: str, max_age_s: float, now: float | None = None) -> list[SpoolEntry]:
        """Discard the pending diffs of ``job`` spooled more than ``max_age_s`` ago (logged): a node that
        never settles one must not hold the job's new cycles for ever. Returns them."""
        now = time.time() if now is None else now
        aged = [entry for entry in self.pending(job) if now - entry.created > max_age_s]
        for entry in aged:
            age_h = (now - entry.created) / 3600
            self.discard(entry, f"spooled {age_h:.1f} h ago, past schedule.spool_max_age_s ({max_age_s:g} s)")
        return aged

    def recover(self, job: str) -> list[str]:
        """At startup: remove temp files, orphan diffs and lone markers a crash left; finish interrupted marks.

        Returns the names removed. Not to be run while an ``add`` of the same job is in progress.
        """
        spool = self._dir(job)
        removed = []
        for path in sorted(spool.iterdir()):
            name = path.name
            if name == SPARE_DIFF:  # left by design, not by a crash: removed without a word
                if path.is_file():
                    _unlink(path)
                continue
            leftover = name.endswith((".diff", ".reported", ".discarded"))
            orphan = leftover and not path.with_suffix(".json").exists()
            if path.is_file() and ((name.startswith(".") and name.endswith(".tmp")) or orphan):
                _unlink(path)
                removed.append(name)
        self.pending(job)
        if removed:
            _log.warning(events.SPOOL_RECOVERED, job=job, removed=removed)
        return removed

    def _mark(self, entry: SpoolEntry, marker: str, reason: str | None) -> None:
        meta, _data = self._paths(entry.job, entry.cycle_id)
        record = {"marker": marker, "reason": reason, "at": time.time(), "sha256": entry.sha256}
        # the marker's existence is the guarantee, not its content: one fsync, of the directory, makes
        # the new name durable (issue 15); the removals after it need none, ``pending`` redoes them
        path = meta.with_suffix(f".{marker}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(record).encode() + b"\n")
        finally:
            os.close(fd)
        _fsync_dir(meta.parent)

    def _finish(self, spool: Path, cycle_id: str, *, durable: bool = True) -> None:
        try:
            os.replace(spool / f"{cycle_id}.diff", spool / SPARE_DIFF)  # its pages serve the next diff
        except OSError:
            _unlink(spool / f"{cycle_id}.diff")
        for suffix in (".json", *(f".{m}" for m in _MARKERS)):
            _unlink(spool / f"{cycle_id}{suffix}")
        if durable:
            _fsync_dir(spool)

    def _sweep(self, spool: Path, job: str) -> None:
        """Quarantine whatever is not a regular file under one of the spool's own names; move a
        ``quarantine`` that is not a directory aside. Other names are not the spool's and stay."""
        with os.scandir(spool) as listing:
            found = [(e.name, e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False)) for e in listing]
        for name, is_dir, is_file in found:
            if name == "quarantine":
                if not is_dir:
                    ensure_dir(spool, name)
            elif name.endswith(_OWN_SUFFIXES) and not is_file:
                path = spool / name
                problem = f"{name} is {kind_of(os.lstat(path).st_mode)}, not a regular file"
                self._quarantine(spool, name.rsplit(".", 1)[0], job, problem, names=(name,))

    def _quarantine(
        self, spool: Path, cycle_id: str, job: str, problem: str, names: tuple[str, ...] | None = None
    ) -> None:
        target = _mkdirs(spool, "quarantine")
        moved = []
        for name in names or (f"{cycle_id}.diff", f"{cycle_id}.json"):
            source = spool / name
            if os.path.lexists(source):
                destination = target / name
                if os.path.lexists(destination):
                    destination = target / f"{name}.{time.time_ns()}"
                os.rename(source, destination)
                moved.append(name)
        _fsync_dir(spool)
        _log.error(
            events.SPOOL_QUARANTINED, job=job, cycle_id=cycle_id, problem=problem, moved=moved, directory=str(target)
        )


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB pieces (flat in memory whatever its size).

    Raises:
        OSError: the file cannot be opened or read.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        return _file_sha256(fd)[0]
    finally:
        os.close(fd)


def _file_sha256(fd: int) -> tuple[str, int]:
    """The sha256 of what is left to read from ``fd`` (1 MiB at a time), and how many bytes that was."""
    digest, piece, size = hashlib.sha256(), bytearray(1 << 20), 0
    view = memoryview(piece)
    while count := os.readv(fd, [piece]):
        digest.update(view[:count])
        size += count
    return digest.hexdigest(), size


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
