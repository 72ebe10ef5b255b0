"""The one report path for a finished diff, fresh or spooled: probe → report → mark.

Owns ``report_entry`` (ask whether the entry's cycle is still open with a
``get-plan`` probe, send the diff, then mark the spool entry reported or discarded) and
``ReportRun``: one job's report of a list of spool entries, with one ``abort`` that a lost network and
a stopping daemon both use. An aborted or failed report leaves the diff spooled; it is reported
later. Blocking spool I/O runs off the event loop. Does not own when a report runs (the manager's
``policy`` decision, or the cycle right after spooling) nor what a node's answer means (``grid``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TypeVar

from syftd import events
from syftd.errors import GridCycleGone, GridError, WireError
from syftd.grid.wire import non_finite, parse_state
from syftd.jobs.bookkeeping import tidy_entry
from syftd.jobs.ports import GridSession
from syftd.log import get_logger
from syftd.outcomes import ReportOutcome
from syftd.spool import Spool
from syftd.spoolentry import SpoolEntry

__all__ = ["ReportOutcome", "ReportRun", "race", "report_entry", "report_unspooled"]

_log = get_logger("syftd.jobs.report")
T = TypeVar("T")


async def report_entry(
    client: GridSession,
    spool: Spool,
    entry: SpoolEntry,
    *,
    own: Path | None = None,
    probe: bool = True,
    committed: Awaitable[SpoolEntry | None] | None = None,
    tidy_later: Callable[[SpoolEntry], None] | None = None,
) -> ReportOutcome:
    """Probe whether the entry's cycle is still open (get-plan), then report from the file; marks the entry.

    ``own``: the diff's file, given by the cycle whose trainer just wrote it: not re-hashed (its commit
    hashes it, beside the report), so ``entry.sha256`` may still be empty. ``probe=False``: no probe,
    for a cycle requested moments ago (it cannot have closed yet; the node would say "gone" to the
    report anyway). ``committed``: the entry's commit, still
    running while the diff goes out (the node needs the bytes, not their durability); the entry is
    marked or discarded only once it is committed (as the commit gives it back, hashed), and not at
    all when the commit failed (None).
    ``tidy_later``: takes the removal of a reported entry's files off the path (``Bookkeeping.tidy``);
    without it they are removed before this returns. Returns REPORTED or DISCARDED.

    Raises:
        GridError: the node could not tell (retry later); the entry stays pending.
    """
    if probe:
        try:
            await client.get_plan(entry.worker_id, entry.request_key, int(entry.plan_id))
        except GridCycleGone as exc:
            if (on_disk := await _on_disk(entry, committed)) is not None:
                await asyncio.to_thread(spool.discard, on_disk, f"cycle closed on the node: {exc}")
            return ReportOutcome.DISCARDED
    if own is not None:
        path = own
    else:
        try:
            path = await asyncio.to_thread(spool.verified_file, entry)
        except WireError:
            return ReportOutcome.DISCARDED  # damaged on disk: the spool quarantined it and said so
    # a diff of the first spool format was spooled by a version without the non-finite check; every
    # later one was checked before it was committed, so only those are read back whole here
    if entry.format == 1 and (bad := await asyncio.to_thread(_non_finite_file, path)) is not None:
        await asyncio.to_thread(spool.discard, entry, bad)
        return ReportOutcome.DISCARDED
    try:
        await client.report_file(entry.worker_id, entry.request_key, path, size=entry.size)
    except GridCycleGone as exc:
        if (on_disk := await _on_disk(entry, committed)) is not None:
            await asyncio.to_thread(spool.discard, on_disk, f"cycle closed on the node: {exc}")
        return ReportOutcome.DISCARDED
    if (on_disk := await _on_disk(entry, committed)) is None:
        return ReportOutcome.REPORTED  # nothing on disk to mark: the commit failed, and said so
    # marked durably right after the node's success: a resend before this only overwrites the same row;
    # removing the entry's files guards nothing, so it waits for a quiet moment (``tidy_later``, issue 15)
    await asyncio.to_thread(spool.mark_reported, on_disk, tidy=False)
    if tidy_later is not None:
        tidy_later(on_disk)
    else:
        await asyncio.to_thread(tidy_entry, spool, on_disk)
    return ReportOutcome.REPORTED


async def _on_disk(entry: SpoolEntry, committed: Awaitable[SpoolEntry | None] | None) -> SpoolEntry | None:
    """The entry as committed (its sha256 filled in), to be marked; None when the commit failed. A commit
    in flight is waited for, never cancelled; without one the entry is on disk already."""
    return entry if committed is None else await asyncio.shield(committed)


async def report_unspooled(
    client: GridSession, diff: bytes, worker_id: str, request_key: str, abort: asyncio.Event
) -> tuple[ReportOutcome, str | None]:
    """Report a diff the disk refused to spool, from memory: REPORTED, DISCARDED (the cycle is gone),
    ABORTED or PENDING (failed), with what went wrong. Nothing is kept: a diff not REPORTED is lost."""
    try:
        await race(client.report(worker_id, request_key, diff), abort.wait())
    except Aborted:
        return ReportOutcome.ABORTED, "the report was aborted (network lost, sleep or stop)"
    except GridCycleGone as exc:
        return ReportOutcome.DISCARDED, str(exc)
    except GridError as exc:
        return ReportOutcome.PENDING, f"{type(exc).__name__}: {exc}"
    return ReportOutcome.REPORTED, None


def _non_finite_file(path: Path) -> str | None:
    """Why a spooled diff file must not be reported (NaN or infinite values), or None."""
    try:
        tensors = parse_state(path.read_bytes())
    except WireError:
        return None  # its bytes were checked before spooling; the node judges the rest
    bad = sum(non_finite(tensor) for tensor in tensors)
    return f"{bad} NaN or infinite values: never reported" if bad else None


class ReportRun:
    """Reports spool entries one after another, until one does not settle or ``abort`` is called."""

    def __init__(
        self,
        job: str,
        spool: Spool,
        client: Callable[[], AbstractAsyncContextManager[GridSession]],
        abort: asyncio.Event,
        tidy_later: Callable[[SpoolEntry], None] | None = None,
    ) -> None:
        self.job = job
        self._spool = spool
        self._client = client
        self._abort = abort
        self._tidy_later = tidy_later

    def abort(self) -> None:
        """Stop the report in flight; the diff stays spooled. Idempotent."""
        self._abort.set()

    async def report(
        self,
        entry: SpoolEntry,
        *,
        own: Path | None = None,
        probe: bool = True,
        committed: Awaitable[SpoolEntry | None] | None = None,
    ) -> ReportOutcome:
        """Report one entry: REPORTED, DISCARDED, PENDING (failed, kept) or ABORTED (kept).

        ``own``, ``probe``, ``committed``: see ``report_entry``; only the cycle that wrote the diff passes them.
        """
        if self._abort.is_set():
            return ReportOutcome.ABORTED
        try:
            async with self._client() as client:
                return await race(
                    report_entry(
                        client,
                        self._spool,
                        entry,
                        own=own,
                        probe=probe,
                        committed=committed,
                        tidy_later=self._tidy_later,
                    ),
                    self._abort.wait(),
                )
        except Aborted:
            _log.info(events.SPOOL_REPORT_ABORTED, job=self.job, cycle=entry.cycle_id)
            return ReportOutcome.ABORTED
        except GridError as exc:
            _log.warning(
                events.SPOOL_REPORT_FAILED,
                job=self.job,
                cycle=entry.cycle_id,
                error_type=type(exc).__name__,
                error=str(exc),
            )
            return ReportOutcome.PENDING

    async def report_all(self, entries: list[SpoolEntry]) -> list[tuple[SpoolEntry, ReportOutcome]]:
        """Report ``entries`` in order, stopping at the first one that does not settle."""
        done = []
        for entry in entries:
            outcome = await self.report(entry)
            done.append((entry, outcome))
            if not outcome.is_settled:
                break
        return done


class Aborted(Exception):
    """The stopper fired before the step finished; the step was cancelled."""


async def race(step: Awaitable[T], stopper: Awaitable[object]) -> T:
    """Await ``step`` unless ``stopper`` completes first (then cancel ``step`` and raise ``Aborted``)."""
    task = asyncio.ensure_future(step)
    waiter = asyncio.ensure_future(stopper)
    try:
        done, _pending = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        waiter.cancel()
        raise
    if task in done:
        waiter.cancel()
        return task.result()
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the step is abandoned on purpose
        pass
    raise Aborted
