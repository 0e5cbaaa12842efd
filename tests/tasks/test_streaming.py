"""Streaming convex tasks against closed forms, autograd and the central limit theorem."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch.func import grad, grad_and_value, vmap

from decent.tasks import LeastSquares, LogisticRegressionStream, Task, TaskError

DT = torch.float64


@pytest.fixture(scope="module")
def ls() -> LeastSquares:
    return LeastSquares(
        6, dim=5, noise=0.7, heterogeneity=1.5, batch_size=3, condition=20.0, seed=3
    )


@pytest.fixture(scope="module")
def lr() -> LogisticRegressionStream:
    return LogisticRegressionStream(
        4, dim=5, heterogeneity=1.0, batch_size=4, l2=1e-2, eval_samples=4000
    )


def test_both_satisfy_the_task_protocol(ls: LeastSquares, lr: LogisticRegressionStream) -> None:
    assert isinstance(ls, Task) and isinstance(lr, Task)
    assert ls.init_params(0).shape == (ls.dim,) and ls.init_params(0).dtype == DT


def test_least_squares_structure(ls: LeastSquares) -> None:
    sigma = ls.sigma_diag
    assert sigma[0] == 1.0 and math.isclose(float(sigma[-1]), 1 / 20.0, rel_tol=1e-14)
    ratios = sigma[1:] / sigma[:-1]
    torch.testing.assert_close(
        ratios, torch.full_like(ratios, float(ratios[0])), rtol=1e-12, atol=0
    )
    u = (ls.local_optima - ls.x_star) / ls.heterogeneity
    torch.testing.assert_close(u.sum(0), torch.zeros(ls.dim, dtype=DT), atol=1e-13, rtol=0)
    assert math.isclose(float(u.square().sum(1).mean()), 1.0, rel_tol=1e-12)


def test_least_squares_f_at_x_star_is_f_star(ls: LeastSquares) -> None:
    out = ls.evaluate(ls.x_star[None])
    assert float(out["loss"][0]) == ls.optimum
    # Independent formula for f*: noise^2/2 + mean_i (1/2)(x*_i - x*)^T Sigma (x*_i - x*).
    d = ls.local_optima - ls.local_optima.mean(0)
    ref = 0.5 * 0.7**2 + float(0.5 * torch.einsum("id,d,id->i", d, ls.sigma_diag, d).mean())
    assert math.isclose(ls.optimum or 0.0, ref, rel_tol=1e-14)


def test_least_squares_f_is_mean_of_local_closed_forms(ls: LeastSquares) -> None:
    x = torch.randn(7, ls.dim, dtype=DT, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ls.evaluate(x)["loss"], ls.local_loss(x).mean(1), rtol=1e-13, atol=0)
    assert ls.optimum is not None  # least squares knows f* in closed form
    assert bool((ls.evaluate(x)["loss"] >= ls.optimum).all())


def test_least_squares_closed_form_gradient_matches_autograd(ls: LeastSquares) -> None:
    x = torch.randn(ls.dim, dtype=DT, generator=torch.Generator().manual_seed(1))
    auto = grad(lambda p: ls.evaluate(p[None])["loss"][0])(x)
    torch.testing.assert_close(auto, ls.sigma_diag * (x - ls.x_star), rtol=1e-13, atol=1e-15)


def test_least_squares_sampled_loss_and_gradient_are_unbiased() -> None:
    task = LeastSquares(4, dim=3, noise=0.5, heterogeneity=1.0, batch_size=20000, condition=4.0)
    x = torch.tensor([0.3, -1.0, 0.5], dtype=DT)
    a, y = task.sample(torch.arange(4), t=11, seed=5)
    per_sample = 0.5 * (a @ x - y).square()  # (n, B)
    mean = float(per_sample.mean())
    stderr = float(per_sample.std()) / math.sqrt(per_sample.numel())
    assert abs(mean - float(task.evaluate(x[None])["loss"][0])) < 5 * stderr
    # Stochastic gradients: mean over nodes of a_b (a_b^T x - y_b) vs Sigma (x - x*).
    g = (a * (a @ x - y)[..., None]).reshape(-1, 3)
    se = g.std(0) / math.sqrt(g.shape[0])
    closed = task.sigma_diag * (x - task.x_star)
    assert bool(((g.mean(0) - closed).abs() < 5 * se).all())


def test_least_squares_features_have_the_stated_covariance() -> None:
    task = LeastSquares(2, dim=3, noise=0.0, batch_size=20000, condition=9.0)
    a, y = task.sample(torch.tensor([0, 1]), t=0, seed=1)
    var = a.reshape(-1, 3).var(0)
    torch.testing.assert_close(var, task.sigma_diag, rtol=0.05, atol=0)
    # noise = 0: labels are exactly linear in the features.
    torch.testing.assert_close(y, torch.einsum("mbd,md->mb", a, task.local_optima))


@pytest.mark.parametrize("name", ["ls", "lr"])
def test_sampling_is_reproducible_and_placement_independent(
    name: str, request: pytest.FixtureRequest
) -> None:
    task = request.getfixturevalue(name)
    full = task.sample(torch.arange(task.num_nodes), t=7, seed=42)
    part = task.sample(torch.tensor([3, 1]), t=7, seed=42)
    again = task.sample(torch.arange(task.num_nodes), t=7, seed=42)
    for f, p, g in zip(full, part, again, strict=True):
        assert torch.equal(p, f[[3, 1]]) and torch.equal(f, g)
    other_t = task.sample(torch.arange(task.num_nodes), t=8, seed=42)
    other_seed = task.sample(torch.arange(task.num_nodes), t=7, seed=43)
    assert not torch.equal(full[0], other_t[0]) and not torch.equal(full[0], other_seed[0])


@pytest.mark.parametrize("name", ["ls", "lr"])
def test_vmapped_grad_equals_per_node_autograd(name: str, request: pytest.FixtureRequest) -> None:
    task = request.getfixturevalue(name)
    n = task.num_nodes
    params = torch.randn(n, task.dim, dtype=DT, generator=torch.Generator().manual_seed(2))
    batch = task.sample(torch.arange(n), t=0, seed=0)
    grads, values = vmap(grad_and_value(task.loss))(params, batch)
    for i in range(n):
        p = params[i].clone().requires_grad_(True)
        value = task.loss(p, tuple(leaf[i] for leaf in batch))
        value.backward()
        assert p.grad is not None
        torch.testing.assert_close(grads[i], p.grad, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(values[i], value.detach(), rtol=1e-12, atol=0)


def test_logistic_stream_gradient_vanishes_at_optimum(lr: LogisticRegressionStream) -> None:
    g = grad(lambda p: lr.evaluate(p[None])["loss"][0])(lr.x_star)
    assert float(g.norm()) < 1e-12
    assert float(lr.evaluate(lr.x_star[None])["loss"][0]) == lr.optimum


def test_logistic_stream_f_above_f_star(lr: LogisticRegressionStream) -> None:
    gen = torch.Generator().manual_seed(3)
    far = torch.randn(50, lr.dim, dtype=DT, generator=gen)
    near = lr.x_star + 1e-4 * torch.randn(50, lr.dim, dtype=DT, generator=gen)
    out = lr.evaluate(torch.cat([far, near]))
    assert bool((out["loss"] - (lr.optimum or 0.0) > 0).all())
    assert bool(((out["accuracy"] >= 0) & (out["accuracy"] <= 1)).all())


def test_logistic_stream_data_follow_the_model() -> None:
    task = LogisticRegressionStream(3, dim=4, heterogeneity=2.0, batch_size=20000, eval_samples=30)
    assert math.isclose(float(task.theta_true.norm()), 2.0, rel_tol=1e-14)
    torch.testing.assert_close(task.means.sum(0), torch.zeros(4, dtype=DT), atol=1e-13, rtol=0)
    a, y = task.sample(torch.arange(3), t=0, seed=9)
    assert set(torch.unique(y).tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(a.mean(1), task.means, atol=0.05, rtol=0)
    p = torch.sigmoid(a @ task.theta_true)
    assert abs(float((y - p).mean())) < 5 * 0.5 / math.sqrt(y.numel())
    assert task.eval_features.shape == (30, 4)  # 10 per node, equal shares


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"num_nodes": 0}, "num_nodes"),
        ({"num_nodes": 2, "condition": 0.5}, "condition"),
        ({"num_nodes": 2, "noise": -1.0}, "noise"),
        ({"num_nodes": 2, "batch_size": 0}, "batch_size"),
        ({"num_nodes": 2, "dim": 2.5}, "dim"),
        ({"num_nodes": 2, "dtype": torch.int64}, "dtype"),
        ({"num_nodes": 2, "heterogeneity": float("nan")}, "heterogeneity"),
    ],
)
def test_least_squares_rejects_bad_arguments(kwargs: dict, needle: str) -> None:
    with pytest.raises(TaskError, match=needle):
        LeastSquares(**kwargs)


def test_logistic_stream_rejects_bad_arguments() -> None:
    with pytest.raises(TaskError, match="l2"):
        LogisticRegressionStream(2, l2=-1.0)
    with pytest.raises(TaskError, match="eval_samples"):
        LogisticRegressionStream(2, eval_samples=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: LeastSquares(12, dim=5, noise=0.3, heterogeneity=1.0, batch_size=3, condition=4.0),
        lambda: LogisticRegressionStream(12, dim=5, heterogeneity=1.0, batch_size=4, l2=0.01),
        lambda: LogisticRegressionStream(12, dim=5, batch_size=1, l2=0.0),
    ],
)
def test_closed_form_gradients_equal_autograd(make) -> None:
    """The engine's fast path (grad_and_loss) against vmap(grad_and_value(loss)), float64."""
    from decent.engine import GradientOracle

    task = make()
    nodes = torch.arange(task.num_nodes)
    params = torch.randn(task.num_nodes, task.dim, generator=torch.Generator().manual_seed(3))
    batch = task.sample(nodes, 7, 0)
    fast = GradientOracle(task)
    slow = GradientOracle(task, autograd=True)
    assert fast.closed_form and not slow.closed_form
    (g1, l1), (g2, l2) = fast(params, batch), slow(params, batch)
    torch.testing.assert_close(g1, g2, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(l1, l2, rtol=1e-13, atol=1e-14)


def test_streaming_draws_do_not_depend_on_which_nodes_are_asked_for() -> None:
    task = LeastSquares(2500, dim=3, heterogeneity=1.0, batch_size=2)
    a, y = task.sample(torch.arange(2500), 4, 1)
    some = torch.tensor([2499, 0, 1024, 7])
    a2, y2 = task.sample(some, 4, 1)
    assert torch.equal(a2, a[some]) and torch.equal(y2, y[some])


# ------------------------------------------------------------------ least squares components

K_COMP = 24


def _components(n: int, **kw) -> LeastSquares:
    base = dict(dim=6, noise=0.4, heterogeneity=1.3, hessian_heterogeneity=0.6, batch_size=5)
    return LeastSquares(n, components=K_COMP, seed=2, **(base | kw))


@pytest.mark.parametrize("n", [1, 2, 3, 8, 24])
def test_components_give_the_same_problem_for_every_number_of_nodes(n: int) -> None:
    task, one_per_node = (
        _components(n),
        LeastSquares(
            K_COMP, dim=6, noise=0.4, heterogeneity=1.3, hessian_heterogeneity=0.6, seed=2
        ),
    )
    assert task.optimum == one_per_node.optimum
    assert torch.equal(task.x_star, one_per_node.x_star)
    assert torch.equal(task.node_sigma, one_per_node.node_sigma)
    x = torch.randn(3, 6, dtype=DT, generator=torch.Generator().manual_seed(n))
    torch.testing.assert_close(task.evaluate(x)["loss"], one_per_node.evaluate(x)["loss"])
    # node i's objective is the mean of its components i, i + n, ...; their mean is f
    per_component = one_per_node.local_loss(x)  # (3, K)
    expected = torch.stack([per_component[:, i::n].mean(dim=1) for i in range(n)], dim=1)
    torch.testing.assert_close(task.local_loss(x), expected, rtol=1e-14, atol=0)
    torch.testing.assert_close(task.local_loss(x).mean(dim=1), task.evaluate(x)["loss"])


def test_one_component_per_node_is_the_plain_task_bit_for_bit() -> None:
    plain = LeastSquares(8, dim=4, heterogeneity=1.0, hessian_heterogeneity=0.5, batch_size=2)
    comp = LeastSquares(
        8, dim=4, heterogeneity=1.0, hessian_heterogeneity=0.5, batch_size=2, components=8
    )
    for t in (1, 7):
        for got, want in zip(
            comp.sample(torch.arange(8), t, 3), plain.sample(torch.arange(8), t, 3), strict=True
        ):
            assert torch.equal(got, want)


def test_component_samples_rebuilt_by_hand() -> None:
    """Each sample: a component c = i + n j with j uniform, then a ~ N(0, Sigma_c), y."""
    from decent import _stream
    from decent.tasks.streaming import _LS_COMPONENT, _LS_SAMPLES

    n, task = 3, _components(3)
    nodes = torch.arange(n)
    a, y = task.sample(nodes, 11, 5)
    b, d = task.batch_size, task.dim
    raw = _stream.normal(5, _LS_SAMPLES, 11, nodes, b * (d + 1), n, DT)
    j = _stream.integers(5, _LS_COMPONENT, 11, nodes, b, n, torch.full((n,), K_COMP // n))
    for i in range(n):
        for s in range(b):
            c = i + n * int(j[i, s])
            feat = raw[i, s * d : (s + 1) * d] * task.node_sigma[c].sqrt()
            torch.testing.assert_close(a[i, s], feat, rtol=1e-15, atol=0)
            label = feat @ task.local_optima[c] + task.noise * raw[i, b * d + s]
            torch.testing.assert_close(y[i, s], label, rtol=1e-13, atol=1e-15)


def test_a_single_machine_samples_the_mixture_uniformly() -> None:
    """Component counts over 4800 draws of one node pass a chi-square test (fixed seed)."""
    from scipy import stats

    from decent import _stream
    from decent.tasks.streaming import _LS_COMPONENT

    draws = torch.cat(
        [
            _stream.integers(0, _LS_COMPONENT, t, torch.arange(1), 48, 1, torch.tensor([K_COMP]))
            for t in range(1, 101)
        ],
        dim=1,
    )
    counts = torch.bincount(draws.reshape(-1), minlength=K_COMP).numpy()
    assert counts.sum() == 4800
    assert stats.chisquare(counts).pvalue > 1e-3


def test_components_must_divide_among_the_nodes() -> None:
    with pytest.raises(TaskError, match="components must be a multiple of num_nodes = 5"):
        LeastSquares(5, components=12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("b", [1, 3])
def test_samples_made_per_chunk_of_rounds_equal_the_per_round_samples(
    dtype: torch.dtype, b: int
) -> None:
    """The simulator's rounds are drawn ahead and turned into (a, y) a chunk at a time
    (streaming._LsSamples); every round must equal _ls_batch on that round's raw draw."""
    from decent.tasks import streaming

    n = 16
    task = LeastSquares(n, dim=5, batch_size=b, heterogeneity=1.0, noise=0.7, dtype=dtype)
    sample = LeastSquares.replica_sampler([task], [4], torch.arange(n))  # the loop's sampler
    for t in range(1, 3 * streaming._stream._ahead(n * b * 6) + 2):
        a, y = sample(t)
        raw = task._raw(torch.arange(n), t, 4)
        ra, ry = streaming._ls_batch(raw, *task._row_params(torch.arange(n)), b, 5)
        assert torch.equal(a, ra) and torch.equal(y, ry), t


def test_the_problem_is_built_once_and_never_written() -> None:
    """Tasks with the same problem share its tensors (a scaling study builds the same
    K-component problem for every n and batch); training and evaluating on them leaves the
    shared tensors equal to a fresh build."""
    from decent import train
    from decent.algorithms import DATSGD
    from decent.comm import SimCommunicator
    from decent.tasks import streaming
    from decent.topology import ring

    args: dict[str, Any] = {
        "dim": 6,
        "heterogeneity": 1.0,
        "hessian_heterogeneity": 0.5,
        "components": 32,
    }
    a, b = LeastSquares(4, **args), LeastSquares(8, **args, noise=0.1, batch_size=3)
    assert a.node_sigma is b.node_sigma and a.local_optima is b.local_optima
    assert LeastSquares(8, **{**args, "seed": 1}).node_sigma is not a.node_sigma
    for task in (a, b, LeastSquares(8, dim=6, heterogeneity=1.0)):
        train(DATSGD(lr=0.01), task, SimCommunicator(ring(task.num_nodes)), rounds=5, seed=0)
    streaming._ls_problem.cache_clear()
    fresh = LeastSquares(8, **args, noise=0.1, batch_size=3)
    assert fresh.node_sigma is not b.node_sigma
    for name in ("sigma_diag", "node_sigma", "local_optima", "x_star", "_sqrt_rows", "_xstar64"):
        assert torch.equal(getattr(fresh, name), getattr(b, name)), name
    assert fresh.optimum == b.optimum
