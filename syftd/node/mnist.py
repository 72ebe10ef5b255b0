"""The MNIST FL process of PyGrid's example notebooks, built as TorchScript for the local node to host.

Owns the model (784-392-10 MLP with ReLU), its training plan (softmax cross-entropy on one-hot
labels, one plain SGD step with the backward pass written out, so no autograd runs in the plan) and
the configs of the recorded process. The plan is traced with exactly the recorded plan's calling
convention (docs/protocol.md §6.1): ``forward(Tensor argument_1 (X), Tensor argument_2 (y one-hot),
Tensor argument_3 (batch_size), Tensor argument_4 (lr), Tensor[] argument_5 (params)) ->
(loss, acc, *updated params)``. Imports torch: only the node side and its CLI use this module,
the daemon never does.
"""

from __future__ import annotations

import io
import itertools
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from syftd.grid import wire

__all__ = ["LAYERS", "PLAN_NAME", "build_mnist_process", "load_plan", "mnist_plan_torchscript", "model_tensors"]

LAYERS = (784, 392, 10)
PLAN_NAME = "training_plan"
_JIT_DEPRECATED = r"`torch\.jit\.[a-z_]+` is deprecated"


@contextmanager
def _quiet_jit() -> Iterator[None]:
    """TorchScript still works but announces its deprecation on every trace/save/load call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=_JIT_DEPRECATED)
        yield


class PlaceholderModule(torch.nn.Module):
    """The traced wrapper; its name and ``*args`` make the schema equal to PySyft's translated plan."""

    # TorchScript qualifies a class by its module, except for __main__: this yields
    # ``__torch__.PlaceholderModule``, the recorded plan's qualified name.
    __module__ = "__main__"

    def forward(self, *args: Any) -> tuple[torch.Tensor, ...]:
        return _training_step(args)


def _training_step(a: Sequence[Any]) -> tuple[torch.Tensor, ...]:
    # The inputs are only ever indexed, never bound to a name: the tracer names graph inputs after
    # the locals that hold them, and the recorded schema has argument_1 … argument_5.
    w1, b1, w2, b2 = a[4]
    onehot = a[1].to(a[0].dtype)
    z1 = a[0] @ w1.t() + b1
    hidden = torch.relu(z1)
    logits = hidden @ w2.t() + b2
    shifted = logits - logits.max(dim=1, keepdim=True).values
    exp = torch.exp(shifted)
    total = exp.sum(dim=1, keepdim=True)
    loss = -(onehot * (shifted - torch.log(total))).sum() / a[2]
    d_logits = (exp / total - onehot) / a[2]
    d_z1 = (d_logits @ w2) * (z1 > 0).to(z1.dtype)
    acc = (logits.argmax(1) == onehot.argmax(1)).sum().to(logits.dtype) / a[2]
    return (
        loss,
        acc,
        w1 - a[3] * (d_z1.t() @ a[0]),
        b1 - a[3] * d_z1.sum(0),
        w2 - a[3] * (d_logits.t() @ hidden),
        b2 - a[3] * d_logits.sum(0),
    )


def model_tensors(seed: int = 0) -> list[torch.Tensor]:
    """The initial parameters [W1 (392×784), b1, W2 (10×392), b2], ``nn.Linear``'s default init, seeded."""
    generator = torch.Generator().manual_seed(seed)
    params: list[torch.Tensor] = []
    for fan_in, fan_out in itertools.pairwise(LAYERS):
        bound = 1.0 / fan_in**0.5
        params.append((torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound)
        params.append((torch.rand(fan_out, generator=generator) * 2 - 1) * bound)
    return params


def mnist_plan_torchscript(batch_size: int = 64) -> bytes:
    """The training plan as a TorchScript archive (the bytes of Plan field 7)."""
    example = (
        torch.zeros(batch_size, LAYERS[0]),
        torch.nn.functional.one_hot(torch.arange(batch_size) % LAYERS[-1], LAYERS[-1]),
        torch.tensor(batch_size),
        torch.tensor(0.01),
        model_tensors(),
    )
    buffer = io.BytesIO()
    with _quiet_jit(), torch.no_grad():
        traced = torch.jit.trace(PlaceholderModule(), example, check_trace=False)  # type: ignore[no-untyped-call]
        torch.jit.save(traced, buffer)
    return buffer.getvalue()


def load_plan(torchscript: bytes) -> Any:
    """``torch.jit.load`` of a plan archive, without the deprecation warning."""
    with _quiet_jit():
        return torch.jit.load(io.BytesIO(torchscript))  # type: ignore[no-untyped-call]


def build_mnist_process(
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 0.005,
    max_updates: int = 100,
    *,
    name: str = "mnist",
    version: str = "1.0",
    server_config: Mapping[str, Any] | None = None,
) -> tuple[bytes, dict[str, bytes], dict[str, Any], dict[str, Any]]:
    """(model State bytes, {"training_plan": Plan bytes}, client_config, server_config) to host.

    ``server_config`` entries override the recorded process's (cycle_length 60, num_cycles 5,
    min_diffs = max_diffs = 1, no speed test).
    """
    model = wire.encode_state(
        [wire.Tensor("float32", tuple(t.shape), t.contiguous().numpy().tobytes()) for t in model_tensors(seed)]
    )
    plans = {PLAN_NAME: wire.encode_plan(mnist_plan_torchscript(batch_size), PLAN_NAME)}
    client_config = {"name": name, "version": version, "batch_size": batch_size, "lr": lr, "max_updates": max_updates}
    server = {
        "min_workers": 1,
        "max_workers": 5,
        "pool_selection": "random",
        "do_not_reuse_workers_until_cycle": 6,
        "cycle_length": 60,
        "num_cycles": 5,
        "min_diffs": 1,
        "max_diffs": 1,
        "iterative_plan": True,
        **(server_config or {}),
    }
    return model, plans, client_config, server
