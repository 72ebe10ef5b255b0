"""A ``kind = "flower"`` job over TLS, run by the real daemon on a dbusmock system bus against a real
``flower-superlink`` serving HTTPS on loopback with a certificate from a test CA (trustme): the job's
``root_certificates`` make the SuperNode trust it, a wrong CA makes it fail with words that name the
TLS problem, and with ``--enable-supernode-auth`` a registered key (``auth_private_key``) joins under
its registered node id while an unregistered one is refused.
"""

from __future__ import annotations

import datetime
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from support.daemon import DaemonProcess, NotifySocket
from support.dbus import DBusMocks, MockControl
from support.flower import EXAMPLE_APP, Report, SuperLink, daemon_config, wait_until

from syftd import control
from syftd.flower.group import group_alive
from syftd.history import History

pytestmark = [pytest.mark.slow, pytest.mark.dbus, pytest.mark.timeout(300)]

GRACE_S = 8.0
STEPS = 30


@dataclass(frozen=True)
class Certs:
    """The SuperLink's certificate chain and key, the CA that issued it, and a CA that did not."""

    cert: Path
    key: Path
    ca: Path
    wrong_ca: Path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    home = tmp_path_factory.mktemp("certs")
    ca, other = trustme.CA(), trustme.CA()
    served = ca.issue_cert("127.0.0.1", "localhost")
    found = Certs(home / "cert.pem", home / "key.pem", home / "ca.pem", home / "wrong-ca.pem")
    served.cert_chain_pems[0].write_to_path(str(found.cert))
    served.private_key_pem.write_to_path(str(found.key))
    ca.cert_pem.write_to_path(str(found.ca))
    other.cert_pem.write_to_path(str(found.wrong_ca))
    return found


def superlink(flower_bin: Path, home: Path, certs: Certs, *, node_auth: bool) -> Iterator[SuperLink]:
    link = SuperLink(flower_bin, home, tls=(certs.cert, certs.key, certs.ca), node_auth=node_auth)
    try:
        link.start()
        assert "Uvicorn running on https://" in link.text(), link.text()
        yield link
    finally:
        link.stop()


@pytest.fixture(scope="module")
def tls_link(flower_bin: Path, certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SuperLink]:
    """A SuperLink serving HTTPS only (no ``--insecure``), no node authentication."""
    yield from superlink(flower_bin, tmp_path_factory.mktemp("tls"), certs, node_auth=False)


@pytest.fixture(scope="module")
def auth_link(flower_bin: Path, certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SuperLink]:
    """A SuperLink serving HTTPS with ``--enable-supernode-auth``: only registered keys may join."""
    yield from superlink(flower_bin, tmp_path_factory.mktemp("auth"), certs, node_auth=True)


def node_key(directory: Path, name: str) -> tuple[Path, Path]:
    """A P-384 key pair in the formats flwr 1.42 reads: OpenSSH private key (``flower-supernode
    --auth-supernode-private-key``), OpenSSH public key (``flwr supernode register``)."""
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = directory / f"{name}.key", directory / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    return private, public


@pytest.fixture
async def daemon_for(dbus_mocks: DBusMocks, mocks: MockControl, flower_bin: Path, tmp_path: Path) -> Any:
    started: list[tuple[DaemonProcess, NotifySocket]] = []

    async def start(
        link: SuperLink, trust: str, backoff_s: tuple[float, float] = (30, 18000)
    ) -> tuple[DaemonProcess, NotifySocket]:
        notify = NotifySocket(tmp_path / f"notify-{len(started)}.sock")
        daemon = await DaemonProcess.start(
            daemon_config(
                tmp_path,
                dbus_mocks.address,
                link,
                flower_bin,
                grace_s=GRACE_S,
                trust=trust,
                backoff_initial_s=backoff_s[0],
                backoff_max_s=backoff_s[1],
            ),
            notify=notify,
        )
        started.append((daemon, notify))
        await notify.wait_for(lambda m: "READY" in m, timeout=30)
        return daemon, notify

    yield start
    for daemon, notify in started:
        await daemon.stop()
        notify.close()


def stamp(entry: dict[str, Any]) -> float:
    return datetime.datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()


async def joined(daemon: DaemonProcess, link: SuperLink, after: int = 0) -> tuple[int, float]:
    """The next session's node id once the SuperLink activated it, and seconds from start to joined."""
    started = await daemon.wait_log("flower.supernode_started", timeout=30, after=after)
    entry = await daemon.wait_log("flower.supernode_joined", timeout=60, after=after)
    node_id = int(entry["node_id"])
    # polls: the SuperLink's log file, written by another process, announces nothing
    await wait_until(lambda: f"Activated node_id={node_id}" in link.text(), timeout=10, what="activated")
    return node_id, stamp(entry) - stamp(started)


