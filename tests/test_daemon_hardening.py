"""The real daemon against a hostile start-up and hostile local clients: foreign spool entries, a second
daemon on the same state directory, a read-only state directory (a read-only bind mount), a runtime
directory others can write to, a planted control-socket symlink, a token file that is a FIFO or a
symlink, a 2,000-deep configuration on SIGHUP, a flood of 3,000 signals, shared-memory flags of a killed
daemon, and control clients that send bad types or send slowly. Real processes, sockets, files, signals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support.daemon import MNIST_JOB, PROJECT, DaemonProcess, NotifySocket, write_config

from syftd import control
from syftd.control import CLIENT_TIMEOUT_S
from syftd.errors import ControlError


@pytest.fixture
async def notify(tmp_path: Path) -> AsyncIterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


async def started(config: Path, notify: NotifySocket, **kwargs: object) -> DaemonProcess:
    daemon = await DaemonProcess.start(config, notify=notify, **kwargs)  # type: ignore[arg-type]
    try:
        await notify.wait_for(lambda m: "READY" in m, timeout=30)
    except AssertionError:
        await daemon.stop()
        raise AssertionError("no READY=1; output:\n" + "\n".join(daemon.raw[-30:])) from None
    return daemon


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` as a read-only bind mount of itself; skips where mount is not permitted."""
    bound = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True, text=True)
    if bound.returncode != 0:
        pytest.skip(f"mount --bind is not permitted here: {bound.stderr.strip()}")
    try:
        ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], capture_output=True, text=True)
        if ro.returncode != 0:
            pytest.skip(f"a read-only remount is not permitted here: {ro.stderr.strip()}")
        with pytest.raises(OSError, match="Read-only file system"):  # the write must really fail, even as root
            (path / ".probe").write_bytes(b"x")
        yield
    finally:
        subprocess.run(["umount", str(path)], check=False)


async def test_foreign_spool_entries_never_block_start_up(tmp_path: Path, notify: NotifySocket) -> None:
    """A directory, a dangling symlink and a FIFO named ``*.json`` and a file named ``quarantine`` in
    the spool: READY=1 all the same (no hang on the FIFO), each one logged."""
    config = write_config(tmp_path / "syftd.toml", tmp_path, jobs=MNIST_JOB)
    spool = tmp_path / "state" / "jobs" / "mnist" / "spool"
    spool.mkdir(parents=True)
    (spool / "x.json").mkdir()
    (spool / "y.json").symlink_to(tmp_path / "nowhere")
    os.mkfifo(spool / "z.json")
    (spool / "quarantine").write_text("a file")
    daemon = await started(config, notify)
    try:
        quarantined = {Path(line["moved"][0]).name for line in daemon.events("spool.quarantined")}
        assert {"x.json", "y.json", "z.json"} <= quarantined, daemon.raw[-20:]
        assert daemon.events("state.foreign_moved")
        assert (spool / "quarantine").is_dir()
    finally:
        await daemon.stop()
    assert not any("Traceback" in line for line in daemon.raw)


async def test_a_second_daemon_on_the_same_state_directory_is_refused_naming_the_first(
    tmp_path: Path, notify: NotifySocket
) -> None:
    """One daemon per state directory: a second one exits 75 with one line naming the first one's pid,
    touches nothing, and the first keeps running."""
    config = write_config(tmp_path / "syftd.toml", tmp_path, jobs=MNIST_JOB)
    first = await started(config, notify)
    try:
        second = await DaemonProcess.start(config)
        assert await second.wait_exit(30) == 75
        refusals = [line for line in second.raw if "another syftd" in line]
        assert len(refusals) == 1 and f"pid {first.pid}" in refusals[0], second.raw
        assert not any("Traceback" in line for line in second.raw)
        assert first.proc.returncode is None
        answer = await control.call(tmp_path / "run", "status", {})
        assert answer["pid"] == first.pid
    finally:
        await first.stop()


async def test_a_read_only_state_directory_at_start_is_a_clear_error(tmp_path: Path) -> None:
    """The state directory on a read-only mount: exit status 73 and one line naming the directory and
    the cause, no traceback."""
    config = write_config(tmp_path / "syftd.toml", tmp_path, jobs=MNIST_JOB)
    state = tmp_path / "state"
    state.mkdir()
    with read_only(state):
        daemon = await DaemonProcess.start(config)
        assert await daemon.wait_exit(30) == 73
    lines = [line for line in daemon.raw if "is not usable" in line]
    assert lines and str(state) in lines[0] and "Read-only file system" in lines[0], daemon.raw
    assert not any("Traceback" in line for line in daemon.raw)


