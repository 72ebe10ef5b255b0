"""`syftd history` with no daemon running: the kept history read straight from the state directory's
files, read-only, in the daemon's own format, saying where it came from; a damaged file is an error
naming the file and the line, and is left byte for byte as it was."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from support.daemon import MNIST_JOB, DaemonProcess, NotifySocket, write_config

from syftd.history import History

PROJECT = Path(__file__).resolve().parents[2]

TWO_JOBS = (
    MNIST_JOB
    + """
[[job]]
name = "cifar"
[job.grid]
url = "http://127.0.0.1:9"
model = "cifar"
version = "1.0"
"""
)


def syftd(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SYFTD_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "syftd", *args], capture_output=True, text=True, timeout=60, cwd=PROJECT, env=env
    )


def recorded(tmp_path: Path, jobs: str = TWO_JOBS) -> tuple[Path, Path]:
    """A configuration and a state directory holding the history the real ``History`` wrote."""
    config = write_config(tmp_path / "syftd.toml", tmp_path, jobs=jobs)
    history = History(tmp_path / "state")
    for i, outcome in enumerate(("done", "expired", "done")):
        history.record(
            "mnist",
            {"job": "mnist", "cycle_id": f"m{i}", "outcome": outcome, "steps": 5, "time": 1e9 + 2 * i},
        )
    cifar = {"job": "cifar", "cycle_id": "c0", "outcome": "failed", "reason": "trainer", "time": 1e9 + 1}
    history.record("cifar", cifar)
    return config, tmp_path / "state"


def tree(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every entry under ``root``: its mode, its mtime and a regular file's bytes."""
    seen = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        content = path.read_bytes() if path.is_file() else b""
        seen[str(path.relative_to(root))] = (info.st_mode, info.st_mtime_ns, content)
    return seen


def test_without_a_daemon_history_reads_the_files_and_says_so(tmp_path: Path) -> None:
    """No daemon: the same table as the daemon's answer, every job's entries oldest first, a note on
    stderr naming the missing socket; --limit keeps the newest N per job; nothing in the state
    directory is created, changed or moved."""
    config, state = recorded(tmp_path)
    before = tree(state)
    text = syftd("--config", str(config), "history")
    assert text.returncode == 0, text.stderr
    rows = text.stdout.splitlines()
    assert rows[0].split()[:4] == ["TIME", "JOB", "CYCLE", "OUTCOME"]
    assert [row.split()[3] for row in rows[1:]] == ["m0", "c0", "m1", "m2"]
    assert "failed (trainer)" in rows[2]
    assert "no syftd is running" in text.stderr and "read the history files in the state directory" in text.stderr
    limited = syftd("--config", str(config), "history", "mnist", "--limit", "2")
    assert [row.split()[3] for row in limited.stdout.splitlines()[1:]] == ["m1", "m2"]
    assert tree(state) == before


def test_without_a_daemon_history_json_names_its_source(tmp_path: Path) -> None:
    """--json: the daemon's keys (jobs, entries) plus source, files and the note; nothing on stderr."""
    config, state = recorded(tmp_path)
    done = syftd("--config", str(config), "history", "--json", "--limit", "1")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    answer = json.loads(done.stdout)
    assert answer["jobs"] == ["mnist", "cifar"]
    assert [e["cycle_id"] for e in answer["entries"]] == ["c0", "m2"]
    assert answer["source"] == "state_dir" and "no syftd is running" in answer["note"]
    assert answer["files"] == [str(state / "jobs" / job / "history.json") for job in ("mnist", "cifar")]


def test_a_stale_socket_of_a_killed_daemon_falls_back_too(tmp_path: Path) -> None:
    """A socket file nobody listens on (the daemon was kill -9'd) is "no daemon" as well."""
    config, _state = recorded(tmp_path)
    (tmp_path / "run").mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "run" / "control.sock"))
    stale.close()
    done = syftd("--config", str(config), "--json", "history", "cifar")
    assert done.returncode == 0, done.stdout
    answer = json.loads(done.stdout)
    assert [e["cycle_id"] for e in answer["entries"]] == ["c0"] and "no syftd is answering" in answer["note"]


def test_an_unknown_job_or_one_without_history(tmp_path: Path) -> None:
    """A job the configuration does not name exits 67 naming the configured ones; a configured job
    that never ran has no entries (and no file is created for it)."""
    config = write_config(tmp_path / "syftd.toml", tmp_path, jobs=TWO_JOBS)
    unknown = syftd("--config", str(config), "--json", "history", "nosuch")
    assert unknown.returncode == 67, unknown.stdout
    error = json.loads(unknown.stdout)
    assert error["kind"] == "unknown_job" and "configured: cifar, mnist" in error["error"]
    empty = syftd("--config", str(config), "history", "mnist")
    assert empty.returncode == 0 and empty.stdout.strip() == "no cycles recorded yet"
    assert not (tmp_path / "state").exists()


