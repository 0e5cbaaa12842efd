"""Every method reaches the closed-form optimum of streaming least squares."""

from __future__ import annotations

import pytest
import torch

from decent.algorithms import DATSGD, DSGD, AnytimeSGD, GradientTracking, LocalSGD, MinibatchSGD
from decent.comm import SimCommunicator
from decent.engine import train
from decent.tasks import LeastSquares
from decent.topology import ring

T = 2000


@pytest.mark.parametrize(
    ("algo", "tol"),
    [
        (DSGD(lr=0.05), 0.05),
        (DSGD(lr=0.05, variant="cta"), 0.05),
        (DATSGD(lr=0.05 / T * 4), 0.05),
        (GradientTracking(lr=0.05), 0.05),
        (MinibatchSGD(lr=0.05), 0.05),
        (AnytimeSGD(lr=0.05 / T * 4), 0.05),
        (LocalSGD(lr=0.05, local_steps=4), 0.05),
        (DSGD(lr=0.05, local_steps=4), 0.05),
    ],
    ids=lambda v: getattr(v, "name", str(v)),
)
def test_reaches_x_star(algo, tol):
    task = LeastSquares(num_nodes=16, dim=5, noise=0.5, heterogeneity=0.3, seed=0)
    res = train(algo, task, SimCommunicator(ring(16)), rounds=T, seed=0, eval_every=T // 4)
    x_bar = res.output.mean(0)
    err = torch.linalg.vector_norm(x_bar - task.x_star).item()
    assert err < tol, f"{algo.name}: ||x_bar - x*|| = {err:.3g} (start {task.x_star.norm():.3g})"
    assert res.final["eval/subopt@mean"] >= -1e-12
    assert res.final["eval/subopt@mean"] < res.records[0]["eval/subopt@mean"] / 50
