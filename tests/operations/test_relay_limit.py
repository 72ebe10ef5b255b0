"""Relayed trainer output is bounded per cycle: a burst, then a steady rate; what is over it is counted
exactly and said once (``trainer.output_dropped``); tracebacks pass up to a high cap; the trainer's own
log lines are never limited."""

from __future__ import annotations

import asyncio
import sys
import time

from syftd import events
from syftd.relay import Emitted, OutputLimit, OutputLimiter, relay

LIMIT = OutputLimit(burst_lines=200, lines_per_s=20.0, max_tracebacks=3, summary_every_s=60.0)


def text(line: str) -> Emitted:
    return Emitted(events.TRAINER_OUTPUT, "info", {"text": line})


def traceback() -> Emitted:
    return Emitted(events.TRAINER_TRACEBACK, "error", {"exception": "Traceback …\nRuntimeError: x"})


def admitted(limiter: OutputLimiter, items: list[Emitted], now: float) -> list[Emitted]:
    return [out for item in items for out in limiter.admit(item, now)]


def test_a_burst_then_the_rate_and_one_exact_summary_once_back_under_the_limit() -> None:
    """300 lines at once: 200 pass and 100 are counted; 5 s later 100 more lines pass with no summary
    yet (still dropping at the limit would have been possible); once the bucket is full again the
    summary comes first, with the exact count, before the line that found it full."""
    limiter = OutputLimiter(LIMIT)
    limiter.start_cycle("c1", 0.0)
    out = admitted(limiter, [text(f"l{i}") for i in range(300)], 0.0)
    assert [e.fields["text"] for e in out] == [f"l{i}" for i in range(200)]
    assert limiter.until_quiet(0.0) == 10.0
    assert admitted(limiter, [text("at 5 s")], 5.0) == [text("at 5 s")]
    assert limiter.quiet(5.1) == []
    (summary, line) = admitted(limiter, [text("at 20 s")], 20.0)
    assert summary.event == events.TRAINER_OUTPUT_DROPPED and summary.level == "warning"
    assert summary.fields == {
        "cycle": "c1",
        "dropped_lines": 100,
        "dropped_events": 100,
        "burst_lines": 200,
        "lines_per_s": 20.0,
    }
    assert line == text("at 20 s") and limiter.end() == [] and limiter.until_quiet(20.0) is None


def test_a_pause_gives_the_summary_without_a_next_line() -> None:
    """Dropping then silence: ``quiet`` gives the summary once the bucket is full, not before."""
    limiter = OutputLimiter(LIMIT)
    limiter.start_cycle("c1", 0.0)
    admitted(limiter, [text("x")] * 250, 0.0)
    wait = limiter.until_quiet(1.0)
    assert wait is not None and abs(wait - 9.0) < 1e-9
    assert limiter.quiet(9.9) == []
    (summary,) = limiter.quiet(10.0)
    assert summary.fields["dropped_lines"] == 50


def test_lines_of_a_multi_line_event_count_each() -> None:
    """A warning with its source line is two lines of the allowance, and two dropped lines when over."""
    limiter = OutputLimiter(OutputLimit(burst_lines=3, lines_per_s=1.0))
    limiter.start_cycle(None, 0.0)
    two = text("x.py:1: UserWarning: w\n  warnings.warn(")
    assert len(admitted(limiter, [two, two, two], 0.0)) == 2
    (summary,) = limiter.end()
    assert (summary.fields["dropped_lines"], summary.fields["dropped_events"]) == (2, 1)


def test_a_new_cycle_sums_up_the_old_one_and_starts_full() -> None:
    """The next cycle's first line brings the previous cycle's summary, naming that cycle."""
    limiter = OutputLimiter(LIMIT)
    limiter.start_cycle("c1", 0.0)
    admitted(limiter, [text("x")] * 210, 0.0)
    (summary,) = limiter.start_cycle("c2", 1.0)
    assert summary.fields["cycle"] == "c1" and summary.fields["dropped_lines"] == 10
    assert len(admitted(limiter, [text("y")] * 200, 1.0)) == 200


