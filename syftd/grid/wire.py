"""PyGrid's binary payloads: the model ``State``, the training ``Plan`` and the diff a worker reports.

Owns the translation between those protobuf bytes (docs/protocol.md §5) and plain
:class:`Tensor` values (dtype name, shape, little-endian row-major bytes), and the rules a diff must
meet before a node will average it (§5.4). Does not own numbers: it imports neither torch nor numpy;
the trainer turns ``Tensor.data`` into arrays (``torch.frombuffer``) and back.

The schema is ``syft.proto`` next to this file (10 messages, syft-proto field numbers, the
floating-point contents declared ``bytes`` so a model parses without per-element conversion).
Regenerate the generated code after editing it with ``make proto``, i.e.::

    .venv/bin/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. syftd/grid/syft.proto

The generated module checks that the protobuf runtime has the same major version (7).
"""

from __future__ import annotations

import array
import math
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from syftd.errors import NonFiniteDiff, WireError
from syftd.grid import syft_pb2 as pb

__all__ = [
    "DTYPES",
    "Tensor",
    "check_diff",
    "encode_plan",
    "encode_state",
    "non_finite",
    "parse_state",
    "plan_torchscript",
]

DTYPES: dict[str, str] = {
    "uint8": "B",
    "int8": "b",
    "int16": "h",
    "int32": "i",
    "int64": "q",
    "float16": "e",
    "float32": "f",
    "float64": "d",
    "bool": "?",
}

_UNSUPPORTED_DTYPES = frozenset({"qint8", "quint8", "qint32", "bfloat16"})
_RAW_FLOATS = {"float32": "contents_float32", "float64": "contents_float64"}
_SERIALIZER_ALL = pb.TorchTensor.SERIALIZER_ALL
_INT32_MAX = 2**31 - 1
_BIG_ENDIAN = sys.byteorder == "big"
_WIRE_FIXED64, _WIRE_FIXED32 = 1, 5


