"""The local node in its default ``pg-dev`` revision behaves as a real PyGrid dev node does around reports and
cycles (docs/protocol.md §2.2, §7): answer first, average later and one averaging at a time node-wide,
rejection timeouts as ``str(timedelta)``, cycles closed only by reports, worker limits stored but not enforced.
All over real sockets on 127.0.0.1. Torch-free."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
import structlog.testing
from support.gridnode import NodeControl, RawWorker, assert_model_minus, diff_of, running_node, small_process

from syftd.node.cli import _parser
from syftd.node.options import NodeOptions


def test_the_default_averaging_delay_is_the_real_nodes_0_2_s_in_options_and_on_the_command_line():
    assert NodeOptions().averaging_delay_s == 0.2
    assert _parser().parse_args(["serve"]).averaging_delay == 0.2


async def test_a_report_is_answered_success_at_once_and_averaged_after_the_delay_with_the_cycle_open_meanwhile():
    """The same worker asking again right after its report is rejected "already assigned" (the cycle is still
    open, checkpoint 1); the new checkpoint appears no earlier than the delay after the report was sent."""
    delay = 1.0
    model, plans, client, server = small_process(server_config={"num_cycles": 5, "cycle_length": 3600})
    async with running_node(averaging_delay_s=delay) as node, RawWorker(node.url) as worker:
        node.host("mnist", "1.0", model, plans, client, server)
        await worker.authenticate()
        assert (await worker.cycle_request())["status"] == "accepted"
        loop = asyncio.get_running_loop()
        sent = loop.time()
        with structlog.testing.capture_logs() as logs:
            assert await worker.report(diff_of(model)) == {"status": "success"}
            again = await worker.cycle_request()
        assert node.checkpoint_number("mnist") == 1
        assert set(again) == {"status", "timeout"} and again["status"] == "rejected"
        rejected = [e for e in logs if e["event"] == "grid_node.cycle_rejected"]
        assert [e["reason"] for e in rejected] == ["already assigned to cycle 1 (reported)"]
        assert await node.wait_until(lambda: node.checkpoint_number("mnist") == 2, delay + 30)
        assert loop.time() - sent >= delay
        assert (await worker.cycle_request())["status"] == "accepted"  # same worker id, next cycle


async def test_one_averaging_at_a_time_node_wide_a_report_meanwhile_leaves_its_cycle_open_until_the_next_report():
    """Process A's evaluation runs (its 2 s delay); a report into process B meanwhile is answered success but
    its trigger is dropped, so B's cycle stays open with the diff stored; the next report into B's cycle
    completes it, averaging both diffs."""
    model, plans, client, server = small_process()
    async with running_node(averaging_delay_s=2.0) as node:
        node.host("a", "1.0", model, plans, client, server)
        node.host("b", "1.0", model, plans, client, server)
        async with RawWorker(node.url) as wa, RawWorker(node.url) as wb1, RawWorker(node.url) as wb2:
            for worker, name in ((wa, "a"), (wb1, "b"), (wb2, "b")):
                await worker.authenticate(name)
                assert (await worker.cycle_request(name))["status"] == "accepted"
            first, second = diff_of(model, 0.5), diff_of(model, -0.25)
            with structlog.testing.capture_logs() as logs:
                assert await wa.report(first) == {"status": "success"}
                assert await wb1.report(first) == {"status": "success"}
                await node.settled()
            skipped = [(e["model"], e["cycle"]) for e in logs if e["event"] == "grid_node.averaging_skipped"]
            assert skipped == [("b", 1)], "B's report must arrive within A's 2 s evaluation"
            assert (node.checkpoint_number("a"), node.checkpoint_number("b")) == (2, 1)
            b = next(p for p in node.snapshot()["processes"] if p["name"] == "b")
            assert (b["cycle"], b["reported"], b["finished"]) == (1, 1, False)
            assert await wb2.report(second) == {"status": "success"}
            await node.settled()
            assert node.checkpoint_number("b") == 2
            status, latest = await wb2.get("retrieve-model", name="b", version="1.0")
            assert status == 200
            assert_model_minus(latest, model, [first, second])


async def test_rejection_timeouts_are_seconds_to_the_cycle_end_as_str_timedelta_and_negative_once_it_passed():
    """With the node's clock at host + 10 s the timeout is "0:00:50"; at host + 72.73381 s (end passed, no
    report, so the cycle is still open: no timer closes it) it is "-1 day, 23:59:47.266190"."""
    start = datetime(2026, 11, 30, 12, 0, 0)
    now = [start]
    model, plans, client, server = small_process(server_config={"cycle_length": 60, "num_cycles": 3})
    async with running_node(clock=lambda: now[0]) as node, RawWorker(node.url) as worker:
        node.host("mnist", "1.0", model, plans, client, server)
        await worker.authenticate()
        assert (await worker.cycle_request())["status"] == "accepted"
        now[0] = start + timedelta(seconds=10)
        assert await worker.cycle_request() == {"status": "rejected", "timeout": "0:00:50"}
        now[0] = start + timedelta(seconds=72, microseconds=733810)
        assert await worker.cycle_request() == {"status": "rejected", "timeout": "-1 day, 23:59:47.266190"}
        assert node.snapshot()["processes"][0]["cycle"] == 1
        late = RawWorker(node.url)
        async with late:  # past its end the open cycle still accepts a worker that is not assigned yet
            await late.authenticate()
            assert (await late.cycle_request())["status"] == "accepted"


async def test_no_timeout_in_a_rejection_when_num_cycles_is_0_or_reached():
    model, plans, client, server = small_process(server_config={"num_cycles": 0})
    async with running_node(averaging_delay_s=0) as node, RawWorker(node.url) as worker:
        node.host("unlimited", "1.0", model, plans, client, server)
        node.host("once", "1.0", model, plans, client, {**server, "num_cycles": 1})
        await worker.authenticate("unlimited")
        await worker.cycle_request("unlimited")
        assert await worker.cycle_request("unlimited") == {"status": "rejected"}
        await worker.cycle_request("once")
        assert set(await worker.cycle_request("once")) == {"status", "timeout"}
        assert await worker.report(diff_of(model)) == {"status": "success"}
        await node.settled()
        assert node.checkpoint_number("once") == 2
        assert await worker.cycle_request("once") == {"status": "rejected"}


async def test_max_workers_and_do_not_reuse_workers_until_cycle_are_stored_but_not_enforced():
    """max_workers = 1 still lets a second worker in; do_not_reuse_workers_until_cycle = 5 still lets the
    same worker id into the very next cycle."""
    server = {"max_workers": 1, "do_not_reuse_workers_until_cycle": 5, "num_cycles": 0}
    model, plans, client, server = small_process(server_config=server)
    async with running_node(averaging_delay_s=0) as node:
        node.host("mnist", "1.0", model, plans, client, server)
        async with RawWorker(node.url) as one, RawWorker(node.url) as two:
            for worker in (one, two):
                await worker.authenticate()
                assert (await worker.cycle_request())["status"] == "accepted"
            await one.report(diff_of(model))
            await node.settled()
            assert node.checkpoint_number("mnist") == 2
            assert (await one.cycle_request())["status"] == "accepted"
        assert node.state.find("mnist", "1.0").server_config["do_not_reuse_workers_until_cycle"] == 5


async def test_the_averaging_delay_control_changes_the_delay_over_http_and_refuses_a_negative_one():
    async with running_node() as node:
        control = NodeControl(node.url)
        try:
            assert (await control.state())["averaging_delay_s"] == 0.2
            await control.set_averaging_delay(0)
            assert node.averaging_delay_s == 0
            with pytest.raises(ValueError, match=r"finite number of seconds >= 0, got -1\.0"):
                await control.set_averaging_delay(-1)
            assert (await control.state())["averaging_delay_s"] == 0
        finally:
            await control.close()
