"""ModuleTask and builders: vmapped gradients vs real-module autograd, sampling, f and f*."""

from __future__ import annotations

import copy
from typing import Literal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, grad_and_value, vmap
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from decent.tasks import (
    Dataset,
    ModuleTask,
    Task,
    TaskError,
    breast_cancer,
    digits,
    dirichlet,
    from_numpy,
    iid,
    logistic_regression,
    mlp,
    random_classification,
    softmax_regression,
)
from decent.tasks._optim import lbfgs_minimize

DT = torch.float64


@pytest.fixture(scope="module")
def small() -> Dataset:
    return random_classification(150, 6, 3, seed=0)


@pytest.fixture(scope="module")
def cancer_logreg() -> ModuleTask:
    return logistic_regression(
        breast_cancer(seed=1), 5, "dirichlet", alpha=0.5, l2=1e-3, batch_size=7
    )


def _reference_grads(
    task: ModuleTask, params: torch.Tensor, batch, loss_fn
) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    """Per-node loss.backward() on a real module carrying the same parameters."""
    grads, values = [], []
    for i in range(params.shape[0]):
        module = copy.deepcopy(task.module)
        vector_to_parameters(params[i].clone(), module.parameters())
        module.zero_grad()
        x, y = batch[0][i], batch[1][i]
        flat = parameters_to_vector(module.parameters())
        value = loss_fn(module(x), y) + 0.5 * task.l2 * flat.square().sum()
        value.backward()
        flat_grads = []
        for p in module.parameters():
            assert p.grad is not None  # every parameter takes part in the loss
            flat_grads.append(p.grad.reshape(-1))
        grads.append(torch.cat(flat_grads))
        values.append(value.detach())
    return torch.stack(grads), torch.stack(values)


