"""A ``kind = "flower"`` job run by the real daemon on a dbusmock system bus, against a real Flower
federation on loopback (a ``flower-superlink``, the example ServerApp running FedAvg, one always-online
SuperNode): the same constraints and sleep handling as a PyGrid job, one history entry per session.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from dbus_fast import Variant
from support.daemon import DaemonProcess, NotifySocket
from support.dbus import DBusMocks, MockControl
from support.flower import EXAMPLE_APP, Report, SuperLink, daemon_config, wait_until

from syftd import control
from syftd.flower.group import group_alive
from syftd.history import History

pytestmark = [pytest.mark.slow, pytest.mark.dbus, pytest.mark.timeout(300)]

STEP_S = 0.1
STEPS_ALL = 30
LOGIND_PATH = "/org/freedesktop/login1"
LOGIND_IFACE = "org.freedesktop.login1.Manager"
GRACE_S = 8.0


def run_config(report: Path, *, rounds: int, steps: int, on_stop: str) -> str:
    return (
        f"num-server-rounds={rounds} min-nodes=1 round-timeout=120.0 local-steps={steps} step-seconds={STEP_S} "
        f'on-stop="{on_stop}" report-file="{report}"'
    )


async def joined(daemon: DaemonProcess, federation: SuperLink, after: int) -> tuple[int, int]:
    """The next flower.supernode_joined line after index ``after``: (node id, its index)."""
    entry = await daemon.wait_log("flower.supernode_joined", timeout=60, after=after)
    node_id = int(entry["node_id"])
    # polls: the SuperLink's log file, written by another process, announces nothing
    await wait_until(lambda: f"Activated node_id={node_id}" in federation.text(), timeout=10, what="activated")
    return node_id, daemon.logs.index(entry)


def started_pid(daemon: DaemonProcess, after: int = 0) -> int:
    return int([e for e in daemon.logs[after:] if e.get("event") == "flower.supernode_started"][-1]["pid"])


async def training(daemon: DaemonProcess, after: int, timeout: float = 60) -> None:
    """Wait until the gated node's ClientApp is in its training loop (the SuperNode's output is in the
    daemon's debug log)."""
    await daemon.until(
        lambda: any(
            e.get("event") == "flower.supernode_output" and "syftd-example: training" in str(e.get("line"))
            for e in daemon.logs[after:]
        ),
        timeout=timeout, what="the ClientApp training",
    )  # fmt: skip


@pytest.fixture
async def daemon_for(
    dbus_mocks: DBusMocks, mocks: MockControl, federation: SuperLink, flower_bin: Path, tmp_path: Path
) -> Any:
    started: list[tuple[DaemonProcess, NotifySocket]] = []

    async def start(trust: str = "insecure = true") -> tuple[DaemonProcess, NotifySocket]:
        notify = NotifySocket(tmp_path / f"notify-{len(started)}.sock")
        daemon = await DaemonProcess.start(
            daemon_config(tmp_path, dbus_mocks.address, federation, flower_bin, grace_s=GRACE_S, trust=trust),
            notify=notify,
        )
        started.append((daemon, notify))
        await notify.wait_for(lambda m: "READY" in m, timeout=30)
        return daemon, notify

    yield start
    for daemon, notify in started:
        await daemon.stop()
        notify.close()


