"""Trainer output captured by the daemon: JSON lines re-emitted, tracebacks and warnings as events."""

from __future__ import annotations

import asyncio
import sys

from support.waiting import Changes

from syftd import events
from syftd.relay import Emitted, OutputParser, relay

TRACEBACK = """Traceback (most recent call last):
  File "/x/worker.py", line 3, in <module>
    main()
  File "/x/worker.py", line 2, in main
    raise RuntimeError("plan is broken")
RuntimeError: plan is broken""".splitlines()


def test_json_lines_keep_their_event_and_fields_without_level_and_time() -> None:
    """A trainer's own log line comes back as the same event at the same level."""
    parser = OutputParser()
    line = '{"event": "trainer.completed", "level": "info", "timestamp": "t", "steps": 3, "cycle_id": "c1"}'
    assert parser.feed(line) == [Emitted("trainer.completed", "info", {"steps": 3, "cycle_id": "c1"})]


def test_a_traceback_becomes_one_error_event_with_the_exception() -> None:
    """All lines of a traceback, chained ones included, make one trainer.traceback event."""
    parser = OutputParser()
    chained = [*TRACEBACK, "", "During handling of the above exception, another exception occurred:", "", *TRACEBACK]
    out = [e for line in chained for e in parser.feed(line)] + parser.flush()
    assert len(out) == 1 and out[0].fields["exception"].count("Traceback") == 2
    out = []
    parser = OutputParser()
    for line in [*TRACEBACK, '{"event": "trainer.stopped"}']:
        out += parser.feed(line)
    assert (
        len(out) == 2
        and out[1].event == "trainer.stopped"
        and out[0].event == events.TRAINER_TRACEBACK
        and out[0].level == "error"
    )
    assert out[0].fields["error_type"] == "RuntimeError" and out[0].fields["error"] == "plan is broken"
    assert out[0].fields["exception"] == "\n".join(TRACEBACK)


def test_a_library_warning_and_its_source_line_are_one_warning_event() -> None:
    """warnings.warn's two lines (message, indented source) become one trainer.output at warning."""
    parser = OutputParser()
    out = parser.feed("/x/torch/nn.py:12: UserWarning: deprecated thing")
    out += parser.feed("  warnings.warn(")
    out += parser.feed('{"event": "trainer.started", "level": "info"}')
    assert out[0] == Emitted(
        events.TRAINER_OUTPUT, "warning", {"text": "/x/torch/nn.py:12: UserWarning: deprecated thing\n  warnings.warn("}
    )
    assert out[1].event == "trainer.started"
    assert parser.feed("plain text") == [] and parser.flush() == [
        Emitted(events.TRAINER_OUTPUT, "info", {"text": "plain text"})
    ]


async def test_relay_reads_a_real_child_that_logs_warns_and_crashes() -> None:
    """A real process's stderr: its JSON line, a warning and its traceback arrive as events with job and cycle."""
    code = (
        "import json, sys, warnings\n"
        "print(json.dumps({'event': 'trainer.started', 'level': 'info'}), file=sys.stderr, flush=True)\n"
        "warnings.warn('old API')\n"
        "raise RuntimeError('plan is broken')\n"
    )
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stderr=asyncio.subprocess.PIPE)
    assert child.stderr is not None
    got: list[Emitted] = []
    await asyncio.wait_for(relay(child.stderr, got.append, lambda: {"job": "mnist", "cycle": "c7"}), 30)
    await child.wait()
    assert [e.event for e in got] == ["trainer.started", events.TRAINER_OUTPUT, events.TRAINER_TRACEBACK]
    assert all(e.fields["job"] == "mnist" and e.fields["cycle"] == "c7" for e in got)
    assert got[1].level == "warning" and "UserWarning: old API" in got[1].fields["text"]
    assert got[2].fields["error"] == "plan is broken" and 'File "<string>", line 4' in got[2].fields["exception"]


async def test_a_pending_warning_is_flushed_after_a_pause_not_at_the_next_line() -> None:
    """A lone warning line is emitted within about 0.3 s even while the trainer keeps the stream open."""
    reader = asyncio.StreamReader()
    got: list[Emitted] = []
    emitted = Changes()

    def emit(event: Emitted) -> None:
        got.append(event)
        emitted.notify()

    task = asyncio.create_task(relay(reader, emit))
    reader.feed_data(b"/x.py:1: UserWarning: hm\n")
    await emitted.until(lambda: got, what="the lone warning line emitted while the stream stays open", timeout=5)
    assert got[0].fields["text"] == "/x.py:1: UserWarning: hm"
    reader.feed_eof()
    await asyncio.wait_for(task, 5)


def test_log_to_logs_each_event_at_its_level() -> None:
    """The daemon-side emit: event name, level and fields reach structlog unchanged."""
    import structlog

    from syftd.relay import log_to

    with structlog.testing.capture_logs() as captured:
        emit = log_to(structlog.get_logger())
        emit(Emitted(events.TRAINER_TRACEBACK, "error", {"job": "a", "error": "x"}))
        emit(Emitted("trainer.completed", "bogus", {}))
    assert captured[0] == {"event": "trainer.traceback", "log_level": "error", "job": "a", "error": "x"}
    assert captured[1]["log_level"] == "info"
