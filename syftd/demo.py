"""``make run``: a full federated cycle on one machine, with no server of the user's own.

Starts the project's PyGrid-compatible node on 127.0.0.1 hosting the MNIST process, writes a demo
configuration into a temporary state directory, and runs the daemon in the foreground with console
logs on synthetic digits, so a new user watches authenticate → train → report → the node averaging,
cycle after cycle, until Ctrl-C. Owns the launcher and what it prints for a person: the commands to
inspect the running demo, and one short line per cycle (``CycleLines``) beside the structured log of
the daemon and of the node; also the node's command line (``node_command``), which the tests' node
process uses too. Owns nothing the daemon uses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import IO, Any

__all__ = ["CycleLines", "main", "node_command"]

_CONFIG = """\
# written by `make run` (syftd.demo); the node runs on this machine, so the job does not wait for
# the network, but it does wait for AC power like any syftd job.
[daemon]
state_dir = "{state}"
runtime_dir = "{run}"
log_format = "{log_format}"
log_level = "info"
shutdown_grace_s = 8.0

[[job]]
name = "mnist"

[job.grid]
url = "ws://127.0.0.1:{port}"
model = "mnist"
version = "1.0"

[job.data]
source = "synthetic-digits"
samples = 4000

[job.constraints]
requires_external_power = true
requires_network = false
# small, so the first cycle starts within a second of the daemon being ready
stable_for_s = 0.5

[job.schedule]
interval_s = {interval}

