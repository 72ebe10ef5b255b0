"""The spool on a real file system: durability, permissions, crash safety, and corrupt entries."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from syftd.errors import WireError
from syftd.spool import SPARE_DIFF, Spool
from syftd.spoolentry import SpoolEntry

DIFF = bytes(range(256)) * 40


@pytest.fixture(name="spool")
def _spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "state")


def add(spool: Spool, cycle_id: str = "c1", diff: bytes = DIFF, job: str = "mnist") -> SpoolEntry:
    return spool.add(
        job,
        cycle_id,
        diff,
        worker_id="w-1",
        request_key="k" * 64,
        plan_id=2,
        model_id=1,
        created=1000.0 + len(cycle_id),
    )


def files(spool: Spool, job: str = "mnist") -> list[str]:
    return sorted(p.name for p in (spool.state_dir / "jobs" / job / "spool").iterdir())


class TestRoundTrip:
    def test_added_entry_is_pending_with_its_metadata(self, spool: Spool) -> None:
        """An added diff is pending with job, ids, size and sha256, and its bytes load back."""
        entry = add(spool)
        [pending] = spool.pending("mnist")
        assert entry == pending
        assert ("mnist", "c1", "w-1", 2, 1, len(DIFF)) == (
            pending.job,
            pending.cycle_id,
            pending.worker_id,
            pending.plan_id,
            pending.model_id,
            pending.size,
        )
        assert DIFF == spool.load_diff(pending)
        assert ["c1.diff", "c1.json"] == files(spool)

    def test_pending_is_oldest_first_and_per_job(self, spool: Spool) -> None:
        """Entries come back in creation order; another job's entries are not mixed in."""
        spool.add("mnist", "b", b"2", worker_id="w", request_key="k", plan_id=1, model_id=1, created=2.0)
        spool.add("mnist", "a", b"3", worker_id="w", request_key="k", plan_id=1, model_id=1, created=3.0)
        spool.add("mnist", "z", b"1", worker_id="w", request_key="k", plan_id=1, model_id=1, created=1.0)
        spool.add("other", "x", b"0", worker_id="w", request_key="k", plan_id=1, model_id=1, created=0.0)
        assert ["z", "b", "a"] == [e.cycle_id for e in spool.pending("mnist")]
        assert ["x"] == [e.cycle_id for e in spool.pending("other")]

    def test_reported_and_discarded_never_reappear(self, spool: Spool) -> None:
        """mark_reported and discard remove the entry for good, logged; no file is left but the last
        settled diff's, as the spare the next diff is written over (its bytes are the last diff's)."""
        first, second = add(spool, "c1"), add(spool, "c2")
        with capture_logs() as logs:
            spool.mark_reported(first)
            spool.discard(second, "Cycle not found!")
            spool.mark_reported(first)
        assert [] == spool.pending("mnist")
        assert [SPARE_DIFF] == files(spool)
        events = [(e["event"], e.get("reason")) for e in logs]
        assert ("spool.discarded", "Cycle not found!") in events
        assert ("spool.reported", None) in events

    def test_request_key_is_not_in_the_repr(self, spool: Spool) -> None:
        """The request key acts as a credential: not in reprs (hence not in logs)."""
        assert "k" * 64 not in repr(add(spool))

    def test_bad_names_cannot_escape_the_directory(self, spool: Spool) -> None:
        """A job name or cycle id with a path in it is refused."""
        with pytest.raises(ValueError, match="invalid job name"):
            add(spool, job="../etc")
        with pytest.raises(ValueError, match="invalid cycle id"):
            add(spool, cycle_id="../x")
        with pytest.raises(ValueError, match="invalid cycle id"):
            add(spool, cycle_id=".hidden")


