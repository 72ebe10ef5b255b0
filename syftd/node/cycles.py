"""When and how the local node completes a cycle: PyGrid dev's background evaluation (docs/protocol.md §7).

Owns the evaluation a report triggers: it runs ``delay_s`` after the report was answered, one at a time
node-wide (a trigger that arrives while one runs is dropped, so that cycle stays open until the next
report into it), checks each new diff against the model, and once the cycle is ready averages its
diffs into the next checkpoint and opens the next cycle. Also the forced close of the test controls,
and waiting for evaluations (``settled``) or bounding them at stop. Does not own the rules over the
tables (``state``), the bytes (``store``) or the arithmetic (``averaging``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from syftd import events
from syftd.errors import WireError
from syftd.log import get_logger
from syftd.node.averaging import apply_mean_diff, diff_problem
from syftd.node.records import Assignment, Cycle
from syftd.node.state import NodeState
from syftd.node.store import Store

__all__ = ["CycleEvaluator"]

_log = get_logger("syftd.node")


class CycleEvaluator:
    """Evaluates cycles of ``state`` whose bytes are in ``store``; ``on_change`` is called after each one."""

    def __init__(
        self,
        state: NodeState,
        store: Store,
        *,
        clock: Callable[[], datetime],
        delay_s: float,
        on_change: Callable[[], None],
    ) -> None:
        self.state = state
        self.store = store
        self.delay_s = delay_s
        """Seconds from a report's answer to its cycle's evaluation."""
        self._clock = clock
        self._on_change = on_change
        self._lock = asyncio.Lock()
        self._current: asyncio.Future[None] | None = None
        self._background: set[asyncio.Future[None]] = set()

    def trigger(self, cycle: Cycle) -> None:
        """A report into ``cycle`` was answered: evaluate it after the delay, unless one runs node-wide."""
        process = cycle.process
        if cycle.completed:
            # PyGrid stores the late diff on its row and answers success; the closed cycle never reads it
            _log.info(events.GRID_NODE_LATE_REPORT_IGNORED, model=process.name, cycle=cycle.number)
        elif self._current is not None and not self._current.done():
            _log.info(events.GRID_NODE_AVERAGING_SKIPPED, model=process.name, cycle=cycle.number)
        else:
            self._current = task = asyncio.ensure_future(self._evaluate_later(cycle))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def close_now(self, cycle: Cycle) -> None:
        """Complete ``cycle`` now with what was reported (the test control), after a running evaluation."""
        await self._complete(cycle, force=True)

    async def settled(self) -> None:
        """Return once every evaluation triggered so far has finished."""
        while self._background:
            await asyncio.wait(set(self._background))

    async def stop(self, timeout: float) -> None:
        """Wait up to ``timeout`` for running evaluations; cancel what is left."""
        if self._background:
            _done, pending = await asyncio.wait(set(self._background), timeout=timeout)
            for task in pending:
                task.cancel()

    async def _evaluate_later(self, cycle: Cycle) -> None:
        try:
            if self.delay_s > 0:
                await asyncio.sleep(self.delay_s)  # the real node's background-thread lag
            await self._complete(cycle, force=False)
        finally:
            self._on_change()

    async def _complete(self, cycle: Cycle, *, force: bool) -> None:
        async with self._lock:
            if cycle.completed:
                return
            process = cycle.process
            latest = self.store.checkpoint_path(process.name, process.version, process.checkpoint_number)
            pending = [(a, a.report) for a in cycle.reported() if a.valid is None]
            problems = await asyncio.to_thread(self._problems, latest, [self._diff_path(a) for a, _ in pending])
            for (assignment, report), problem in zip(pending, problems, strict=True):
                if assignment.report == report:
                    assignment.valid = problem is None
                if problem is not None:
                    _log.warning(events.GRID_NODE_DIFF_REJECTED, model=process.name, cycle=cycle.number, why=problem)
            if not force and not self.state.ready(cycle, self._clock()):
                return
            paths = [self._diff_path(a) for a in cycle.reported()]
            try:
                if paths:
                    following = self.store.checkpoint_path(process.name, process.version, process.checkpoint_number + 1)
                    await asyncio.to_thread(self._average, latest, paths, following)
            except WireError as exc:
                _log.warning(events.GRID_NODE_AVERAGING_FAILED, model=process.name, cycle=cycle.number, why=str(exc))
                return
            self.state.finish(cycle, bool(paths), self._clock())
            _log.info(
                events.GRID_NODE_CYCLE_COMPLETED,
                model=process.name,
                cycle=cycle.number,
                diffs=len(paths),
                checkpoint=process.checkpoint_number,
            )

    def _diff_path(self, assignment: Assignment) -> Path:
        process, report = assignment.cycle.process, assignment.report
        assert report is not None, "a reported assignment has its report number"
        return self.store.diff_path(process.name, process.version, assignment.cycle.number, report)

    def _problems(self, model_path: Path, diff_paths: list[Path]) -> list[str | None]:
        model = self.store.read(model_path)
        return [diff_problem(self.store.read(p, cache=False), model) for p in diff_paths]

    def _average(self, model_path: Path, diff_paths: list[Path], target: Path) -> None:
        model = self.store.read(model_path)
        diffs = [self.store.read(p, cache=False) for p in diff_paths]
        self.store.write(target, apply_mean_diff(model, diffs))
        self.store.forget(model_path)  # downloads want the latest; an older one is read from its file
