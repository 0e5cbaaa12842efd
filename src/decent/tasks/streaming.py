"""Streaming stochastic convex problems: every round draws fresh samples.

With ``n`` nodes and ``T`` rounds the sample budget is ``N = n T`` real draws, which is the
regime of the anytime/streaming analyses (each sample is used once). Both problems know the
minimum ``f*`` of their global objective, so ``f(x) - f*`` can be reported.

Batches are tuples ``(a, y)`` with ``a`` of shape ``(m, B, d)`` and ``y`` of shape
``(m, B)``. The samples of every round are drawn in bulk on the run's device
(:mod:`decent._stream`: torch's generator, keyed by ``(seed, stream, t, node block)``, so a
node's draw does not depend on which process holds it); the problem itself (optima, node
shifts, the evaluation set) is drawn once at construction with :mod:`decent._rng`. Both
tasks also give their minibatch gradients in closed form (:meth:`grad_and_loss`), which the
engine uses instead of autograd; tests check it against ``vmap(grad(loss))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from decent import _rng, _stream
from decent._types import Batch, Params
from decent.tasks._checks import check_float, check_int
from decent.tasks._optim import newton_minimize
from decent.tasks.base import TaskError

# Stream constants: one per independent use of the counter-based generator.
_LS_SAMPLES = 0x15A0_0003  # features and label noise of one round, drawn together
_LS_XSTAR = 0x15A0_0010
_LS_HETERO = 0x15A0_0011
_LR_SAMPLES = 0x1061_0003  # features of one round
_LR_LABELS = 0x1061_0004  # and the uniforms that decide the labels
_LR_THETA = 0x1061_0010
_LR_HETERO = 0x1061_0011
_LR_EVAL_FEATURES = 0x1061_0020
_LR_EVAL_LABELS = 0x1061_0021


def _centered_directions(
    seed: int, stream: int, num_nodes: int, dim: int, dtype: torch.dtype
) -> torch.Tensor:
    """Return ``(n, d)`` vectors ``u_i`` with ``sum_i u_i = 0`` and ``mean_i ||u_i||^2 = 1``.

    Node ``i``'s raw draw depends only on ``(seed, i)``; centering couples them. With one
    node the only centered choice is ``u = 0``.
    """
    nodes = torch.arange(num_nodes, dtype=torch.int64)
    z = _rng.normal(seed, stream, 0, nodes, (dim,), dtype=torch.float64)
    z = z - z.mean(dim=0, keepdim=True)
    scale = z.square().sum(dim=1).mean().sqrt()
    if num_nodes == 1 or float(scale) == 0.0:
        return torch.zeros(num_nodes, dim, dtype=dtype)
    return (z / scale).to(dtype)


def _unit_vector(seed: int, stream: int, dim: int) -> torch.Tensor:
    z = _rng.normal(seed, stream, 0, torch.zeros(1, dtype=torch.int64), (dim,))[0]
    return z / z.norm()


class LeastSquares:
    r"""Streaming linear regression with Gaussian features and node heterogeneity.

    Node ``i`` draws ``a ~ N(0, Sigma)`` and ``y = a^T x*_i + noise * eps`` with
    ``eps ~ N(0, 1)``, and its per-sample loss is ``(1/2) (a^T x - y)^2``. ``Sigma`` is
    diagonal with eigenvalues ``condition^{-k/(d-1)}``, ``k = 0..d-1`` (geometric from 1 to
    ``1/condition``). The local optima are ``x*_i = x_c + heterogeneity * u_i`` with
    ``x_c`` a fixed unit vector and ``sum_i u_i = 0``, ``mean_i ||u_i||^2 = 1`` (all fixed
    by ``seed``). In closed form

    .. math::

        f_i(x) = \tfrac12 (x - x^*_i)^T \Sigma (x - x^*_i) + \tfrac{\sigma^2}{2},\qquad
        f = \tfrac1n \sum_i f_i,\qquad x^* = \tfrac1n \sum_i x^*_i,

        f^* = \tfrac{\sigma^2}{2} + \tfrac{1}{2n} \sum_i (x^*_i - x^*)^T \Sigma (x^*_i - x^*),
        \qquad f(x) = f^* + \tfrac12 (x - x^*)^T \Sigma (x - x^*).

    ``evaluate`` uses this closed form exactly.

    Args:
        num_nodes: ``n >= 1``.
        dim: ``d >= 1``.
        noise: label noise standard deviation ``sigma >= 0``.
        heterogeneity: spread ``>= 0`` of the local optima around ``x*``.
        batch_size: samples per node per round.
        condition: ratio ``>= 1`` of the largest to the smallest eigenvalue of ``Sigma``.
        seed: fixes ``x*`` and the ``u_i`` (the problem, not the sample stream).
        dtype: floating dtype of parameters and samples.

    Raises:
        TaskError: for an argument outside its range.

    Example:
        >>> task = LeastSquares(4, dim=3, noise=0.1)
        >>> float(task.evaluate(task.x_star[None])["loss"][0]) == task.optimum
        True
    """

    name = "least_squares"

    def __init__(
        self,
        num_nodes: int,
        dim: int = 20,
        noise: float = 0.5,
        heterogeneity: float = 0.0,
        batch_size: int = 1,
        condition: float = 1.0,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self.num_nodes = check_int("num_nodes", num_nodes, minimum=1)
        self.dim = check_int("dim", dim, minimum=1)
        self.noise = check_float("noise", noise, minimum=0.0)
        self.heterogeneity = check_float("heterogeneity", heterogeneity, minimum=0.0)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.condition = check_float(
            "condition", condition, minimum=1.0, fix="use condition=1.0 for isotropic features"
        )
        self.seed = check_int("seed", seed, minimum=0)
        if not dtype.is_floating_point:
            raise TaskError(f"dtype must be a floating dtype, got {dtype}; use torch.float64")
        self.dtype = dtype

        k = torch.arange(self.dim, dtype=torch.float64)
        exponent = k / (self.dim - 1) if self.dim > 1 else k
        sigma = self.condition ** (-exponent)
        center = _unit_vector(self.seed, _LS_XSTAR, self.dim)
        u = _centered_directions(self.seed, _LS_HETERO, self.num_nodes, self.dim, torch.float64)
        local = center[None, :] + self.heterogeneity * u
        x_star = local.mean(dim=0)
        spread = 0.5 * ((local - x_star).square() * sigma).sum(dim=1).mean()

        self.sigma_diag: torch.Tensor = sigma.to(dtype)
        """``(d,)`` eigenvalues of the feature covariance ``Sigma``."""
        self.local_optima: torch.Tensor = local.to(dtype)
        """``(n, d)`` local minimizers ``x*_i``."""
        self.x_star: torch.Tensor = x_star.to(dtype)
        """``(d,)`` minimizer of the global objective."""
        self._f_star = float(0.5 * self.noise**2 + spread)
        self.optimum: float | None = self._f_star
        self.eval_size = 0  # evaluation is in closed form
        self._sqrt_sigma = sigma.sqrt().to(dtype)

    def init_params(self, seed: int) -> Params:
        """Return the origin ``(d,)``; the convex problem always starts there (seed unused)."""
        del seed
        return torch.zeros(self.dim, dtype=self.dtype)

    def loss(self, params: Params, batch: Batch) -> torch.Tensor:
        """Mean of ``(1/2) (a^T x - y)^2`` over one node's minibatch ``(a (B, d), y (B,))``."""
        a, y = batch
        residual = a @ params - y
        return 0.5 * residual.square().mean()

    def sample(self, nodes: torch.Tensor, t: int, seed: int) -> Batch:
        """Draw ``(a (m, B, d), y (m, B))`` for ``nodes`` at round ``t``."""
        nodes = nodes.to(torch.int64)
        m, b, d = nodes.shape[0], self.batch_size, self.dim
        z = _stream.normal(seed, _LS_SAMPLES, t, nodes, b * (d + 1), self.num_nodes, self.dtype)
        a = z[:, : b * d].view(m, b, d).mul_(self._sqrt_sigma.to(z.device))
        eps = z[:, b * d :]
        y = torch.einsum("mbd,md->mb", a, self._local_rows(nodes)).add_(eps, alpha=self.noise)
        return a, y

    def _local_rows(self, nodes: torch.Tensor) -> torch.Tensor:
        local = self.local_optima.to(nodes.device)
        if nodes.shape[0] == self.num_nodes and _stream.is_range(nodes):
            return local
        return local[nodes]

    def grad_and_loss(
        self, params: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed-form gradients and losses of every row's minibatch: ``(m, d)``, ``(m,)``.

        ``r = a x - y``, ``loss = mean(r^2) / 2``, ``grad = a^T r / B`` per row.
        """
        a, y = batch
        r = torch.einsum("mbd,md->mb", a, params).sub_(y)
        grads = torch.einsum("mbd,mb->md", a, r).div_(r.shape[1])
        return grads, 0.5 * r.square().mean(dim=1)

    def evaluate(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        """Closed-form ``f`` and squared distance to ``x*`` for ``k`` models ``(k, d)``."""
        diff = params - self.x_star.to(params.device)
        sigma = self.sigma_diag.to(params.device)
        gap = 0.5 * (diff.square() * sigma).sum(dim=-1)
        return {"loss": gap + self._f_star, "dist2_to_opt": diff.square().sum(dim=-1)}

    def local_loss(self, params: torch.Tensor) -> torch.Tensor:
        """Closed-form local objectives ``f_i(x_j)`` for ``(k, d)`` models: ``(k, n)``."""
        diff = params[:, None, :] - self.local_optima.to(params.device)[None]
        sigma = self.sigma_diag.to(params.device)
        return 0.5 * (diff.square() * sigma).sum(dim=-1) + 0.5 * self.noise**2


class LogisticRegressionStream:
    r"""Streaming logistic regression with node-dependent feature shifts.

    Node ``i`` draws ``a ~ N(mu_i, I)`` with ``mu_i = heterogeneity * u_i`` (``sum_i u_i =
    0``, ``mean_i ||u_i||^2 = 1``) and a label ``y ~ Bernoulli(sigmoid(a^T theta))`` for a
    fixed ``theta`` of norm 2. The per-sample loss is

    .. math:: \ell(x; a, y) = \log(1 + e^{a^T x}) - y\, a^T x + \tfrac{l_2}{2} \|x\|^2.

    The population objective has no closed form, so the global objective ``f`` is the
    empirical loss on a fixed evaluation sample of ``eval_samples`` points, an equal number
    from each node's distribution (so ``f = (1/n) sum_i f_i`` on that sample), drawn from
    ``seed`` with streams disjoint from training. ``f*`` is its minimum, found by Newton's
    method with backtracking line search in float64 to about ``1e-13``.

    Args:
        num_nodes: ``n >= 1``.
        dim: ``d >= 1``.
        heterogeneity: size ``>= 0`` of the node mean shifts.
        batch_size: samples per node per round.
        l2: ridge coefficient ``>= 0`` (``> 0`` makes ``f`` strongly convex).
        eval_samples: total evaluation sample size, split equally across nodes (at least one
            each).
        seed: fixes ``theta``, the ``u_i`` and the evaluation sample.
        dtype: floating dtype of parameters and samples.

    Raises:
        TaskError: for an argument outside its range.
    """

    name = "logistic_stream"

    def __init__(
        self,
        num_nodes: int,
        dim: int = 20,
        heterogeneity: float = 0.0,
        batch_size: int = 1,
        l2: float = 1e-3,
        eval_samples: int = 2**15,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self.num_nodes = check_int("num_nodes", num_nodes, minimum=1)
        self.dim = check_int("dim", dim, minimum=1)
        self.heterogeneity = check_float("heterogeneity", heterogeneity, minimum=0.0)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.l2 = check_float("l2", l2, minimum=0.0)
        self.eval_samples = check_int("eval_samples", eval_samples, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        if not dtype.is_floating_point:
            raise TaskError(f"dtype must be a floating dtype, got {dtype}; use torch.float64")
        self.dtype = dtype

        self.theta_true: torch.Tensor = (2.0 * _unit_vector(self.seed, _LR_THETA, self.dim)).to(
            dtype
        )
        """``(d,)`` the parameter that generates the labels."""
        self.means: torch.Tensor = (
            self.heterogeneity
            * _centered_directions(self.seed, _LR_HETERO, self.num_nodes, self.dim, torch.float64)
        ).to(dtype)
        """``(n, d)`` node feature means ``mu_i``."""

        per_node = max(1, self.eval_samples // self.num_nodes)
        nodes = torch.arange(self.num_nodes, dtype=torch.int64)
        a, y = self._draw(nodes, 0, self.seed, per_node, _LR_EVAL_FEATURES, _LR_EVAL_LABELS)
        self.eval_features: torch.Tensor = a.reshape(-1, self.dim)
        """``(n * per_node, d)`` the fixed evaluation sample defining ``f``."""
        self.eval_labels: torch.Tensor = y.reshape(-1)
        """``(n * per_node,)`` its labels in ``{0, 1}`` (floating)."""
        self.eval_size = int(self.eval_labels.shape[0])

        a64 = self.eval_features.to(torch.float64)
        y64 = self.eval_labels.to(torch.float64)

        def objective(x: torch.Tensor) -> torch.Tensor:
            z = a64 @ x
            return (F.softplus(z) - y64 * z).mean() + 0.5 * self.l2 * x.square().sum()

        def gradient(x: torch.Tensor) -> torch.Tensor:
            residual = torch.sigmoid(a64 @ x) - y64
            return a64.T @ residual / a64.shape[0] + self.l2 * x

        def hessian(x: torch.Tensor) -> torch.Tensor:
            p = torch.sigmoid(a64 @ x)
            curvature = (p * (1.0 - p))[:, None] * a64
            eye = torch.eye(self.dim, dtype=torch.float64)
            return a64.T @ curvature / a64.shape[0] + self.l2 * eye

        x_opt = newton_minimize(
            objective, torch.zeros(self.dim, dtype=torch.float64), grad=gradient, hessian=hessian
        )
        self.x_star: torch.Tensor = x_opt.to(dtype)
        """``(d,)`` minimizer of ``f`` (to about 1e-13 in float64)."""
        self.optimum: float | None = None
        self.optimum = float(self.evaluate(self.x_star[None])["loss"][0])

    def _draw(
        self,
        nodes: torch.Tensor,
        t: int,
        seed: int,
        count: int,
        feature_stream: int,
        label_stream: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The evaluation sample, drawn once with :mod:`decent._rng` at construction."""
        z = _rng.normal(seed, feature_stream, t, nodes, (count, self.dim), dtype=self.dtype)
        a = z + self.means.to(z.device)[nodes][:, None, :]
        prob = torch.sigmoid(a @ self.theta_true.to(z.device))
        u = _rng.uniform(seed, label_stream, t, nodes, (count,), dtype=torch.float64)
        y = (u < prob.to(torch.float64)).to(self.dtype)
        return a, y

    def init_params(self, seed: int) -> Params:
        """Return the origin ``(d,)``; the convex problem always starts there (seed unused)."""
        del seed
        return torch.zeros(self.dim, dtype=self.dtype)

    def loss(self, params: Params, batch: Batch) -> torch.Tensor:
        """Mean logistic loss plus ridge over one node's minibatch ``(a (B, d), y (B,))``."""
        a, y = batch
        z = a @ params
        return (F.softplus(z) - y * z).mean() + 0.5 * self.l2 * params.square().sum()

    def sample(self, nodes: torch.Tensor, t: int, seed: int) -> Batch:
        """Draw ``(a (m, B, d), y (m, B))`` for ``nodes`` at round ``t``.

        ``a ~ N(mu_i, I)`` and ``y = 1[u < sigmoid(a^T theta)]`` with ``u`` uniform.
        """
        nodes = nodes.to(torch.int64)
        m, b, d, n = nodes.shape[0], self.batch_size, self.dim, self.num_nodes
        a = _stream.normal(seed, _LR_SAMPLES, t, nodes, b * d, n, self.dtype).view(m, b, d)
        means = self.means.to(a.device)
        a.add_((means if m == n and _stream.is_range(nodes) else means[nodes])[:, None, :])
        prob = torch.sigmoid(a @ self.theta_true.to(a.device))
        u = _stream.uniform(seed, _LR_LABELS, t, nodes, b, n, self.dtype)
        return a, (u < prob).to(self.dtype)

    def grad_and_loss(
        self, params: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed-form gradients and losses of every row's minibatch: ``(m, d)``, ``(m,)``.

        ``z = a x``, ``loss = mean(softplus(z) - y z) + l2 ||x||^2 / 2``,
        ``grad = a^T (sigmoid(z) - y) / B + l2 x`` per row.
        """
        a, y = batch
        z = torch.einsum("mbd,md->mb", a, params)
        losses = (F.softplus(z) - y * z).mean(dim=1)
        residual = torch.sigmoid(z).sub_(y)
        grads = torch.einsum("mbd,mb->md", a, residual).div_(z.shape[1])
        if self.l2:
            grads.add_(params, alpha=self.l2)
            losses = losses + 0.5 * self.l2 * params.square().sum(dim=1)
        return grads, losses

    def evaluate(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss ``f`` and accuracy on the evaluation sample for ``k`` models ``(k, d)``."""
        a = self.eval_features.to(params.device)
        y = self.eval_labels.to(params.device)
        z = params @ a.T  # (k, N)
        loss = (F.softplus(z) - y * z).mean(dim=1) + 0.5 * self.l2 * params.square().sum(dim=1)
        accuracy = ((z > 0).to(params.dtype) == y).to(params.dtype).mean(dim=1)
        return {"loss": loss, "accuracy": accuracy}

    @property
    def bayes_accuracy(self) -> float:
        """Accuracy of ``theta`` itself on the evaluation sample (a reference ceiling)."""
        z = self.eval_features @ self.theta_true
        return float(((z > 0).to(self.dtype) == self.eval_labels).to(torch.float64).mean())


__all__ = ["LeastSquares", "LogisticRegressionStream"]