def test_without_a_daemon_or_a_readable_configuration_both_are_said(tmp_path: Path) -> None:
    """No daemon and a configuration that cannot be read: exit 69 naming both, no traceback."""
    missing = tmp_path / "missing.toml"
    done = syftd("--config", str(missing), "history", "--runtime-dir", str(tmp_path / "run"))
    assert done.returncode == 69 and "Traceback" not in done.stderr, done.stderr
    assert "no syftd is running" in done.stderr and f"{missing}" in done.stderr and "cannot read" in done.stderr


def test_a_partial_history_file_is_named_with_its_line_and_left_untouched(tmp_path: Path) -> None:
    """A file cut short (a crash before the bytes reached the disk) exits 65 naming the file and the line
    where it ends; its bytes stay as they were and nothing is moved aside, for the daemon or the
    operator to deal with."""
    config, state = recorded(tmp_path)
    path = state / "jobs" / "mnist" / "history.json"
    whole = path.read_bytes()
    cut = whole[: len(whole) * 2 // 3]
    path.write_bytes(cut)
    line = cut.count(b"\n") + 1
    done = syftd("--config", str(config), "history")
    assert done.returncode == 65, done.stderr
    assert f"{path}, line {line}: is not valid JSON" in done.stderr and "cut short" in done.stderr
    assert "left untouched" in done.stderr and "Traceback" not in done.stderr
    as_json = json.loads(syftd("--config", str(config), "--json", "history").stdout)
    assert as_json["kind"] == "damaged_file" and as_json["exit_status"] == 65 and str(path) in as_json["error"]
    assert path.read_bytes() == cut
    assert sorted(p.name for p in path.parent.iterdir()) == ["history.json"]


def test_damage_of_other_kinds_is_named_too(tmp_path: Path) -> None:
    """An empty file, bytes that are not UTF-8, a document without entries, and an entry that is not
    an object: each an error with the file and its line, the file unchanged."""
    config, state = recorded(tmp_path, jobs=MNIST_JOB)
    path = state / "jobs" / "mnist" / "history.json"
    document = json.loads(path.read_bytes())
    document["entries"].insert(1, 42)
    not_an_object = json.dumps(document, indent=1).encode()
    cases = {
        b"": (1, "is empty"),
        b'{"version": 1,\n "entries": [\xff]}': (2, "is not UTF-8 text"),
        b'{"version": 1}\n': (1, 'is not a syftd history: no "entries" list'),
        not_an_object: (not_an_object.split(b"\n").index(b"  42,") + 1, "entry 1 is not an object, got 42"),
    }
    for damaged, (line, problem) in cases.items():
        path.write_bytes(damaged)
        done = syftd("--config", str(config), "history", "mnist")
        assert done.returncode == 65, (damaged, done.stderr)
        assert f"{path}, line {line}: {problem}" in done.stderr, done.stderr
        assert path.read_bytes() == damaged


def test_reading_takes_no_lock_a_daemon_would_wait_for(tmp_path: Path) -> None:
    """The state directory's lock held by another process (a daemon starting, its control socket not
    up yet) does not stop the read, and the read leaves the lock file alone."""
    config, state = recorded(tmp_path, jobs=MNIST_JOB)
    lock = os.open(state / "syftd.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        done = syftd("--config", str(config), "--json", "history")
        assert done.returncode == 0 and len(json.loads(done.stdout)["entries"]) == 3
    finally:
        os.close(lock)


async def test_the_files_give_what_the_daemon_gave(tmp_path: Path) -> None:
    """The entries read from the files are the ones the running daemon answered, key for key."""
    config, _state = recorded(tmp_path)
    notify = NotifySocket(tmp_path / "notify.sock")
    daemon = await DaemonProcess.start(config, notify=notify)
    try:
        await notify.wait_for(lambda m: "READY" in m, timeout=30)
        live = await asyncio.to_thread(syftd, "--config", str(config), "--json", "history")
    finally:
        await daemon.stop()
        notify.close()
    offline = await asyncio.to_thread(syftd, "--config", str(config), "--json", "history")
    from_daemon, from_files = json.loads(live.stdout), json.loads(offline.stdout)
    assert "source" not in from_daemon and from_files["source"] == "state_dir"
    assert from_files["entries"] == from_daemon["entries"] and from_files["jobs"] == from_daemon["jobs"]
