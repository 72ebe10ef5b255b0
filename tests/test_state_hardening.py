"""A damaged or hostile state directory, on a real file system: foreign entries in the spool (a directory,
a dangling symlink, a FIFO, a file named ``quarantine``), ``history.json`` / ``worker.json`` that are
directories, a ``jobs`` symlink pointing outside, a spool of the previous format, and the one-daemon lock.
Each test builds the attack with real files and shows it is quarantined, moved aside or refused with a log
line, never followed, never hanging (a FIFO read would block forever) and never raising."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from syftd.history import History
from syftd.identity import Identity
from syftd.spool import Spool
from syftd.spoolentry import FORMAT
from syftd.statedir import AlreadyRunning, ForeignEntry, StateLock, open_rewrite, read_regular, rewrite, rewrite_from

DIFF = bytes(range(256)) * 4

# Written by the spool writer of the first format (syftd before the ``format`` field), byte for byte:
# json.dumps(entry.as_dict(), indent=1, sort_keys=True).encode() + b"\n" for these values and DIFF.
FORMAT_1_JSON = (
    b'{\n "created": 1700000000.5,\n "cycle_id": "c-old",\n "job": "mnist",\n "model_id": 1,\n'
    b' "plan_id": 2,\n "request_key": "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr",\n'
    b' "sha256": "785b0751fc2c53dc14a4ce3d800e69ef9ce1009eb327ccf458afe09c242c26c9",\n "size": 1024,\n'
    b' "worker_id": "w-old"\n}\n'
)


def spool_dir(state: Path, job: str = "mnist") -> Path:
    path = state / "jobs" / job / "spool"
    path.mkdir(parents=True, exist_ok=True)
    return path


def add(spool: Spool, cycle_id: str) -> None:
    spool.add("mnist", cycle_id, DIFF, worker_id="w", request_key="k", plan_id=1, model_id=1, created=1.0)


class TestForeignSpoolEntries:
    @pytest.mark.parametrize("kind", ["directory", "dangling symlink", "fifo", "symlink to a real file"])
    def test_a_foreign_entry_named_like_metadata_is_quarantined_and_the_rest_still_pending(
        self, tmp_path: Path, kind: str
    ) -> None:
        """``x.json`` that is a directory, a dangling symlink, a FIFO or a symlink: moved to quarantine/
        with a spool.quarantined line naming what it is; the real entry beside it stays pending; no hang."""
        state = tmp_path / "state"
        spool = Spool(state)
        add(spool, "good")
        foreign = spool_dir(state) / "x.json"
        outside = tmp_path / "outside.json"
        outside.write_text("{}")
        if kind == "directory":
            foreign.mkdir()
        elif kind == "dangling symlink":
            foreign.symlink_to(tmp_path / "nowhere")
        elif kind == "fifo":
            os.mkfifo(foreign)
        else:
            foreign.symlink_to(outside)
        with capture_logs() as logs:
            pending = spool.pending("mnist")
        assert ["good"] == [e.cycle_id for e in pending]
        assert not os.path.lexists(foreign)
        assert os.path.lexists(spool_dir(state) / "quarantine" / "x.json")
        [line] = [e for e in logs if e["event"] == "spool.quarantined"]
        assert "x.json is a" in line["problem"] and "not a regular file" in line["problem"]
        assert outside.read_text() == "{}"  # the symlink's target was not touched

    def test_a_file_named_quarantine_is_moved_aside_and_damaged_entries_still_quarantine(self, tmp_path: Path) -> None:
        """A regular file called ``quarantine`` is moved aside (logged); a damaged entry then still
        goes to a real quarantine/ directory."""
        state = tmp_path / "state"
        spool = Spool(state)
        directory = spool_dir(state)
        (directory / "quarantine").write_text("not a directory")
        (directory / "bad.json").write_text("{ not json")
        with capture_logs() as logs:
            assert [] == spool.pending("mnist")
        assert (directory / "quarantine").is_dir()
        assert (directory / "quarantine" / "bad.json").exists()
        moved = [e for e in logs if e["event"] == "state.foreign_moved"]
        assert moved and moved[0]["kind"] == "a regular file"
        assert Path(moved[0]["moved_to"]).read_text() == "not a directory"

    def test_a_diff_that_is_a_directory_is_quarantined_when_loaded(self, tmp_path: Path) -> None:
        """A ``.diff`` replaced by a directory: quarantined at the sweep, the entry's load raises WireError."""
        state = tmp_path / "state"
        spool = Spool(state)
        add(spool, "c1")
        [entry] = spool.pending("mnist")
        diff = spool_dir(state) / "c1.diff"
        diff.unlink()
        diff.mkdir()
        from syftd.errors import WireError

        with pytest.raises(WireError, match="c1"):
            spool.load_diff(entry)
        assert [] == spool.pending("mnist")


