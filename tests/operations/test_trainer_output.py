"""The log stream under load with real trainers: two jobs training at once while the machine is busy,
the daemon writing every line (its own and the trainers', relayed): each line is one JSON object.
A trainer's raw output (a library warning, a thread's traceback) arrives as events naming job and cycle."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path

import psutil
import pytest
from support.harness import Harness

from syftd.relay import OutputLimit

pytestmark = [pytest.mark.torch, pytest.mark.dbus, pytest.mark.slow, pytest.mark.timeout(300)]

NOISY_DATA = """
import threading
import warnings

import torch


def dataset():
    warnings.warn("noisy_data: this loader uses an old API", UserWarning)
    worker = threading.Thread(target=lambda: 1 / 0, name="loader")
    worker.start()
    worker.join()
    return torch.utils.data.TensorDataset(torch.rand(64, 28, 28), torch.randint(0, 10, (64,)))
"""


CHATTY_DATA = """
import sys
import threading
import time

import torch


def _chatter():
    i = 0
    while True:
        print(f"chatty loader line {i} " + "x" * (i * 37 % 3000), file=sys.stderr, flush=True)
        i += 1
        if i % 200 == 0:
            time.sleep(0.01)  # behaviour: a loader chattering in bursts


def dataset():
    threading.Thread(target=_chatter, daemon=True).start()
    return torch.utils.data.TensorDataset(torch.rand(4096, 28, 28), torch.randint(0, 10, (4096,)))
"""


def job_table(name: str, model: str, url: str, data_dir: Path, extra: str = "") -> str:
    return f"""
[[job]]
name = "{name}"
[job.grid]
url = "{url}"
model = "{model}"
version = "1.0"
[job.data]
source = "python"
callable = "chatty_data:dataset"
path = "{data_dir}"
[job.constraints]
stable_for_s = 0.2
[job.schedule]
interval_s = 0
backoff_initial_s = 0.5
[job.budget]
max_cycle_s = 120
expiry_grace_s = 2.0
[job.trainer]
threads = 1
idle_exit_s = 30
progress_interval_s = 0
{extra}
"""


def write_two_jobs(h: Harness, first: str, second: str) -> Path:
    url = h.node.node.url.replace("http://", "ws://")
    h.config_path = h.base / "syftd.toml"
    h.config_path.write_text(
        f"""
[daemon]
state_dir = "{h.base / "state"}"
runtime_dir = "{h.base / "run"}"
log_format = "json"
log_level = "debug"
shutdown_grace_s = 4.0
max_concurrent_jobs = 2
[daemon.conditions]
bus_address = "{h.bus.address}"
power_source = "upower"
network_source = "networkmanager"
sleep_source = "logind"
"""
        + job_table("alpha", first, url, h.base)
        + job_table("beta", second, url, h.base)
    )
    return h.config_path


async def test_two_trainers_and_the_daemon_under_load_write_only_whole_json_lines(harness: Harness) -> None:
    """Two jobs train 1000 steps each at the same time, every step reported, each trainer's data loader
    printing a stream of raw lines up to 3 KiB, beside two CPU hogs on this 2-core machine: every line of
    the daemon's output parses as one JSON object, the trainers write into pipes the daemon reads, and
    their output arrives relayed as events naming their job, bounded by the relay's limit, the rest
    counted in trainer.output_dropped."""
    first = harness.host(max_updates=1000)
    second = harness.host(max_updates=1000)
    (harness.base / "chatty_data.py").write_text(CHATTY_DATA)
    write_two_jobs(harness, first, second)
    hogs = [await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass") for _ in range(2)]
    try:
        daemon = await harness.start()
        for job in ("alpha", "beta"):
            entry = await daemon.wait_log("cycle.finished", job=job, timeout=180)
            assert entry["outcome"] == "done", entry
            trainer_pids = [
                p.pid for p in psutil.Process(daemon.pid).children() if "syftd.trainer" in " ".join(p.cmdline())
            ]
            daemon_out = os.stat(f"/proc/{daemon.pid}/fd/1")
            for pid in trainer_pids:  # the trainers write into a pipe the daemon reads, not into its stream
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    err = os.stat(f"/proc/{pid}/fd/2")
                    assert (err.st_dev, err.st_ino) != (daemon_out.st_dev, daemon_out.st_ino)
    finally:
        for hog in hogs:
            hog.kill()
            await hog.wait()
    await harness.stop()
    lines = [line for line in daemon.raw if line]
    broken = []
    for line in lines:
        try:
            if not isinstance(json.loads(line), dict):
                broken.append(line)
        except ValueError:
            broken.append(line)
    assert broken == [], broken[:5]
    relayed = [e for e in daemon.logs if e.get("event") == "trainer.started"]
    assert {e.get("job") for e in relayed} >= {"alpha", "beta"}
    assert all("trainer_pid" in e for e in relayed)
    chatter = [e for e in daemon.logs if e.get("event") == "trainer.output" and "chatty" in e.get("text", "")]
    assert {e["job"] for e in chatter} == {"alpha", "beta"} and len(chatter) >= 2 * OutputLimit().burst_lines
    dropped = daemon.events("trainer.output_dropped")  # the loaders print far over the relay's limit
    assert {e["job"] for e in dropped} == {"alpha", "beta"} and all(e["dropped_lines"] > 0 for e in dropped)
    finished = [(e["job"], e["outcome"], e["steps"], e["train_s"]) for e in daemon.events("cycle.finished")]
    counted = sum(e["dropped_lines"] for e in dropped)
    print(f"\n{len(lines)} lines, all whole JSON; {len(chatter)} chatter lines logged, {counted} dropped; {finished}")


async def test_a_trainer_traceback_and_warning_are_captured_as_events(harness: Harness) -> None:
    """A data loader that warns and whose thread dies: trainer.output (warning) and trainer.traceback
    (error) name the job and the cycle; the raw text never reaches the stream unwrapped."""
    harness.host(max_updates=3)
    data_dir = harness.base / "noisy"
    data_dir.mkdir()
    (data_dir / "noisy_data.py").write_text(NOISY_DATA)
    harness.write_config()
    text = harness.config_path.read_text().replace(
        'source = "synthetic-digits"\nsamples = 256',
        f'source = "python"\ncallable = "noisy_data:dataset"\npath = "{data_dir}"',
    )
    harness.config_path.write_text(text)
    daemon = await harness.start()
    traceback = await daemon.wait_log("trainer.traceback", timeout=120)
    assert traceback["level"] == "error" and traceback["job"] == "mnist" and traceback.get("cycle")
    assert (
        traceback["error_type"] == "ZeroDivisionError" and "Traceback (most recent call last)" in traceback["exception"]
    )
    warning = next(e for e in daemon.events("trainer.output") if "UserWarning" in e["text"])
    assert warning["level"] == "warning" and warning["job"] == "mnist"
    assert not [line for line in daemon.raw if line.startswith(("Traceback", "  File"))]
