"""The population logistic task: its quadrature objective against independent computations."""

from __future__ import annotations

import math

import pytest
import torch

from decent import tasks
from decent.algorithms import DSGD
from decent.comm import SimCommunicator
from decent.engine import train, train_replicas
from decent.tasks import LogisticPopulation, TaskError
from decent.tasks import population as pop
from decent.topology import ring


def _task(n: int = 4, **kw) -> LogisticPopulation:
    args = dict(dim=6, heterogeneity=1.0, label_heterogeneity=0.7, components=16, spectrum="power")
    args.update(kw)
    return LogisticPopulation(n, **args)  # type: ignore[arg-type]


def test_well_specified_and_homogeneous_the_minimizer_is_theta():
    """One logistic model for every sample: the population minimizer is its parameter."""
    for spectrum in ("identity", "power"):
        task = LogisticPopulation(3, dim=5, theta_norm=1.5, spectrum=spectrum)
        torch.testing.assert_close(task.x_star, task.theta_true, rtol=0, atol=1e-12)


def test_loss_and_accuracy_match_a_large_sample_of_the_tasks_own_draws():
    """f(x) and the accuracy at a point off the optimum against 2^20 samples drawn by the
    task's sampler (every node, every component): within 4 standard errors."""
    task = _task(batch_size=512, power=1.5)
    x = task.x_star + 0.4 * torch.linspace(-1, 1, task.dim, dtype=torch.float64)
    nodes = torch.arange(task.num_nodes)
    losses, hits = [], []
    for t in range(1, 513):
        a, y = task.sample(nodes, t, seed=3)
        z = a @ x
        losses.append(torch.nn.functional.softplus(z) - y * z)
        hits.append(((z > 0).to(y.dtype) == y).to(torch.float64))
    loss, hit = torch.cat(losses).reshape(-1), torch.cat(hits).reshape(-1)
    se_loss, se_hit = float(loss.std()) / math.sqrt(loss.numel()), float(hit.std()) / 1024
    got = task.evaluate(x[None])
    assert abs(float(got["loss"][0]) - float(loss.mean())) < 4 * se_loss
    assert abs(float(got["accuracy"][0]) - float(hit.mean())) < 4 * se_hit


def test_gradient_and_hessian_are_the_derivatives_of_the_objective():
    task = _task(l2=0.01, power=0.7)
    x = task.x_star + torch.tensor([0.3, -0.2, 0.5, 0.0, 0.1, -0.4], dtype=torch.float64)
    xa = x.clone().requires_grad_(True)
    task._objective64(xa).backward()
    assert xa.grad is not None
    torch.testing.assert_close(task._gradient64(x), xa.grad, rtol=0, atol=1e-13)
    hess = torch.autograd.functional.hessian(task._objective64, x)
    torch.testing.assert_close(task._hessian64(x), hess, rtol=0, atol=1e-13)
    assert float(task._gradient64(task._xstar64).abs().max()) < 1e-12


def test_the_grid_is_converged():
    """Halving the grid step changes f by no more than rounding."""
    task = _task()
    x = 2.0 * task.x_star
    coarse = task._objective64(x)
    m = task._means64 @ x
    scale = float((x.square() * task._lam).sum().sqrt())
    z, w = pop._gauss_grid(scale, step_u=0.25)
    soft = torch.nn.functional.softplus(m[:, None] + scale * z) @ w
    fine = soft.mean() - x @ task._linear
    assert abs(float(coarse - fine)) < 1e-14


def test_components_make_one_problem_for_every_number_of_nodes():
    one, four = _task(1), _task(4)
    torch.testing.assert_close(one.x_star, four.x_star, rtol=0, atol=1e-14)
    assert one.optimum == pytest.approx(four.optimum, abs=1e-15)


def test_replica_batch_equals_single_runs_bit_for_bit():
    task = _task(8, batch_size=3)
    other = _task(8, batch_size=3, heterogeneity=0.5)
    algorithms = [DSGD(lr=0.1), DSGD(lr=0.05)]
    batch = train_replicas(
        algorithms, [task, other], SimCommunicator(ring(8)), rounds=20, seeds=[0, 1]
    )
    for algo, t, seed, res in zip(algorithms, [task, other], [0, 1], batch, strict=True):
        single = train(algo, t, SimCommunicator(ring(8)), rounds=20, seed=seed)
        assert single.output is not None and res.output is not None
        assert torch.equal(single.output, res.output)
    assert batch[0].final["eval/subopt@mean"] > 0


def test_a_run_drives_the_excess_risk_down():
    task = _task(4, batch_size=8)
    res = train(DSGD(lr=0.5), task, SimCommunicator(ring(4)), rounds=300)
    assert res.records[-1]["eval/subopt@mean"] < 0.1 * res.records[0]["eval/subopt@mean"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("theta_norm", 0.0),
        ("components", 6),
        ("heterogeneity", -1.0),
        ("dim", 0),
        ("spectrum", "cubic"),
    ],
)
def test_bad_arguments_name_the_field(field: str, value: float) -> None:
    with pytest.raises(TaskError, match=field):
        LogisticPopulation(4, **{field: value})  # type: ignore[arg-type]


def test_exported():
    assert tasks.LogisticPopulation is LogisticPopulation