class TestSpoolFormat:
    def test_a_spool_of_the_previous_format_is_pending_and_loads(self, tmp_path: Path) -> None:
        """A ``.json`` written by the first format (no ``format`` field) is pending, never quarantined,
        and its diff loads; new entries carry ``format`` = FORMAT."""
        state = tmp_path / "state"
        directory = spool_dir(state)
        (directory / "c-old.json").write_bytes(FORMAT_1_JSON)
        (directory / "c-old.diff").write_bytes(DIFF)
        spool = Spool(state)
        with capture_logs() as logs:
            [entry] = spool.pending("mnist")
        assert (entry.cycle_id, entry.worker_id, entry.format, entry.size) == ("c-old", "w-old", 1, 1024)
        assert DIFF == spool.load_diff(entry)
        assert not (directory / "quarantine").exists()
        assert [e for e in logs if e["event"] == "spool.quarantined"] == []
        add(spool, "c-new")
        assert json.loads((directory / "c-new.json").read_bytes())["format"] == FORMAT == 2

    def test_a_newer_format_is_left_in_place_and_logged_once(self, tmp_path: Path) -> None:
        """A ``.json`` of a future format is not reported, not quarantined, and logged once."""
        state = tmp_path / "state"
        directory = spool_dir(state)
        newer = json.loads(FORMAT_1_JSON) | {"format": FORMAT + 1}
        (directory / "c-old.json").write_text(json.dumps(newer))
        (directory / "c-old.diff").write_bytes(DIFF)
        spool = Spool(state)
        with capture_logs() as logs:
            assert [] == spool.pending("mnist")
            assert [] == spool.pending("mnist")
        assert (directory / "c-old.json").exists()
        assert len([e for e in logs if e["event"] == "spool.format_unknown"]) == 1


class TestHistoryAndIdentity:
    def test_history_json_that_is_a_directory_is_moved_aside_and_recording_works(self, tmp_path: Path) -> None:
        """history.json as a directory: logged as history.corrupted, moved aside, the next record is kept."""
        state = tmp_path / "state"
        (state / "jobs" / "mnist" / "history.json").mkdir(parents=True)
        history = History(state)
        with capture_logs() as logs:
            history.record("mnist", {"cycle_id": "c1", "outcome": "done"})
        assert [e["cycle_id"] for e in History(state).entries("mnist")] == ["c1"]
        [line] = [e for e in logs if e["event"] == "history.corrupted"]
        assert "is a directory" in line["problem"]
        assert Path(line["moved_to"]).is_dir()

    def test_worker_json_that_is_a_directory_or_fifo_is_moved_aside(self, tmp_path: Path) -> None:
        """worker.json as a directory or a FIFO: no id (the job authenticates afresh), logged, and the
        next save works; a FIFO is never waited on."""
        state = tmp_path / "state"
        identity = Identity(state)
        path = state / "jobs" / "mnist" / "worker.json"
        for make in (Path.mkdir, os.mkfifo):
            path.parent.mkdir(parents=True, exist_ok=True)
            make(path)
            with capture_logs() as logs:
                assert identity.load_worker("mnist") is None
            assert any(e["event"] == "identity.unreadable" and "moved_to" in e for e in logs)
            identity.save_worker("mnist", "w-9")
            assert identity.load_worker("mnist") == "w-9"
            path.unlink()

    def test_a_jobs_symlink_is_not_followed_outside_the_state_directory(self, tmp_path: Path) -> None:
        """``jobs`` → a directory elsewhere: moved aside (logged), a real ``jobs`` made; nothing is written
        through the link."""
        state, outside = tmp_path / "state", tmp_path / "outside"
        state.mkdir()
        outside.mkdir()
        (state / "jobs").symlink_to(outside)
        with capture_logs() as logs:
            Identity(state).save_worker("mnist", "w-1")
        assert list(outside.iterdir()) == []
        assert (state / "jobs").is_dir() and not (state / "jobs").is_symlink()
        assert (state / "jobs" / "mnist" / "worker.json").exists()
        assert any(e["event"] == "state.foreign_moved" and e["kind"] == "a symbolic link" for e in logs)


