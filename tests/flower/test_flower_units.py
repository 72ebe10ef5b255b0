"""The pure parts of the Flower backend: the SuperNode's command line and environment, the checks
of its settings, its output, the outcome rules, the sleep grace and the restart delay."""

from __future__ import annotations

from pathlib import Path

import pytest

from syftd.flower.command import (
    PRIVACY_ENV,
    SupernodeSpec,
    command,
    environment,
    node_config_problem,
    superlink_problem,
)
from syftd.flower.run import activation_hint
from syftd.flower.session import OutputReader, SessionOutcome, classify, restart_delay, sleep_grace

SPEC = SupernodeSpec(
    executable=Path("/opt/flower/bin/flower-supernode"),
    superlink="superlink.example.org:9092",
    stop_file=Path("/run/syftd/flower/job/stop"),
    flwr_home=Path("/var/lib/syftd/flower/job"),
    runtime_port=9101,
    root_certificates=Path("/etc/ca.pem"),
    auth_private_key=Path("/etc/node.key"),
    trusted_entities=Path("/etc/trusted.yaml"),
    node_config=("partition-id=3", 'data-dir="/srv/data"'),
)


def test_the_command_passes_tls_auth_trusted_entities_and_node_config_through() -> None:
    """Every security option the config names reaches flwr; the stop file leads --node-config."""
    argv = command(SPEC)
    assert argv[0] == "/opt/flower/bin/flower-supernode"
    pairs = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert pairs["--superlink"] == "superlink.example.org:9092" and pairs["--port"] == "9101"
    assert pairs["--root-certificates"] == "/etc/ca.pem"
    assert pairs["--auth-supernode-private-key"] == "/etc/node.key"
    assert pairs["--trusted-entities"] == "/etc/trusted.yaml"
    assert argv[-2:] == [
        "--node-config",
        "syftd-stop-file='/run/syftd/flower/job/stop' partition-id=3 data-dir=\"/srv/data\"",
    ]
    assert "--insecure" not in argv


def test_insecure_only_when_asked() -> None:
    plain = SupernodeSpec(Path("/x/flower-supernode"), "127.0.0.1:9092", Path("/s"), Path("/h"), insecure=True)
    assert "--insecure" in command(plain) and "--root-certificates" not in command(plain)


def test_a_stop_file_path_flwr_cannot_carry_is_refused() -> None:
    bad = SupernodeSpec(Path("/x/flower-supernode"), "127.0.0.1:9092", Path("/tmp/it's here"), Path("/h"))
    with pytest.raises(ValueError, match="quotes or white space"):
        command(bad)


