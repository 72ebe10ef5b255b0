"""Conformance of syftd.grid.wire with the real PyGrid bytes (fixtures/pygrid-2020) and docs/protocol.md §5.4."""

from __future__ import annotations

import ast
import base64
import io
import json
import math
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import FIXTURES
from hypothesis import given, settings
from hypothesis import strategies as st

from syftd.errors import WireError
from syftd.grid import syft_pb2 as pb
from syftd.grid.wire import DTYPES, Tensor, check_diff, encode_state, parse_state, plan_torchscript

GOLDEN = FIXTURES / "golden-cycle"
MODEL = GOLDEN / "012-http-GET-model-centric_get-model.response.bin"
PLAN = GOLDEN / "013-http-GET-model-centric_get-plan.response.bin"
DIFF = GOLDEN / "016-ws-model-centric_report.request.diff.base64-decoded.bin"
CANONICAL_HEX = "0a091a02080132030a010212230a210a02080212190a030a01021207666c6f61743332b201080000803f000000bf4004"
CANONICAL_B64 = "CgkaAggBMgMKAQISIwohCgIIAhIZCgMKAQISB2Zsb2F0MzKyAQgAAIA/AAAAv0AE"
_NPY_DTYPES = {"<f4": "float32", "<f8": "float64", "<i8": "int64", "<i4": "int32"}


def read_npy(path: Path) -> Tensor:
    """A .npy file (format 1.x, little-endian, C order) as a Tensor, without numpy (test-compat has none)."""
    raw = path.read_bytes()
    assert raw[:6] == b"\x93NUMPY"
    header_len = struct.unpack("<H", raw[8:10])[0]
    header = ast.literal_eval(raw[10 : 10 + header_len].decode("latin1"))
    assert not header["fortran_order"]
    return Tensor(_NPY_DTYPES[header["descr"]], tuple(header["shape"]), raw[10 + header_len :])


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_canonical_diff_vector_is_reproduced_byte_for_byte() -> None:
    """docs/protocol.md §5.4: one float32 tensor [1.0, -0.5] encodes to the canonical hex and base64."""
    encoded = encode_state([Tensor("float32", (2,), struct.pack("<2f", 1.0, -0.5))])
    assert encoded.hex() == CANONICAL_HEX
    assert base64.b64encode(encoded).decode() == CANONICAL_B64


def test_recorded_model_parses_to_the_recorded_step_inputs() -> None:
    """The get-model body (012) is exactly the four params_in_* tensors the recorded step trained."""
    tensors = parse_state(MODEL.read_bytes())
    assert tensors == [read_npy(GOLDEN / "step" / f"params_in_{i}.npy") for i in range(4)]


def test_diff_encoded_from_step_parses_like_the_recorded_report() -> None:
    """A diff built from step/diff_* parses like the recorded report (016) and passes check_diff."""
    diffs = [read_npy(GOLDEN / "step" / f"diff_{i}.npy") for i in range(4)]
    encoded = encode_state(diffs)
    assert parse_state(encoded) == parse_state(DIFF.read_bytes()) == diffs
    model = MODEL.read_bytes()
    check_diff(encoded, model)
    check_diff(DIFF.read_bytes(), model)


def test_recorded_report_json_carries_the_recorded_diff_as_padded_standard_base64() -> None:
    """The report request's diff field is standard padded base64 of the .bin the fixture decoded."""
    body = json.loads((GOLDEN / "016-ws-model-centric_report.request.json").read_bytes())
    assert base64.b64decode(body["data"]["diff"], validate=True) == DIFF.read_bytes()
    assert base64.b64encode(DIFF.read_bytes()).decode() == body["data"]["diff"]


def test_swiftsyft_model_state_parses_to_the_mnist_shapes() -> None:
    """SwiftSyft's model_state.pb holds the 4 float32 MNIST tensors (docs/protocol.md §5.6)."""
    path = FIXTURES / "model_state.pb"
    tensors = parse_state(path.read_bytes())
    assert [(t.dtype, t.shape) for t in tensors] == [
        ("float32", (392, 784)),
        ("float32", (392,)),
        ("float32", (10, 392)),
        ("float32", (10,)),
    ]
    assert all(len(t.data) == 4 * t.numel for t in tensors)


@pytest.mark.parametrize(("path", "size"), [(FIXTURES / "plan.pb", 5352), (PLAN, None)])
def test_plans_yield_a_torchscript_zip_archive(path: Path, size: int | None) -> None:
    """Field 7 of SwiftSyft's plan.pb (5,352 bytes per docs/protocol.md §5.6) and of the recorded get-plan is a zip."""
    script = plan_torchscript(path.read_bytes())
    assert script[:2] == b"PK"
    if size is not None:
        assert len(script) == size


