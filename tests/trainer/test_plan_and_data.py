"""The recorded training plan run step by step, the argument mapping, and the data sources (in-process)."""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from trainer.helpers import STEP

from syftd.config import DataConfig
from syftd.errors import NonFiniteDiff, TrainerError, WireError
from syftd.grid import syft_pb2 as pb
from syftd.grid import wire
from syftd.trainer.data import load_source
from syftd.trainer.digits import draw_digits
from syftd.trainer.plan import PlanRunner, argument_map, check_diff, from_wire, load_plan, to_wire

pytestmark = pytest.mark.torch


def _npy(name: str) -> torch.Tensor:
    return torch.from_numpy(np.load(STEP / f"{name}.npy"))


def scripted_plan(source: type[torch.nn.Module]) -> bytes:
    """Plan bytes carrying ``source`` scripted to TorchScript (deprecated in torch 2.14, hence the filter)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r"`torch\.jit\.")
        torch.jit.save(torch.jit.script(source()), buffer)
    return bytes(pb.Plan(name="training_plan", torchscript=buffer.getvalue()).SerializeToString())


def test_one_step_reproduces_the_recorded_step(plan: bytes, model: bytes) -> None:
    """One call on step/X, y_oh, batch_size, lr, params_in gives step/loss, acc and params_out (float32)."""
    module = load_plan(wire.plan_torchscript(plan))
    params = from_wire(wire.parse_state(model))
    for i, tensor in enumerate(params):
        assert torch.equal(tensor, _npy(f"params_in_{i}"))
    runner = PlanRunner(module, params, batch_size=int(_npy("batch_size")), lr=float(_npy("lr")), device="cpu")
    loss, accuracy = runner.step(_npy("X"), _npy("y_oh"))
    assert loss == pytest.approx(float(_npy("loss")), rel=1e-6)
    assert accuracy == pytest.approx(float(_npy("acc")), abs=1e-7)
    for i, tensor in enumerate(runner.params):
        assert tensor.dtype == torch.float32
        torch.testing.assert_close(tensor, _npy(f"params_out_{i}"), rtol=1.3e-6, atol=1e-5)


def test_the_recorded_plan_maps_by_position(plan: bytes) -> None:
    """argument_1..4 are X, y, batch_size, lr in order and argument_5 is the parameter list."""
    mapping = argument_map(load_plan(wire.plan_torchscript(plan)))
    assert mapping.positions == {"X": 0, "y": 1, "batch_size": 2, "lr": 3}
    assert (mapping.params_position, mapping.arity) == (4, 5)


class _NamedOutOfOrder(torch.nn.Module):
    def forward(
        self, params: list[torch.Tensor], lr: torch.Tensor, y: torch.Tensor, X: torch.Tensor, batch_size: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loss = ((X @ params[0] - y) ** 2).sum() / batch_size
        return loss, loss, params[0] - lr * X.t() @ (X @ params[0] - y) / batch_size


class _NoParameterList(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _WithPlanState(torch.nn.Module):
    def forward(
        self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor,
        params: list[torch.Tensor], state: list[torch.Tensor],
    ) -> torch.Tensor:  # fmt: skip
        return a


def test_a_plan_naming_its_arguments_is_mapped_by_name() -> None:
    """Arguments called X, y, batch_size, lr go where their names say, whatever their order."""
    module = load_plan(wire.plan_torchscript(scripted_plan(_NamedOutOfOrder)))
    mapping = argument_map(module)
    assert mapping.positions == {"X": 3, "y": 2, "batch_size": 4, "lr": 1}
    runner = PlanRunner(module, [torch.zeros(3, 1)], batch_size=2, lr=0.1, device="cpu")
    loss, _ = runner.step(torch.ones(2, 3), torch.ones(2, 1))
    assert loss == pytest.approx(1.0)
    assert runner.params[0].flatten().tolist() == pytest.approx([0.1, 0.1, 0.1])


@pytest.mark.parametrize(
    ("source", "problem"),
    [(_NoParameterList, "no Tensor\\[\\] parameter list"), (_WithPlanState, "plan state")],
)
def test_a_plan_whose_schema_does_not_fit_is_named(source: type[torch.nn.Module], problem: str) -> None:
    """A forward without a parameter list, or with plan state, raises TrainerError naming the schema."""
    module = load_plan(wire.plan_torchscript(scripted_plan(source)))
    with pytest.raises(TrainerError, match=f"schema does not fit: .*{problem}"):
        argument_map(module)


def test_a_model_that_does_not_fit_the_plan_is_named(plan: bytes) -> None:
    """Transposed first-layer weights make the plan call fail with the model's shapes in the message."""
    module = load_plan(wire.plan_torchscript(plan))
    params = [torch.zeros(784, 392), torch.zeros(392), torch.zeros(10, 392), torch.zeros(10)]
    runner = PlanRunner(module, params, batch_size=4, lr=0.1, device="cpu")
    with pytest.raises(TrainerError, match=r"does not accept this model .*\[784, 392\]"):
        runner.step(torch.zeros(4, 784), torch.zeros(4, 10))


