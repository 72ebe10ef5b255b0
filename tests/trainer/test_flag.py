"""The expiration flag: one-way, first reason wins, readable by name from another process; torch-free."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from support.timing import LOAD_MARGIN_S

from syftd.errors import DiffUnwritable, NonFiniteDiff, TrainerError, WireError
from syftd.outcomes import ExpiryReason, Failure
from syftd.trainer.flag import Expired, ExpiryFlag, ExpiryView
from syftd.trainer.messages import Outcome, Progress, TrainingResult, decode_from_trainer, encode, failure_of


def test_a_new_flag_is_live(new_flag: Callable[[], ExpiryFlag]) -> None:
    """A fresh flag has no reason and its view's checkpoint passes."""
    flag = new_flag()
    view = ExpiryView(flag.name)
    assert (flag.reason, flag.is_expired, view.reason) == (None, False, None)
    view.check()
    view.close()


def test_the_first_reason_wins_and_the_flag_is_never_reset(new_flag: Callable[[], ExpiryFlag]) -> None:
    """expire() returns True once; later reasons are ignored; the view raises Expired with the first."""
    flag = new_flag()
    view = ExpiryView(flag.name)
    assert flag.expire(ExpiryReason.POWER_LOST) is True
    assert flag.expire(ExpiryReason.SHUTDOWN) is False
    assert flag.reason is ExpiryReason.POWER_LOST
    with pytest.raises(Expired) as caught:
        view.check()
    assert caught.value.reason is ExpiryReason.POWER_LOST
    assert not isinstance(caught.value, Exception)
    view.close()


def test_the_reason_stays_readable_after_close(new_flag: Callable[[], ExpiryFlag]) -> None:
    """close() unlinks the block but keeps the reason, and may be called twice."""
    flag = new_flag()
    flag.expire(ExpiryReason.BUDGET)
    flag.close()
    flag.close()
    assert flag.reason is ExpiryReason.BUDGET
    with pytest.raises(RuntimeError, match="one flag per cycle"):
        flag.expire(ExpiryReason.MANUAL)
    with pytest.raises(FileNotFoundError):
        ExpiryView(flag.name)


async def test_wait_returns_the_reason_once_expired(new_flag: Callable[[], ExpiryFlag]) -> None:
    """wait() blocks while live and wakes with the reason when expire() is called."""
    flag = new_flag()
    waiter = asyncio.ensure_future(flag.wait())
    done, _pending = await asyncio.wait({waiter}, timeout=0.05)
    assert not done
    flag.expire(ExpiryReason.THERMAL)
    assert await asyncio.wait_for(waiter, 1 + LOAD_MARGIN_S) is ExpiryReason.THERMAL
    assert await asyncio.wait_for(flag.wait(), 1 + LOAD_MARGIN_S) is ExpiryReason.THERMAL


async def test_another_process_sees_the_reason_by_name(new_flag: Callable[[], ExpiryFlag]) -> None:
    """A separate process attached by name observes the daemon's write and the block survives its exit."""
    flag = new_flag()
    child_code = textwrap.dedent(
        f"""
        import sys
        from syftd.trainer.flag import Expired, ExpiryView
        view = ExpiryView({flag.name!r})
        print("attached", flush=True)
        sys.stdin.readline()
        try:
            view.check()
        except Expired as exc:
            print(exc.reason.label, flush=True)
        """
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", child_code, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdout is not None and child.stdin is not None
    assert await asyncio.wait_for(child.stdout.readline(), 10) == b"attached\n"
    flag.expire(ExpiryReason.NETWORK_LOST)
    child.stdin.write(b"go\n")
    out, _ = await asyncio.wait_for(child.communicate(), 10)
    assert (out, child.returncode) == (b"network_lost\n", 0)
    view = ExpiryView(flag.name)
    assert view.reason is ExpiryReason.NETWORK_LOST
    view.close()


def test_the_daemon_decodes_only_messages() -> None:
    """Frames from a trainer unpickle to Progress or TrainingResult; any other class is refused."""
    result = TrainingResult(Outcome.EXPIRED, ExpiryReason.MEMORY, steps=3, losses=(1.0, 0.5, 0.25))
    progress = Progress(1, 10, 2.3, 0.1, 1 << 20, 0.01)
    assert decode_from_trainer(encode(result)[4:]) == result
    assert decode_from_trainer(encode(progress)[4:]) == progress
    with pytest.raises(pickle.UnpicklingError, match="not a message"):
        decode_from_trainer(encode(subprocess.CompletedProcess(["x"], 0))[4:])
    with pytest.raises(pickle.UnpicklingError, match="not a message"):
        decode_from_trainer(pickle.dumps([1, 2]))


def test_the_daemon_side_modules_do_not_import_torch() -> None:
    """Importing the pool, flag and messages in a fresh interpreter leaves torch unimported."""
    code = (
        "import sys, syftd.trainer.process, syftd.trainer.flag, syftd.trainer.messages;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'PIL')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_a_flag_is_one_block_removed_on_close_with_no_helper_process() -> None:
    """The block exists under /dev/shm while the flag is open, is gone after close, and no tracker process starts."""
    import psutil

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with ExpiryFlag() as flag:
        block = Path("/dev/shm") / flag.name
        assert block.stat().st_size == 1 and block.stat().st_mode & 0o777 == 0o600
        assert {p.pid for p in psutil.Process().children(recursive=True)} == before
    assert not block.exists()


def test_a_failed_run_names_its_kind_when_it_is_not_the_trainers_own() -> None:
    """The daemon does not check the diff again: the trainer's result says storage, non_finite or wire,
    and leaves any other failure the trainer's (None)."""
    assert failure_of(DiffUnwritable("disk full")) is Failure.STORAGE
    assert failure_of(NonFiniteDiff("tensor 1: 1 of 3 values are NaN")) is Failure.NON_FINITE
    assert failure_of(WireError("diff has 1 tensors, the model has 2")) is Failure.WIRE
    assert failure_of(TrainerError("the loss is nan at step 3")) is None
