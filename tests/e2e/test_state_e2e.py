"""End to end with a damaged state directory: a diff spooled by the previous spool format (no ``format``
field) is reported by this daemon, exactly once, and never quarantined (the spool is made real: a cycle
runs until its report is held by the node, the daemon is killed -9, and the entry's ``.json`` is
rewritten byte for byte as the previous format's writer wrote it); ``history.json`` and ``worker.json``
that are directories neither wedge the job nor fail its cycles."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from support.harness import Harness, eventually

from syftd import control

pytestmark = [pytest.mark.torch, pytest.mark.dbus, pytest.mark.slow, pytest.mark.timeout(240)]

FIELDS_OF_FORMAT_1 = ("job", "cycle_id", "worker_id", "request_key", "plan_id", "model_id", "created", "size", "sha256")


def format_1_bytes(entry: dict[str, object]) -> bytes:
    """The previous writer, copied: ``json.dumps(entry.as_dict(), indent=1, sort_keys=True).encode() + b"\\n"``
    over the fields it had."""
    return json.dumps({k: entry[k] for k in FIELDS_OF_FORMAT_1}, indent=1, sort_keys=True).encode() + b"\n"


async def test_a_diff_spooled_by_the_previous_format_is_reported_once(harness: Harness) -> None:
    """kill -9 with the report held, the ``.json`` rewritten in the previous format, restart: spool.reported,
    one report on the node, nothing in quarantine/."""
    await harness.kill_9_with_the_report_held()
    spool = Path(harness.base / "state" / "jobs" / "mnist" / "spool")
    [meta] = list(spool.glob("*.json"))
    entry = json.loads(meta.read_bytes())
    assert entry.pop("format") == 2
    meta.write_bytes(format_1_bytes(entry))
    assert b"format" not in meta.read_bytes()

    daemon = await harness.start()
    await daemon.wait_log("spool.reported", timeout=60, cycle_id=entry["cycle_id"])
    reports = harness.node.reports_for(harness.name)
    assert len({r.request_key for r in reports}) == 1
    assert not daemon.events("spool.quarantined")
    assert not (spool / "quarantine").exists()


async def test_history_and_worker_json_as_directories_do_not_stop_cycles(harness: Harness) -> None:
    """Both files replaced by directories before start: the cycle completes, both are moved aside with a
    log line, and the new history and worker id are written."""
    harness.host(max_updates=3)
    harness.write_config()
    job = Path(harness.base / "state" / "jobs" / "mnist")
    (job / "history.json").mkdir(parents=True)
    (job / "worker.json").mkdir()
    daemon = await harness.start()
    finished = await daemon.wait_log("cycle.finished", timeout=90)
    assert finished["outcome"] == "done", finished
    assert daemon.events("history.corrupted") and daemon.events("identity.unreadable")
    # the history is written off the loop after the cycle.finished line
    await eventually(lambda: (job / "history.json").is_file() and (job / "worker.json").is_file())
    assert len(list(job.glob("*.foreign-*"))) == 2


async def test_a_state_directory_that_turns_read_only_mid_run_leaves_the_daemon_alive_and_honest(
    harness: Harness,
) -> None:
    """After a first cycle, the state directory becomes a read-only mount: the next cycle ends failed with
    reason storage naming the write, status/why/STATUS= say so, the daemon stays up; once writable again
    the next cycle is done."""
    from test_daemon_hardening import read_only

    harness.host(max_updates=3)
    harness.write_config()
    daemon = await harness.start()
    first = await daemon.wait_log("cycle.finished", timeout=90)
    assert first["outcome"] == "done", first
    # the node opens its next cycle once it has averaged the first (a request before that is "finished")
    await harness.node.wait_until(lambda: harness.node.node.checkpoint_number(harness.name) == 2)
    state = harness.base / "state"
    with read_only(state):
        mark = len(daemon.logs)
        daemon.signal(signal.SIGUSR1)
        failed = await daemon.wait_log("cycle.finished", timeout=90, after=mark)
        assert (failed["outcome"], failed["reason"]) == ("failed", "storage"), failed
        assert "Read-only file system" in failed["error"]
        assert daemon.proc.returncode is None
        status = await control.call(harness.base / "run", "status", {})
        why = await control.call(harness.base / "run", "why", {"job": "mnist"})
        text = json.dumps([status, why])
        assert "storage" in text or "Read-only" in text, text
        assert harness.notify is not None
        assert any(
            "Read-only" in m.fields.get("STATUS", "") or "storage" in m.fields.get("STATUS", "")
            for m in harness.notify.messages
        ), [m.fields.get("STATUS") for m in harness.notify.messages[-5:]]
    # the failed cycle's assignment holds the node's only slot (max_diffs = 1) until the node closes it
    assert await harness.node.acall(harness.node.node.close_cycle(harness.name, "1.0"))
    mark = len(daemon.logs)
    daemon.signal(signal.SIGUSR1)
    again = await daemon.wait_log("cycle.finished", timeout=90, after=mark)
    assert again["outcome"] == "done", again
    noise = [line for line in daemon.raw if "Traceback" in line or "never retrieved" in line]
    assert noise == [], "\n".join(daemon.raw)[-6000:]