def test_tracebacks_pass_up_to_their_cap_and_own_events_always() -> None:
    """Tracebacks do not draw on the line allowance and pass up to max_tracebacks a cycle; the trainer's
    own events (syftd.events names) are never limited; an unknown JSON event counts as output."""
    limiter = OutputLimiter(OutputLimit(burst_lines=1, lines_per_s=0.001, max_tracebacks=3))
    limiter.start_cycle("c1", 0.0)
    assert admitted(limiter, [text("a"), text("b")], 0.0) == [text("a")]
    assert len(admitted(limiter, [traceback()] * 5, 0.0)) == 3
    own = Emitted(events.TRAINER_COMPLETED, "info", {"steps": 1})
    assert admitted(limiter, [own] * 1000, 0.0) == [own] * 1000
    assert admitted(limiter, [Emitted("user.thing", "info", {})], 0.0) == []
    (summary,) = limiter.end()
    assert (summary.fields["dropped_lines"], summary.fields["dropped_tracebacks"]) == (2, 2)


async def test_a_real_child_printing_100k_lines_is_bounded_and_counted_exactly() -> None:
    """A real process prints 100,000 lines as fast as it can, then a traceback, and exits: with the
    default limit the logged lines stay within burst + rate × elapsed, every other line is in the
    summary's count (logged + dropped = 100,000 exactly), and the traceback is logged."""
    code = (
        "import sys\n"
        "out = sys.stdout\n"
        "for i in range(100_000):\n"
        "    out.write(f'line {i}\\n')\n"
        "out.flush()\n"
        "raise RuntimeError('after the flood')\n"
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert child.stdout is not None
    got: list[Emitted] = []
    started = time.monotonic()
    await asyncio.wait_for(relay(child.stdout, got.append, lambda: {"job": "mnist", "cycle": "c1"}), 120)
    elapsed = time.monotonic() - started
    await child.wait()
    default = OutputLimit()
    lines = [e for e in got if e.event == events.TRAINER_OUTPUT]
    summaries = [e for e in got if e.event == events.TRAINER_OUTPUT_DROPPED]
    tracebacks = [e for e in got if e.event == events.TRAINER_TRACEBACK]
    assert len(lines) <= default.burst_lines + default.lines_per_s * elapsed + 1, (len(lines), elapsed)
    assert len(summaries) == 1 and summaries[0].fields["job"] == "mnist" and summaries[0].fields["cycle"] == "c1"
    assert len(lines) + summaries[0].fields["dropped_lines"] == 100_000
    assert [e.fields["text"] for e in lines[: default.burst_lines]] == [f"line {i}" for i in range(200)]
    assert len(tracebacks) == 1 and tracebacks[0].fields["error"] == "after the flood"
    print(f"\n100k lines in {elapsed:.2f} s: {len(lines)} logged, {summaries[0].fields['dropped_lines']} dropped")


async def test_the_summary_comes_while_the_stream_stays_open_once_output_is_back_under() -> None:
    """A real child floods, then waits on its stdin: the summary arrives while it still runs (the
    relay does not wait for more output or the end), and the line printed afterwards passes."""
    code = (
        "import sys\n"
        "for i in range(80):\n"
        "    print(f'flood {i}')\n"
        "sys.stdout.flush()\n"
        "sys.stdin.readline()\n"
        "print('after', flush=True)\n"
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert child.stdout is not None and child.stdin is not None
    summarised = asyncio.Event()
    got: list[Emitted] = []

    def emit(item: Emitted) -> None:
        got.append(item)
        if item.event == events.TRAINER_OUTPUT_DROPPED:
            summarised.set()

    limit = OutputLimit(burst_lines=50, lines_per_s=100.0)  # full again 0.5 s after the flood
    task = asyncio.create_task(relay(child.stdout, emit, lambda: {"cycle": "c1"}, limit))
    try:
        await asyncio.wait_for(summarised.wait(), 30)
        assert child.returncode is None
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        await asyncio.wait_for(task, 30)
    finally:
        task.cancel()
        if child.returncode is None:
            child.kill()
        await child.wait()
    names = [e.event for e in got]
    assert names.count(events.TRAINER_OUTPUT_DROPPED) == 1
    flood = [e for e in got if e.event == events.TRAINER_OUTPUT and e.fields["text"].startswith("flood")]
    assert got[-1].fields["text"] == "after" and got[-2].event == events.TRAINER_OUTPUT_DROPPED
    assert len(flood) + got[-2].fields["dropped_lines"] == 80 and len(flood) < 80