def test_the_child_environment_turns_telemetry_and_the_update_check_off() -> None:
    """Privacy defaults are explicit, and syftd's own PYTHONPATH does not leak into the Flower venv."""
    env = environment(SPEC, {"PATH": "/usr/bin", "PYTHONPATH": "/src/syftd", "FLWR_TELEMETRY_ENABLED": "1"})
    assert env["FLWR_TELEMETRY_ENABLED"] == "0" and env["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    assert set(PRIVACY_ENV) == {"FLWR_TELEMETRY_ENABLED", "FLWR_DISABLE_UPDATE_CHECK"}
    assert env["PATH"] == "/opt/flower/bin:/usr/bin"  # flower-supernode starts flower-superexec by name
    assert env["FLWR_HOME"] == "/var/lib/syftd/flower/job" and env["SYFTD_STOP_FILE"] == "/run/syftd/flower/job/stop"
    assert "PYTHONPATH" not in env


@pytest.mark.parametrize(
    ("address", "insecure", "problem"),
    [
        ("superlink.example.org:9092", False, None),
        ("127.0.0.1:9092", True, None),
        ("[::1]:9092", True, None),
        ("localhost:8000", True, None),
        ("superlink.example.org:9092", True, "only to a loopback"),
        ("10.0.0.5:9092", True, "only to a loopback"),
        ("https://superlink.example.org:9092", False, "without a scheme"),
        ("superlink.example.org", False, "host:port"),
        ("superlink.example.org:70000", False, "port must be"),
        ("[zz::1]:9092", False, "IPv6"),
    ],
)
def test_superlink_addresses(address: str, insecure: bool, problem: str | None) -> None:
    found = superlink_problem(address, insecure=insecure)
    assert (found is None) if problem is None else (found is not None and problem in found), found


@pytest.mark.parametrize(
    ("entry", "ok"),
    [
        ("partition-id=0", True),
        ("lr=0.1", True),
        ("flag=true", True),
        ('name="node a"', True),
        ("name='x'", True),
        ("syftd-stop-file='/x'", False),
        ("no-value=", False),
        ("novalue", False),
        ("bad key=1", False),
        ("name=unquoted", False),
        ('name="it\'s"', True),
        ('name="a"b"', False),
        ("list=[1, 2]", False),
    ],
)
def test_node_config_entries(entry: str, ok: bool) -> None:
    assert (node_config_problem(entry) is None) is ok, node_config_problem(entry)


def test_the_output_reader_follows_node_id_messages_and_replies() -> None:
    """flwr 1.42's lines, colours included."""
    reader = OutputReader()
    assert reader.feed("\x1b[92mINFO \x1b[0m:      SuperNode ID: 5121502448805929445") == "joined"
    assert reader.node_id == 5121502448805929445
    assert reader.feed("\x1b[92mINFO \x1b[0m:      Received successfully") == "received" and reader.busy
    assert reader.feed("INFO :      Sending: train message (ID: ab12)") is None
    assert reader.feed("\x1b[92mINFO \x1b[0m:      Sent successfully") == "replied" and not reader.busy
    assert reader.replies == 1 and reader.tail[-1] == "INFO :      Sent successfully"
    for i in range(50):
        reader.feed(f"line {i}")
    assert len(reader.tail) == 20


WRONG_CA_OUTPUT = """\
\x1b[92mINFO \x1b[0m:      Starting Flower SuperNode
INFO:     Uvicorn running on http://127.0.0.1:9101 (Press CTRL+C to quit)
\x1b[91mERROR \x1b[0m:     SSL/TLS handshake error detected.
\x1b[91mERROR \x1b[0m:     Exit Code: 305
Failed to initialize the connection to the SuperLink.
[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate (_ssl.c:1006)
The SuperNode could not establish a connection to the SuperLink.

For more information, visit: <https://flower.ai/docs/framework/1.42/en/ref-exit-codes/305.html>
INFO:     Shutting down
\x1b[92mINFO \x1b[0m:      Starting Flower SuperExec
\x1b[93mWARNING \x1b[0m:   Connection attempt failed, retrying in 0.79 seconds
\x1b[92mINFO \x1b[0m:      SuperExec terminated gracefully.
"""


def test_the_output_reader_keeps_flwrs_exit_message_which_names_the_problem() -> None:
    """flwr 1.42 exits with status 1 for every error and logs what went wrong (here a SuperLink
    certificate from another CA) in a block that its helpers' lines then push out of the tail."""
    reader = OutputReader()
    for line in WRONG_CA_OUTPUT.splitlines():
        reader.feed(line)
    assert reader.exit_message == [
        "SSL/TLS handshake error detected.",
        "Exit Code: 305",
        "Failed to initialize the connection to the SuperLink.",
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate "
        "(_ssl.c:1006)",
        "The SuperNode could not establish a connection to the SuperLink.",
    ]
    assert "CERTIFICATE_VERIFY_FAILED" not in " ".join(reader.tail[-3:])
    quiet = OutputReader()
    for line in ("ERROR :     an old error", *["INFO :      busy"] * 5, "ERROR :     Exit Code: 305", "what"):
        quiet.feed(line)
    assert quiet.exit_message == ["Exit Code: 305", "what"]  # an error long before is not the cause


def test_outcomes() -> None:
    """Done once it replied; expired with syftd's reason before any; failed when it ended on its own."""
    assert classify(stop_reason="on_battery", replies=2, exit_status=0) == (SessionOutcome.DONE, "on_battery")
    assert classify(stop_reason="sleep", replies=0, exit_status=0) == (SessionOutcome.EXPIRED, "sleep")
    outcome, why = classify(stop_reason=None, replies=3, exit_status=1)
    assert outcome is SessionOutcome.FAILED and why is not None and "status 1" in why


def test_sleep_cuts_the_grace_to_fit_the_inhibit_delay() -> None:
    """grace + the SuperNode's leave (1.25 s allowed) ≤ InhibitDelayMaxUSec − 1 s, never negative or longer."""
    assert sleep_grace(30.0, 5.0) == pytest.approx(2.75)
    assert sleep_grace(2.0, 5.0) == 2.0
    assert sleep_grace(5.0, 1.0) == 0.0
    assert sleep_grace(5.0, None) == 5.0


def test_restart_delay_doubles_up_to_its_cap() -> None:
    assert [restart_delay(n, initial_s=30, max_s=300) for n in (1, 2, 3, 4, 5, 100)] == [30, 60, 120, 240, 300, 300]


def test_the_daemon_side_never_imports_flwr() -> None:
    """The daemon and everything it uses for Flower jobs load without flwr (which needs protobuf < 7)."""
    import subprocess
    import sys

    code = (
        "import sys, syftd.daemon, syftd.flower.supervisor, syftd.flower.config, syftd.flower.reaper; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'flwr'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_refused_activation_of_a_keyed_node_names_both_causes_and_nothing_else_gets_a_hint() -> None:
    """flwr says "Failed to activate SuperNode" for an unregistered key and for a key whose last session
    is still held after an unclean exit: a keyed job's error names both; other failures, and the same
    words without a key, get no hint."""
    refused = ["Exit Code: 305", "[code: 2004] Failed to activate SuperNode."]
    hint = activation_hint(refused, keyed=True)
    assert hint is not None and "not registered" in hint and "up to 60 s after its last heartbeat" in hint
    assert activation_hint(refused, keyed=False) is None
    assert activation_hint(["Exit Code: 305", "SSL/TLS handshake error detected."], keyed=True) is None
    assert activation_hint([], keyed=True) is None
