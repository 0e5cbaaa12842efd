"""DP-SGD per node: clipping, the noise scale, placement independence, and the accountant."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from decent.algorithms import DSGD
from decent.comm import SimCommunicator
from decent.engine import GradientOracle, train, train_replicas
from decent.engine.privacy import (
    Privacy,
    PrivacyAccountant,
    PrivacyError,
    PrivateOracle,
    per_sample_grads,
    sampling_rates,
)
from decent.tasks import LeastSquares, mlp, random_classification
from decent.tasks.models import ModuleTask
from decent.topology import ring


def small_mlp(sizes: tuple[int, ...] = (12, 9, 5, 20), batch_size: int = 6) -> ModuleTask:
    """An MLP over unequal shards: node 1 holds fewer samples than batch_size (padding)."""
    data = random_classification(sum(sizes), 5, 3, seed=4)
    bounds = np.cumsum((0, *sizes))
    shards = [np.arange(bounds[i], bounds[i + 1]) for i in range(len(sizes))]
    return mlp(
        data,
        len(sizes),
        shards,
        hidden=(7,),
        activation="tanh",
        batch_size=batch_size,
        l2=0.01,
        sampling="without_replacement",
    )


def reference(task, params, batch, clip):
    """Mean of clipped per-sample gradients, one torch.autograd.grad per sample."""
    rows = []
    for r in range(params.shape[0]):
        grads = []
        for j in range(batch[0].shape[1]):
            if len(batch) == 3 and batch[2][r, j] == 0:
                continue  # a padding sample of a node with fewer samples than batch_size
            x = params[r].detach().clone().requires_grad_(True)
            one = tuple(leaf[r, j : j + 1] for leaf in batch[:2])
            (g,) = torch.autograd.grad(task.loss(x, one), x)
            grads.append(g * min(1.0, clip / float(g.norm())))
        rows.append(torch.stack(grads).mean(dim=0))
    return torch.stack(rows)


def start(task, seed=0, scale=0.5):
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(task.num_nodes, task.dim, generator=gen, dtype=torch.float64)


def test_clipping_bounds_every_per_sample_norm_and_matches_a_per_sample_loop() -> None:
    task = small_mlp()
    nodes = torch.arange(task.num_nodes)
    params = start(task)
    batch = task.sample(nodes, 3, 0)
    g, _ = per_sample_grads(task)(params, batch[:2])
    norms = g.norm(dim=2)[batch[2] > 0]
    clip = float(norms.median())  # half the gradients are clipped, half are not
    assert (norms > clip).any() and (norms < clip).any()
    oracle = PrivateOracle(
        task, Privacy(clip, 0.0), seeds=[0], nodes=nodes, num_nodes=task.num_nodes
    )
    grads, losses = oracle(params, batch, 3)
    torch.testing.assert_close(grads, reference(task, params, batch, clip), rtol=0, atol=1e-12)
    # the loss is the minibatch's, as without privacy
    plain = GradientOracle(task, autograd=True)(params, batch)[1]
    torch.testing.assert_close(losses, plain, rtol=0, atol=1e-12)
    # every clipped per-sample gradient has norm <= C: the mean of B_i of them, <= C too
    factor = (clip / g.norm(dim=2)).clamp(max=1.0)
    assert float((factor * g.norm(dim=2)).max()) <= clip * (1 + 1e-12)
    assert float(grads.norm(dim=1).max()) <= clip * (1 + 1e-12)


def test_a_closed_form_task_goes_through_per_sample_autograd() -> None:
    task = LeastSquares(6, dim=5, noise=0.3, heterogeneity=1.0, batch_size=4)
    nodes = torch.arange(6)
    params = start(task, scale=2.0)
    batch = task.sample(nodes, 2, 5)
    clip = 0.7
    oracle = PrivateOracle(task, Privacy(clip, 0.0), seeds=[5], nodes=nodes, num_nodes=6)
    grads, _ = oracle(params, batch, 2)
    torch.testing.assert_close(grads, reference(task, params, batch, clip), rtol=0, atol=1e-12)
    # a clip no gradient reaches changes nothing: the closed-form minibatch gradient
    huge = PrivateOracle(task, Privacy(1e12, 0.0), seeds=[5], nodes=nodes, num_nodes=6)
    closed = GradientOracle(task)
    assert closed.closed_form
    torch.testing.assert_close(
        huge(params, batch, 2)[0], closed(params, batch)[0], rtol=0, atol=1e-12
    )


def test_the_noise_has_standard_deviation_sigma_clip_over_the_batch_size() -> None:
    # no label noise, no heterogeneity, at x* = x_c: every per-sample gradient is zero up to
    # rounding (<1e-14), so the private gradient is the noise alone
    n, d, b, sigma, clip = 64, 50, 4, 1.3, 0.5
    task = LeastSquares(n, dim=d, noise=0.0, heterogeneity=0.0, batch_size=b)
    nodes = torch.arange(n)
    params = task.x_star.expand(n, d).contiguous()
    oracle = PrivateOracle(task, Privacy(clip, sigma), seeds=[11], nodes=nodes, num_nodes=n)
    draws = torch.stack([oracle(params, task.sample(nodes, t, 11), t)[0] for t in range(1, 11)])
    expected = sigma * clip / b
    # 32000 values: the sample std is within 1 / sqrt(2 N) = 0.4% of the truth (1 s.d.);
    # 2% is five of those, the mean within 5 / sqrt(N) s.d.
    assert abs(float(draws.std()) / expected - 1) < 0.02
    assert abs(float(draws.mean())) < 5 * expected / math.sqrt(draws.numel())
    # rounds and nodes get independent noise
    assert not torch.equal(draws[0], draws[1])
    assert abs(float(torch.corrcoef(draws[:, :2].reshape(-1, 2).T)[0, 1])) < 0.05


def test_the_noise_of_a_node_does_not_depend_on_who_else_is_held() -> None:
    task = small_mlp()
    n = task.num_nodes
    params = start(task)
    privacy = Privacy(0.3, 2.0)
    full = PrivateOracle(task, privacy, seeds=[1], nodes=torch.arange(n), num_nodes=n)
    grads = full(params, task.sample(torch.arange(n), 7, 1), 7)[0]
    for held in ([2], [1, 3]):
        nodes = torch.tensor(held)
        rank = PrivateOracle(task, privacy, seeds=[1], nodes=nodes, num_nodes=n)
        mine = rank(params[nodes], task.sample(nodes, 7, 1), 7)[0]
        torch.testing.assert_close(mine, grads[nodes], rtol=0, atol=1e-14)


def test_a_replica_batch_computes_what_each_private_run_computes() -> None:
    task = LeastSquares(6, dim=4, noise=0.5, heterogeneity=1.0, batch_size=3)
    algo = DSGD(lr=0.05)
    comm = SimCommunicator(ring(6))
    privacy = Privacy(0.5, 1.0)
    batch = train_replicas(
        [algo, algo], [task, task], comm, seeds=[0, 3], rounds=8, eval_every=4, privacy=privacy
    )
    for seed, res in zip([0, 3], batch, strict=True):
        alone = train(
            algo, task, SimCommunicator(ring(6)), seed=seed, rounds=8, eval_every=4,
            privacy=privacy,
        )  # fmt: skip
        assert res.output is not None and alone.output is not None
        torch.testing.assert_close(res.output, alone.output, rtol=0, atol=1e-14)
        assert [r["privacy/epsilon"] for r in res.records] == [
            r["privacy/epsilon"] for r in alone.records
        ]
    assert batch[0].output is not None and batch[1].output is not None
    assert not torch.equal(batch[0].output, batch[1].output)


def opacus_epsilon(kind: str, q: float, sigma: float, steps: int, delta: float) -> float:
    from opacus.accountants import PRVAccountant, RDPAccountant

    if steps == 0:
        return 0.0
    acc = RDPAccountant() if kind == "rdp" else PRVAccountant()
    for _ in range(steps):  # the accountant's own bookkeeping, one step at a time
        acc.step(noise_multiplier=sigma, sample_rate=q)
    return float(acc.get_epsilon(delta=delta))


def test_the_recorded_epsilon_is_opacus_rdp_accountant_for_each_nodes_rate() -> None:
    task = small_mlp()  # shards 12, 9, 5, 20 with batch_size 6: q = 1/2, 2/3, 1, 3/10
    rates = sampling_rates(task)
    assert rates.rates == (6 / 12, 6 / 9, 5 / 5, 6 / 20) and not rates.fresh
    privacy = Privacy(1.0, 2.5, delta=1e-4)
    res = train(
        DSGD(lr=0.1), task, SimCommunicator(ring(4)), rounds=30, eval_every=10, privacy=privacy
    )
    assert [r["round"] for r in res.records] == [0, 10, 20, 30]
    for rec in res.records:
        t = int(rec["round"])
        per_node = [opacus_epsilon("rdp", q, 2.5, t, 1e-4) for q in rates.rates]
        assert rec["privacy/epsilon"] == pytest.approx(max(per_node), rel=1e-12, abs=0)
        assert rec["privacy/epsilon_mean"] == pytest.approx(np.mean(per_node), rel=1e-12)
    assert res.records[0]["privacy/epsilon"] == 0.0
    eps = [r["privacy/epsilon"] for r in res.records]
    assert eps == sorted(eps) and eps[-1] > eps[1] > 0


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # Opacus PRV at q = 1
def test_the_prv_accountant_and_a_streaming_task_each_sample_used_once() -> None:
    # streaming: fresh samples every round, so each one is in one step: q = 1, one step
    task = LeastSquares(4, dim=3, batch_size=2)
    rates = sampling_rates(task)
    assert rates.fresh and set(rates.rates) == {1.0}
    for kind in ("rdp", "prv"):
        acc = PrivacyAccountant(Privacy(1.0, 3.0, delta=1e-5, accountant=kind), rates)
        once = opacus_epsilon(kind, 1.0, 3.0, 1, 1e-5)
        assert acc.metrics(0)["privacy/epsilon"] == 0.0
        for t in (1, 50, 1000):
            assert acc.metrics(t) == {"privacy/epsilon": once, "privacy/epsilon_mean": once}
    # a dataset task under PRV: the accountant's value for its one rate
    data = small_mlp((10, 10), batch_size=2)
    acc = PrivacyAccountant(Privacy(1.0, 1.5, accountant="prv"), sampling_rates(data))
    assert acc.metrics(40)["privacy/epsilon"] == pytest.approx(
        opacus_epsilon("prv", 0.2, 1.5, 40, 1e-5), rel=1e-12
    )
    # no noise: no privacy
    assert PrivacyAccountant(Privacy(1.0, 0.0), rates).metrics(3)["privacy/epsilon"] == math.inf


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        (dict(clip=0.0, noise_multiplier=1.0), "privacy.clip must be a finite number > 0"),
        (dict(clip=-1.0, noise_multiplier=1.0), "privacy.clip must be a finite number > 0"),
        (
            dict(clip=1.0, noise_multiplier=-0.5),
            "privacy.noise_multiplier must be a finite number >= 0",
        ),
        (
            dict(clip=1.0, noise_multiplier=1.0, delta=0.0),
            "privacy.delta must be a finite number > 0.0, < 1.0",
        ),
        (
            dict(clip=1.0, noise_multiplier=1.0, delta=1.0),
            "privacy.delta must be a finite number > 0.0, < 1.0",
        ),
        (dict(clip=1.0, noise_multiplier=1.0, accountant="gdp"), "'rdp' or 'prv'"),
        (dict(clip=math.inf, noise_multiplier=1.0), "privacy.clip: a number must be finite"),
        (dict(clip="1", noise_multiplier=1.0), "privacy.clip must be a finite number"),
    ],
)
def test_bad_privacy_parameters_are_refused_naming_the_field(fields, needle) -> None:
    with pytest.raises(PrivacyError) as err:
        Privacy(**fields)
    assert needle in str(err.value)


def test_tasks_whose_sampling_rate_is_unknown_are_refused() -> None:
    data = random_classification(40, 3, 2, seed=0)
    with_replacement = mlp(data, 2, "iid", hidden=(), batch_size=4)
    with pytest.raises(PrivacyError, match="sampling = 'without_replacement'"):
        sampling_rates(with_replacement)

    class Custom:
        num_nodes = 2

    with pytest.raises(PrivacyError, match="sampling rate is known"):
        sampling_rates(Custom())  # type: ignore[arg-type]
