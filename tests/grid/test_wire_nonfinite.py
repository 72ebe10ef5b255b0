"""A diff with NaN or infinite values is refused by ``check_diff`` (so never spooled nor reported), even
when everything else about it is right; the count is exact for every float dtype, and integer tensors
are never flagged."""

from __future__ import annotations

import math
import struct

import pytest

from syftd.errors import NonFiniteDiff, WireError
from syftd.grid.wire import Tensor, check_diff, encode_state, non_finite

CODES = {"float16": "e", "float32": "f", "float64": "d"}


def tensor(dtype: str, values: list[float]) -> Tensor:
    return Tensor(dtype, (len(values),), struct.pack(f"<{len(values)}{CODES[dtype]}", *values))


@pytest.mark.parametrize("dtype", sorted(CODES))
def test_non_finite_counts_nan_and_both_infinities_exactly(dtype: str) -> None:
    """NaN, +inf and -inf are counted; zero, negative zero, the largest finite and subnormals are not."""
    largest = {"float16": 65504.0, "float32": 3.4e38, "float64": 1.7e308}[dtype]
    tiny = {"float16": 6e-8, "float32": 1e-45, "float64": 5e-324}[dtype]
    values = [0.0, -0.0, largest, -largest, tiny, 1.5, math.nan, math.inf, -math.inf, math.nan]
    assert non_finite(tensor(dtype, values)) == 4
    assert non_finite(tensor(dtype, [v for v in values if math.isfinite(v)])) == 0


def test_integer_tensors_are_never_flagged() -> None:
    """0x7F80_0000 as an int32 is a number, not an infinity."""
    assert non_finite(Tensor("int32", (2,), struct.pack("<2i", 0x7F800000, -1))) == 0


def test_check_diff_refuses_a_nan_diff_naming_the_tensor() -> None:
    """The model is finite, the diff has one NaN in its second tensor: NonFiniteDiff (a WireError, so the
    cycle fails before spooling) naming tensor 1 and the count."""
    model = encode_state([tensor("float32", [1.0, 2.0]), tensor("float32", [3.0, 4.0, 5.0])])
    finite = encode_state([tensor("float32", [0.1, 0.2]), tensor("float32", [0.3, 0.4, 0.5])])
    check_diff(finite, model)
    nan = encode_state([tensor("float32", [0.1, 0.2]), tensor("float32", [0.3, math.nan, 0.5])])
    with pytest.raises(NonFiniteDiff, match=r"tensor 1: 1 of 3 values are NaN or infinite") as refused:
        check_diff(nan, model)
    assert isinstance(refused.value, WireError)
