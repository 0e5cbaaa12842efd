"""The batched closed-form CNN gradients (ModuleTask._cnn_grad_and_loss) against
vmap(grad(loss)) and against backward() through the real module, node by node."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Literal

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import vector_to_parameters

from decent._types import Batch
from decent.engine import GradientOracle
from decent.tasks import ModuleTask, iid, models, random_classification
from decent.tasks.nets import ConvNet1d, cnn1d, mnist1d


def _other_cnn(classes: int) -> ConvNet1d:
    """A ConvNet1d with other blocks: odd kernels and strides, no padding and more padding
    than the kernel's half, a bias-free convolution, ReLU before GroupNorm, one group."""
    net = ConvNet1d(4, 2, classes)
    net.features = nn.Sequential(
        nn.Conv1d(1, 6, 3, padding=0, bias=False),
        nn.GroupNorm(3, 6, eps=1e-3),
        nn.ReLU(),
        nn.Conv1d(6, 4, 7, stride=3, padding=1),
        nn.ReLU(),
        nn.GroupNorm(2, 4),
        nn.Conv1d(4, 6, 2, stride=2, padding=3),
        nn.GroupNorm(1, 6),
    )
    net.head = nn.Linear(6, classes)
    return net


def _study_task(m: int, batch_size: int, dtype: torch.dtype) -> ModuleTask:
    data = mnist1d(num_samples=400, dtype=dtype)
    return cnn1d(data, m, partition="iid", channels=16, groups=4, batch_size=batch_size)


