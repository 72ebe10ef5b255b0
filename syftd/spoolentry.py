"""A spooled diff's record: the fields of ``<cycle_id>.json`` and the formats syftd reads.

Owns ``SpoolEntry`` (what a spooled diff needs to be reported later: job, cycle, worker id, request
key, plan and model ids, created time, size, sha256), its parsing and ``FORMAT``: 2 is written now; a
file without ``format`` is the first format (the same fields) and is read like any other; a newer
one raises ``NewerFormat``. Pure. Does not own the files or the steps that write them (``syftd.spool``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FORMAT", "NewerFormat", "SpoolEntry"]

FORMAT = 2
"""The ``.json`` format written now; 1 is the first format (no ``format`` field, the same fields)."""


class NewerFormat(ValueError):
    """A ``.json`` written by a newer syftd: left in place, not reported."""


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One spooled diff's metadata; ``request_key`` is a credential and stays out of reprs and logs."""

    job: str
    cycle_id: str
    worker_id: str
    request_key: str = field(repr=False)
    plan_id: int | str
    model_id: int | str
    created: float
    size: int
    sha256: str
    format: int = FORMAT

    def as_dict(self) -> dict[str, Any]:
        """Every field, as written to the ``.json`` file."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Any) -> SpoolEntry:
        """Parse a ``.json`` file's content.

        Raises:
            ValueError: a missing field or a field of the wrong type.
        """
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        version = raw.get("format", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"format must be a positive integer, got {version!r}")
        if version > FORMAT:
            raise NewerFormat(f"format {version} is newer than this syftd's {FORMAT}")
        try:
            entry = cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls) if f.name != "format"}, format=version)
        except KeyError as exc:
            raise ValueError(f"missing field {exc.args[0]!r}") from exc
        for name in ("job", "cycle_id", "worker_id", "request_key", "sha256"):
            if not isinstance(getattr(entry, name), str):
                raise ValueError(f"{name} must be a string")
        size, created = raw["size"], raw["created"]
        if not isinstance(size, int) or not isinstance(created, int | float):
            raise ValueError("size must be an integer and created a number")
        return entry
