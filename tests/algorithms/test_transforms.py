"""Gradient transforms: each combination with DAT-SGD (and D-SGD) against a step unrolled by
hand in numpy (float64, 1e-12), the centralized chains against torch.optim, and bad input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from decent.algorithms import DATSGD, DSGD, GradientTracking, MinibatchSGD, ScheduleFreeDSGD
from decent.algorithms.base import AlgorithmError, Cosine
from decent.algorithms.transforms import (
    adam,
    adamw,
    momentum,
    quasi_global_momentum,
    weight_decay,
    with_transforms,
)
from decent.comm import SimCommunicator
from decent.topology import complete, from_matrix

W = np.array([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5]])
X0 = np.array([[1.0, -2.0, 0.5], [1.0, -2.0, 0.5], [1.0, -2.0, 0.5]])
# node i's gradient at p: A_i p + b_i, so where the gradient is taken matters
A = np.stack([np.diag([1.0, 2.0, 0.5]), np.diag([0.3, 1.0, 1.5]), np.diag([2.0, 0.2, 1.0])])
B = np.array([[0.3, -1.0, 0.2], [-0.7, 2.0, 0.1], [1.1, 0.5, -0.4]])
ROUNDS = 5
BETA, LAM, B1, B2, EPS = 0.8, 0.05, 0.9, 0.99, 1e-3


def _grad(p: np.ndarray) -> np.ndarray:
    return np.einsum("nij,nj->ni", A, p) + B


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


# The transforms written out by hand: (g, w, t, state) -> (u, state).
def _heavy(g, w, t, s):
    m = BETA * s.get("m", 0.0) + g
    return m, {"m": m}


def _nesterov(g, w, t, s):
    m = BETA * s.get("m", 0.0) + g
    return g + BETA * m, {"m": m}


def _decay(g, w, t, s):
    return g + LAM * w, s


def _adam(g, w, t, s):
    mu = B1 * s.get("mu", 0.0) + (1 - B1) * g
    nu = B2 * s.get("nu", 0.0) + (1 - B2) * g * g
    return (mu / (1 - B1**t)) / (np.sqrt(nu / (1 - B2**t)) + EPS), {"mu": mu, "nu": nu}


def _adamw(g, w, t, s):
    u, s = _adam(g, w, t, s)
    return u + LAM * w, s


def _l2_momentum(g, w, t, s):
    return _heavy(g + LAM * w, w, t, s)


def _qgm(g, w, t, s):
    return g + BETA * s.get("mhat", 0.0), s


Hand = Callable[..., tuple[np.ndarray, dict]]
CASES: dict[str, tuple[list, Hand]] = {
    "momentum": ([momentum(BETA)], _heavy),
    "nesterov": ([momentum(BETA, nesterov=True)], _nesterov),
    "weight_decay": ([weight_decay(LAM)], _decay),
    "adam": ([adam(B1, B2, EPS)], _adam),
    "adamw": ([adam(B1, B2, EPS), weight_decay(LAM)], _adamw),
    "l2_then_momentum": ([weight_decay(LAM), momentum(BETA)], _l2_momentum),
    "quasi_global_momentum": ([quasi_global_momentum(BETA)], _qgm),
}


def _qgm_observe(s: dict, before: np.ndarray, after: np.ndarray, scale: float) -> dict:
    d = (before - after) / scale
    return {"mhat": BETA * s.get("mhat", 0.0) + (1 - BETA) * d}


# The anytime methods and the beta of their query point y = (1 - beta) w + beta x: DAT-SGD
# takes its gradient at x (beta = 1); schedule-free D-SGD between w (its z) and x (the deep
# study's schedule_free_dsgd+adamw is its adamw case).
ANYTIME: dict[str, tuple[Callable[[Cosine], Any], float]] = {
    "dat_sgd": (lambda eta: DATSGD(lr=eta), 1.0),
    "schedule_free_dsgd": (lambda eta: ScheduleFreeDSGD(lr=eta, beta=0.5), 0.5),
}


@pytest.mark.parametrize("method", sorted(ANYTIME))
@pytest.mark.parametrize("case", sorted(CASES))
def test_anytime_method_with_transform_equals_hand_unrolled(case, method):
    """DAT-SGD and schedule-free D-SGD: gradient at the query point y, the transform on the
    step to w."""
    transforms, hand = CASES[case]
    make, beta = ANYTIME[method]
    eta = Cosine(0.05, total=ROUNDS)
    algo = with_transforms(make(eta), transforms)
    comm = SimCommunicator(from_matrix(W))
    state = algo.init(_t(X0))
    w, x, a_prev, s = X0.copy(), X0.copy(), 0.0, {}  # type: ignore[var-annotated]
    for t in range(1, ROUNDS + 1):
        state = algo.update(state, _t(_grad(algo.query(state, t).numpy())), comm, t)
        g = _grad((1 - beta) * w + beta * x)  # 1. at the query point
        u, s = hand(g, w, t, s)  # the transform sees w, the point the step moves
        alpha = float(t)
        a_new = a_prev + alpha
        w_before = w.copy()
        w_half = w - eta(t) * alpha * u  # 2.
        x_half = (a_prev / a_new) * x + (alpha / a_new) * w_half  # 3.
        w, x = W @ w_half, W @ x_half  # 4.
        a_prev = a_new
        if case == "quasi_global_momentum":
            s = _qgm_observe(s, w_before, w, eta(t) * alpha)
    np.testing.assert_allclose(state.inner.w.numpy(), w, rtol=0, atol=1e-12)
    np.testing.assert_allclose(algo.output(state).numpy(), x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", sorted(CASES))
def test_dsgd_with_transform_equals_hand_unrolled(case):
    """D-SGD (ATC); with quasi-global momentum this is Lin et al.'s Algorithm 1."""
    transforms, hand = CASES[case]
    eta = 0.07
    algo = with_transforms(DSGD(lr=eta), transforms)
    comm = SimCommunicator(from_matrix(W))
    state = algo.init(_t(X0))
    x, s = X0.copy(), {}  # type: ignore[var-annotated]
    for t in range(1, ROUNDS + 1):
        state = algo.update(state, _t(_grad(algo.query(state, t).numpy())), comm, t)
        u, s = hand(_grad(x), x, t, s)
        x_new = W @ (x - eta * u)
        if case == "quasi_global_momentum":
            s = _qgm_observe(s, x, x_new, eta)
        x = x_new
    np.testing.assert_allclose(algo.output(state).numpy(), x, rtol=0, atol=1e-12)


