"""The per-job history and the worker identity, on a real file system."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from syftd.history import History
from syftd.identity import Identity
from syftd.outcomes import ExpiryReason


@pytest.fixture(name="state")
def _state(tmp_path: Path) -> Path:
    return tmp_path / "state"


class TestHistory:
    def test_the_file_is_json_with_one_entry_per_line_and_updates_rewrite_only_their_line(self, state: Path) -> None:
        """history.json parses as one JSON document; each entry is one line of it, so a change renders
        one entry (a spooled cycle's later ``reported`` changes its own line and no other)."""
        history = History(state, limit=3)
        for n in range(5):
            history.record("mnist", {"cycle_id": f"c{n}", "outcome": "spooled", "time": float(n)})
        history.update("mnist", "c3", outcome="reported")
        path = state / "jobs" / "mnist" / "history.json"
        document = json.loads(path.read_text())
        assert (document["version"], document["job"]) == (1, "mnist")
        assert [(e["cycle_id"], e["outcome"]) for e in document["entries"]] == [
            ("c2", "spooled"),
            ("c3", "reported"),
            ("c4", "spooled"),
        ]
        lines = path.read_text().splitlines()
        assert len(lines) == 2 + 3
        assert [json.loads(line.rstrip(","))["cycle_id"] for line in lines[1:-1]] == ["c2", "c3", "c4"]
        assert History(state, limit=3).entries("mnist") == document["entries"]

    def test_record_and_read_back_across_instances(self, state: Path) -> None:
        """Entries survive a restart (a new History on the same directory), oldest first."""
        history = History(state)
        history.record("mnist", {"cycle_id": "c1", "outcome": "done", "time": 1.0})
        history.record("mnist", {"cycle_id": "c2", "outcome": "expired", "reason": ExpiryReason.POWER_LOST})
        again = History(state)
        assert ["c1", "c2"] == [e["cycle_id"] for e in again.entries("mnist")]
        last = again.last("mnist")
        assert last is not None
        assert (1, "expired") == (last["reason"], last["outcome"])
        assert isinstance(last["time"], float)
        assert again.last("other") is None
        assert [] == again.entries("other")

    def test_bounded_to_the_newest_limit(self, state: Path) -> None:
        """Beyond the limit (200 by default) the oldest entries are dropped, on disk too."""
        history = History(state)
        for i in range(205):
            history.record("mnist", {"cycle_id": f"c{i}", "time": float(i)})
        kept = History(state).entries("mnist")
        assert 200 == len(kept)
        assert ("c5", "c204") == (kept[0]["cycle_id"], kept[-1]["cycle_id"])

    def test_update_marks_a_spooled_cycle_reported(self, state: Path) -> None:
        """A spooled cycle later gains reported=True; an unknown cycle id changes nothing."""
        history = History(state, limit=10)
        history.record("mnist", {"cycle_id": "c1", "outcome": "spooled"})
        history.record("mnist", {"cycle_id": "c2", "outcome": "done"})
        assert history.update("mnist", "c1", reported=True, reported_at=5.0)
        assert not history.update("mnist", "nope", reported=True)
        entries = History(state).entries("mnist")
        assert (True, 5.0, "spooled") == (entries[0]["reported"], entries[0]["reported_at"], entries[0]["outcome"])
        assert "reported" not in entries[1]

    def test_copies_do_not_alias_the_store(self, state: Path) -> None:
        """Mutating what entries() or last() returned does not change the history."""
        history = History(state)
        history.record("mnist", {"cycle_id": "c1"})
        history.entries("mnist")[0]["cycle_id"] = "changed"
        last = history.last("mnist")
        assert last is not None
        last["cycle_id"] = "changed"
        assert "c1" == history.entries("mnist")[0]["cycle_id"]

    def test_non_json_values_are_refused(self, state: Path) -> None:
        """A value that cannot be stored raises TypeError and stores nothing."""
        history = History(state)
        with pytest.raises(TypeError, match="JSON-able"):
            history.record("mnist", {"cycle_id": "c1", "bad": object()})
        assert [] == history.entries("mnist")

    def test_file_is_owner_only(self, state: Path) -> None:
        """history.json is 0600 in 0700 directories."""
        History(state).record("mnist", {"cycle_id": "c1"})
        path = state / "jobs" / "mnist" / "history.json"
        assert 0o600 == stat.S_IMODE(path.stat().st_mode)
        assert 0o700 == stat.S_IMODE(path.parent.stat().st_mode)

    @pytest.mark.parametrize("content", [b"{trunc", b'{"entries": 3}', b"[]", b'{"entries": [1]}'])
    def test_damaged_file_is_moved_aside_and_history_restarts(self, state: Path, content: bytes) -> None:
        """A damaged history.json is kept as history.json.corrupt, logged, and recording goes on."""
        History(state).record("mnist", {"cycle_id": "c0"})
        path = state / "jobs" / "mnist" / "history.json"
        path.write_bytes(content)
        history = History(state)
        with capture_logs() as logs:
            assert [] == history.entries("mnist")
        assert ["history.corrupted"] == [e["event"] for e in logs]
        assert content == path.with_name("history.json.corrupt").read_bytes()
        history.record("mnist", {"cycle_id": "c1"})
        assert ["c1"] == [e["cycle_id"] for e in json.loads(path.read_bytes())["entries"]]

    def test_leftover_temp_file_is_ignored(self, state: Path) -> None:
        """A crash mid-write leaves a temp file beside the old history, which stays whole."""
        History(state).record("mnist", {"cycle_id": "c1"})
        (state / "jobs" / "mnist" / ".history.json.abc.tmp").write_bytes(b'{"entries": [')
        assert ["c1"] == [e["cycle_id"] for e in History(state).entries("mnist")]


class TestIdentity:
    def test_save_load_forget(self, state: Path) -> None:
        """A saved worker id is loaded by a later instance; forgotten, it is gone; forget twice is fine."""
        Identity(state).save_worker("mnist", "3f1c-worker")
        identity = Identity(state)
        assert "3f1c-worker" == identity.load_worker("mnist")
        assert identity.load_worker("other") is None
        identity.forget_worker("mnist")
        identity.forget_worker("mnist")
        assert identity.load_worker("mnist") is None

    def test_worker_id_is_bound_to_its_node(self, state: Path) -> None:
        """A worker id saved for one node is not offered to another."""
        identity = Identity(state)
        identity.save_worker("mnist", "w1", node="http://127.0.0.1:5000")
        assert "w1" == identity.load_worker("mnist", node="http://127.0.0.1:5000")
        assert identity.load_worker("mnist", node="http://127.0.0.1:6000") is None
        assert "w1" == identity.load_worker("mnist")

    def test_file_is_owner_only(self, state: Path) -> None:
        """worker.json is 0600."""
        Identity(state).save_worker("mnist", "w1")
        assert 0o600 == stat.S_IMODE((state / "jobs" / "mnist" / "worker.json").stat().st_mode)

    @pytest.mark.parametrize("content", [b"garbage", b'{"worker_id": 5}', b"[]", b'{"worker_id": ""}'])
    def test_unreadable_file_means_no_worker(self, state: Path, content: bytes) -> None:
        """A damaged worker.json yields None (authenticate afresh), logged."""
        Identity(state).save_worker("mnist", "w1")
        (state / "jobs" / "mnist" / "worker.json").write_bytes(content)
        with capture_logs() as logs:
            assert Identity(state).load_worker("mnist") is None
        assert ["identity.unreadable"] == [e["event"] for e in logs]

    def test_bad_job_name_is_refused(self, state: Path) -> None:
        """A job name that would leave the state directory is refused."""
        with pytest.raises(ValueError, match="invalid job name"):
            Identity(state).save_worker("../x", "w1")
