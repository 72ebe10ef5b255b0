"""The log vocabulary: every event name is a constant of syftd.events, shaped ``area.past_tense``."""

from __future__ import annotations

import re
from pathlib import Path

from syftd import events

NAME = re.compile(r"^[a-z][a-z_]*\.[a-z][a-z_]*$")
LITERAL_EVENT = re.compile(r"\.(debug|info|warning|error|exception|critical)\(\s*\"[a-z_]+\.[a-z_]+\"")


def test_event_names_are_unique_and_shaped_area_dot_name() -> None:
    """Each constant's value is ``area.name`` in lowercase, and no two constants share a value."""
    values = {k: v for k, v in vars(events).items() if k.isupper()}
    assert values, "syftd.events defines no names"
    assert all(NAME.match(v) for v in values.values()), [v for v in values.values() if not NAME.match(v)]
    assert len(set(values.values())) == len(values)


def test_no_module_logs_an_event_name_as_a_literal() -> None:
    """Log calls name their event through syftd.events, so the vocabulary stays in one place."""
    offenders = []
    for path in (Path(events.__file__).parent).rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if LITERAL_EVENT.search(line):
                offenders.append(f"{path.name}:{number}")
    assert offenders == []