def alive(pid: int) -> bool:
    """``pid`` runs (a zombie no one reaps does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X")


def history(tmp_path: Path) -> list[dict[str, Any]]:
    return History(tmp_path / "state").entries("fl")


async def test_plugged_in_it_joins_unplugged_it_leaves_mid_round_at_no_cost_replugged_it_joins_a_later_round(
    daemon_for: Any, mocks: MockControl, federation: SuperLink, tmp_path: Path
) -> None:
    """On AC the daemon starts the SuperNode and its updates are in the round; AC lost mid-round: the
    job shows "leaving (power_lost)" (STATUS= and `syftd status`) while the ClientApp sees the stop file
    and returns a partial update, the SuperNode is gone within grace + 1 s,
    deactivated, the round lasts as long as a normal one, and one history entry says done
    (power_lost); AC back: a new session joins a later round."""
    daemon, notify = await daemon_for()
    first, _ = await joined(daemon, federation, 0)
    await notify.wait_for(lambda m: f"joined as node {first}" in m.fields.get("STATUS", ""), timeout=10)
    report = Report(tmp_path / "report.jsonl")
    federation.run(EXAMPLE_APP, run_config(report.path, rounds=4, steps=30, on_stop="partial"))
    one = await report.wait_round(1, timeout=90)
    assert first in one["results"], one

    mark = len(daemon.logs)
    await training(daemon, mark)
    pid = started_pid(daemon)
    deactivated = federation.count("/v1/fleet/deactivate-node")
    seen = len(notify.messages)
    await mocks.set_on_battery(True)
    await notify.wait_for(lambda m: "fl: leaving (power_lost)" in m.fields.get("STATUS", ""), after=seen, timeout=10)
    shown = await control.call(tmp_path / "run", "status", {})  # what `syftd status --json` prints
    assert shown["jobs"][0]["state"] == "leaving (power_lost)", shown  # the SuperNode lingers >= 1 s to leave
    finished = await daemon.wait_log("cycle.finished", timeout=GRACE_S + 15, after=mark)
    assert finished["outcome"] == "done" and finished["reason"] == "power_lost", finished
    assert finished["node_id"] == first and finished["replies"] >= 2
    assert finished["leave_s"] <= GRACE_S + 1.0, finished
    await wait_until(lambda: not group_alive(pid), timeout=3, what="the SuperNode's process group gone")
    assert federation.count("/v1/fleet/deactivate-node") == deactivated + 1
    two = await report.wait_round(2, timeout=60)
    assert two["steps"].get(str(first), STEPS_ALL) < STEPS_ALL, f"no partial update: {two}"
    assert two["seconds"] <= one["seconds"] + 5.0, (one["seconds"], two["seconds"])
    await notify.wait_for(lambda m: "waiting" in m.fields.get("STATUS", ""), timeout=10)

    mark = len(daemon.logs)
    await mocks.set_on_battery(False)
    second, _ = await joined(daemon, federation, mark)
    await wait_until(lambda: report.entries("done"), timeout=150, what="the run finished")
    later = [report.round(n) for n in (3, 4)]
    assert any(r and second in r["results"] for r in later), later
    entries = history(tmp_path)
    assert entries and entries[0]["outcome"] == "done" and entries[0]["reason"] == "power_lost", entries
    print(
        f"\ndaemon: round 1 {one['seconds']:.2f} s, round 2 (left mid-round) {two['seconds']:.2f} s, "
        f"leave {finished['leave_s']:.2f} s, partial {two['steps'].get(str(first))}/{STEPS_ALL} steps"
    )


async def test_prepare_for_sleep_leaves_within_the_inhibit_delay_and_kill_9_of_the_daemon_ends_the_supernode(
    daemon_for: Any, mocks: MockControl, federation: SuperLink, tmp_path: Path
) -> None:
    """With a ClientApp that ignores the stop file and an 8 s grace, PrepareForSleep(true) with
    InhibitDelayMaxUSec = 5 s: the SuperNode is deactivated within 5 − 1 s of the signal, the run
    expires with reason sleep; after resume it joins again, and a kill -9 of the daemon ends it."""
    await mocks._set("logind", LOGIND_PATH, LOGIND_IFACE, "InhibitDelayMaxUSec", Variant("t", 5_000_000))
    daemon, _notify = await daemon_for()
    node, _ = await joined(daemon, federation, 0)
    report = Report(tmp_path / "report.jsonl")
    federation.run(EXAMPLE_APP, run_config(report.path, rounds=2, steps=100, on_stop="ignore"))
    mark = len(daemon.logs)
    await training(daemon, mark)
    deactivated = federation.count("/v1/fleet/deactivate-node")
    signalled = time.time()
    await mocks.prepare_for_sleep(True)
    finished = await daemon.wait_log("cycle.finished", timeout=20, after=mark)
    assert finished["outcome"] == "expired" and finished["reason"] == "sleep", finished
    assert federation.count("/v1/fleet/deactivate-node") == deactivated + 1
    slept = federation.last_access("/v1/fleet/deactivate-node") - signalled
    assert slept <= 4.0, f"deactivated {slept:.2f} s after PrepareForSleep, bound 4 s"

    mark = len(daemon.logs)
    await mocks.prepare_for_sleep(False)
    again, _ = await joined(daemon, federation, mark)
    assert again != node
    pid = started_pid(daemon, mark)
    deactivated = federation.count("/v1/fleet/deactivate-node")
    daemon.proc.kill()
    await daemon.proc.wait()
    killed = time.monotonic()
    await wait_until(lambda: not alive(pid), timeout=5, what="the SuperNode gone after kill -9 of the daemon")
    left = time.monotonic() - killed
    await wait_until(lambda: not group_alive(pid), timeout=5, what="its helpers gone too")
    gone = time.monotonic() - killed
    await wait_until(lambda: federation.count("/v1/fleet/deactivate-node") > deactivated, timeout=5, what="deactivated")
    print(
        f"\ndaemon: sleep → deactivated {slept:.2f} s after the signal (bound 4 s); kill -9 → SuperNode gone "
        f"{left:.2f} s later, its group {gone:.2f} s"
    )


async def test_with_trusted_entities_an_app_no_listed_key_signed_never_runs_and_the_round_records_the_refusal(
    daemon_for: Any, federation: SuperLink, tmp_path: Path
) -> None:
    """``trusted_entities`` reaches flower-supernode: an app submitted with ``flwr run`` from a local
    directory carries no signature (flwr 1.42 gets verifications only from the Flower hub, beyond
    loopback), so the daemon's SuperNode answers with an error and its ClientApp never starts, while
    the always-online node, without trusted entities, trains the same round."""
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    public = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    trusted = tmp_path / "trusted.yaml"
    trusted.write_text(f'fpk_syftd_test: "{public}"\n')
    daemon, _notify = await daemon_for(f'insecure = true\ntrusted_entities = "{trusted}"')
    node, mark = await joined(daemon, federation, 0)
    report = Report(tmp_path / "report.jsonl")
    federation.run(EXAMPLE_APP, run_config(report.path, rounds=1, steps=5, on_stop="partial"))
    one = await report.wait_round(1, timeout=90)
    assert node not in one["results"] and one["results"], one
    assert [f["node"] for f in one["failures"]] == [node], one
    lines = [str(e.get("line")) for e in daemon.logs[mark:] if e.get("event") == "flower.supernode_output"]
    assert any("The FAB could not be verified" in line for line in lines), lines[-10:]
    assert not any("syftd-example: training" in line for line in lines), lines[-10:]
    print(f"\ntrusted entities: node {node} refused the unsigned app: {one['failures'][0]}")
