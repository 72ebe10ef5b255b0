"""Model averaging on the local node: ``new = old − mean(diffs)``, per tensor, in the model's dtype.

Owns the arithmetic of PyGrid's hard-coded mean (docs/protocol.md §7: the sum of the diffs divided by their
count, then subtracted from the latest checkpoint) and the check that a diff fits its model before
it is used. Does not own which diffs belong to a cycle or when a cycle is ready (``state``), nor
the State wire format (``wire``). Imports numpy; the daemon never imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from syftd.errors import WireError
from syftd.grid import wire

__all__ = ["apply_mean_diff", "diff_problem"]


def diff_problem(diff: bytes, model: bytes) -> str | None:
    """Why ``diff`` cannot be averaged into ``model`` (docs/protocol.md §5.4), or None when it can."""
    try:
        wire.check_diff(diff, model)
    except WireError as exc:
        return str(exc)
    return None


def apply_mean_diff(model: bytes, diffs: Sequence[bytes]) -> bytes:
    """The State bytes of ``model − mean(diffs)``; dtype and shapes kept.

    Raises:
        WireError: the model or a diff does not parse, or a diff does not match the model.
        ValueError: ``diffs`` is empty.
    """
    if not diffs:
        raise ValueError("apply_mean_diff needs at least one diff")
    tensors = wire.parse_state(model)
    parsed = []
    for diff in diffs:
        wire.check_diff(diff, model)
        parsed.append(wire.parse_state(diff))
    updated = []
    for i, tensor in enumerate(tensors):
        dtype = np.dtype(tensor.dtype).newbyteorder("<")
        total = np.zeros(tensor.numel, dtype=dtype)
        for diff_tensors in parsed:
            total += np.frombuffer(diff_tensors[i].data, dtype=dtype)
        mean = (total / dtype.type(len(parsed))).astype(dtype)
        new = (np.frombuffer(tensor.data, dtype=dtype) - mean).astype(dtype)
        updated.append(wire.Tensor(tensor.dtype, tensor.shape, new.tobytes()))
    return wire.encode_state(updated)