class TestReadRegular:
    def test_a_fifo_is_refused_without_blocking_and_a_symlink_is_not_followed(self, tmp_path: Path) -> None:
        """read_regular on a FIFO (no writer) returns at once with ForeignEntry; on a symlink too."""
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        with pytest.raises(ForeignEntry, match="a FIFO"):
            read_regular(fifo)
        link = tmp_path / "link"
        (tmp_path / "target").write_text("secret")
        link.symlink_to(tmp_path / "target")
        with pytest.raises(ForeignEntry, match="symbolic link"):
            read_regular(link)


class TestRewrite:
    """Files written over in place (issue 15): the work directory's downloads and the spool's spare."""

    def test_rewrite_writes_over_a_longer_file_on_its_inode_and_cuts_it(self, tmp_path: Path) -> None:
        path = tmp_path / "model.pb"
        path.write_bytes(b"old" * 1000)
        inode = path.stat().st_ino
        path.chmod(0o644)
        rewrite(path, b"new")
        assert (path.read_bytes(), path.stat().st_ino) == (b"new", inode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # owner-only, as a new file would be

    def test_a_fifo_is_refused_without_blocking_and_a_symlink_is_not_followed(self, tmp_path: Path) -> None:
        """open_rewrite fails with an OSError naming what is there; a symlink's target is untouched."""
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        with pytest.raises(OSError, match="is a FIFO, not a regular file"):
            open_rewrite(fifo)
        (tmp_path / "target").write_text("secret")
        (tmp_path / "link").symlink_to(tmp_path / "target")
        with pytest.raises(OSError, match="is a symbolic link, not a regular file"):
            rewrite(tmp_path / "link", b"x")
        assert (tmp_path / "target").read_text() == "secret"

    def test_rewrite_from_claims_the_spare_and_leaves_exactly_the_data_under_the_new_name(self, tmp_path: Path) -> None:
        spare, path = tmp_path / ".spare.diff.tmp", tmp_path / "c2.diff"
        spare.write_bytes(b"last diff, longer than the next one")
        inode = spare.stat().st_ino
        assert rewrite_from(spare, path, b"next diff")
        assert (path.read_bytes(), path.stat().st_ino) == (b"next diff", inode)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c2.diff"]

    def test_without_a_usable_spare_nothing_is_written_and_what_is_there_stays(self, tmp_path: Path) -> None:
        """No spare, a symlink or a FIFO under its name: False (the caller writes a new file); the
        symlink's target is untouched and nothing blocks."""
        spare, path = tmp_path / ".spare.diff.tmp", tmp_path / "c2.diff"
        assert not rewrite_from(spare, path, b"next diff")
        (tmp_path / "target").write_text("secret")
        spare.symlink_to(tmp_path / "target")
        assert not rewrite_from(spare, path, b"next diff")
        spare.unlink()
        os.mkfifo(spare)
        assert not rewrite_from(spare, path, b"next diff")
        assert (tmp_path / "target").read_text() == "secret" and not path.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == [".spare.diff.tmp", "target"]


class TestStateLock:
    def test_a_second_holder_is_refused_with_the_first_ones_pid(self, tmp_path: Path) -> None:
        """Another process holds the lock: AlreadyRunning names its pid and has exit status 75; once it
        dies (kill -9 included) the lock is free."""
        state = tmp_path / "state"
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(f"""
                    import signal
                    from pathlib import Path
                    from syftd.statedir import StateLock
                    StateLock(Path({str(state)!r})).acquire()
                    print("held", flush=True)
                    while True:
                        signal.pause()  # another process holding the state lock until killed
                """),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            lock = StateLock(state)
            with pytest.raises(AlreadyRunning, match=f"pid {holder.pid}") as refused:
                lock.acquire()
            assert refused.value.status == 75
            holder.kill()
            holder.wait(10)
            lock.acquire()
            assert (state / "syftd.lock").read_text().strip() == str(os.getpid())
            lock.release()
        finally:
            holder.kill()
            holder.wait(10)
