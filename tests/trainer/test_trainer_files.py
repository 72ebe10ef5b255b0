"""The file hand-off (issue 15): the trainer reads model and plan from the daemon's files and writes the
diff into the spool file itself, durably, so only a small result crosses the socket."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from trainer.helpers import CLIENT_CONFIG, make_job

from syftd.grid import wire
from syftd.spool import SPARE_DIFF
from syftd.trainer.flag import ExpiryFlag
from syftd.trainer.messages import DIFF_UNWRITABLE, Outcome
from syftd.trainer.process import TrainerPool

pytestmark = pytest.mark.torch


async def _train_files(pool: TrainerPool, flag: ExpiryFlag, files: tuple[Path, Path, Path]) -> object:
    return await pool.train(
        make_job(),
        model=b"",
        plan=b"",
        client_config=dict(CLIENT_CONFIG),
        flag=flag,
        on_progress=lambda _p: None,
        cycle_id="c1",
        files=files,
    )


async def test_the_trainer_writes_the_diff_file_and_returns_only_its_size(
    pool: TrainerPool, model: bytes, plan: bytes, new_flag: Callable[[], ExpiryFlag], tmp_path: Path
) -> None:
    """Model and plan from files; the diff lands whole in the named file (0600, no temp left), fits the model,
    and the result carries its size but no bytes and no hash (the daemon's commit hashes the file)."""
    (tmp_path / "model.pb").write_bytes(model)
    (tmp_path / "plan.pb").write_bytes(plan)
    spool = tmp_path / "spool"
    spool.mkdir()
    target = spool / "c1.diff"
    result = await _train_files(pool, new_flag(), (tmp_path / "model.pb", tmp_path / "plan.pb", target))
    assert result.outcome is Outcome.COMPLETED, result  # type: ignore[attr-defined]
    diff = target.read_bytes()
    wire.check_diff(diff, model)
    assert result.diff is None  # type: ignore[attr-defined]
    assert (result.diff_size, result.diff_written) == (len(diff), True)  # type: ignore[attr-defined]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in spool.iterdir()) == ["c1.diff"]


async def test_the_trainer_writes_the_diff_over_the_spare_a_settled_diff_left(
    pool: TrainerPool, model: bytes, plan: bytes, new_flag: Callable[[], ExpiryFlag], tmp_path: Path
) -> None:
    """The spool's spare (a settled diff's file, longer than the new diff) is claimed, written over in
    place and cut to the diff: the diff file holds exactly the new diff, on the spare's inode, and
    neither the spare nor a temp file is left."""
    (tmp_path / "model.pb").write_bytes(model)
    (tmp_path / "plan.pb").write_bytes(plan)
    spool = tmp_path / "spool"
    spool.mkdir()
    spare = spool / SPARE_DIFF
    spare.write_bytes(b"\xff" * (len(model) + 4096))
    inode = spare.stat().st_ino
    target = spool / "c1.diff"
    result = await _train_files(pool, new_flag(), (tmp_path / "model.pb", tmp_path / "plan.pb", target))
    assert result.outcome is Outcome.COMPLETED, result  # type: ignore[attr-defined]
    diff = target.read_bytes()
    wire.check_diff(diff, model)
    assert result.diff_size == len(diff) and target.stat().st_ino == inode  # type: ignore[attr-defined]
    assert sorted(p.name for p in spool.iterdir()) == ["c1.diff"]


async def test_a_diff_the_disk_refuses_comes_back_in_memory_naming_the_write_error(
    pool: TrainerPool, model: bytes, plan: bytes, new_flag: Callable[[], ExpiryFlag], tmp_path: Path
) -> None:
    """The spool directory is missing: COMPLETED with the diff's bytes in the result (for the daemon to
    report from memory rather than lose it), the write error naming the file, no file."""
    (tmp_path / "model.pb").write_bytes(model)
    (tmp_path / "plan.pb").write_bytes(plan)
    target = tmp_path / "gone" / "c1.diff"
    result = await _train_files(pool, new_flag(), (tmp_path / "model.pb", tmp_path / "plan.pb", target))
    assert result.outcome is Outcome.COMPLETED, result  # type: ignore[attr-defined]
    wire.check_diff(result.diff, model)  # type: ignore[attr-defined]
    assert (result.diff_size, result.diff_written) == (len(result.diff), False)  # type: ignore[attr-defined]
    assert result.error.startswith(DIFF_UNWRITABLE) and str(target) in result.error  # type: ignore[attr-defined]
    assert not target.exists()