@pytest.mark.parametrize("attack", ["world-writable", "other owner", "socket symlink"])
async def test_an_unsafe_runtime_directory_is_refused(tmp_path: Path, attack: str) -> None:
    """A runtime directory writable by others without the sticky bit, one owned by another user, or a
    symlink planted at the socket's path: exit status 78 and a line naming it; the symlink's target is
    neither connected to nor removed."""
    config = write_config(tmp_path / "syftd.toml", tmp_path, jobs=MNIST_JOB)
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    target = tmp_path / "elsewhere"
    target.write_text("keep me")
    if attack == "world-writable":
        run.chmod(0o777)
        expected = "writable by group or others"
    elif attack == "other owner":
        os.chown(run, 65534, 65534)
        expected = "owned by uid 65534"
    else:
        (run / control.SOCKET_NAME).symlink_to(target)
        expected = "is a symbolic link"
    daemon = await DaemonProcess.start(config)
    assert await daemon.wait_exit(30) == 78
    assert any(expected in line for line in daemon.raw), daemon.raw[-10:]
    assert not any("Traceback" in line for line in daemon.raw)
    assert target.read_text() == "keep me"


async def test_a_sticky_world_writable_runtime_directory_owned_by_root_is_accepted(
    tmp_path: Path, notify: NotifySocket
) -> None:
    """/tmp-like (mode 1777, owned by root): other users cannot replace the daemon's socket there."""
    config = write_config(tmp_path / "syftd.toml", tmp_path, jobs=MNIST_JOB)
    (tmp_path / "run").mkdir()
    (tmp_path / "run").chmod(0o1777)
    daemon = await started(config, notify)
    await daemon.stop()


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
async def test_a_token_file_that_is_a_fifo_or_a_symlink_is_refused_by_name(
    tmp_path: Path, notify: NotifySocket, kind: str
) -> None:
    """grid.token_file as a FIFO (once read as empty) or a symlink to another file (whose content was
    sent): grid.token_refused says which, the daemon is READY, nothing is read through the link."""
    token = tmp_path / "token"
    if kind == "fifo":
        os.mkfifo(token, 0o600)
    else:
        secret = tmp_path / "other-secret"
        secret.write_text("not-the-token")
        secret.chmod(0o600)
        token.symlink_to(secret)
    job = MNIST_JOB + f'token_file = "{token}"\n'
    config = write_config(tmp_path / "syftd.toml", tmp_path, jobs=job)
    daemon = await started(config, notify)
    try:
        refused = await daemon.wait_log("grid.token_refused", timeout=10)
        assert ("FIFO" if kind == "fifo" else "symlink") in refused["error"]
        assert not daemon.events("grid.token_empty")
    finally:
        await daemon.stop()


async def test_a_reload_of_a_2000_deep_config_keeps_the_running_one(tmp_path: Path, notify: NotifySocket) -> None:
    """SIGHUP after the file became 2,000-deep nested arrays: config.reload_failed, READY=1 with the
    reason, the daemon alive and answering with its old configuration."""
    config = write_config(tmp_path / "syftd.toml", tmp_path, jobs=MNIST_JOB)
    daemon = await started(config, notify)
    try:
        config.write_text(config.read_text() + "\n[daemon.extra]\nx = " + "[" * 2000 + "]" * 2000 + "\n")
        mark = len(notify.messages)
        daemon.signal(signal.SIGHUP)
        failed = await daemon.wait_log("config.reload_failed", timeout=20)
        assert "nested" in failed["problems"][0]
        _, ready = await notify.wait_for(lambda m: "READY" in m, after=mark)
        assert "reload failed" in ready.fields["STATUS"]
        answer = await control.call(tmp_path / "run", "status", {})
        assert [job["name"] for job in answer["jobs"]] == ["mnist"]
    finally:
        await daemon.stop()
    assert not any("RecursionError" in line for line in daemon.raw)


async def test_a_flood_of_3000_signals_prints_no_wakeup_fd_traceback(tmp_path: Path, notify: NotifySocket) -> None:
    """3,000 SIGUSR1/SIGUSR2 as fast as the kernel takes them: no "wakeup fd" lines in the output, and
    the daemon still stops cleanly on SIGTERM."""
    config = write_config(tmp_path / "syftd.toml", tmp_path, jobs=MNIST_JOB)
    daemon = await started(config, notify)
    try:
        for i in range(3000):
            os.kill(daemon.pid, signal.SIGUSR1 if i % 2 else signal.SIGUSR2)
        await daemon.wait_log("job.triggered", timeout=20)
        answer = await control.call(tmp_path / "run", "status", {})
        assert answer["pid"] == daemon.pid
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait_exit(30) == 0
    finally:
        await daemon.stop()
    noise = [line for line in daemon.raw if "wakeup fd" in line or "Traceback" in line]
    assert noise == [], noise[:5]