def test_mlp_vmapped_grad_equals_module_autograd(small: Dataset) -> None:
    task = mlp(small, 4, hidden=(8, 5), activation="tanh", batch_size=6, l2=1e-2)
    assert isinstance(task, Task) and task.dim == 6 * 8 + 8 + 8 * 5 + 5 + 5 * 3 + 3
    gen = torch.Generator().manual_seed(0)
    params = torch.randn(4, task.dim, dtype=DT, generator=gen)
    batch = task.sample(torch.arange(4), t=3, seed=1)
    grads, values = vmap(grad_and_value(task.loss))(params, batch)
    ref_g, ref_v = _reference_grads(task, params, batch, F.cross_entropy)
    torch.testing.assert_close(grads, ref_g, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(values, ref_v, rtol=1e-12, atol=1e-12)


def test_logistic_vmapped_grad_equals_module_autograd(cancer_logreg: ModuleTask) -> None:
    task = cancer_logreg
    params = torch.randn(5, task.dim, dtype=DT, generator=torch.Generator().manual_seed(1))
    batch = task.sample(torch.arange(5), t=0, seed=2)
    grads, values = vmap(grad_and_value(task.loss))(params, batch)

    def bce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(out[:, 0], y.to(out.dtype))

    ref_g, ref_v = _reference_grads(task, params, batch, bce)
    torch.testing.assert_close(grads, ref_g, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(values, ref_v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("loss", ["bce", "cross_entropy"])
@pytest.mark.parametrize("sampling", ["with_replacement", "without_replacement"])
def test_linear_closed_form_gradients_equal_module_autograd(
    loss: str, sampling: Literal["with_replacement", "without_replacement"]
) -> None:
    """The engine's fast path for logistic / softmax regression against loss.backward()."""
    from decent.engine import GradientOracle

    classes = 2 if loss == "bce" else 4
    data = random_classification(90, 6, classes, seed=3)
    build = logistic_regression if loss == "bce" else softmax_regression
    # 8 nodes of about 11 samples, batch 16: without replacement the batches are padded
    task = build(data, 8, "iid", batch_size=16, l2=1e-2, sampling=sampling)
    oracle = GradientOracle(task)
    assert oracle.closed_form
    params = torch.randn(8, task.dim, dtype=DT, generator=torch.Generator().manual_seed(4))
    batch = task.sample(torch.arange(8), t=2, seed=5)
    grads, values = oracle(params, batch)
    slow_g, slow_v = GradientOracle(task, autograd=True)(params, batch)
    torch.testing.assert_close(grads, slow_g, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(values, slow_v, rtol=1e-13, atol=1e-14)
    if sampling == "with_replacement":  # an independent third computation

        def ref(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            if loss == "bce":
                return F.binary_cross_entropy_with_logits(out[:, 0], y.to(out.dtype))
            return F.cross_entropy(out, y)

        ref_g, ref_v = _reference_grads(task, params, batch, ref)
        torch.testing.assert_close(grads, ref_g, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(values, ref_v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("sampling", ["with_replacement", "without_replacement"])
def test_mlp_batched_gradients_equal_module_autograd(
    activation: str, sampling: Literal["with_replacement", "without_replacement"]
) -> None:
    """The batched MLP path (bmm over rows, no autograd) against vmap(grad) and backward()."""
    from decent.engine import GradientOracle

    data = random_classification(90, 6, 4, seed=3)
    task = mlp(
        data,
        8,
        "iid",
        hidden=(7, 5),
        activation=activation,  # type: ignore[arg-type]
        batch_size=16,
        l2=1e-2,
        sampling=sampling,
    )
    oracle = GradientOracle(task)
    assert oracle.closed_form
    params = torch.randn(8, task.dim, dtype=DT, generator=torch.Generator().manual_seed(4))
    batch = task.sample(torch.arange(8), t=2, seed=5)
    grads, values = oracle(params, batch)
    slow_g, slow_v = GradientOracle(task, autograd=True)(params, batch)
    torch.testing.assert_close(grads, slow_g, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(values, slow_v, rtol=1e-13, atol=1e-14)
    if sampling == "with_replacement":  # an independent third computation
        ref_g, ref_v = _reference_grads(task, params, batch, F.cross_entropy)
        torch.testing.assert_close(grads, ref_g, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(values, ref_v, rtol=1e-12, atol=1e-12)


def test_only_linear_stacks_take_the_closed_form(small: Dataset) -> None:
    from decent.engine import GradientOracle

    assert GradientOracle(mlp(small, 3, hidden=(4,), batch_size=2)).closed_form
    assert not GradientOracle(mlp(small, 3, hidden=(4,), activation="gelu")).closed_form
    with_norm = nn.Sequential(nn.Linear(6, 8), nn.GroupNorm(2, 8), nn.Linear(8, 3))
    task = ModuleTask(with_norm, small, iid(small.labels, 3, seed=0))
    assert task.grad_and_loss is None
    dropout = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.1), nn.Linear(8, 3))
    assert ModuleTask(dropout, small, iid(small.labels, 3, seed=0)).grad_and_loss is None
    task = ModuleTask(nn.Linear(6, 3, bias=False), small, iid(small.labels, 3, seed=0))
    assert task.grad_and_loss is None


def test_groupnorm_model_works_under_vmap(small: Dataset) -> None:
    module = nn.Sequential(nn.Linear(6, 8), nn.GroupNorm(2, 8), nn.ReLU(), nn.Linear(8, 3))
    task = ModuleTask(module, small, iid(small.labels, 3, seed=0), batch_size=4)
    params = torch.stack([task.init_params(s) for s in range(3)])
    batch = task.sample(torch.arange(3), t=0, seed=0)
    grads, _ = vmap(grad_and_value(task.loss))(params, batch)
    ref_g, _ = _reference_grads(task, params, batch, F.cross_entropy)
    torch.testing.assert_close(grads, ref_g, rtol=1e-12, atol=1e-12)


def test_sampling_draws_from_own_shard_reproducibly() -> None:
    n_data = 90
    data = from_numpy(np.arange(n_data, dtype=float)[:, None], np.arange(n_data) % 3)
    parts = dirichlet(data.labels, 6, 0.3, seed=0)
    task = ModuleTask(nn.Linear(1, 3), data, parts, batch_size=50)
    x, y = task.sample(torch.arange(6), t=4, seed=9)
    assert x.shape == (6, 50, 1) and y.shape == (6, 50)
    for i in range(6):
        drawn = x[i, :, 0].to(torch.int64)
        assert bool(torch.isin(drawn, parts[i]).all())
        assert torch.equal(y[i], data.labels[drawn])
    sub = task.sample(torch.tensor([3, 5]), t=4, seed=9)
    assert torch.equal(sub[0], x[[3, 5]]) and torch.equal(sub[1], y[[3, 5]])
    assert torch.equal(task.sample(torch.arange(6), t=4, seed=9)[0], x)
    assert not torch.equal(task.sample(torch.arange(6), t=5, seed=9)[0], x)


def test_sampling_is_uniform_over_the_shard() -> None:
    data = from_numpy(np.arange(10, dtype=float)[:, None], np.zeros(10, dtype=int))
    task = ModuleTask(
        nn.Linear(1, 1), data, [torch.arange(4), torch.arange(4, 10)], loss="bce", batch_size=6000
    )
    x, _ = task.sample(torch.tensor([0, 1]), t=0, seed=0)
    counts0 = torch.bincount(x[0, :, 0].to(torch.int64), minlength=10)[:4].double()
    counts1 = torch.bincount(x[1, :, 0].to(torch.int64), minlength=10)[4:].double()
    for counts, k in ((counts0, 4), (counts1, 6)):
        p = 1.0 / k
        sd = (6000 * p * (1 - p)) ** 0.5
        assert bool(((counts - 6000 * p).abs() < 5 * sd).all())


def test_evaluate_matches_per_node_loop(small: Dataset) -> None:
    train, test = small.train_test_split(0.2, seed=0)
    assert test is not None  # a fraction > 0 gives a test part
    parts = dirichlet(train.labels, 5, 0.2, seed=3)  # unequal shard sizes
    task = mlp(train, 5, parts, hidden=(4,), test=test, l2=1e-3)
    params = torch.stack([task.init_params(s) for s in range(3)])
    out = task.evaluate(params, chunk_models=2, chunk_rows=17)  # exercise the chunking
    for k in range(3):
        model = copy.deepcopy(task.module)
        vector_to_parameters(params[k].clone(), model.parameters())
        ridge = 0.5 * 1e-3 * float(params[k].square().sum())
        with torch.no_grad():
            local = [F.cross_entropy(model(train.features[p]), train.labels[p]) for p in parts]
            acc = [
                (model(train.features[p]).argmax(1) == train.labels[p]).double().mean()
                for p in parts
            ]
            t_out = model(test.features)
        assert abs(float(out["loss"][k]) - (float(torch.stack(local).mean()) + ridge)) < 1e-13
        assert abs(float(out["accuracy"][k]) - float(torch.stack(acc).mean())) < 1e-13
        t_loss = float(F.cross_entropy(t_out, test.labels)) + ridge
        assert abs(float(out["test_loss"][k]) - t_loss) < 1e-13
        t_acc = float((t_out.argmax(1) == test.labels).double().mean())
        assert abs(float(out["test_accuracy"][k]) - t_acc) < 1e-13


def test_logistic_optimum(cancer_logreg: ModuleTask) -> None:
    task = cancer_logreg
    assert task.optimum is not None
    g = grad(task.objective)(task.x_star)
    assert float(g.norm()) < 1e-10
    assert float(task.evaluate(task.x_star[None])["loss"][0]) == task.optimum
    gen = torch.Generator().manual_seed(4)
    probes = torch.cat(
        [
            torch.randn(20, task.dim, dtype=DT, generator=gen),
            task.x_star + 1e-3 * torch.randn(20, task.dim, dtype=DT, generator=gen),
        ]
    )
    assert bool((task.evaluate(probes)["loss"] > task.optimum).all())


def test_softmax_optimum_agrees_with_lbfgs_and_autograd_hessian(small: Dataset) -> None:
    task = softmax_regression(small, 3, "shards", classes_per_node=1, l2=1e-2)
    assert task.optimum is not None and float(grad(task.objective)(task.x_star).norm()) < 1e-10
    x_lbfgs = lbfgs_minimize(task.objective, torch.zeros(task.dim, dtype=DT))
    f_lbfgs = float(task.evaluate(x_lbfgs[None])["loss"][0])
    assert 0 <= f_lbfgs - task.optimum < 1e-10
    hessian = task._linear_hessian()
    assert hessian is not None
    point = task.x_star + 0.3
    auto = torch.func.jacrev(torch.func.jacrev(task.objective))(point)
    torch.testing.assert_close(hessian(point), auto, rtol=1e-12, atol=1e-14)


def test_1024_nodes_of_digits_in_one_batched_call() -> None:
    n = 1024
    task = softmax_regression(digits(seed=0), n, "iid", batch_size=16, compute_optimum=False)
    params = task.init_params(0).expand(n, -1).clone()
    batch = task.sample(torch.arange(n), t=0, seed=0)
    grads, values = vmap(grad_and_value(task.loss))(params, batch)
    assert grads.shape == (n, task.dim) and values.shape == (n,)
    for i in (0, 777):
        g_i = grad(task.loss)(params[i], (batch[0][i], batch[1][i]))
        torch.testing.assert_close(grads[i], g_i, rtol=1e-12, atol=1e-15)


def test_init_params_is_seeded_and_leaves_global_rng_alone(small: Dataset) -> None:
    task = mlp(small, 2)
    state = torch.get_rng_state()
    a, b = task.init_params(5), task.init_params(5)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(a, b) and not torch.equal(a, task.init_params(6))
    assert a.shape == (task.dim,) and a.dtype == DT


def test_unkeyable_random_layers_are_rejected_with_a_hint(small: Dataset) -> None:
    module = nn.Sequential(nn.Linear(6, 8), nn.AlphaDropout(0.2), nn.Linear(8, 3))
    with pytest.raises(TaskError, match=r"nn\.Dropout") as info:
        ModuleTask(module, small, iid(small.labels, 2, seed=0))
    assert "'1'" in str(info.value) and "AlphaDropout" in str(info.value)
    sync = nn.Sequential(nn.Linear(6, 8), nn.SyncBatchNorm(8), nn.Linear(8, 3))
    with pytest.raises(TaskError, match="BatchNorm1d"):
        ModuleTask(sync, small, iid(small.labels, 2, seed=0))


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (
            lambda d: ModuleTask(
                nn.Linear(6, 3), d, [torch.arange(5), torch.tensor([], dtype=torch.int64)]
            ),
            "empty",
        ),
        (lambda d: ModuleTask(nn.Linear(6, 3), d, [torch.tensor([0, 150])]), "outside"),
        (lambda d: ModuleTask(nn.Linear(6, 3), d, [torch.arange(5)], loss="hinge"), "loss"),
        (lambda d: ModuleTask(nn.Linear(6, 3), d, [torch.arange(5)], batch_size=0), "batch_size"),
        (lambda d: ModuleTask(nn.Linear(6, 3), d.features, [torch.arange(5)]), "from_numpy"),
        (lambda d: logistic_regression(d, 2), "two-class"),
        (lambda d: softmax_regression(d, 2, "random"), "partition"),
        (lambda d: softmax_regression(d, 3, [torch.arange(5)]), "num_nodes=3"),
        (lambda d: mlp(d, 2, activation="swish"), "activation"),  # type: ignore[arg-type]
        (lambda d: mlp(d, 200), "num_nodes=200"),
    ],
)
def test_bad_arguments_raise_task_error(small: Dataset, build, needle: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TaskError, match=needle):
        build(small)


def test_evaluate_rejects_wrong_shape(small: Dataset) -> None:
    task = mlp(small, 2)
    with pytest.raises(TaskError, match="evaluate expects"):
        task.evaluate(task.init_params(0))