def test_gradient_tracking_tracks_the_transformed_direction():
    """GT with momentum tracks the mean of the momentum buffers: y_t = W y_{t-1} + u_t - u_{t-1}."""
    eta = 0.05
    algo = with_transforms(GradientTracking(lr=eta), [momentum(BETA)])
    comm = SimCommunicator(from_matrix(W))
    state = algo.init(_t(X0))
    x, y, u_prev, s = X0.copy(), np.zeros_like(X0), np.zeros_like(X0), {}  # type: ignore[var-annotated]
    for t in range(1, ROUNDS + 1):
        state = algo.update(state, _t(_grad(algo.query(state, t).numpy())), comm, t)
        u, s = _heavy(_grad(x), x, t, s)
        y = y + u - u_prev
        x, y = W @ (x - eta * y), W @ y
        u_prev = u
    np.testing.assert_allclose(algo.output(state).numpy(), x, rtol=0, atol=1e-12)


def _quadratic_steps(make_opt, algo, steps: int = 6):
    """The same quadratic minimised by a torch optimizer and by ``algo`` on 2 identical nodes."""
    target = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    scale = torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64)
    p = torch.nn.Parameter(torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64))
    opt = make_opt([p])
    comm = SimCommunicator(complete(2))
    state = algo.init(p.detach().clone().expand(2, -1).clone())
    for t in range(1, steps + 1):
        q = algo.query(state, t)
        grads = (scale * (q - target)).clone()
        state = algo.update(state, grads, comm, t)
        opt.zero_grad()
        (0.5 * (scale * (p - target) ** 2).sum()).backward()
        opt.step()
    return algo.output(state), p.detach()


