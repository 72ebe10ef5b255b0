"""Operator signals under a flood: a real child process, real kill(2), the real loop.

asyncio's own add_signal_handler loses every SIGUSR1 of a 3,000-signal SIGUSR1/SIGUSR2 flood in most
runs (its wakeup socket fills and the later bytes are dropped); ``OperatorSignals`` must not."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator

import pytest
from support.daemon import PROJECT

ROUNDS = 5

CHILD = textwrap.dedent("""
    import asyncio, signal, sys
    from syftd.signals import OperatorSignals

    async def main() -> None:
        loop = asyncio.get_running_loop()
        counts = {"usr1": 0, "usr2": 0}
        both = asyncio.Event()

        def seen(name):
            counts[name] += 1
            if counts["usr1"] and counts["usr2"]:
                both.set()

        signals = OperatorSignals(loop, {
            signal.SIGUSR1: lambda: seen("usr1"),
            signal.SIGUSR2: lambda: seen("usr2"),
        })
        signals.install()
        for _ in range(int(sys.argv[1])):
            print("ready", flush=True)
            try:
                await asyncio.wait_for(both.wait(), timeout=10)
            except asyncio.TimeoutError:
                pass
            print(counts["usr1"], counts["usr2"], flush=True)
            counts.update(usr1=0, usr2=0)
            both.clear()
        # the parent may still be sending the last round's flood: a SIGUSR2 pending at the release
        # would meet the default action and end this process, so it says when its last kill is done
        sys.stdin.readline()
        signals.release(signal.SIGUSR2)
        print("released", signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL, flush=True)
        signals.close()

    asyncio.run(main())
""")


@pytest.fixture
async def child() -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(ROUNDS),
        cwd=PROJECT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    yield proc
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    return (await asyncio.wait_for(proc.stdout.readline(), timeout=20)).decode().strip()


async def test_a_flood_of_alternating_usr1_and_usr2_runs_both_actions_in_every_round(
    child: asyncio.subprocess.Process,
) -> None:
    """Five rounds of 3,000 alternating SIGUSR1/SIGUSR2: each round runs both actions at least once
    (coalescing is allowed, losing a kind is not), no "wakeup fd" warning reaches stderr, and
    ``release`` gives a signal back to the handler it had before."""
    for round_ in range(ROUNDS):
        assert await line(child) == "ready"
        for i in range(3000):
            os.kill(child.pid, signal.SIGUSR1 if i % 2 else signal.SIGUSR2)
        usr1, usr2 = map(int, (await line(child)).split())
        assert usr1 >= 1 and usr2 >= 1, f"round {round_}: SIGUSR1 ran {usr1} times, SIGUSR2 {usr2} times"
    assert child.stdin is not None
    child.stdin.write(b"every signal sent\n")
    await child.stdin.drain()
    assert await line(child) == "released True"
    assert await asyncio.wait_for(child.wait(), timeout=20) == 0
    assert child.stderr is not None
    stderr = (await child.stderr.read()).decode()
    assert "wakeup fd" not in stderr and "Traceback" not in stderr, stderr