class TestPermissions:
    def test_files_0600_directories_0700(self, spool: Spool) -> None:
        """Every directory below the state dir is 0700 and every spool file 0600, whatever the umask."""
        old = os.umask(0o002)
        try:
            add(spool)
        finally:
            os.umask(old)
        root = spool.state_dir
        for directory in (root, root / "jobs", root / "jobs" / "mnist", root / "jobs" / "mnist" / "spool"):
            assert 0o700 == stat.S_IMODE(directory.stat().st_mode), directory
        for name in files(spool):
            path = root / "jobs" / "mnist" / "spool" / name
            assert 0o600 == stat.S_IMODE(path.stat().st_mode), name


class TestCrashSafety:
    """Each crash point, reproduced by leaving the files that step would have left."""

    def spooldir(self, spool: Spool) -> Path:
        return spool.state_dir / "jobs" / "mnist" / "spool"

    def test_crash_while_writing_the_diff(self, spool: Spool) -> None:
        """A partial temp file of the diff: nothing pending, recover removes it."""
        d = spool._dir("mnist")
        (d / ".c1.diff.abc123.tmp").write_bytes(DIFF[:100])
        assert [] == spool.pending("mnist")
        assert [".c1.diff.abc123.tmp"] == spool.recover("mnist")
        assert [] == files(spool)

    def test_crash_after_the_diff_before_its_metadata(self, spool: Spool) -> None:
        """A diff without its .json (and a partial .json temp): not pending; recover removes both."""
        add(spool)
        d = self.spooldir(spool)
        (d / "c1.json").unlink()
        (d / ".c1.json.xyz.tmp").write_bytes(b'{"job": "mn')
        assert [] == spool.pending("mnist")
        assert {".c1.json.xyz.tmp", "c1.diff"} == set(spool.recover("mnist"))
        assert [] == files(spool)

    @pytest.mark.parametrize("left", [("c1.diff", "c1.json"), ("c1.json",), ()])
    @pytest.mark.parametrize("marker", ["reported", "discarded"])
    def test_crash_after_the_marker(self, spool: Spool, marker: str, left: tuple[str, ...]) -> None:
        """The marker written, the diff/.json/marker deletion cut anywhere: never pending again."""
        add(spool)
        d = self.spooldir(spool)
        (d / f"c1.{marker}").write_bytes(b"{}")
        for name in {"c1.diff", "c1.json"} - set(left):
            (d / name).unlink()
        assert [] == spool.pending("mnist")
        spool.recover("mnist")
        assert [] == files(spool)

    def test_a_settled_diff_becomes_the_spare_and_a_restart_removes_it(self, spool: Spool) -> None:
        """The reported entry's diff file is renamed to the spare (not unlinked), its .json and marker
        removed; ``recover`` at start removes the spare without counting it as something a crash left."""
        entry = add(spool, "c1")
        inode = os.stat(spool.state_dir / "jobs" / "mnist" / "spool" / "c1.diff").st_ino
        spool.mark_reported(entry)
        assert files(spool) == [SPARE_DIFF]
        assert os.stat(spool.state_dir / "jobs" / "mnist" / "spool" / SPARE_DIFF).st_ino == inode
        assert spool.recover("mnist") == [] and files(spool) == []

    def test_a_directory_under_the_spares_name_stops_neither_start_nor_tidy(self, spool: Spool) -> None:
        """A directory under the spare's name: ``recover`` does not remove it, the spool's sweep moves it to
        ``quarantine/`` (as any foreign entry under one of its names), and the settled diff becomes the spare."""
        entry = add(spool, "c1")
        (spool.state_dir / "jobs" / "mnist" / "spool" / SPARE_DIFF).mkdir()
        assert spool.recover("mnist") == []
        spool.mark_reported(entry)
        assert files(spool) == [SPARE_DIFF, "quarantine"]
        assert (spool.state_dir / "jobs" / "mnist" / "spool" / SPARE_DIFF).is_file()

    def test_readding_a_cycle_clears_a_stale_marker(self, spool: Spool) -> None:
        """A fresh add of a cycle id with a stale marker is pending (the marker belonged to the old one)."""
        add(spool)
        (self.spooldir(spool) / "c1.reported").write_bytes(b"{}")
        (self.spooldir(spool) / "c1.json").unlink()
        add(spool)
        assert ["c1"] == [e.cycle_id for e in spool.pending("mnist")]

    def test_sigkill_at_any_moment_leaves_only_whole_entries(self, tmp_path: Path) -> None:
        """A real child adding and reporting in a loop, killed with SIGKILL mid-way, three times:
        every pending entry loads and verifies, and no reported entry is pending."""
        state = tmp_path / "state"
        script = textwrap.dedent(f"""
            import sys
            from pathlib import Path
            from syftd.spool import Spool
            spool = Spool(Path({str(state)!r}))
            i = int(sys.argv[1])
            while True:
                diff = bytes([i % 251]) * (50_000 + i * 997 % 40_000)
                entry = spool.add("mnist", f"c{{i}}", diff, worker_id="w", request_key="k", plan_id=1, model_id=1)
                print("added", i, file=sys.stderr, flush=True)
                if i % 2:
                    spool.mark_reported(entry)
                    print("reported", i, file=sys.stderr, flush=True)
                i += 1
        """)
        reported: set[str] = set()
        start = 0
        for kill_after in (7, 12, 23):
            env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
            proc = subprocess.Popen(
                [sys.executable, "-c", script, str(start)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            assert proc.stderr is not None
            for _ in range(kill_after):
                kind, number = proc.stderr.readline().split()
                if kind == "reported":
                    reported.add(f"c{number}")
                start = int(number) + 1
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            proc.stderr.close()
            start += 2
        spool = Spool(state)
        spool.recover("mnist")
        pending = spool.pending("mnist")
        assert pending
        assert not reported & {e.cycle_id for e in pending}
        for entry in pending:
            assert entry.size == len(spool.load_diff(entry))
        assert not [name for name in files(spool) if name.startswith(".")]


class TestCorruption:
    def test_damaged_diff_is_quarantined_never_sent(self, spool: Spool) -> None:
        """A flipped byte: load_diff raises, logs spool.quarantined, and the entry is no longer pending."""
        entry = add(spool)
        path = spool.state_dir / "jobs" / "mnist" / "spool" / "c1.diff"
        data = bytearray(path.read_bytes())
        data[10] ^= 0xFF
        path.write_bytes(bytes(data))
        with capture_logs() as logs, pytest.raises(WireError, match="damaged"):
            spool.load_diff(entry)
        [event] = [e for e in logs if e["event"] == "spool.quarantined"]
        assert ("mnist", "c1", "error") == (event["job"], event["cycle_id"], event["log_level"])
        assert [] == spool.pending("mnist")
        quarantine = spool.state_dir / "jobs" / "mnist" / "spool" / "quarantine"
        assert ["c1.diff", "c1.json"] == sorted(p.name for p in quarantine.iterdir())
        assert 0o700 == stat.S_IMODE(quarantine.stat().st_mode)

    def test_truncated_and_missing_diffs_are_quarantined(self, spool: Spool) -> None:
        """A diff cut short, and a diff gone, are both refused."""
        short, gone = add(spool, "c1"), add(spool, "c2")
        d = spool.state_dir / "jobs" / "mnist" / "spool"
        (d / "c1.diff").write_bytes(DIFF[:-1])
        (d / "c2.diff").unlink()
        with pytest.raises(WireError, match="damaged"):
            spool.load_diff(short)
        with pytest.raises(WireError, match="missing"):
            spool.load_diff(gone)
        assert [] == spool.pending("mnist")

    @pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"job": "mnist"}', b"\xff\xfe"])
    def test_unreadable_metadata_is_quarantined(self, spool: Spool, content: bytes) -> None:
        """A .json that does not parse into an entry is quarantined with a log line and skipped."""
        add(spool, "c1")
        add(spool, "c2")
        (spool.state_dir / "jobs" / "mnist" / "spool" / "c1.json").write_bytes(content)
        with capture_logs() as logs:
            assert ["c2"] == [e.cycle_id for e in spool.pending("mnist")]
        assert ["spool.quarantined"] == [e["event"] for e in logs]