def run_config(report: Path, *, rounds: int) -> str:
    return (
        f"num-server-rounds={rounds} min-nodes=1 round-timeout=120.0 local-steps={STEPS} step-seconds=0.1 "
        f'on-stop="partial" report-file="{report}"'
    )


async def test_over_tls_with_the_ca_as_root_certificates_it_joins_trains_a_round_and_leaves_on_power_loss(
    daemon_for: Any, mocks: MockControl, tls_link: SuperLink, certs: Certs, tmp_path: Path
) -> None:
    """``root_certificates`` = the CA, no ``insecure``: the SuperNode verifies the SuperLink's HTTPS
    certificate, joins (status "joined as node N"), its update is in round 1 of the example ServerApp;
    AC lost in round 2: it returns a partial update, deactivates at the SuperLink within grace + 1 s,
    and one history entry says done (power_lost)."""
    daemon, notify = await daemon_for(tls_link, f'root_certificates = "{certs.ca}"')
    node, join_s = await joined(daemon, tls_link)
    await notify.wait_for(lambda m: f"joined as node {node}" in m.fields.get("STATUS", ""), timeout=10)
    pid = int(daemon.events("flower.supernode_started")[-1]["pid"])
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"--insecure" not in argv and argv[argv.index(b"--root-certificates") + 1] == bytes(certs.ca), argv
    report = Report(tmp_path / "report.jsonl")
    tls_link.run(EXAMPLE_APP, run_config(report.path, rounds=2))
    one = await report.wait_round(1, timeout=90)
    assert one["results"] == [node] and one["failures"] == [], one
    assert one["steps"][str(node)] == STEPS, one

    mark = len(daemon.logs)
    await daemon.until(
        lambda: any(
            e.get("event") == "flower.supernode_output" and "syftd-example: training" in str(e.get("line"))
            for e in daemon.logs[mark:]
        ),
        timeout=60, what="the ClientApp training in round 2",
    )  # fmt: skip
    deactivated = tls_link.count("/v1/fleet/deactivate-node")
    await mocks.set_on_battery(True)
    finished = await daemon.wait_log("cycle.finished", timeout=GRACE_S + 15, after=mark)
    assert finished["outcome"] == "done" and finished["reason"] == "power_lost", finished
    assert finished["node_id"] == node and finished["replies"] >= 2, finished
    assert finished["leave_s"] <= GRACE_S + 1.0, finished
    await wait_until(lambda: not group_alive(pid), timeout=3, what="the SuperNode's process group gone")
    assert tls_link.count("/v1/fleet/deactivate-node") == deactivated + 1
    two = await report.wait_round(2, timeout=60)
    assert two["steps"].get(str(node), STEPS) < STEPS, f"no partial update: {two}"
    entries = History(tmp_path / "state").entries("fl")
    assert entries and entries[0]["outcome"] == "done" and entries[0]["reason"] == "power_lost", entries
    print(
        f"\ntls: joined {join_s:.2f} s after start, round 1 {one['seconds']:.2f} s, round 2 (left mid-round) "
        f"{two['seconds']:.2f} s, leave {finished['leave_s']:.2f} s, partial {two['steps'].get(str(node))}/{STEPS}"
    )


async def test_a_wrong_ca_fails_the_session_with_words_that_name_the_certificate_problem(
    daemon_for: Any, tls_link: SuperLink, certs: Certs, tmp_path: Path
) -> None:
    """``root_certificates`` = a CA that did not issue the SuperLink's certificate: the SuperNode never
    joins (no node is activated), the session fails with the SuperNode's exit status, and the failure
    in the log, the history and ``status`` names the certificate verification, not just an exit code."""
    activated = tls_link.count("Activated node_id=")
    daemon, _notify = await daemon_for(tls_link, f'root_certificates = "{certs.wrong_ca}"')
    finished = await daemon.wait_log("cycle.finished", timeout=60)
    assert finished["outcome"] == "failed", finished
    assert not daemon.events("flower.supernode_joined")
    assert tls_link.count("Activated node_id=") == activated
    assert "CERTIFICATE_VERIFY_FAILED" in finished["error"] and "TLS" in finished["error"], finished
    # polls: the history file is written after the cycle.finished line
    entries = await wait_until(lambda: History(tmp_path / "state").entries("fl"), timeout=5, what="a history entry")
    assert entries[-1]["outcome"] == "failed" and entries[-1]["error"] == finished["error"], entries
    shown = await control.call(tmp_path / "run", "status", {})
    why = await control.call(tmp_path / "run", "why", {"job": "fl"})
    assert shown["jobs"][0]["last"]["error"] == finished["error"], shown
    print(
        f"\nwrong CA: failed {finished['duration_s']:.2f} s after start: {finished['error']!r}; status "
        f"{shown['jobs'][0]['state']!r}, last {shown['jobs'][0]['last_outcome']!r}; why {why['summary']!r}"
    )


