"""The tests' own rules: no sleep synchronises (every literal ``sleep(<n>)`` in tests/ outside the
benchmarks is the behaviour under test and says so with a ``# behaviour:`` comment on its line or the
line above), and the one waiting module (support.waiting) waits for events, fails at its timeout and
names what it waited for."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from support.waiting import Changes, poll_until, poll_until_blocking

TESTS = Path(__file__).resolve().parent
MARKER = "# behaviour:"
LITERAL_SLEEP = re.compile(r"\bsleep\(\s*[0-9][0-9_]*(\.[0-9_]*)?\s*\)")
EXEMPT: dict[tuple[str, str], str] = {
    # (file under tests/, the code on the line): why it carries no marker; none now
}


def unmarked_sleeps(text: str) -> list[tuple[int, str]]:
    """(line number, code) of each literal sleep with ``# behaviour:`` neither on its line nor in the
    comment lines right above it."""
    lines = text.splitlines()
    found = []
    for number, line in enumerate(lines, 1):
        if not LITERAL_SLEEP.search(line):
            continue
        above = number - 2
        comment = [line]
        while above >= 0 and lines[above].strip().startswith("#"):
            comment.append(lines[above])
            above -= 1
        if not any(MARKER in part for part in comment):
            found.append((number, line.split("#", 1)[0].strip()))
    return found


def test_every_literal_sleep_in_the_tests_is_marked_as_the_behaviour_under_test() -> None:
    """tests/ outside tests/bench: a ``sleep(<number>)`` without ``# behaviour:`` is a sleep that synchronises;
    await an event instead (support.waiting), or poll through support.waiting where nothing sends one."""
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        relative = path.relative_to(TESTS).as_posix()
        if relative.startswith("bench/") or relative in ("support/waiting.py", "test_test_hygiene.py"):
            continue
        for number, code in unmarked_sleeps(path.read_text()):
            if (relative, code) not in EXEMPT:
                offenders.append(f"tests/{relative}:{number}: {code}")
    assert offenders == [], "sleeps that synchronise (mark the behaviour under test with # behaviour:):\n" + (
        "\n".join(offenders)
    )


def test_the_check_finds_an_unmarked_sleep_and_accepts_a_marked_one() -> None:
    """The scan can fail: a bare sleep is reported with its line; one marked on its line or above is not."""
    text = "\n".join(
        [
            "import time",
            "time.sleep" + "(0.05)  # wait for the frame",
            "# behaviour: a child that hangs",
            "# until it is killed",
            "time.sleep" + "(60)",
            "x = 1  # behaviour: not a comment line, so not the sleep's",
            "time.sleep" + "(1)",
            "await asyncio.sleep" + "(0)  # behaviour: one loop turn",
            "await asyncio.sleep(every)",
        ]
    )
    assert unmarked_sleeps(text) == [(2, "time.sleep" + "(0.05)"), (7, "time.sleep" + "(1)")]


async def test_changes_wake_a_waiter_only_when_notified() -> None:
    """``Changes.until`` looks again on a notification and on nothing else: a change nobody notifies fails
    the wait at its timeout, naming what it waited for; a notified one ends it at once."""
    state = {"ready": False}
    looked = asyncio.Event()

    def ready() -> bool:
        looked.set()  # the waiter has taken a look; it suspends right after a look that finds nothing
        return state["ready"]

    changes = Changes()
    waiting = asyncio.ensure_future(changes.until(ready, what="the thing ready", timeout=0.3))
    await looked.wait()
    state["ready"] = True  # changed, and nobody says so
    with pytest.raises(AssertionError, match=r"not within 0\.3 s .*: the thing ready"):
        await waiting
    state["ready"] = False
    looked.clear()
    waiting = asyncio.ensure_future(changes.until(ready, what="the thing ready", timeout=30))
    await looked.wait()
    state["ready"] = True
    changes.notify()
    assert await asyncio.wait_for(waiting, 5) is True


async def test_a_bounded_poll_names_what_it_waited_for_and_takes_coroutine_predicates() -> None:
    """``poll_until`` returns the first truthy look (a coroutine predicate is awaited) and fails at its
    timeout with what it waited for; ``poll_until_blocking`` the same without a loop."""
    looks = []

    async def third_look() -> int | None:
        looks.append(1)
        return len(looks) if len(looks) == 3 else None

    assert await poll_until(third_look, what="a third look", timeout=30, every=0.001) == 3
    with pytest.raises(AssertionError, match=r"not within 0\.05 s: the file written"):
        await poll_until(lambda: False, what="the file written", timeout=0.05, every=0.01)
    with pytest.raises(AssertionError, match=r"not within 0\.05 s: the process gone"):
        poll_until_blocking(lambda: False, what="the process gone", timeout=0.05, every=0.01)