def test_wire_and_torch_round_trip_keeps_dtype_and_bytes(model: bytes) -> None:
    """from_wire then to_wire gives back the model's tensors byte for byte."""
    tensors = wire.parse_state(model)
    assert to_wire(from_wire(tensors)) == tensors


def test_synthetic_digits_are_deterministic_and_learnable_looking() -> None:
    """The same seed draws the same images; pixels are in [0, 1] and every digit appears."""
    a, labels_a = draw_digits(300, seed=7)
    b, labels_b = draw_digits(300, seed=7)
    c, _ = draw_digits(300, seed=8)
    assert np.array_equal(a, b) and np.array_equal(labels_a, labels_b)
    assert not np.array_equal(a, c)
    assert a.shape == (300, 28, 28) and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert set(labels_a.tolist()) == set(range(10))


def test_batches_are_full_and_labels_one_hot() -> None:
    """Every batch has batch_size rows; class indices become float32 one-hot rows."""
    source = load_source(DataConfig(samples=130, seed=1))
    batches = source.batches(64, salt="cycle")
    for _ in range(5):
        x, y = next(batches)
        assert x.shape == (64, 28, 28) and y.shape == (64, 10)
        assert y.dtype == torch.float32 and torch.equal(y.sum(dim=1), torch.ones(64))


def _write_idx(directory: Path, images: np.ndarray, labels: np.ndarray) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    count = len(images)
    (directory / "train-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, count, 28, 28) + images.tobytes())
    (directory / "train-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, count) + labels.tobytes())


def test_mnist_reads_raw_idx_files_the_test_wrote(tmp_path: Path) -> None:
    """The mnist source reads uncompressed IDX files, scales to [0, 1] and one-hot encodes labels."""
    images = np.zeros((20, 28, 28), dtype=np.uint8)
    images[:, 5, 7] = 255
    labels = (np.arange(20) % 10).astype(np.uint8)
    _write_idx(tmp_path / "MNIST" / "raw", images, labels)
    source = load_source(DataConfig(source="mnist", path=tmp_path))
    assert source.size == 20
    x, y = next(source.batches(20))
    assert float(x[:, 5, 7].min()) == 1.0 and float(x.sum()) == 20.0
    assert sorted(y.argmax(dim=1).tolist()) == sorted(labels.tolist())


def test_mnist_files_directly_in_the_data_dir_are_found(tmp_path: Path) -> None:
    """data.path may be the directory holding the IDX files itself."""
    _write_idx(tmp_path, np.zeros((3, 28, 28), dtype=np.uint8), np.array([1, 2, 3], dtype=np.uint8))
    assert load_source(DataConfig(source="mnist", path=tmp_path)).size == 3


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (DataConfig(source="mnist", path=Path("/nonexistent/mnist")), "'/nonexistent/mnist' does not exist"),
        (DataConfig(source="imagefolder", path=Path("/nonexistent/images")), "'/nonexistent/images' does not exist"),
        (DataConfig(source="python", callable="no_such_module_here:dataset"), "cannot be imported"),
    ],
)
def test_a_missing_data_source_is_named(config: DataConfig, problem: str) -> None:
    """A missing directory or module raises TrainerError naming it."""
    with pytest.raises(TrainerError, match=problem):
        load_source(config)


