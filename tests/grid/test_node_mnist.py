"""The MNIST process of syftd.node.mnist: same TorchScript calling convention as the recorded PyGrid
plan, same numbers on the recorded training step, learns, and is what ``serve --host-mnist`` hosts."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import FIXTURES
from support.gridnode import NodeProcess, RawWorker

from syftd.grid import wire
from syftd.node.mnist import PLAN_NAME, build_mnist_process, load_plan

pytestmark = pytest.mark.torch

GOLDEN = FIXTURES / "golden-cycle"
STEP = GOLDEN / "step"
RECORDED_PLAN = (GOLDEN / "013-http-GET-model-centric_get-plan.response.bin").read_bytes()


@pytest.fixture(scope="module")
def process():
    return build_mnist_process(seed=0)


@pytest.fixture(scope="module")
def plan(process):
    return load_plan(wire.plan_torchscript(process[1][PLAN_NAME]))


def params_of(model: bytes) -> list[torch.Tensor]:
    return [torch.frombuffer(bytearray(t.data), dtype=torch.float32).reshape(t.shape) for t in wire.parse_state(model)]


def recorded(name: str) -> torch.Tensor:
    return torch.from_numpy(np.load(STEP / f"{name}.npy"))


def _unmangled(schema: object) -> str:
    # TorchScript mangles a class name that was already compiled in this process (another test built the
    # plan first); the mangle is not part of the calling convention
    return re.sub(r"___torch_mangle_\d+\.", "", str(schema))


def test_schema_equals_the_recorded_plans(plan):
    """The MNIST plan's forward schema is the recorded PyGrid plan's (argument names, types, outputs)."""
    recorded_plan = load_plan(wire.plan_torchscript(RECORDED_PLAN))
    assert _unmangled(plan.forward.schema) == _unmangled(recorded_plan.forward.schema)
    assert _unmangled(plan.forward.schema).startswith(
        "forward(__torch__.PlaceholderModule self, Tensor argument_1, Tensor argument_2, Tensor argument_3, "
        "Tensor argument_4, Tensor[] argument_5)"
    )


def test_process_configs_and_model_shapes(process):
    model, plans, client, server = process
    assert [t.shape for t in wire.parse_state(model)] == [(392, 784), (392,), (10, 392), (10,)]
    assert {t.dtype for t in wire.parse_state(model)} == {"float32"}
    assert list(plans) == ["training_plan"] and wire.plan_torchscript(plans["training_plan"])
    assert client == {"name": "mnist", "version": "1.0", "batch_size": 64, "lr": 0.005, "max_updates": 100}
    assert server["cycle_length"] == 60 and server["num_cycles"] == 5
    assert build_mnist_process(seed=0)[0] == model and build_mnist_process(seed=1)[0] != model


def test_one_step_gives_the_recorded_plans_numbers_on_the_recorded_inputs(plan):
    """Same X, one-hot y (int64), 0-d batch_size and lr, same params: loss, accuracy and updated params agree."""
    params = [recorded(f"params_in_{i}") for i in range(4)]
    loss, acc, *updated = plan(recorded("X"), recorded("y_oh"), recorded("batch_size"), recorded("lr"), params)
    torch.testing.assert_close(loss, recorded("loss"), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(acc, recorded("acc"))
    for i, tensor in enumerate(updated):
        assert tensor.dtype == torch.float32
        torch.testing.assert_close(tensor, recorded(f"params_out_{i}"), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("batch_size", "lr"),
    [
        (torch.tensor(64), torch.tensor(0.005)),
        (torch.tensor([64]), torch.tensor([0.005])),
        (torch.tensor([64], dtype=torch.int32), torch.tensor([0.005])),
        (torch.tensor([64.0]), torch.tensor(0.005)),
    ],
)
def test_step_accepts_each_clients_batch_size_and_lr_tensors(plan, process, batch_size, lr):
    params = params_of(process[0])
    X, y = torch.rand(64, 784), torch.nn.functional.one_hot(torch.arange(64) % 10, 10)
    loss, acc, *updated = plan(X, y, batch_size, lr, params)
    assert torch.isfinite(loss).all() and 0 <= float(acc) <= 1
    assert [t.shape for t in updated] == [p.shape for p in params]


def test_thirty_steps_on_a_learnable_batch_lower_the_loss(plan, process):
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 10
    X = torch.rand(64, 784, generator=generator) * 0.2
    for digit in range(10):
        X[labels == digit, digit * 78 : digit * 78 + 78] += 1.0
    y = torch.nn.functional.one_hot(labels, 10)
    params = params_of(process[0])
    losses = []
    for _ in range(30):
        loss, _acc, *params = plan(X, y, torch.tensor(64), torch.tensor(0.1), params)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


async def test_serve_host_mnist_child_serves_a_plan_a_worker_trains_with(process):
    async with NodeProcess("--host-mnist", "--num-cycles", "2", "--lr", "0.05") as proc:
        async with RawWorker(proc.url) as worker:
            await worker.authenticate("mnist", "1.0")
            cycle = await worker.cycle_request("mnist", "1.0")
            assert cycle["client_config"]["lr"] == 0.05
            status, model = await worker.get_model()
            assert status == 200 and model == process[0]
            status, plan_bytes = await worker.get_plan()
            plan = load_plan(wire.plan_torchscript(plan_bytes))
            params = params_of(model)
            X, y = torch.rand(64, 784), torch.nn.functional.one_hot(torch.arange(64) % 10, 10)
            _loss, _acc, *trained = plan(X, y, torch.tensor(64), torch.tensor(0.05), params)
            diff = wire.encode_state(
                [
                    wire.Tensor("float32", tuple(p.shape), (p - t).contiguous().numpy().tobytes())
                    for p, t in zip(params, trained, strict=True)
                ]
            )
            wire.check_diff(diff, model)
            assert await worker.report(diff) == {"status": "success"}
            state = await proc.control.wait(checkpoint=2, timeout=30)
            assert state["processes"][0]["name"] == "mnist" and state["processes"][0]["cycle"] == 2
            status, latest = await worker.get("retrieve-model", name="mnist", version="1.0")
            for new, t in zip(params_of(latest), trained, strict=True):
                torch.testing.assert_close(new, t, rtol=0, atol=1e-6)
