"""The trainer dies with its daemon: a stand-in daemon process spawns the real trainer entry point over a
socketpair, hands it a data source whose loading spins the CPU forever (a hanging plan never reads its
socket), and is killed with SIGKILL. The trainer must be gone within a bound, not spin on as an orphan."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.torch

PROJECT = Path(__file__).resolve().parents[2]
BOUND_S = 20.0  # the kernel acts at once; the margin covers a trainer still importing torch at load 8

PARENT = """
import os, signal, socket, subprocess, sys
from pathlib import Path
from syftd.config import DataConfig
from syftd.trainer.messages import Preload, encode

parent, child = socket.socketpair()
trainer = subprocess.Popen(
    [sys.executable, "-m", "syftd.trainer.worker", "--fd", str(child.fileno()), "--job", "orphan",
     "--idle-exit-s", "600", "--log-format", "json"],
    pass_fds=(child.fileno(),), start_new_session=True,
)
child.close()
parent.sendall(encode(Preload(DataConfig(source="python", path=Path(sys.argv[1]), callable="spin:dataset"))))
print(trainer.pid, flush=True)
while True:
    signal.pause()  # the daemon stand-in lives until the test kills it with -9
"""

SPIN = """
import socket

def dataset():
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"spinning", {address!r})
    while True:
        pass
"""


def test_a_trainer_spinning_in_a_hanging_plan_dies_when_its_daemon_is_killed(tmp_path: Path) -> None:
    """kill -9 of the daemon while its trainer spins: the trainer is gone within BOUND_S."""
    spinning = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # the data source says it spins here
    address = f"\0syftd-orphan-{os.getpid()}-{tmp_path.name}"
    spinning.bind(address)
    spinning.settimeout(120)  # importing torch under load
    (tmp_path / "spin.py").write_text(textwrap.dedent(SPIN.format(address=address)))
    daemon = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
    )
    trainer_pid = None
    try:
        assert daemon.stdout is not None
        trainer_pid = int(daemon.stdout.readline())
        try:
            assert spinning.recv(16) == b"spinning"
        except TimeoutError:
            exited = "" if psutil.pid_exists(trainer_pid) else " (it exited)"
            raise AssertionError(f"the trainer never started spinning in its data source{exited}") from None
        trainer = psutil.Process(trainer_pid)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        gone, _alive = psutil.wait_procs([trainer], timeout=BOUND_S)
        assert gone, f"the trainer {trainer_pid} still runs {BOUND_S} s after its daemon's kill -9"
    finally:
        spinning.close()
        daemon.kill()
        daemon.wait(10)
        if trainer_pid is not None and psutil.pid_exists(trainer_pid):
            os.kill(trainer_pid, signal.SIGKILL)
