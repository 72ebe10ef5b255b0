"""A PyGrid training plan as TorchScript: loading it, mapping its arguments, and one SGD step.

Owns the calling convention of docs/protocol.md §6.1, derived from ``module.forward.schema``: the ``Tensor[]``
argument is the parameter list (a second, trailing list would be plan state, which no FL training
plan has and this trainer cannot fill), the four ``Tensor`` arguments are X, y, batch_size and lr,
by name when the plan names them so and by position otherwise. Outputs are ``(loss, metric,
*params)``, the last N being the updated parameters. Also owns the model <-> torch conversions of
wire tensors. Imports torch: runs in the trainer only. Does not own data or the loop (``worker``).
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from syftd.errors import NonFiniteDiff, TrainerError, WireError
from syftd.grid import wire

__all__ = ["ArgumentMap", "PlanRunner", "argument_map", "check_diff", "from_wire", "load_plan", "to_wire"]

_ROLES = ("X", "y", "batch_size", "lr")
_ALIASES = {
    "X": {"x", "data", "inputs", "input", "images", "features"},
    "y": {"y", "target", "targets", "labels", "label", "y_oh"},
    "batch_size": {"batch_size", "batchsize", "bs"},
    "lr": {"lr", "learning_rate"},
}
_TORCH_DTYPES = {
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "float16": torch.float16,
    "float32": torch.float32,
    "float64": torch.float64,
    "bool": torch.bool,
}
_WIRE_DTYPES = {v: k for k, v in _TORCH_DTYPES.items()}


@dataclass(frozen=True, slots=True)
class ArgumentMap:
    """Where each value goes in the plan's positional arguments (``self`` excluded)."""

    positions: dict[str, int]
    params_position: int
    arity: int


def load_plan(torchscript: bytes) -> Any:
    """The TorchScript module in a Plan's field 7.

    Raises:
        TrainerError: the archive cannot be loaded.
    """
    try:
        with warnings.catch_warnings():
            # torch 2.14 deprecates TorchScript loading with a FutureWarning; the 2020 plans exist only as TorchScript.
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated", category=FutureWarning)
            return torch.jit.load(io.BytesIO(torchscript), map_location="cpu")  # type: ignore[no-untyped-call]
    except (RuntimeError, ValueError) as exc:
        raise TrainerError(f"the plan's TorchScript cannot be loaded: {_first_line(exc)}") from exc


def argument_map(module: Any) -> ArgumentMap:
    """Map X, y, batch_size, lr and the parameter list onto the plan's forward schema.

    Raises:
        TrainerError: the schema does not fit a training plan (says what it found).
    """
    try:
        schema = module.forward.schema
    except (AttributeError, RuntimeError) as exc:
        raise TrainerError("the plan has no forward method to call") from exc
    arguments = [a for a in schema.arguments if a.name != "self"]
    kinds = [str(a.type) for a in arguments]
    found = ", ".join(f"{a.name}: {k}" for a, k in zip(arguments, kinds, strict=True))
    lists = [i for i, k in enumerate(kinds) if k in ("List[Tensor]", "Tensor[]")]
    tensors = [i for i, k in enumerate(kinds) if k == "Tensor"]
    if not lists:
        raise TrainerError(f"the plan's schema does not fit: no Tensor[] parameter list in forward({found})")
    if len(lists) > 1:
        raise TrainerError(f"the plan's schema does not fit: it has plan state (a second Tensor[]) in forward({found})")
    if len(tensors) != len(_ROLES) or len(arguments) != len(_ROLES) + 1:
        raise TrainerError(
            f"the plan's schema does not fit: expected 4 Tensor arguments (X, y, batch_size, lr) "
            f"and one Tensor[], got forward({found})"
        )
    by_name = {}
    for role in _ROLES:
        hits = [i for i in tensors if arguments[i].name.lower() in {a.lower() for a in _ALIASES[role]}]
        if len(hits) == 1:
            by_name[role] = hits[0]
    positions = by_name if len(set(by_name.values())) == len(_ROLES) else dict(zip(_ROLES, tensors, strict=True))
    return ArgumentMap(positions=positions, params_position=lists[0], arity=len(arguments))