@pytest.mark.torch
def test_recorded_plan_loads_with_torch_jit() -> None:
    """torch.jit.load accepts the TorchScript of the recorded get-plan body."""
    torch = pytest.importorskip("torch", reason="torch is not installed (make test-compat runs without it)")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        module = torch.jit.load(io.BytesIO(plan_torchscript(PLAN.read_bytes())))
    assert "Tensor[]" in str(module.forward.schema)


def test_plan_without_torchscript_is_a_wire_error() -> None:
    """A Plan whose field 7 is empty (e.g. receive_operations_as=list) is refused by name."""
    with pytest.raises(WireError, match="'training_plan' has no torchscript"):
        plan_torchscript(pb.Plan(name="training_plan", role=b"\x0a\x00").SerializeToString())


def test_non_packed_float_contents_parse_like_packed() -> None:
    """contents_float32 written one tag per element (non-packed) parses to the same tensor."""
    values = [1.5, -2.0, 3.25]
    elements = b"".join(_varint(22 << 3 | 5) + struct.pack("<f", v) for v in values)
    tensor_data = _field(1, _field(1, b"\x03")) + _field(2, b"float32") + elements
    torch_tensor = _field(1, b"\x08\x07") + _field(2, tensor_data) + b"\x40\x04"
    state = _field(1, _field(3, b"\x08\x01")) + _field(2, _field(1, torch_tensor))
    assert parse_state(state) == [Tensor("float32", (3,), struct.pack("<3f", *values))]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(sorted(DTYPES)),
            st.lists(st.integers(0, 4), max_size=3),
            st.randoms(use_true_random=False),
        ),
        max_size=4,
    )
)
def test_every_dtype_round_trips(specs: list[tuple[str, list[int], object]]) -> None:
    """encode_state then parse_state returns the same tensors for every supported dtype and shape."""
    tensors = []
    for dtype, shape, rnd in specs:
        n = math.prod(shape)
        code = DTYPES[dtype]
        if dtype in ("float16", "float32", "float64"):
            values: list[object] = [float(rnd.randint(-1000, 1000)) / 8 for _ in range(n)]  # type: ignore[attr-defined]
        elif dtype == "bool":
            values = [rnd.random() < 0.5 for _ in range(n)]  # type: ignore[attr-defined]
        else:
            bits = struct.calcsize(code) * 8
            low, high = (0, 2**bits - 1) if code.isupper() else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            values = [rnd.randint(low, high) for _ in range(n)]  # type: ignore[attr-defined]
        tensors.append(Tensor(dtype, tuple(shape), struct.pack(f"<{n}{code}", *values)))
    encoded = encode_state(tensors)
    assert parse_state(encoded) == tensors
    check_diff(encoded, encoded)


def test_contents_bin_is_refused_by_name() -> None:
    """A legacy SERIALIZER_TORCH tensor (contents_bin) is a WireError naming it."""
    state = pb.State()
    state.placeholders.add().id.id_int = 1
    tensor = state.tensors.add().torch_tensor
    tensor.id.id_int = 2
    tensor.serializer = pb.TorchTensor.SERIALIZER_TORCH
    tensor.contents_bin = b"PK\x03\x04"
    with pytest.raises(WireError, match=r"tensor 0: contents_bin \(SERIALIZER_TORCH\) is not supported"):
        parse_state(state.SerializeToString())


def test_torch_param_entries_are_read_through_their_tensor() -> None:
    """A StateTensor holding torch_param (a Parameter) yields the Parameter's tensor."""
    state = pb.State()
    param = state.tensors.add().torch_param
    param.tensor.contents_data.dtype = "float32"
    param.tensor.contents_data.shape.dims.append(1)
    param.tensor.contents_data.contents_float32 = struct.pack("<f", 2.0)
    assert parse_state(state.SerializeToString()) == [Tensor("float32", (1,), struct.pack("<f", 2.0))]


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (Tensor("complex64", (1,), b"\0" * 8), "tensor 0: dtype 'complex64' cannot be encoded"),
        (Tensor("float32", (2,), b"\0" * 4), "tensor 0: 4 bytes of data, shape \\[2\\] of float32 needs 8"),
        (Tensor("float32", (-1,), b""), "tensor 0: shape \\[-1\\] must hold int32 sizes"),
    ],
)
def test_encode_refuses_inconsistent_tensors(tensor: Tensor, message: str) -> None:
    """Unknown dtype, data length not matching the shape, negative sizes: WireError naming the tensor."""
    with pytest.raises(WireError, match=message):
        encode_state([tensor])


