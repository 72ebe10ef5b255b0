"""How a local node is configured: the PyGrid revision it imitates and its ``NodeOptions``.

Owns the option values and their defaults. Does not own what the node does with them (``node``,
``routes``) nor the command line that fills them (``cli``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_AVERAGING_DELAY_S", "DEFAULT_CACHE_BYTES", "NodeOptions", "Revision"]

DEFAULT_CACHE_BYTES = 8 * 1024 * 1024
"""Enough for the latest checkpoints of a few MNIST-sized processes (1.25 MB each)."""

DEFAULT_AVERAGING_DELAY_S = 0.2
"""A real node averages in a background thread about this long after it answered the report."""


class Revision(str, enum.Enum):
    """Which PyGrid server revision the node imitates on the wire (docs/protocol.md §0.2)."""

    PG_DEV = "pg-dev"
    PG_MASTER = "pg-master"
    R0914 = "0914"


@dataclass(frozen=True, slots=True)
class NodeOptions:
    """How the node behaves: wire revision, route prefix, store, speed-test size, test controls, averaging delay.

    ``prefix`` is ``model-centric`` (2020-07-29 on); ``model_centric`` and ``federated`` imitate older nodes.
    ``checkpoint_dir`` is the node's store on disk: every checkpoint as ``<name>/<version>/checkpoint-N.pb``
    and every reported diff under ``<name>/<version>/diffs/``; None: a temporary directory removed at
    stop. ``cache_bytes`` bounds the bytes of recently used checkpoints kept in memory.
    ``averaging_delay_s`` is how long after a report's answer the node evaluates the cycle (0: at once,
    for fast tests); the report is always answered first.
    """

    revision: Revision = Revision.PG_DEV
    prefix: str = "model-centric"
    checkpoint_dir: Path | None = None
    cache_bytes: int = DEFAULT_CACHE_BYTES
    speed_test_bytes: int = 4 * 1024 * 1024
    test_controls: bool = True
    averaging_delay_s: float = DEFAULT_AVERAGING_DELAY_S