@pytest.mark.parametrize("nesterov", [False, True])
def test_centralized_chain_equals_torch_sgd(nesterov):
    ours, theirs = _quadratic_steps(
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=0.01),
        with_transforms(
            MinibatchSGD(lr=0.1), [weight_decay(0.01), momentum(0.9, nesterov=nesterov)]
        ),
    )
    np.testing.assert_allclose(ours.numpy(), theirs.expand(2, -1).numpy(), rtol=0, atol=1e-12)


def test_centralized_chain_equals_torch_adamw():
    ours, theirs = _quadratic_steps(
        lambda ps: torch.optim.AdamW(ps, lr=0.05, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.1),
        with_transforms(MinibatchSGD(lr=0.05), [adam(0.9, 0.99, 1e-6), weight_decay(0.1)]),
    )
    np.testing.assert_allclose(ours.numpy(), theirs.expand(2, -1).numpy(), rtol=0, atol=1e-12)


def test_adamw_transform_equals_torch_adamw_on_one_node():
    """One node, D-SGD on the one-node graph (mixing is the identity): ``dsgd+adamw`` takes
    torch.optim.AdamW's steps to 1e-12 in float64 on a random linear least-squares problem."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    b = torch.randn(8, generator=gen, dtype=torch.float64)
    p = torch.nn.Parameter(torch.randn(5, generator=gen, dtype=torch.float64))
    opt = torch.optim.AdamW([p], lr=0.03, betas=(0.8, 0.95), eps=1e-7, weight_decay=0.05)
    algo = with_transforms(DSGD(lr=0.03), [adamw(0.8, 0.95, 1e-7, decay=0.05)])
    assert algo.name == "dsgd+adamw"
    comm = SimCommunicator(complete(1))
    state = algo.init(p.detach().clone()[None])
    for t in range(1, 31):
        q = algo.query(state, t)[0]
        state = algo.update(state, (a.T @ (a @ q - b))[None], comm, t)
        opt.zero_grad()
        (0.5 * (a @ p - b).square().sum()).backward()
        opt.step()
    np.testing.assert_allclose(
        algo.output(state)[0].numpy(), p.detach().numpy(), rtol=0, atol=1e-12
    )
    chain = _quadratic_steps(
        lambda ps: torch.optim.AdamW(ps, lr=0.05, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.1),
        with_transforms(MinibatchSGD(lr=0.05), [adamw(0.9, 0.99, 1e-6, 0.1)]),
    )
    np.testing.assert_allclose(chain[0].numpy(), chain[1].expand(2, -1).numpy(), rtol=0, atol=1e-12)


def test_zero_step_size_changes_nothing():
    algo = with_transforms(DATSGD(lr=0.0), [adam(), quasi_global_momentum(0.9), weight_decay(1.0)])
    state = algo.init(_t(X0))
    comm = SimCommunicator(from_matrix(W))
    for t in range(1, 4):
        state = algo.update(state, _t(_grad(algo.query(state, t).numpy())), comm, t)
    np.testing.assert_array_equal(algo.output(state).numpy(), X0)


def test_empty_chain_is_the_algorithm_and_attributes_pass_through():
    base = DSGD(lr=0.1)
    assert with_transforms(base, []) is base
    wrapped = with_transforms(base, [momentum(0.9)])
    assert wrapped.lr == 0.1 and wrapped.label == "D-SGD" and wrapped.name == "dsgd+momentum"  # type: ignore[attr-defined]


def test_bad_input_names_the_field():
    with pytest.raises(
        AlgorithmError, match=r"momentum.beta must be a finite number >= 0.0, < 1.0"
    ):
        momentum(1.0)
    with pytest.raises(AlgorithmError, match=r"transforms\[0\] must be a gradient transform"):
        with_transforms(DSGD(lr=0.1), [torch.optim.SGD])  # type: ignore[list-item]