async def test_with_node_authentication_a_registered_key_joins_as_its_node_and_an_unregistered_key_is_refused(
    daemon_for: Any, mocks: MockControl, auth_link: SuperLink, certs: Certs, tmp_path: Path
) -> None:
    """SuperLink ``--enable-supernode-auth``: the key registered with ``flwr supernode register`` joins
    under the node id the registration returned, leaves on power loss and rejoins under the same id
    (a stable identity, unlike automatic mode); a key never registered fails, and says so."""
    private, public = node_key(tmp_path, "node")
    registered = auth_link.register(public)
    trust = f'root_certificates = "{certs.ca}"\nauth_private_key = "{private}"'
    daemon, _notify = await daemon_for(auth_link, trust)
    node, join_s = await joined(daemon, auth_link)
    assert node == registered
    mark = len(daemon.logs)
    await mocks.set_on_battery(True)
    finished = await daemon.wait_log("cycle.finished", timeout=GRACE_S + 15, after=mark)
    assert finished["outcome"] == "expired" and finished["reason"] == "power_lost", finished
    mark = len(daemon.logs)
    await mocks.set_on_battery(False)
    again, rejoin_s = await joined(daemon, auth_link, mark)
    assert again == registered
    await daemon.stop()

    stranger, _ = node_key(tmp_path, "stranger")
    activated = auth_link.count("Activated node_id=")
    daemon, _notify = await daemon_for(auth_link, f'root_certificates = "{certs.ca}"\nauth_private_key = "{stranger}"')
    finished = await daemon.wait_log("cycle.finished", timeout=60)
    assert finished["outcome"] == "failed" and not daemon.events("flower.supernode_joined"), finished
    assert auth_link.count("Activated node_id=") == activated
    error = str(finished["error"])
    assert "Failed to activate SuperNode" in error, error
    print(
        f"\nnode auth: joined as registered node {registered} {join_s:.2f} s after start, rejoined "
        f"{rejoin_s:.2f} s; unregistered key: {error!r}"
    )


@pytest.mark.long
async def test_after_the_supernode_is_killed_its_key_is_refused_while_the_superlink_holds_it_then_rejoins(
    daemon_for: Any, auth_link: SuperLink, certs: Certs, tmp_path: Path
) -> None:
    """An unclean exit (SIGKILL: no deactivation) leaves the key's session ONLINE at the SuperLink until
    its heartbeat window runs out (2 × 30 s after the last heartbeat), and flwr 1.42 refuses to activate
    the same key meanwhile (HTTP 412). The daemon fails those runs with flwr's words, keeps retrying
    after its backoff (each error says why a registered key may be refused), and the job rejoins under
    the same registered node id once the window is over."""
    private, public = node_key(tmp_path, "node")
    registered = auth_link.register(public)
    trust = f'root_certificates = "{certs.ca}"\nauth_private_key = "{private}"'
    # retries at most 3 s apart (full jitter below the cap): the rejoin follows the hold's end closely
    daemon, _notify = await daemon_for(auth_link, trust, backoff_s=(2, 3))
    node, _ = await joined(daemon, auth_link)
    assert node == registered
    supernodes = [
        child
        for child in psutil.Process(daemon.pid).children(recursive=True)
        if any("flower-supernode" in part for part in child.cmdline()[:2])
    ]
    assert len(supernodes) == 1, supernodes
    mark = len(daemon.logs)
    supernodes[0].send_signal(signal.SIGKILL)
    killed_at = time.time()
    killed = await daemon.wait_log("cycle.finished", timeout=30, after=mark)
    assert killed["outcome"] == "failed", killed
    mark = daemon.logs.index(killed) + 1
    refused = await daemon.wait_log("cycle.finished", timeout=60, after=mark)
    assert refused["outcome"] == "failed" and "Failed to activate SuperNode" in str(refused["error"]), refused
    # the window ends 2 × 30 s after the last heartbeat (one every 17.5–22.5 s): ≤ 60 s after the kill
    rejoined = await daemon.wait_log("flower.supernode_joined", timeout=150, after=daemon.logs.index(refused) + 1)
    again = int(rejoined["node_id"])
    assert again == registered
    rejoined_at = stamp(rejoined)
    tries = [e for e in daemon.logs[mark : daemon.logs.index(rejoined)] if e.get("event") == "cycle.finished"]
    assert all("Failed to activate SuperNode" in str(e["error"]) for e in tries), tries
    assert all("held up to 60 s after its last heartbeat" in str(e["error"]) for e in tries), tries
    print(
        f"\nunclean exit: killed by SIGKILL, {len(tries)} activations refused, the first "
        f"{stamp(refused) - killed_at:.1f} s after the kill; rejoined as node {again} "
        f"{rejoined_at - killed_at:.1f} s after it; refused with {str(refused['error'])!r}"
    )