class PlanRunner:
    """Calls a training plan step by step, feeding the updated parameters back each time."""

    def __init__(self, module: Any, params: list[Any], *, batch_size: int, lr: float, device: Any) -> None:
        self._module = module
        self._map = argument_map(module)
        self._params = [p.to(device) for p in params]
        self._batch_size = torch.tensor(batch_size, dtype=torch.int64, device=device)
        self._lr = torch.tensor(lr, dtype=torch.float32, device=device)
        self._device = device
        self._input_dim = self._params[0].shape[1] if self._params and self._params[0].dim() == 2 else None

    @property
    def params(self) -> list[Any]:
        """The current parameters."""
        return self._params

    def fit_input(self, x: Any) -> Any:
        """Flatten image batches to ``[B, D]`` when the model's first layer is a ``[H, D]`` matrix."""
        if self._input_dim is not None and x.dim() > 2 and math.prod(x.shape[1:]) == self._input_dim:
            return x.reshape(x.shape[0], self._input_dim)
        return x

    def step(self, x: Any, y: Any) -> tuple[float, float]:
        """One plan call on one batch; returns (loss, metric).

        Raises:
            TrainerError: the plan rejects the model or the data, or returns the wrong number of outputs.
        """
        args: list[Any] = [None] * self._map.arity
        values = {"X": x.to(self._device), "y": y.to(self._device), "batch_size": self._batch_size, "lr": self._lr}
        for role, position in self._map.positions.items():
            args[position] = values[role]
        args[self._map.params_position] = self._params
        try:
            outputs = self._module(*args)
        except RuntimeError as exc:
            shapes = ", ".join(str(list(p.shape)) for p in self._params)
            raise TrainerError(
                f"the plan does not accept this model and data (model tensors {shapes}; X {list(x.shape)}, "
                f"y {list(y.shape)}): {_first_line(exc)}"
            ) from exc
        count = len(self._params)
        if not isinstance(outputs, tuple | list) or len(outputs) != count + 2:
            got = len(outputs) if isinstance(outputs, tuple | list) else 1
            raise TrainerError(
                f"the plan returned {got} outputs; a training plan for this {count}-tensor model returns "
                f"{count + 2} (loss, metric, then the updated parameters)"
            )
        new = list(outputs[-count:])
        for i, (old, updated) in enumerate(zip(self._params, new, strict=True)):
            if updated.shape != old.shape:
                raise TrainerError(
                    f"the plan returned parameter {i} with shape {list(updated.shape)}, the model has {list(old.shape)}"
                )
        self._params = [u.to(old.dtype) for u, old in zip(new, self._params, strict=True)]
        return float(outputs[0]), float(outputs[1])


def from_wire(tensors: list[wire.Tensor]) -> list[Any]:
    """Torch tensors from wire tensors (copies, writable)."""
    out = []
    for t in tensors:
        dtype = _TORCH_DTYPES.get(t.dtype)
        if dtype is None:
            raise TrainerError(f"the model has a {t.dtype} tensor, which the trainer cannot train")
        if not t.data:
            out.append(torch.empty(t.shape, dtype=dtype))
        else:
            out.append(torch.frombuffer(bytearray(t.data), dtype=dtype).reshape(t.shape))
    return out


def check_diff(diff: list[Any], model: list[Any]) -> None:
    """Check the diff's tensors against the model's before they are encoded, as ``wire.check_diff``
    checks encoded bytes (the same messages), at torch speed: one tensor per model tensor, each of its
    dtype and shape, every value finite. The encoding (``wire.encode_state``) adds nothing to check.

    Raises:
        WireError: naming the first mismatch; ``NonFiniteDiff`` for NaN or infinite values.
    """
    if len(diff) != len(model):
        raise WireError(f"diff has {len(diff)} tensors, the model has {len(model)}")
    for i, (got, want) in enumerate(zip(diff, model, strict=True)):
        if got.dtype != want.dtype:
            raise WireError(f"tensor {i}: dtype {_wire_name(got.dtype)}, the model has {_wire_name(want.dtype)}")
        if got.shape != want.shape:
            raise WireError(f"tensor {i}: shape {list(got.shape)}, the model has {list(want.shape)}")
        # x·0 is 0 for every finite x and NaN otherwise, and a sum of zeros cannot overflow
        if got.is_floating_point() and bool(got.mul(0).sum() != 0):
            bad = int((~torch.isfinite(got)).sum())
            raise NonFiniteDiff(f"tensor {i}: {bad} of {got.numel()} values are NaN or infinite; never reported")


def _wire_name(dtype: Any) -> str:
    return _WIRE_DTYPES.get(dtype, str(dtype))


def to_wire(tensors: list[Any]) -> list[wire.Tensor]:
    """Wire tensors (little-endian C-order bytes) from torch tensors."""
    out = []
    for t in tensors:
        cpu = t.detach().to("cpu").contiguous()
        out.append(wire.Tensor(dtype=_WIRE_DTYPES[cpu.dtype], shape=tuple(cpu.shape), data=cpu.numpy().tobytes()))
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    # TorchScript errors put the message after a traceback of the scripted code; keep the meaningful line.
    meaningful = [line for line in lines if "Error" in line or "error" in line]
    return (meaningful[-1] if meaningful else lines[0])[:300]