def test_a_directory_without_idx_files_is_named(tmp_path: Path) -> None:
    """An existing directory without the IDX files names the files it wanted."""
    with pytest.raises(TrainerError, match="no uncompressed MNIST IDX files"):
        load_source(DataConfig(source="mnist", path=tmp_path))


def test_empty_and_too_small_datasets_are_named(data_module: Callable[[str, str], Path]) -> None:
    """Zero samples, or fewer than one batch, raise TrainerError saying so."""
    where = data_module(
        "empty_data",
        """
        import torch
        def dataset():
            return torch.utils.data.TensorDataset(torch.zeros(0, 784), torch.zeros(0, dtype=torch.int64))
        """,
    )
    with pytest.raises(TrainerError, match="the dataset is empty"):
        load_source(DataConfig(source="python", path=where, callable="empty_data:dataset")).batches(64)
    with pytest.raises(TrainerError, match="has 10 samples, fewer than one batch of 64"):
        load_source(DataConfig(samples=10)).batches(64)


def test_imagefolder_resizes_and_labels_by_directory(tmp_path: Path) -> None:
    """Images in one directory per class are resized, made grayscale and labelled by class index."""
    from PIL import Image

    for label, shade in (("a", 0), ("b", 255)):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.new("RGB", (40, 30), (shade, shade, shade)).save(tmp_path / label / f"{i}.png")
    source = load_source(DataConfig(source="imagefolder", path=tmp_path, image_size=8, num_classes=2))
    x, y = next(source.batches(6))
    assert x.shape == (6, 1, 8, 8)
    assert torch.equal(x.flatten(1).mean(dim=1).round(), y.argmax(dim=1).to(torch.float32))


def _model_tensors() -> list[torch.Tensor]:
    return [torch.zeros(3, 2), torch.zeros(3), torch.zeros(2, dtype=torch.int64)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d[:2], "diff has 2 tensors, the model has 3"),
        (lambda d: [d[0].double(), *d[1:]], "tensor 0: dtype float64, the model has float32"),
        (lambda d: [d[0], d[1].reshape(1, 3), d[2]], r"tensor 1: shape \[1, 3\], the model has \[3\]"),
    ],
)
def test_the_trainer_s_diff_check_names_the_mismatch_as_the_wire_check_does(change: Any, message: str) -> None:
    """A plan that changed a parameter's dtype or shape, or their count, fails the check before encoding."""
    with pytest.raises(WireError, match=message):
        check_diff(change(_model_tensors()), _model_tensors())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_the_trainer_s_diff_check_counts_nan_and_infinite_values(bad: float) -> None:
    """Two non-finite values among finite ones: NonFiniteDiff with the count, as ``wire.check_diff`` says it."""
    diff = _model_tensors()
    diff[0][1, 1], diff[0][2, 0] = bad, 1.0
    diff[0][0, 0] = bad
    with pytest.raises(NonFiniteDiff, match="tensor 0: 2 of 6 values are NaN or infinite; never reported"):
        check_diff(diff, _model_tensors())


def test_the_trainer_s_diff_check_takes_huge_finite_values() -> None:
    """Values near float32's maximum whose sum would overflow are finite: no false refusal."""
    diff = _model_tensors()
    diff[0].fill_(3.0e38)
    check_diff(diff, _model_tensors())
    encoded = wire.encode_state(to_wire(diff))
    wire.check_diff(encoded, wire.encode_state(to_wire(_model_tensors())))
