"""The metrics registry and its HTTP endpoint, scraped with prometheus_client's own text parser."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from syftd.metrics import Metrics, MetricsServer, Sample, parse_listen, status_gauges


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def entry(outcome: str, reason: str | None = None, **extra: object) -> dict:
    base = {"job": "mnist", "outcome": outcome, "reason": reason, "steps": 10, "train_s": 1.5}
    return {**base, "bytes_down": 1000, "bytes_up": 200, "time": 1_700_000_000.0, **extra}


def test_observed_cycles_render_as_parseable_counters_by_job_outcome_and_reason() -> None:
    """Each finished cycle moves cycles_total{job,outcome,reason} and the work counters."""
    metrics = Metrics(clock=lambda: 5.0)
    metrics.observe_cycle(entry("done", energy_j=12.5, trainer_energy_j=4.0))
    metrics.observe_cycle(entry("expired", "power_lost", energy_j="unavailable"))
    metrics.observe_trainer_start("mnist", warm=False)
    metrics.observe_trainer_start("mnist", warm=True)
    got = samples(metrics.render())
    job = ("job", "mnist")
    assert got[("syftd_cycles_total", (job, ("outcome", "done"), ("reason", "")))] == 1
    assert got[("syftd_cycles_total", (job, ("outcome", "expired"), ("reason", "power_lost")))] == 1
    assert got[("syftd_steps_total", (job,))] == 20
    assert got[("syftd_trained_seconds_total", (job,))] == 3.0
    assert got[("syftd_downloaded_bytes_total", (job,))] == 2000
    assert got[("syftd_uploaded_bytes_total", (job,))] == 400
    assert got[("syftd_energy_joules_total", (job, ("scope", "package")))] == 12.5
    assert got[("syftd_energy_joules_total", (job, ("scope", "trainer")))] == 4.0
    assert got[("syftd_energy_unavailable_total", (job,))] == 1
    assert got[("syftd_last_success_timestamp_seconds", (job,))] == 1_700_000_000.0
    assert got[("syftd_trainer_starts_total", (job, ("start", "cold")))] == 1
    assert got[("syftd_trainer_starts_total", (job, ("start", "warm")))] == 1


def test_label_values_are_escaped_and_undeclared_names_refused() -> None:
    """A quote, backslash or newline in a label survives the round trip; a typo'd name is an error."""
    metrics = Metrics()
    metrics.observe_cycle({"job": 'we"ird\\job\nx', "outcome": "failed", "reason": "internal"})
    got = samples(metrics.render())
    assert got[("syftd_cycles_total", (("job", 'we"ird\\job\nx'), ("outcome", "failed"), ("reason", "internal")))] == 1
    with pytest.raises(KeyError, match="not a declared counter"):
        metrics.inc("syftd_cycle_total")
    with pytest.raises(ValueError, match="cannot move"):
        metrics.inc("syftd_steps_total", -1, job="x")


def test_status_rows_and_conditions_become_gauges() -> None:
    """Spool depth, seconds to the next run and the conditions are read at scrape time."""
    rows = [
        {"name": "a", "spool_pending": 2, "next_run_in_s": 90.0},
        {"name": "b", "spool_pending": 0, "next_run_in_s": 0.0},
        {"name": "c", "spool_pending": 0, "next_run_in_s": None},
    ]
    conditions = {"on_external_power": True, "online": False, "battery_percent": 80.0, "connectivity": "full"}
    metrics = Metrics()
    metrics.add_collector(lambda: status_gauges(rows, conditions))
    got = samples(metrics.render())
    assert got[("syftd_spool_depth", (("job", "a"),))] == 2
    assert got[("syftd_next_run_seconds", (("job", "a"),))] == 90
    assert got[("syftd_next_run_seconds", (("job", "b"),))] == 0
    assert ("syftd_next_run_seconds", (("job", "c"),)) not in got
    assert got[("syftd_condition", (("fact", "on_external_power"),))] == 1
    assert got[("syftd_condition", (("fact", "online"),))] == 0
    assert got[("syftd_condition_value", (("fact", "battery_percent"),))] == 80
    assert got[("syftd_connectivity", (("state", "full"),))] == 1


def test_a_failing_collector_does_not_empty_the_scrape() -> None:
    """One broken collector is logged and skipped; the counters still render."""
    metrics = Metrics()
    metrics.observe_cycle(entry("done"))

    def broken() -> list[Sample]:
        raise RuntimeError("boom")

    metrics.add_collector(broken)
    assert ("syftd_steps_total", (("job", "mnist"),)) in samples(metrics.render())


def test_listen_addresses_parse_or_name_the_problem() -> None:
    """host:port and [v6]:port parse; anything else is a ValueError quoting the value."""
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:9") == ("::1", 9)
    for bad in ("9464", "127.0.0.1:", "host:99999", ":80", "h:-1"):
        with pytest.raises(ValueError, match="metrics_listen"):
            parse_listen(bad)


async def _http(host: str, port: int, request: bytes) -> tuple[str, bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode().split("\r\n")[0], body


async def test_server_answers_get_metrics_and_refuses_the_rest() -> None:
    """GET /metrics is 200 with the text format; other paths 404, other methods 405; stop is idempotent."""
    metrics = Metrics()
    metrics.observe_cycle(entry("done"))
    async with MetricsServer("127.0.0.1:0", metrics) as server:
        host, port = server.address
        status, body = await _http(host, port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == "HTTP/1.1 200 OK"
        assert samples(body.decode())[("syftd_steps_total", (("job", "mnist"),))] == 10
        assert (await _http(host, port, b"GET / HTTP/1.1\r\n\r\n"))[0] == "HTTP/1.1 404 Not Found"
        assert (await _http(host, port, b"POST /metrics HTTP/1.1\r\n\r\n"))[0] == "HTTP/1.1 405 Method Not Allowed"
        await server.stop()
    await server.stop()
