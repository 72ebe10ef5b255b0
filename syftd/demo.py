"""``make run``: a full federated cycle on one machine, with no server of the user's own.

Starts the project's PyGrid-compatible node on 127.0.0.1 hosting the MNIST process, writes a demo
configuration into a temporary state directory, and runs the daemon in the foreground with console
logs on synthetic digits, so a new user watches authenticate → train → report → the node averaging,
cycle after cycle, until Ctrl-C. Owns nothing the daemon uses; it is a launcher.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["main"]

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
stable_for_s = 2.0

[job.schedule]
interval_s = {interval}

[job.budget]
max_cycle_s = 600.0
expiry_grace_s = 5.0
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_node(port: int, node: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
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
        [
            sys.executable,
            "-m",
            "syftd",
            "node",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
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
        ],
        start_new_session=True,
    )
    try:
        _wait_for_node(port, node)
        config_path = base / "syftd.toml"
        config_path.write_text(
            _CONFIG.format(
                state=base / "state",
                run=base / "run",
                port=port,
                interval=args.interval,
                log_format="console" if sys.stdout.isatty() else "json",
            )
        )
        print(f"syftd demo: config {config_path}; Ctrl-C stops the daemon, then the node", flush=True)
        from syftd import config as config_mod
        from syftd import log
        from syftd.daemon import Daemon

        config = config_mod.load(config_path)
        log.configure(config.daemon.log_format, config.daemon.log_level)
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
