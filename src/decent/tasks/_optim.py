"""High-precision minimization of smooth convex objectives, used to compute ``f*``."""

from __future__ import annotations

from collections.abc import Callable

import torch

Objective = Callable[[torch.Tensor], torch.Tensor]

NEWTON_MAX_DIM = 2048
"""Above this dimension the dense Hessian is too large and L-BFGS is used instead."""


def newton_minimize(
    objective: Objective,
    x0: torch.Tensor,
    *,
    grad: Objective | None = None,
    hessian: Objective | None = None,
    max_iter: int = 100,
    tol: float = 1e-20,
) -> torch.Tensor:
    """Minimize a smooth strictly convex ``objective`` by damped Newton steps.

    Each iteration solves ``H p = g`` with the autograd Hessian, then backtracks
    ``x <- x - s p`` from ``s = 1`` until the Armijo condition
    ``f(x - s p) <= f(x) - s lambda^2 / 4`` holds, where ``lambda^2 = g^T p`` is the squared
    Newton decrement. It stops when ``lambda^2 < tol`` (the suboptimality is then about
    ``lambda^2 / 2``) or when rounding stops any strict decrease.

    Args:
        objective: ``(d,) -> scalar``, twice differentiable by ``torch.func``.
        x0: the starting point ``(d,)``.
        grad: optional closed-form gradient ``(d,) -> (d,)`` (default: autograd).
        hessian: optional closed-form Hessian ``(d,) -> (d, d)`` (default: autograd).
    """
    grad_fn = grad if grad is not None else torch.func.grad(objective)
    hess_fn = hessian if hessian is not None else torch.func.jacrev(torch.func.jacrev(objective))
    x = x0.detach().clone()
    fx = objective(x)
    for _ in range(max_iter):
        g = grad_fn(x)
        h = hess_fn(x)
        h = 0.5 * (h + h.T)
        chol, info = torch.linalg.cholesky_ex(h)
        if int(info) == 0:
            p = torch.cholesky_solve(g[:, None], chol)[:, 0]
        else:  # not numerically positive definite: fall back to a least-squares step
            p = torch.linalg.lstsq(h, g[:, None]).solution[:, 0]
        decrement = float(g @ p)
        if decrement < tol:
            # One last full step is free precision when the decrement is positive.
            if decrement > 0:
                x_new = x - p
                if float(grad_fn(x_new).norm()) < float(g.norm()):
                    x = x_new
            break
        step = 1.0
        while step > 1e-12:
            x_new = x - step * p
            f_new = objective(x_new)
            if f_new <= fx - 0.25 * step * decrement:
                break
            step *= 0.5
        if step <= 1e-12 or not f_new < fx:
            # f can no longer resolve the decrease (rounding floor of f). Near the optimum
            # the full Newton step still converges quadratically in the gradient: take it
            # while it shrinks the gradient norm, then stop.
            x_new = x - p
            if float(grad_fn(x_new).norm()) < float(g.norm()):
                x, fx = x_new, objective(x_new)
                continue
            break
        x, fx = x_new, f_new
    return x.detach()


def lbfgs_minimize(objective: Objective, x0: torch.Tensor, *, max_iter: int = 5000) -> torch.Tensor:
    """Minimize ``objective`` ``(d,) -> scalar`` from ``x0 (d,)`` with ``torch.optim.LBFGS``
    and a strong-Wolfe line search (at most ``max_iter`` iterations)."""
    x = x0.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [x],
        lr=1.0,
        max_iter=max_iter,
        max_eval=2 * max_iter,
        tolerance_grad=1e-13,
        tolerance_change=1e-20,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = objective(x)
        value.backward()
        return value

    opt.step(closure)
    return x.detach()


def minimize_convex(objective: Objective, x0: torch.Tensor) -> torch.Tensor:
    """Minimize a smooth strongly convex objective to near machine precision.

    Uses Newton's method when ``d <= NEWTON_MAX_DIM`` and L-BFGS otherwise.
    """
    if x0.numel() <= NEWTON_MAX_DIM:
        return newton_minimize(objective, x0)
    return lbfgs_minimize(objective, x0)