@dataclass(frozen=True, slots=True)
class Tensor:
    """One tensor of a State: PyGrid dtype name, shape, and its elements as little-endian C-order bytes."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes

    @property
    def numel(self) -> int:
        """The number of elements, the product of the shape (1 for a scalar)."""
        return math.prod(self.shape)


def parse_state(data: bytes) -> list[Tensor]:
    """Parse State bytes (a get-model body, or a diff) into its tensors, in order.

    Raises:
        WireError: the bytes are not a State, or a tensor is unreadable (the message names which).
    """
    return [_tensor_of(i, t) for i, t in enumerate(_torch_tensors(_parse(pb.State, data, "State")))]


def encode_state(tensors: Sequence[Tensor]) -> bytes:
    """Serialize tensors as a diff State that meets every rule of docs/protocol.md §5.4.

    One placeholder per tensor, in order; placeholder ``i`` has ``id_int`` 2i+1 and
    ``expected_shape`` = the shape, its tensor ``id_int`` 2i+2, ``SERIALIZER_ALL``, ``contents_data``
    in the field of its dtype.

    Raises:
        WireError: a tensor has an unknown dtype, a bad shape, or data of the wrong length.
    """
    state = pb.State()
    for i, tensor in enumerate(tensors):
        _check_tensor(i, tensor)
        placeholder = state.placeholders.add()
        placeholder.id.id_int = 2 * i + 1
        placeholder.expected_shape.dims.extend(tensor.shape)
        placeholder.expected_shape.SetInParent()
        torch_tensor = state.tensors.add().torch_tensor
        torch_tensor.id.id_int = 2 * i + 2
        torch_tensor.serializer = _SERIALIZER_ALL
        contents = torch_tensor.contents_data
        contents.shape.dims.extend(tensor.shape)
        contents.shape.SetInParent()
        contents.dtype = tensor.dtype
        _put_contents(contents, tensor)
    return bytes(state.SerializeToString())


def encode_plan(torchscript: bytes, name: str) -> bytes:
    """Plan bytes carrying only a name (field 4) and a TorchScript archive (field 7), as a node serves them.

    Raises:
        WireError: ``torchscript`` is empty.
    """
    if not torchscript:
        raise WireError(f"plan {name!r}: torchscript is empty")
    plan = pb.Plan(name=name, torchscript=bytes(torchscript))
    return bytes(plan.SerializeToString())


def plan_torchscript(data: bytes) -> bytes:
    """The TorchScript archive (field 7) of Plan bytes (get-plan with receive_operations_as=torchscript).

    Raises:
        WireError: the bytes are not a Plan, or the Plan carries no TorchScript.
    """
    plan = _parse(pb.Plan, data, "Plan")
    if not plan.torchscript:
        name = f" {plan.name!r}" if plan.name else ""
        raise WireError(f"plan{name} has no torchscript (field 7 is empty)")
    return bytes(plan.torchscript)


def check_diff(diff: bytes, model: bytes | Sequence[Tensor]) -> None:
    """Check a diff against the model it was computed from, as the node would need it (docs/protocol.md §5.4).

    ``model``: its State bytes, or its tensors as ``parse_state`` gave them (not parsed again).

    Raises:
        WireError: naming the first mismatch (count, order, shape, dtype, ids, serializer).
    """
    state = _parse(pb.State, diff, "diff State")
    expected = parse_state(model) if isinstance(model, bytes) else model
    if len(state.placeholders) != len(state.tensors):
        raise WireError(
            f"diff has {len(state.placeholders)} placeholders for {len(state.tensors)} tensors; "
            "the node needs exactly one per tensor"
        )
    got_tensors = _torch_tensors(state)
    if len(got_tensors) != len(expected):
        raise WireError(f"diff has {len(got_tensors)} tensors, the model has {len(expected)}")
    rows = zip(state.placeholders, got_tensors, expected, strict=True)
    for i, (placeholder, proto, want) in enumerate(rows):
        if placeholder.id.WhichOneof("id") is None:
            raise WireError(f"placeholder {i}: id is not set")
        if proto.id.WhichOneof("id") is None:
            raise WireError(f"tensor {i}: id is not set")
        if proto.serializer != _SERIALIZER_ALL:
            name = _serializer_name(proto.serializer)
            raise WireError(f"tensor {i}: serializer is {name}, the node needs SERIALIZER_ALL")
        got = _tensor_of(i, proto)
        if got.dtype != want.dtype:
            raise WireError(f"tensor {i}: dtype {got.dtype}, the model has {want.dtype}")
        if got.shape != want.shape:
            raise WireError(f"tensor {i}: shape {list(got.shape)}, the model has {list(want.shape)}")
        if (bad := non_finite(got)) > 0:
            raise NonFiniteDiff(f"tensor {i}: {bad} of {got.numel} values are NaN or infinite; never reported")


# per float dtype: (byte width, offset of the byte holding the sign and the top exponent bits, mask over
# that byte and the next lower one): a value is NaN or infinite when every exponent bit is set
_EXPONENT = {"float16": (2, 1, 0x7C00), "float32": (4, 3, 0x7F80), "float64": (8, 7, 0x7FF0)}


def non_finite(tensor: Tensor) -> int:
    """How many elements of a float tensor are NaN or infinite (0 for integer tensors), at C speed without
    numpy: the two top bytes of every element are sliced out and tested as one big integer per bit."""
    layout = _EXPONENT.get(tensor.dtype)
    if layout is None or not tensor.data:
        return 0
    width, top, mask = layout
    high, low = tensor.data[top::width], tensor.data[top - 1 :: width]
    return (_flags(high, mask >> 8) & _flags(low, mask & 0xFF)).bit_count()


def _flags(part: bytes, bits: int) -> int:
    """One bit per byte of ``part`` (at the byte's lowest bit): set when the byte has every bit of ``bits``."""
    table = bytes(1 if byte & bits == bits else 0 for byte in range(256))
    return int.from_bytes(part.translate(table), "little")


def _parse(cls: Any, data: bytes, what: str) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError(f"{what}: expected bytes, got {type(data).__name__}")
    message = cls()
    try:
        message.ParseFromString(bytes(data))
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise WireError(f"{what}: not valid protobuf ({exc})") from None
    return message


def _torch_tensors(state: Any) -> list[Any]:
    tensors = []
    for i, entry in enumerate(state.tensors):
        kind = entry.WhichOneof("tensor")
        if kind == "torch_tensor":
            tensors.append(entry.torch_tensor)
        elif kind == "torch_param":
            tensors.append(entry.torch_param.tensor)
        else:
            raise WireError(f"tensor {i}: StateTensor has neither torch_tensor nor torch_param")
    return tensors


def _serializer_name(value: int) -> str:
    try:
        return str(pb.TorchTensor.Serializer.Name(value))
    except ValueError:
        return f"unknown serializer {value}"


def _tensor_of(i: int, proto: Any) -> Tensor:
    kind = proto.WhichOneof("contents")
    if kind == "contents_bin":
        raise WireError(f"tensor {i}: contents_bin ({_serializer_name(proto.serializer)}) is not supported")
    if kind != "contents_data":
        raise WireError(f"tensor {i}: has no contents")
    contents = proto.contents_data
    dtype = contents.dtype
    if dtype in _UNSUPPORTED_DTYPES:
        raise WireError(f"tensor {i}: dtype {dtype} is not supported")
    if dtype not in DTYPES:
        raise WireError(f"tensor {i}: unknown dtype {dtype!r}")
    shape = tuple(contents.shape.dims)
    if any(d < 0 for d in shape):
        raise WireError(f"tensor {i}: negative dimension in shape {list(shape)}")
    numel = math.prod(shape)
    data = _get_contents(i, contents, dtype, numel)
    return Tensor(dtype=dtype, shape=shape, data=data)


def _get_contents(i: int, contents: Any, dtype: str, numel: int) -> bytes:
    code = DTYPES[dtype]
    if dtype in _RAW_FLOATS:
        field = _RAW_FLOATS[dtype]
        raw: bytes = getattr(contents, field)
        width = struct.calcsize(code)
        if len(raw) != numel * width:
            raw = raw or _unpacked_floats(contents, field, width)
            if len(raw) != numel * width:
                raise WireError(
                    f"tensor {i}: {field} holds {len(raw) // width} values ({len(raw)} bytes), the shape needs {numel}"
                )
        return _swap(code, raw) if _BIG_ENDIAN else raw
    if dtype == "float16":
        raw = contents.contents_float16 or _unpacked_floats(contents, "contents_float16", 4)
        if len(raw) != numel * 4:
            got = len(raw) // 4
            raise WireError(f"tensor {i}: contents_float16 holds {got} values, the shape needs {numel}")
        values = struct.unpack(f"<{numel}f", raw)
        try:
            return struct.pack(f"<{numel}e", *values)
        except (OverflowError, struct.error) as exc:
            raise WireError(f"tensor {i}: float16 value out of range ({exc})") from None
    field = f"contents_{dtype}"
    items = getattr(contents, field)
    if len(items) != numel:
        raise WireError(f"tensor {i}: {field} holds {len(items)} values, the shape needs {numel}")
    if dtype == "bool":
        return bytes(bytearray(items))
    try:
        packed = array.array(code, items)
    except OverflowError:
        raise WireError(f"tensor {i}: a value in {field} is out of range for {dtype}") from None
    if _BIG_ENDIAN:
        packed.byteswap()
    return packed.tobytes()


def _unpacked_floats(contents: Any, field: str, width: int) -> bytes:
    """The values of a float field written non-packed (one tag per element), from the unknown fields."""
    number = contents.DESCRIPTOR.fields_by_name[field].number
    wire_type = _WIRE_FIXED32 if width == 4 else _WIRE_FIXED64
    found = UnknownFieldSet(contents)
    values = [f.data for f in found if (f.field_number, f.wire_type) == (number, wire_type)]
    return struct.pack(f"<{len(values)}{'I' if width == 4 else 'Q'}", *values)


def _check_tensor(i: int, tensor: Tensor) -> None:
    if tensor.dtype not in DTYPES:
        raise WireError(f"tensor {i}: dtype {tensor.dtype!r} cannot be encoded (known: {', '.join(DTYPES)})")
    if not all(type(d) is int and 0 <= d <= _INT32_MAX for d in tensor.shape):
        raise WireError(f"tensor {i}: shape {list(tensor.shape)} must hold int32 sizes >= 0")
    width = struct.calcsize(DTYPES[tensor.dtype])
    if len(tensor.data) != tensor.numel * width:
        raise WireError(
            f"tensor {i}: {len(tensor.data)} bytes of data, shape {list(tensor.shape)} of "
            f"{tensor.dtype} needs {tensor.numel * width}"
        )


def _put_contents(contents: Any, tensor: Tensor) -> None:
    dtype, data = tensor.dtype, bytes(tensor.data)
    code = DTYPES[dtype]
    if dtype in _RAW_FLOATS:
        setattr(contents, _RAW_FLOATS[dtype], _swap(code, data) if _BIG_ENDIAN else data)
    elif dtype == "float16":
        n = tensor.numel
        contents.contents_float16 = struct.pack(f"<{n}f", *struct.unpack(f"<{n}e", data))
    elif dtype == "bool":
        contents.contents_bool.extend(b != 0 for b in data)
    else:
        values = array.array(code, data)
        if _BIG_ENDIAN:
            values.byteswap()
        getattr(contents, f"contents_{dtype}").extend(values)


def _swap(code: str, data: bytes) -> bytes:  # pragma: no cover - little-endian hosts only here
    values = array.array(code, data)
    values.byteswap()
    return values.tobytes()