def _other_task(
    m: int,
    batch_size: int,
    dtype: torch.dtype,
    l2: float = 0.0,
    sampling: Literal["with_replacement", "without_replacement"] = "with_replacement",
) -> ModuleTask:
    data = random_classification(240, 23, 3, seed=1).to(dtype=dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = _other_cnn(3)
    partition = iid(data.labels, m, seed=0)
    return ModuleTask(net, data, partition, batch_size=batch_size, l2=l2, sampling=sampling)


def _rows(task: ModuleTask, m: int) -> torch.Tensor:
    """Each row its own point: the seeds' initialisations, perturbed."""
    gen = torch.Generator().manual_seed(7)
    start = torch.stack([task.init_params(s) for s in range(m)])
    return start + 0.1 * torch.randn(start.shape, generator=gen, dtype=start.dtype)


def _agree(task: ModuleTask, params: torch.Tensor, batch: Batch, rtol: float) -> None:
    """The closed form's gradients and losses equal vmap(grad(loss))'s to ``rtol``."""
    fast = GradientOracle(task)
    assert fast.closed_form
    slow = GradientOracle(task, autograd=True)
    assert not slow.closed_form
    grads, losses = fast(params, batch)
    slow_g, slow_l = slow(params, batch)
    _close(grads, slow_g, rtol)
    _close(losses, slow_l, rtol)


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> None:
    """Row by row, relative to the row's largest entry."""
    scale = b.abs().amax(dim=-1, keepdim=True) if b.ndim > 1 else b.abs()
    err = (a - b).abs() / scale
    assert float(err.max()) <= rtol, float(err.max())


BUILDERS: dict[str, Callable[..., ModuleTask]] = {"study": _study_task, "other": _other_task}


@pytest.mark.parametrize("shape", ["study", "other"])
@pytest.mark.parametrize(("m", "batch_size"), [(1, 1), (1, 5), (6, 1), (6, 8)])
def test_closed_form_equals_vmap_grad_in_float64(
    shape: str, m: int, batch_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models, "_CNN_ROWS", 4)  # m = 6: slices of 4 and 2 rows
    task = BUILDERS[shape](m, batch_size, torch.float64)
    assert task.grad_and_loss is not None
    params = _rows(task, m)
    batch = task.sample(torch.arange(m), t=3, seed=2)
    _agree(task, params, batch, 1e-10)


def test_closed_form_equals_backward_through_the_module() -> None:
    """An independent reference: each node's loss.backward() through the real module."""
    m = 3
    task = _other_task(m, 6, torch.float64)
    params = _rows(task, m)
    batch = task.sample(torch.arange(m), t=1, seed=0)
    grads, losses = GradientOracle(task)(params, batch)
    for i in range(m):
        net = copy.deepcopy(task.module).train()
        vector_to_parameters(params[i].clone(), net.parameters())
        loss = F.cross_entropy(net(batch[0][i]), batch[1][i])
        loss.backward()
        expected = torch.cat([p.grad.reshape(-1) for p in net.parameters()])  # type: ignore[union-attr]
        torch.testing.assert_close(grads[i], expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(losses[i], loss.detach(), rtol=1e-12, atol=0.0)


def test_closed_form_with_ridge_and_without_replacement(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ridge term and the weighted batches of sampling without replacement (a node with
    fewer samples than the batch has zero-weight padding rows)."""
    monkeypatch.setattr(models, "_CNN_ROWS", 2)
    m = 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        task = _other_task(m, 40, torch.float64, l2=1e-2, sampling="without_replacement")
    params = _rows(task, m)
    batch = task.sample(torch.arange(m), t=0, seed=1)
    assert len(batch) == 3
    _agree(task, params, batch, 1e-10)


def test_closed_form_with_one_logit_and_bce() -> None:
    m = 4
    data = random_classification(100, 23, 2, seed=2).to(dtype=torch.float64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        net = _other_cnn(1)
    task = ModuleTask(net, data, iid(data.labels, m, seed=0), batch_size=7, loss="bce")
    params = _rows(task, m)
    batch = task.sample(torch.arange(m), t=0, seed=3)
    _agree(task, params, batch, 1e-10)


@pytest.mark.parametrize("shape", ["study", "other"])
def test_closed_form_equals_vmap_grad_in_float32(shape: str) -> None:
    """Float32 to rounding (a pre-activation within rounding of 0 could flip a ReLU mask;
    these draws have none)."""
    m = 8
    task = BUILDERS[shape](m, 16, torch.float32)
    params = _rows(task, m)
    batch = task.sample(torch.arange(m), t=5, seed=0)
    _agree(task, params, batch, 1e-5)


def test_autograd_switch_keeps_the_vmapped_path() -> None:
    data = mnist1d(num_samples=200)
    assert cnn1d(data, 2).grad_and_loss is not None
    assert cnn1d(data, 2, autograd=True).grad_and_loss is None
    assert not GradientOracle(cnn1d(data, 2, autograd=True)).closed_form


class _Sub(ConvNet1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(2 * x)


def _replace(
    features: list[nn.Module] | None = None, head: nn.Module | None = None
) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        net = ConvNet1d(4, 2, 3)
        if features is not None:
            net.features = nn.Sequential(*features)
        if head is not None:
            net.add_module("head", head)  # replaces the Linear
        return net

    return build


@pytest.mark.parametrize(
    "build",
    [
        _replace([nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU()]),
        _replace([nn.Conv1d(1, 4, 3), nn.Dropout(0.1), nn.ReLU()]),
        _replace([nn.Conv1d(1, 4, 3, dilation=2), nn.ReLU()]),
        _replace([nn.Conv1d(1, 4, 3, padding=1, padding_mode="circular"), nn.ReLU()]),
        _replace([nn.Conv1d(1, 4, 3), nn.GroupNorm(2, 4, affine=False)]),
        _replace([nn.Conv1d(1, 4, 3), nn.Tanh()]),
        _replace([nn.ReLU(), nn.Conv1d(1, 4, 3)]),
        _replace(head=nn.Linear(4, 3, bias=False)),
        _replace(head=nn.Sequential(nn.Linear(4, 3))),
        lambda: _Sub(4, 2, 3),
        lambda: nn.Sequential(nn.Unflatten(1, (1, 4, 5)), nn.Conv2d(1, 3, 2), nn.Flatten(1)),
    ],
)
def test_other_modules_keep_the_vmapped_path(build: Callable[[], nn.Module]) -> None:
    data = random_classification(60, 20, 3, seed=0)
    task = ModuleTask(build(), data, iid(data.labels, 2, seed=0), batch_size=4)
    assert task.grad_and_loss is None
    params = torch.stack([task.init_params(0)] * 2)
    grads, _ = GradientOracle(task)(params, task.sample(torch.arange(2), t=0, seed=0))
    assert torch.isfinite(grads).all()