async def test_shared_memory_flags_of_a_killed_daemon_are_removed_at_the_next_start(
    tmp_path: Path, notify: NotifySocket
) -> None:
    """Flags created by a process that was killed -9 are unlinked when the daemon starts; a flag whose
    creator still runs (this test process) is left alone."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm on this system")
    creator = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        textwrap.dedent("""
            import signal
            from syftd.trainer.flag import ExpiryFlag
            flags = [ExpiryFlag() for _ in range(3)]
            print(" ".join(f.name for f in flags), flush=True)
            while True:
                signal.pause()  # holds its flags until killed
        """),
        stdout=asyncio.subprocess.PIPE,
        cwd=PROJECT,
    )
    assert creator.stdout is not None
    names = (await asyncio.wait_for(creator.stdout.readline(), 60)).decode().split()
    creator.kill()
    await asyncio.wait_for(creator.wait(), 10)
    assert names and all((shm / name).exists() for name in names)
    from syftd.trainer.flag import ExpiryFlag

    with ExpiryFlag() as live:
        config = write_config(tmp_path / "syftd.toml", tmp_path, jobs=MNIST_JOB)
        daemon = await started(config, notify)
        try:
            removed = daemon.events("state.orphan_flags_removed")
            assert removed and set(names) <= set(removed[0]["names"])
            assert not any((shm / name).exists() for name in names)
            assert (shm / live.name).exists()
        finally:
            await daemon.stop()


class TestControlRequests:
    @pytest.fixture
    async def daemon(self, tmp_path: Path, notify: NotifySocket) -> AsyncIterator[DaemonProcess]:
        config = write_config(tmp_path / "syftd.toml", tmp_path, jobs=MNIST_JOB)
        daemon = await started(config, notify)
        yield daemon
        await daemon.stop()

    @pytest.mark.parametrize(
        ("verb", "params", "field"),
        [
            ("trigger", {"job": ["mnist"]}, "job: must be a string"),
            ("trigger", {"force": "no"}, "force: must be true or false"),
            ("trigger", {"force": 1}, "force: must be true or false"),
            ("simulate", {"event": "power-loss", "for_s": float("nan")}, "for_s: must be a positive finite"),
            ("simulate", {"event": "power-loss", "for_s": float("inf")}, "for_s: must be a positive finite"),
            ("simulate", {"event": "power-loss", "for_s": True}, "for_s: must be a positive finite"),
            ("simulate", {"event": ["power-loss"]}, "event: must be a string"),
            ("expire", {"job": {"a": 1}}, "job: must be a string"),
            ("trigger", {"jbo": "mnist"}, "jbo: unknown field"),
        ],
    )
    async def test_a_field_of_the_wrong_type_is_a_400_naming_it_and_does_nothing(
        self, tmp_path: Path, daemon: DaemonProcess, verb: str, params: dict[str, object], field: str
    ) -> None:
        """Over the real socket: the answer names the field, no 500, no traceback, no action taken."""
        with pytest.raises(ControlError, match=field.replace("(", r"\(")):
            await control.call(tmp_path / "run", verb, params)
        assert not daemon.events("job.triggered") and not daemon.events("job.forced")
        assert not daemon.events("conditions.simulated")
        assert not any("Traceback" in line for line in daemon.raw)

    async def test_the_cli_refuses_for_nan(self, tmp_path: Path, daemon: DaemonProcess) -> None:
        """``syftd simulate power-loss --for nan`` is refused and nothing is simulated."""
        result = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "syftd",
                "simulate",
                "power-loss",
                "--for",
                "nan",
                "--runtime-dir",
                str(tmp_path / "run"),
            ],
            capture_output=True,
            text=True,
            cwd=PROJECT,
            timeout=60,
        )
        assert result.returncode != 0 and "for_s" in result.stderr, result
        assert not daemon.events("conditions.simulated")

    async def test_a_client_sending_its_request_slowly_is_disconnected(
        self, tmp_path: Path, daemon: DaemonProcess
    ) -> None:
        """A client dripping its headers one byte every 0.5 s, and one that stops mid-body, are cut off
        within the client timeout (plus a margin), while other clients are served meanwhile."""
        path = str(tmp_path / "run" / control.SOCKET_NAME)
        bound = CLIENT_TIMEOUT_S + 10
        dripper_reader, dripper = await asyncio.open_unix_connection(path)
        stalled_reader, stalled = await asyncio.open_unix_connection(path)
        stalled.write(
            b'POST /v1/trigger HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{"jo'
        )
        await stalled.drain()

        async def drip() -> None:
            with contextlib.suppress(OSError):
                for byte in b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
                    dripper.write(bytes([byte]))
                    await dripper.drain()
                    await asyncio.sleep(0.5)  # behaviour: a client dripping one byte per half second

        began = time.monotonic()
        dripping = asyncio.create_task(drip())
        try:
            answer = await control.call(tmp_path / "run", "status", {})
            assert answer["pid"] == daemon.pid
            assert await asyncio.wait_for(dripper_reader.read(), bound) == b""
            stalled_answer = await asyncio.wait_for(stalled_reader.read(), bound)
            assert stalled_answer == b"" or b" 408 " in stalled_answer.split(b"\r\n", 1)[0]
            assert time.monotonic() - began < bound
        finally:
            dripping.cancel()
            dripper.close()
            stalled.close()
        assert json.dumps(await control.call(tmp_path / "run", "status", {}))
