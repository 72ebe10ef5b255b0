"""The local grid node over real sockets on 127.0.0.1: hosting, full worker cycles per revision and
transport, PyGrid's rejection rules, downloads, averaging and JWT. Torch-free."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import time

import jwt
import pytest
import structlog
import structlog.testing
from conftest import FIXTURES
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from support.gridnode import RawWorker, assert_model_minus, diff_of, host_over_ws, running_node, small_process

from syftd.grid import wire
from syftd.node.auth import INVALID, REQUIRED

GOLDEN = FIXTURES / "golden-cycle"
RECORDED_MODEL = (GOLDEN / "012-http-GET-model-centric_get-model.response.bin").read_bytes()
RECORDED_DIFF = (GOLDEN / "016-ws-model-centric_report.request.diff.base64-decoded.bin").read_bytes()
TIMEDELTA = re.compile(r"^(-?\d+ days?, )?\d+:\d\d:\d\d(\.\d{6})?$")
SECRET = "a-test-secret-that-is-32-bytes-long!"
ACCEPTED_KEYS = ["status", "request_key", "version", "model", "plans", "protocols", "client_config", "model_id"]


async def test_host_training_over_ws_stores_the_process_and_refuses_duplicates_and_plans_without_torchscript():
    model, plans, client, server = small_process()
    async with running_node() as node:
        answer = await host_over_ws(node.ws_url, model, plans, {"name": "m", "version": "2", **client}, server)
        assert answer["type"] == "model-centric/host-training" and answer["data"] == {"status": "success"}
        again = await host_over_ws(node.ws_url, model, plans, {"name": "m", "version": "2", **client}, server)
        assert again["data"] == {"error": "FL Process already exists."}
        no_ts = {"training_plan": wire.encode_state([])}
        bad = await host_over_ws(node.ws_url, model, no_ts, {"name": "m", "version": "3", **client}, server)
        assert bad["data"]["error"].startswith("Plan is not valid")
        no_length = await host_over_ws(node.ws_url, model, plans, {"name": "m", "version": "4"}, {"num_cycles": 1})
        assert no_length["data"] == {"error": "'cycle_length'"}
        async with RawWorker(node.url) as worker:
            status, body = await worker.get("retrieve-model", name="m", version="2", checkpoint="latest")
            assert (status, body) == (200, model)
            status, body = await worker.get("retrieve-model", name="m", checkpoint="1")
            assert (status, body) == (200, model)
            status, body = await worker.get("retrieve-model", name="nope")
            assert (status, json.loads(body)) == (404, {"error": "Model ID not found!"})
        await node.settled()
        assert node.checkpoint_number("m", "2") == 1


@pytest.mark.parametrize("revision", ["pg-dev", "pg-master", "0914"])
async def test_full_worker_cycle_over_ws_per_revision_with_request_id_rules(revision):
    """authenticate → cycle-request → get-model → get-plan → report over WS; request_id echo per revision."""
    model, plans, client, server = small_process()
    async with running_node(revision) as node, RawWorker(node.url, "ws") as worker:
        node.host("mnist", "1.0", model, plans, client, server)
        auth = await worker.ws_send(
            {
                "type": "model-centric/authenticate",
                "data": {"model_name": "mnist", "model_version": "1.0"},
                "request_id": "r-auth",
            }
        )
        assert auth["data"]["status"] == "success"
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", auth["data"]["worker_id"])
        assert auth["data"]["requires_speed_test"] is False
        assert ("request_id" in auth) is (revision == "pg-dev")
        worker.worker_id = auth["data"]["worker_id"]
        request = {
            "type": "model-centric/cycle-request",
            "data": {"worker_id": worker.worker_id, "model": "mnist", "version": "1.0"},
        }
        if revision == "0914":
            assert await worker.ws_send(request) == {"error": "'request_id'"}
        answer = await worker.ws_send({**request, "request_id": "r-cycle"})
        assert answer.get("request_id") == (None if revision == "pg-master" else "r-cycle")
        cycle = answer["data"]
        assert list(cycle) == ACCEPTED_KEYS
        assert cycle["status"] == "accepted" and re.fullmatch(r"[0-9a-f]{64}", cycle["request_key"])
        assert isinstance(cycle["model_id"], int) and isinstance(cycle["plans"]["training_plan"], int)
        assert cycle["client_config"] == {"name": "mnist", "version": "1.0", **client}
        worker.cycle = cycle
        assert await worker.get_model() == (200, model)
        status, plan = await worker.get_plan()
        assert status == 200 and wire.plan_torchscript(plan) == wire.plan_torchscript(plans["training_plan"])
        diff = diff_of(model)
        report = await worker.ws_send(
            {
                "type": "model-centric/report",
                "request_id": "r-report",
                "data": {
                    "worker_id": worker.worker_id,
                    "request_key": cycle["request_key"],
                    "diff": base64.b64encode(diff).decode(),
                },
            }
        )
        assert report["data"] == {"status": "success"}
        assert report.get("request_id") == (None if revision == "pg-master" else "r-report")
        await node.settled()
        assert node.checkpoint_number("mnist") == 2
        status, latest = await worker.get("retrieve-model", name="mnist", version="1.0")
        assert_model_minus(latest, model, [diff])
        assert [(r.worker_id, r.cycle, r.transport, r.diff) for r in node.reports] == [
            (worker.worker_id, 1, "ws", diff)
        ]


@pytest.mark.parametrize("revision", ["pg-dev", "pg-master"])
async def test_full_worker_cycle_over_http_with_flat_or_enveloped_bodies(revision):
    model, plans, client, server = small_process()
    async with running_node(revision) as node, RawWorker(node.url, "http") as worker:
        node.host("mnist", "1.0", model, plans, client, server)
        status, auth = await worker.op("authenticate", {"model_name": "mnist", "model_version": "1.0"})
        assert status == 200 and auth["status"] == "success"
        worker.worker_id = auth["worker_id"]
        status, raw = await worker.op(
            "cycle-request", {"worker_id": worker.worker_id, "model": "mnist", "version": "1.0"}
        )
        if revision == "pg-dev":
            assert status == 200 and raw["type"] == "model-centric/cycle-request"
            cycle = raw["data"]
        else:
            assert status == 200 and "type" not in raw
            cycle = raw
        assert list(cycle) == ACCEPTED_KEYS
        worker.cycle = cycle
        assert (await worker.get_model())[0] == 200
        assert (await worker.get_plan())[0] == 200
        diff = diff_of(model, 0.25)
        status, raw = await worker.op(
            "report",
            {
                "worker_id": worker.worker_id,
                "request_key": cycle["request_key"],
                "diff": base64.b64encode(diff).decode(),
            },
        )
        expected = {"status": "success"}
        assert raw == ({"type": "model-centric/report", "data": expected} if revision == "pg-dev" else expected)
        assert node.reports[0].transport == "http"
        await node.settled()
        assert_model_minus((await worker.get("retrieve-model", name="mnist"))[1], model, [diff])


async def test_0914_http_cycle_request_and_report_fail_with_500_but_authenticate_works():
    async with running_node("0914") as node, RawWorker(node.url, "http") as worker:
        node.host("mnist", "1.0", *small_process())
        assert (await worker.authenticate())["status"] == "success"
        assert await worker.op(
            "cycle-request", {"worker_id": worker.worker_id, "model": "mnist", "version": "1.0"}
        ) == (500, {"error": "'request_id'"})
        assert await worker.op("report", {"worker_id": worker.worker_id}) == (500, {"error": "'request_id'"})


async def test_second_request_in_the_same_cycle_is_rejected_with_a_timedelta_timeout():
    async with running_node() as node, RawWorker(node.url) as worker:
        node.host("mnist", "1.0", *small_process(server_config={"cycle_length": 3600}))
        await worker.authenticate()
        assert (await worker.cycle_request())["status"] == "accepted"
        again = await worker.cycle_request()
        assert set(again) == {"status", "timeout"} and again["status"] == "rejected"
        assert TIMEDELTA.match(again["timeout"]) and again["timeout"].startswith("0:59:")
        other = RawWorker(node.url)
        async with other:
            await other.authenticate()
            assert (await other.cycle_request())["status"] == "accepted"


async def test_rejection_timeout_turns_negative_after_the_cycle_end_while_the_cycle_stays_open():
    async with running_node() as node, RawWorker(node.url) as worker:
        node.host("mnist", "1.0", *small_process(server_config={"cycle_length": 0, "max_diffs": None, "min_diffs": 5}))
        await worker.authenticate()
        assert (await worker.cycle_request())["status"] == "accepted"
        again = await worker.cycle_request()
        assert again["status"] == "rejected" and again["timeout"].startswith("-1 day, 23:59:")
        assert TIMEDELTA.match(again["timeout"])


async def test_num_cycles_zero_rejects_without_timeout_although_training_goes_on():
    async with running_node() as node, RawWorker(node.url) as worker:
        node.host("mnist", "1.0", *small_process(server_config={"num_cycles": 0}))
        await worker.authenticate()
        await worker.cycle_request()
        assert await worker.cycle_request() == {"status": "rejected"}


async def test_finished_process_rejects_without_timeout_and_downloads_say_cycle_not_found():
    model, plans, client, server = small_process(server_config={"num_cycles": 1})
    async with running_node() as node, RawWorker(node.url) as worker:
        node.host("mnist", "1.0", model, plans, client, server)
        await worker.authenticate()
        await worker.cycle_request()
        assert await worker.report(diff_of(model)) == {"status": "success"}
        await node.settled()
        assert await worker.cycle_request() == {"status": "rejected"}
        status, body = await worker.get_model()
        assert (status, json.loads(body)) == (400, {"error": "Cycle not found!"})
        assert node.snapshot()["processes"][0]["finished"] is True


async def test_averaging_one_recorded_diff_gives_recorded_model_minus_diff():
    """min_diffs = max_diffs = 1 on the recorded 1.25 MB model and diff: retrieve-model == before − diff."""
    async with running_node() as node, RawWorker(node.url) as worker:
        node.host(
            "mnist",
            "1.0",
            RECORDED_MODEL,
            small_process()[1],
            {},
            {"cycle_length": 60, "num_cycles": 5, "min_diffs": 1, "max_diffs": 1},
        )
        await worker.authenticate()
        await worker.cycle_request()
        assert await worker.report(RECORDED_DIFF) == {"status": "success"}
        await node.settled()
        status, latest = await worker.get("retrieve-model", name="mnist", version="1.0", checkpoint="2")
        assert status == 200
        import numpy as np

        for got, old, diff in zip(
            wire.parse_state(latest), wire.parse_state(RECORDED_MODEL), wire.parse_state(RECORDED_DIFF), strict=True
        ):
            expected = np.frombuffer(old.data, "<f4") - np.frombuffer(diff.data, "<f4")
            np.testing.assert_allclose(np.frombuffer(got.data, "<f4"), expected, rtol=0, atol=1e-7)


async def test_two_diffs_are_averaged_and_a_double_report_counts_once():
    model, plans, client, server = small_process(server_config={"min_diffs": 2, "max_diffs": 2})
    async with running_node() as node, RawWorker(node.url) as a, RawWorker(node.url, "http") as b:
        node.host("mnist", "1.0", model, plans, client, server)
        for w in (a, b):
            await w.authenticate()
            assert (await w.cycle_request())["status"] == "accepted"
        first, second = diff_of(model, 0.5), diff_of(model, -0.25)
        await a.report(diff_of(model, 9.0))
        await node.settled()
        await a.report(first)
        await node.settled()
        await node.settled()
        assert node.checkpoint_number("mnist") == 1
        await b.report(second)
        await node.settled()
        await node.settled()
        assert node.checkpoint_number("mnist") == 2
        assert_model_minus((await a.get("retrieve-model", name="mnist"))[1], model, [first, second])
        assert await a.report(diff_of(model, 100.0)) == {"status": "success"}
        await node.settled()
        await node.settled()
        assert node.checkpoint_number("mnist") == 2


async def test_a_bad_diff_is_logged_and_skipped_and_a_good_one_still_completes_the_cycle():
    model, plans, client, server = small_process()
    async with running_node() as node, RawWorker(node.url) as bad, RawWorker(node.url) as good:
        node.host("mnist", "1.0", model, plans, client, server)
        for w in (bad, good):
            await w.authenticate()
            await w.cycle_request()
        wrong_shape = wire.encode_state([wire.Tensor("float32", (2,), bytes(8))])
        with structlog.testing.capture_logs() as logs:
            assert await bad.report(wrong_shape) == {"status": "success"}
            await node.settled()
        rejected = [e for e in logs if e["event"] == "grid_node.diff_rejected"]
        assert len(rejected) == 1 and "tensors" in rejected[0]["why"]
        assert await bad.report(b"", diff="bm90YQ") == {"error": "Incorrect padding"}
        await node.settled()
        assert node.checkpoint_number("mnist") == 1
        await good.report(diff_of(model))
        await node.settled()
        await node.settled()
        assert node.checkpoint_number("mnist") == 2


async def test_download_validation_wrong_key_401_unknown_ids_400_and_closed_cycle_400():
    async with running_node() as node, RawWorker(node.url) as worker:
        node.host("mnist", "1.0", *small_process())
        await worker.authenticate()
        await worker.cycle_request()
        status, body = await worker.get_model(request_key="0" * 64)
        assert (status, json.loads(body)) == (401, {"error": "Invalid request key!"})
        status, body = await worker.get_plan(request_key="0" * 64)
        assert (status, json.loads(body)) == (401, {"error": "Invalid request key!"})
        status, body = await worker.get_model(model_id=99)
        assert (status, json.loads(body)) == (400, {"error": "Model ID not found!"})
        status, body = await worker.get_plan(plan_id=99)
        assert (status, json.loads(body)) == (400, {"error": "Plan ID not found!"})
        status, body = await worker.get_model(worker_id="nobody")
        assert (status, json.loads(body)) == (400, {"error": "Worker ID not found!"})
        assert await node.close_cycle() is True
        status, body = await worker.get_model()
        assert (status, json.loads(body)) == (400, {"error": "Cycle not found!"})
        await node.settled()
        assert node.checkpoint_number("mnist") == 1


async def test_unknown_model_and_unknown_worker_are_refused_with_pygrid_texts():
    async with running_node() as node, RawWorker(node.url) as ws, RawWorker(node.url, "http") as http:
        node.host("mnist", "1.0", *small_process())
        answer = await ws.authenticate("no-such-model")
        assert answer["error"].startswith("Not found any process related with this cycle and worker ID.")
        status, body = await http.op("authenticate", {"model_name": "no-such-model", "model_version": "1.0"})
        assert status == 401 and body["error"].startswith("Not found any process")
        ws.worker_id = "not-a-worker"
        assert await ws.cycle_request() == {"status": "rejected", "error": "Worker ID not found!"}
        await ws.authenticate()
        assert (await ws.cycle_request(version="2.0"))["error"].startswith("Not found any process")
        assert "worker_id" in await ws.authenticate(version=None)


async def test_speed_test_rules_and_endpoint():
    server = {"minimum_upload_speed": 10, "minimum_download_speed": 10}
    async with running_node(speed_test_bytes=100_000) as node, RawWorker(node.url) as worker:
        node.host("mnist", "1.0", *small_process(server_config=server))
        assert (await worker.authenticate())["requires_speed_test"] is True
        assert await worker.cycle_request() == {"status": "rejected", "error": "'ping' is required"}
        answer = await worker.cycle_request(ping=1, download=-1, upload=20)
        assert answer == {"status": "rejected", "error": "'download' needs to be a positive number"}
        slow = await worker.cycle_request(ping=1, download=5, upload=20)
        assert slow["status"] == "rejected" and TIMEDELTA.match(slow["timeout"])
        assert (await worker.cycle_request(ping=1, download=10, upload=10))["status"] == "accepted"
        query = {"worker_id": worker.worker_id, "random": "42"}
        assert await worker.get("speed-test", is_ping=1, **query) == (200, b"{}")
        status, body = await worker.get("speed-test", **query)
        assert status == 200 and body.count(b"x") == 100_000 and body.startswith(b"--")
        assert b'name="sample"' in body and body.endswith(b"--\r\n")
        assert worker.session is not None
        async with worker.session.post(
            f"{node.url}/model-centric/speed-test", params=query, data=b"y" * 300_000
        ) as response:
            assert (response.status, await response.json()) == (200, {})
        assert (await worker.get("speed-test", is_ping=1))[0] == 500


async def test_websocket_routing_errors_ping_and_binary_frames():
    async with running_node() as node, RawWorker(node.url) as worker:
        assert await worker.ws_send({"type": "socket-ping", "data": {}, "request_id": "p"}) == {
            "alive": "True",
            "request_id": "p",
        }
        assert await worker.ws_send({"type": "get-protocol", "data": {}}) == {"error": "'get-protocol'"}
        assert "error" in await worker.ws_send("{not json")
        assert await worker.ws_send({"type": "model-centric/authenticate"}) == {"error": "'data'"}
        assert worker.ws is not None
        await worker.ws.send_bytes(b"\x00")
        assert "error" in json.loads(await worker.ws.receive_str())
        assert (await worker.get("get-protocol", worker_id="w", request_key="k", protocol_id="1"))[0] == 500


@pytest.mark.parametrize("transport", ["ws", "http"])
async def test_an_older_route_prefix_serves_the_same_protocol_and_refuses_the_new_names(transport):
    model, plans, client, server = small_process()
    async with running_node(prefix="federated") as node:
        node.host("mnist", "1.0", model, plans, client, server)
        async with RawWorker(node.url, transport, prefix="federated") as worker:
            await worker.authenticate()
            assert (await worker.cycle_request())["status"] == "accepted"
            assert (await worker.get_model())[0] == 200
            assert await worker.report(diff_of(model)) == {"status": "success"}
            await node.settled()
        async with RawWorker(node.url, transport) as new_names:
            if transport == "ws":
                _, answer = await new_names.op("authenticate", {"model_name": "mnist", "model_version": "1.0"})
                assert answer["error"] == "'model-centric/authenticate'"
            else:
                assert new_names.session is not None
                async with new_names.session.post(f"{node.url}/model-centric/authenticate", json={}) as response:
                    assert response.status == 404


async def test_a_report_after_the_end_time_completes_the_cycle_below_max_diffs():
    """Ready = min_diffs reached AND (max_diffs reached OR now >= end); no timer, the report triggers it."""
    model, plans, client, server = small_process(server_config={"cycle_length": 0, "min_diffs": 1, "max_diffs": 10})
    async with running_node() as node, RawWorker(node.url) as worker:
        node.host("mnist", "1.0", model, plans, client, server)
        await worker.authenticate()
        await worker.cycle_request()
        await worker.report(diff_of(model))
        await node.settled()
        await node.settled()
        assert node.checkpoint_number("mnist") == 2


async def test_late_report_after_the_cycle_closed_is_accepted_and_discarded():
    model, plans, client, server = small_process()
    async with running_node() as node, RawWorker(node.url) as worker:
        node.host("mnist", "1.0", model, plans, client, server)
        await worker.authenticate()
        await worker.cycle_request()
        await node.close_cycle()
        assert await worker.report(diff_of(model)) == {"status": "success"}
        await node.settled()
        await node.settled()
        assert node.checkpoint_number("mnist") == 1
        assert await worker.report(diff_of(model), request_key="f" * 64) == {
            "error": "ProcessLookupError: no worker cycle for this worker_id and request_key"
        }


def _hs256(payload: dict[str, object], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


@pytest.mark.parametrize("transport", ["ws", "http"])
async def test_jwt_hs256_secret(transport):
    auth = {"authentication": {"type": "jwt", "secret": SECRET}}
    async with running_node() as node, RawWorker(node.url, transport) as worker:
        node.host("mnist", "1.0", *small_process(server_config=auth))
        assert (await worker.authenticate())["error"] == REQUIRED
        assert (await worker.authenticate(token="not-a-valid-token"))["error"] == INVALID
        assert (await worker.authenticate(token=_hs256({}, "another-secret-of-at-least-32-bytes")))["error"] == INVALID
        expired = _hs256({"exp": int(time.time()) - 60})
        assert (await worker.authenticate(token=expired))["error"] == INVALID
        assert (await worker.authenticate(token=_hs256({"aud": "x"})))["error"] == INVALID
        assert (await worker.authenticate(token=_hs256({})))["status"] == "success"
        if transport == "http":
            status, _ = await worker.op("authenticate", {"model_name": "mnist", "model_version": "1.0"})
            assert status == 400


async def test_jwt_rs256_public_key_accepts_the_matching_private_key_only():
    key, other = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    auth = {"authentication": {"type": "jwt", "pub_key": pem}}
    async with running_node() as node, RawWorker(node.url) as worker:
        node.host("mnist", "1.0", *small_process(server_config=auth))
        good = jwt.encode({}, key, algorithm="RS256")
        assert (await worker.authenticate(token=good))["status"] == "success"
        assert (await worker.cycle_request())["status"] == "accepted"
        bad = jwt.encode({}, other, algorithm="RS256")
        assert (await worker.authenticate(token=bad))["error"] == INVALID
        hs = _hs256({})
        assert (await worker.authenticate(token=hs))["error"] == INVALID


async def test_authenticate_without_version_takes_the_last_hosted_version():
    async with running_node() as node, RawWorker(node.url) as worker:
        model, plans, client, server = small_process()
        node.host("mnist", "1.0", model, plans, client, server)
        node.host("mnist", "2.0", model, plans, client, server)
        assert (await worker.authenticate(version=None))["status"] == "success"
        assert (await worker.cycle_request(version="2.0"))["model_id"] == 2


def test_timedelta_pattern_matches_python_forms():
    for delta in (dt.timedelta(seconds=59.5), dt.timedelta(days=2, seconds=3), dt.timedelta(seconds=-0.5)):
        assert TIMEDELTA.match(str(delta))