def _mnist_like(shapes: list[tuple[int, ...]], dtype: str = "float32") -> bytes:
    width = struct.calcsize(DTYPES[dtype])
    return encode_state([Tensor(dtype, s, b"\0" * (math.prod(s) * width)) for s in shapes])


@pytest.mark.parametrize(
    ("diff", "message"),
    [
        (_mnist_like([(3, 2)]), "diff has 1 tensors, the model has 2"),
        (_mnist_like([(2, 3), (3,)]), r"tensor 0: shape \[2, 3\], the model has \[3, 2\]"),
        (_mnist_like([(3,), (3, 2)]), r"tensor 0: shape \[3\], the model has \[3, 2\]"),
        (_mnist_like([(3, 2), (3,)], "float64"), "tensor 0: dtype float64, the model has float32"),
        (b"\xff\xff\xff", "diff State: not valid protobuf"),
    ],
)
def test_check_diff_names_the_mismatch(diff: bytes, message: str) -> None:
    """Count, order, shape and dtype mismatches against the model each give a WireError naming them."""
    with pytest.raises(WireError, match=message):
        check_diff(diff, _mnist_like([(3, 2), (3,)]))


def test_check_diff_enforces_ids_serializer_and_one_placeholder_per_tensor() -> None:
    """§5.4 rules 1-3: a placeholder per tensor, every id set, SERIALIZER_ALL."""
    model = _mnist_like([(1,)])
    good = pb.State.FromString(model)
    cases = []
    missing_placeholder = pb.State()
    missing_placeholder.CopyFrom(good)
    del missing_placeholder.placeholders[:]
    cases.append((missing_placeholder, "0 placeholders for 1 tensors"))
    unset_placeholder_id = pb.State()
    unset_placeholder_id.CopyFrom(good)
    unset_placeholder_id.placeholders[0].ClearField("id")
    cases.append((unset_placeholder_id, "placeholder 0: id is not set"))
    unset_tensor_id = pb.State()
    unset_tensor_id.CopyFrom(good)
    unset_tensor_id.tensors[0].torch_tensor.ClearField("id")
    cases.append((unset_tensor_id, "tensor 0: id is not set"))
    no_serializer = pb.State()
    no_serializer.CopyFrom(good)
    no_serializer.tensors[0].torch_tensor.serializer = pb.TorchTensor.SERIALIZER_UNSPECIFIED
    cases.append((no_serializer, "serializer is SERIALIZER_UNSPECIFIED"))
    for state, message in cases:
        with pytest.raises(WireError, match=message):
            check_diff(state.SerializeToString(), model)
    id_zero = pb.State()
    id_zero.CopyFrom(good)
    id_zero.placeholders[0].id.id_int = 0
    id_zero.tensors[0].torch_tensor.id.id_str = ""
    check_diff(id_zero.SerializeToString(), model)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: setattr(d, "dtype", "qint8"), "dtype qint8 is not supported"),
        (lambda d: setattr(d, "dtype", "fancy"), "unknown dtype 'fancy'"),
        (lambda d: d.shape.dims.append(5), r"contents_float32 holds 1 values \(4 bytes\), the shape needs 5"),
        (lambda d: d.ClearField("contents_float32"), "holds 0 values"),
    ],
)
def test_inconsistent_tensor_data_is_a_wire_error(mutate: object, message: str) -> None:
    """Unsupported/unknown dtypes and contents not matching the shape are named, not misread."""
    state = pb.State.FromString(_mnist_like([(1,)]))
    mutate(state.tensors[0].torch_tensor.contents_data)  # type: ignore[operator]
    with pytest.raises(WireError, match=message):
        parse_state(state.SerializeToString())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_raise_wire_error(data: bytes) -> None:
    """Whatever the bytes, parse_state / plan_torchscript / check_diff return or raise WireError."""
    for call in (lambda: parse_state(data), lambda: plan_torchscript(data), lambda: check_diff(data, data)):
        try:
            call()
        except WireError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_truncated_or_corrupted_model_never_escapes_as_another_error(data: st.DataObject) -> None:
    """Truncations and byte flips of a real model give tensors or a WireError, never another exception."""
    model = bytearray(_mnist_like([(3, 2), (3,)]))
    cut = data.draw(st.integers(0, len(model)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(model) - 1), st.integers(0, 255)), max_size=3))
    for pos, value in flips:
        model[pos] = value
    try:
        parse_state(bytes(model[:cut]))
    except WireError:
        pass


def test_wire_module_imports_neither_torch_nor_numpy() -> None:
    """The daemon side stays torch-free: importing syftd.grid.wire loads neither torch nor numpy."""
    code = "import sys, syftd.grid.wire; print(sorted({'torch', 'numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