[job.budget]
max_cycle_s = 600.0
expiry_grace_s = 5.0
"""


class CycleLines:
    """One short line per cycle for the person watching: number, steps, loss, accuracy, duration and the
    node's new checkpoint. The daemon's ``cycle.finished`` and the node's ``grid_node.cycle_completed``
    arrive in either order, from two threads; a done cycle is printed once both are in."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._number = 0
        self._cycles: list[str] = []  # done cycles waiting for their checkpoint
        self._checkpoints: list[int] = []  # checkpoints waiting for their cycle

    def daemon_event(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        """A structlog processor: notes ``cycle.finished`` and passes every event on unchanged."""
        if event.get("event") == "cycle.finished":
            self.cycle_finished(event)
        return event

    def cycle_finished(self, event: MutableMapping[str, Any]) -> None:
        """The daemon's record of one cycle."""
        with self._lock:
            self._number += 1
            line = f"cycle {self._number}: {_summary(event)}"
            if event.get("outcome") != "done":
                self._write(line)
            elif self._checkpoints:
                self._write(f"{line}, node checkpoint {self._checkpoints.pop(0)}")
            else:
                self._cycles.append(line)

    def node_checkpoint(self, checkpoint: int) -> None:
        """The node averaged a cycle into ``checkpoint``."""
        with self._lock:
            if self._cycles:
                self._write(f"{self._cycles.pop(0)}, node checkpoint {checkpoint}")
            else:
                self._checkpoints.append(checkpoint)


def _summary(event: MutableMapping[str, Any]) -> str:
    outcome, steps = event.get("outcome"), event.get("steps") or 0
    parts = [f"{outcome}" + (f" ({event['reason']})" if event.get("reason") else ""), f"{steps} steps"]
    if event.get("loss") is not None:
        parts.append(f"loss {float(event['loss']):.3f}")
    if event.get("accuracy") is not None:
        parts.append(f"accuracy {float(event['accuracy']) * 100:.1f} %")
    if event.get("duration_s") is not None:
        parts.append(f"{float(event['duration_s']):.1f} s")
    return ", ".join(parts)


def _forward_node_output(stream: IO[str], lines: CycleLines, render: Callable[[dict[str, Any]], str] | None) -> None:
    """Pass the node's output through (rendered for a terminal when ``render`` is given), noting its checkpoints."""
    for raw in stream:
        text = raw.rstrip("\n")
        try:
            event = json.loads(text)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            print(text, flush=True)
            continue
        print(render(event) if render is not None else text, flush=True)
        if event.get("event") == "grid_node.cycle_completed" and isinstance(event.get("checkpoint"), int):
            lines.node_checkpoint(event["checkpoint"])


def _console_renderer() -> Callable[[dict[str, Any]], str]:
    """The node's JSON lines rendered as the daemon's console lines are, for a terminal."""
    import structlog

    console = structlog.dev.ConsoleRenderer(colors=True)
    return lambda event: str(console(None, "info", event))


def _syftd_command() -> str:
    """How to call syftd from another terminal: the script beside this interpreter, by name when on PATH."""
    script = Path(sys.executable).parent / "syftd"
    if not script.exists():
        return f"{sys.executable} -m syftd"
    on_path = shutil.which("syftd")
    return "syftd" if on_path is not None and Path(on_path).resolve() == script.resolve() else str(script)


def _print_inspection(config_path: Path) -> None:
    command = f"{_syftd_command()} -c {config_path}"
    print("syftd demo: inspect it from another terminal:", flush=True)
    for verb in ("status", "why mnist", "simulate power-loss --for 20 mnist", "simulate clear"):
        print(f"  {command} {verb}", flush=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_node(port: int, node: subprocess.Popen[str], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    url = f"http://127.0.0.1:{port}/model-centric/retrieve-model?name=mnist&version=1.0"
    while time.monotonic() < deadline:
        if node.poll() is not None:
            raise SystemExit(f"syftd demo: the grid node exited with status {node.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)  # polling a child's port while it imports torch; nothing to await here
    raise SystemExit(f"syftd demo: the grid node did not answer on port {port} within {timeout_s:.0f} s")


def node_command(port: int, *args: str, host: str = "127.0.0.1") -> list[str]:
    """The argv of ``syftd node serve`` on ``host:port`` with JSON log lines, under this interpreter."""
    serve = ["node", "serve", "--host", host, "--port", str(port), "--log-format", "json"]
    return [sys.executable, "-m", "syftd", *serve, *args]


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the daemon's exit status."""
    parser = argparse.ArgumentParser(prog="python -m syftd.demo", description=__doc__)
    parser.add_argument("--max-updates", type=int, default=100, help="training steps per cycle")
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate of the hosted plan")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between cycles")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state directory")
    args = parser.parse_args(argv)

    base = Path(tempfile.mkdtemp(prefix="syftd-demo-"))
    port = _free_port()
    print(f"syftd demo: state in {base}; local PyGrid-compatible node on 127.0.0.1:{port}", flush=True)
    node = subprocess.Popen(
        node_command(
            port,
            "--host-mnist",
            "--max-updates",
            str(args.max_updates),
            "--lr",
            str(args.lr),
            "--num-cycles",
            "0",
            "--min-diffs",
            "1",
            "--max-diffs",
            "1",
            "--checkpoint-dir",
            str(base / "node"),
        ),
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    interactive = sys.stdout.isatty()
    lines = CycleLines(lambda text: print(f"==> {text}", flush=True))
    render = _console_renderer() if interactive else None
    assert node.stdout is not None
    threading.Thread(target=_forward_node_output, args=(node.stdout, lines, render), daemon=True).start()
    try:
        _wait_for_node(port, node)
        config_path = base / "syftd.toml"
        config_path.write_text(
            _CONFIG.format(
                state=base / "state",
                run=base / "run",
                port=port,
                interval=args.interval,
                log_format="console" if interactive else "json",
            )
        )
        print(f"syftd demo: config {config_path}; Ctrl-C stops the daemon, then the node", flush=True)
        _print_inspection(config_path)
        print("syftd demo: one '==>' line per cycle, beside the structured log", flush=True)
        import structlog

        from syftd import configfile, log
        from syftd.daemon import Daemon

        config = configfile.load(config_path)
        log.configure(config.daemon.log_format, config.daemon.log_level)
        processors = list(structlog.get_config()["processors"])
        structlog.configure(processors=[*processors[:-1], lines.daemon_event, processors[-1]])
        return asyncio.run(Daemon(config).run())
    finally:
        if node.poll() is None:
            os.killpg(node.pid, signal.SIGTERM)
            try:
                node.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
