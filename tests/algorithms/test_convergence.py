"""Every method reaches the closed-form optimum of streaming least squares."""

from __future__ import annotations

import pytest
import torch

from decent.algorithms import (
    DATSGD,
    DSGD,
    AnytimeSGD,
    Cosine,
    GradientTracking,
    LocalSGD,
    MinibatchSGD,
)
from decent.comm import SimCommunicator
from decent.engine import train
from decent.tasks import LeastSquares
from decent.topology import ring

T = 2000


@pytest.mark.parametrize(
    ("algo", "tol"),
    [
        (DSGD(lr=Cosine(0.05, T)), 0.04),
        (DSGD(lr=Cosine(0.05, T), variant="cta"), 0.04),
        # anytime methods: gamma = lr * T; the single-sample noise is multiplicative
        # (effective smoothness ~ d + 2), which caps gamma well below 1
        (DATSGD(lr=0.05 / T), 0.06),
        (DATSGD(lr=0.05 / T, local_steps=4), 0.06),
        (GradientTracking(lr=Cosine(0.05, T)), 0.04),
        (MinibatchSGD(lr=Cosine(0.05, T)), 0.04),
        (AnytimeSGD(lr=0.05 / T), 0.06),
        (LocalSGD(lr=Cosine(0.05, T), local_steps=4), 0.04),
        (DSGD(lr=Cosine(0.05, T), local_steps=4), 0.04),
    ],
    ids=lambda v: getattr(v, "name", str(v)) if not isinstance(v, float) else "",
)
def test_reaches_x_star(algo, tol):
    task = LeastSquares(num_nodes=16, dim=5, noise=0.5, heterogeneity=0.3, seed=0)
    res = train(algo, task, SimCommunicator(ring(16)), rounds=T, seed=0, eval_every=T // 4)
    assert res.output is not None
    x_bar = res.output.mean(0)
    err = torch.linalg.vector_norm(x_bar - task.x_star).item()
    assert err < tol, f"{algo.name}: ||x_bar - x*|| = {err:.3g} (start {task.x_star.norm():.3g})"
    assert res.final["eval/subopt@mean"] >= -1e-12
    assert res.final["eval/subopt@mean"] < res.records[0]["eval/subopt@mean"] / 50
