"""Streaming logistic regression whose objective is the population risk, by quadrature.

:class:`~decent.tasks.LogisticRegressionStream` defines ``f`` as the loss on a fixed
evaluation sample, so its ``f*`` is the minimum over that sample: the true parameter itself
scores about ``d / (2 n_eval)`` above it, which swamps small excess risks. Here the features
are Gaussian, so the loss at any ``x`` depends on a sample only through the two projections
``u = a^T x`` and ``v = a^T theta``, which are jointly Gaussian, and every expectation the
population objective needs is a one-dimensional Gaussian integral. Those are computed by the
trapezoidal rule, which converges exponentially here (tests check against a large Monte
Carlo sample with its standard error, against a finer grid, and the gradient and Hessian
against autograd). ``f``, its gradient, its Hessian,
``x*`` (Newton's method) and the population accuracy are therefore exact up to quadrature:
``f(x) - f*`` is an excess population risk, not a loss on a sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import annotated_types as at
import numpy as np
import torch
import torch.nn.functional as F

from decent import _stream
from decent._elementwise import positionless
from decent._params import Doc, checked_args
from decent._stack import check_family
from decent._types import Batch
from decent.tasks._checks import (
    L2,
    SPREAD,
    BatchSize,
    Components,
    Dim,
    Nodes,
    ProblemSeed,
    check_components,
)
from decent.tasks._optim import newton_minimize
from decent.tasks.base import TaskError
from decent.tasks.streaming import (
    _centered_directions,
    _Logistic,
    _unit_vector,
)

_LP_FEATURES = 0x1062_0003  # features of one round
_LP_LABELS = 0x1062_0004  # the uniforms that decide the labels
_LP_COMPONENT = 0x1062_0005  # which of its components a node's sample comes from
_LP_THETA = 0x1062_0010
_LP_MEANS = 0x1062_0011
_LP_THETA_SHIFT = 0x1062_0012


_REACH = 10.0
"""The Gaussian integrals run over ``zeta`` in ``[-10, 10]`` (the tails weigh < 1e-22)."""
_STEP_U = 0.5
"""Grid step in ``u = m + s zeta``: softplus and sigmoid are analytic in a strip of half-width
``pi`` around the real line, so the trapezoidal rule's error is about
``exp(-2 pi^2 / 0.5) ~ 1e-17`` of the integral."""
_CHUNK = 1 << 21
"""Values of one ``(models, components, points)`` block at most (16 MB of float64)."""


def _gauss_grid(scale: float, step_u: float = _STEP_U) -> tuple[torch.Tensor, torch.Tensor]:
    """Points and weights of ``E[g(m + scale zeta)]``, ``zeta ~ N(0, 1)``: the trapezoidal
    rule on ``[-10, 10]``, which converges exponentially for integrands analytic in a strip;
    the step keeps ``scale * h <= step_u`` (and ``h <= 0.25``)."""
    h = min(0.25, step_u / max(scale, 1e-12))
    count = 2 * int(np.ceil(_REACH / h)) + 1
    z = torch.linspace(-_REACH, _REACH, count, dtype=torch.float64)
    w = torch.exp(-0.5 * z.square())
    return z, w / w.sum()


def _sigmoid_derivatives(u: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``sigma(u)`` and its first three derivatives."""
    s = torch.sigmoid(u)
    d1 = s * (1.0 - s)
    d2 = d1 * (1.0 - 2.0 * s)
    d3 = d1 * (1.0 - 6.0 * s + 6.0 * s * s)
    return s, d1, d2, d3


class LogisticPopulation(_Logistic):
    r"""Streaming logistic regression over ``K`` components, judged by its population risk.

    Component ``c`` draws features ``a ~ N(mu_c, Sigma)`` and labels
    ``y ~ Bernoulli(sigmoid(a^T theta_c))``; the per-sample loss is
    ``softplus(a^T x) - y a^T x + (l2 / 2) ||x||^2``. The means are
    ``mu_c = heterogeneity * u_c`` (feature skew) and the label parameters
    ``theta_c = theta + label_heterogeneity * u'_c`` (concept skew) around a fixed ``theta``
    of norm ``theta_norm``; ``Sigma = I`` (``spectrum="identity"``) or
    ``diag(j^{-power})`` (``spectrum="power"``: convex but not effectively strongly convex in
    high dimension, as the least-squares study's problem), with ``sum_c u_c = 0`` and ``mean_c ||u_c||^2 = 1`` (the same for
    ``u'``). Node ``i`` of ``n`` holds the components ``i, i + n, ...`` and each of its samples
    comes from one of them, chosen uniformly; the global objective is the mean over the ``K``
    components for every ``n`` dividing ``K``, so ``n = 1`` samples the mixture (the
    single-machine reference of a scaling study). Without ``components`` every node is one
    component.

    With ``S(m, s) = E softplus(m + s zeta)``, ``||x||_Sigma^2 = x^T Sigma x``,
    ``p_c = E sigmoid(v_c)`` and
    ``q_c = E sigmoid'(v_c)`` (``v_c = a^T theta_c``, Stein's lemma for ``E[sigmoid(v) u]``),

    .. math::

        f(x) = \frac1K \sum_c \Big[S(\mu_c^T x, \|x\|_\Sigma) - p_c\, \mu_c^T x
               - q_c\, \theta_c^T \Sigma x\Big] + \tfrac{l_2}{2}\|x\|^2,

    one-dimensional Gaussian integrals done by the trapezoidal rule on a grid fine enough
    for about ``1e-15`` (the gradient and Hessian likewise, by Stein's lemma: ``E sigma(u)``,
    ``E sigma'(u)``, ...). ``x*`` is found by Newton's method.

    Args:
        num_nodes: ``n``; the other arguments are declared in the signature
            (``theta_norm`` is ``||theta||``, ``components`` is ``K``).
        dtype: floating dtype of parameters and samples.

    Raises:
        TaskError: for an argument outside its range.

    Example:
        >>> task = LogisticPopulation(4, dim=3, heterogeneity=0.5)
        >>> abs(float(task.evaluate(task.x_star[None])["loss"][0]) - task.optimum) < 1e-15
        True
    """

    name = "logistic_population"
    replica_fields = (
        "num_nodes",
        "dim",
        "batch_size",
        "l2",
        "dtype",
        "components",
        "spectrum",
        "power",
    )

    @checked_args("logistic_population", TaskError)
    def __init__(
        self,
        num_nodes: Nodes,
        dim: Dim = 20,
        heterogeneity: Annotated[
            float, SPREAD, Doc("Spread of the component feature means (feature skew).")
        ] = 0.0,
        label_heterogeneity: Annotated[
            float, SPREAD, Doc("Spread of the component label parameters (concept skew).")
        ] = 0.0,
        theta_norm: Annotated[
            float, at.Interval(gt=0.0, le=1e3), Doc("Norm of the centre label parameter.")
        ] = 2.0,
        batch_size: BatchSize = 1,
        l2: L2 = 0.0,
        spectrum: Annotated[
            Literal["identity", "power"],
            Doc("Feature covariance: identity, or power: diag(j^-power)."),
        ] = "identity",
        power: Annotated[
            float, at.Interval(ge=0.0, le=1e2), Doc("Exponent of the power-law spectrum.")
        ] = 1.0,
        components: Components = None,
        seed: ProblemSeed = 0,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self._set_up(num_nodes, dtype)
        self.components = check_components(components, num_nodes)
        self.dim = dim
        self.heterogeneity = float(heterogeneity)
        self.label_heterogeneity = float(label_heterogeneity)
        self.theta_norm = float(theta_norm)
        self.batch_size = batch_size
        self.l2 = float(l2)
        self.spectrum = spectrum
        self.power = float(power)
        self.seed = seed

        n, d = self.num_nodes, self.dim
        kc = n if components is None else components
        self._per_node = kc // n
        theta = self.theta_norm * _unit_vector(self.seed, _LP_THETA, d)
        u = _centered_directions(self.seed, _LP_MEANS, kc, d, torch.float64)
        shift = _centered_directions(self.seed, _LP_THETA_SHIFT, kc, d, torch.float64)
        k = torch.arange(1, d + 1, dtype=torch.float64)
        self._lam = (
            k ** (-self.power) if spectrum == "power" else torch.ones(d, dtype=torch.float64)
        )
        self._sqrt_lam = self._lam.sqrt().to(dtype)
        self._means64 = self.heterogeneity * u  # (K, d)
        self._thetas64 = theta[None, :] + self.label_heterogeneity * shift  # (K, d)
        self.theta_true: torch.Tensor = theta.to(dtype)
        """``(d,)`` the centre ``theta`` of the label parameters."""
        self.means: torch.Tensor = self._means64.to(dtype)
        """``(K, d)`` each component's feature mean ``mu_c``."""
        self.thetas: torch.Tensor = self._thetas64.to(dtype)
        """``(K, d)`` each component's label parameter ``theta_c``."""
        # E sigmoid(v_c), E sigmoid'(v_c) with v_c ~ N(mu_c^T theta_c, ||theta_c||^2)
        mv = (self._means64 * self._thetas64).sum(dim=1)
        sv = (self._thetas64.square() * self._lam).sum(dim=1).sqrt()
        z, w = _gauss_grid(float(sv.max()))
        sig, d1, _, _ = _sigmoid_derivatives(mv[:, None] + sv[:, None] * z[None, :])
        self._p = sig @ w
        self._q = d1 @ w
        self._linear = (
            self._p[:, None] * self._means64 + self._q[:, None] * self._thetas64 * self._lam
        ).mean(0)
        self._mv, self._sv = mv, sv

        x_opt = newton_minimize(
            self._objective64,
            torch.zeros(d, dtype=torch.float64),
            grad=self._gradient64,
            hessian=self._hessian64,
        )
        self._xstar64 = x_opt
        self.x_star: torch.Tensor = x_opt.to(dtype)
        """``(d,)`` the population minimizer of ``f`` (Newton's method, float64)."""
        self._f_star = float(self._objective64(x_opt))
        self.optimum: float | None = self._f_star

    # ------------------------------------------------------------------ population side

    def _smooth_terms(self, x: torch.Tensor, order: int) -> tuple[torch.Tensor, ...]:
        """``(k, K)`` tables ``E g(mu_c^T x + ||x|| zeta)`` for ``g`` = softplus
        (``order = 0``) or ``sigma, sigma', ...`` (the first ``order`` of them)."""
        m = x @ self._means64.T  # (k, K)
        s = (x.square() * self._lam).sum(dim=-1, keepdim=True).sqrt()  # (k, 1)
        z, w = _gauss_grid(float(s.detach().max()) if s.numel() else 1.0)
        parts: list[list[torch.Tensor]] = [[] for _ in range(max(order, 1))]
        rows = max(1, _CHUNK // (m.shape[1] * z.shape[0]))
        for mc, sc in zip(m.split(rows), s.split(rows), strict=True):
            u = mc[..., None] + sc[..., None] * z  # (rows, K, points)
            terms = (F.softplus(u),) if order == 0 else _sigmoid_derivatives(u)[:order]
            for out, term in zip(parts, terms, strict=False):
                out.append(term @ w)
        return tuple(torch.cat(p) for p in parts)

    def _objective64(self, x: torch.Tensor) -> torch.Tensor:
        """``f`` at ``(d,)`` or ``(k, d)`` points, in float64."""
        xs = x.reshape(-1, self.dim).to(torch.float64)
        (soft,) = self._smooth_terms(xs, 0)
        f = soft.mean(dim=1) - xs @ self._linear + 0.5 * self.l2 * xs.square().sum(dim=1)
        return f.reshape(x.shape[:-1])

    def _gradient64(self, x: torch.Tensor) -> torch.Tensor:
        p1, q1 = self._smooth_terms(x[None], 2)
        k = self._means64.shape[0]
        y = self._lam * x
        return (p1[0] @ self._means64) / k + q1[0].mean() * y - self._linear + self.l2 * x

    def _hessian64(self, x: torch.Tensor) -> torch.Tensor:
        _, q1, r1, t1 = (t[0] for t in self._smooth_terms(x[None], 4))
        k, mu, y = self._means64.shape[0], self._means64, self._lam * x
        h = (mu.T * q1) @ mu / k
        cross = torch.outer((r1 @ mu) / k, y)
        h = h + cross + cross.T + t1.mean() * torch.outer(y, y) + q1.mean() * torch.diag(self._lam)
        return h + self.l2 * torch.eye(self.dim, dtype=torch.float64)

    def _accuracy64(self, xs: torch.Tensor) -> torch.Tensor:
        """Population accuracy of ``sign(a^T x)`` for ``(k, d)`` models, per component by
        quadrature over ``v`` (``u`` given ``v`` is Gaussian), on a coarser grid: about 1e-8."""
        mu, th = self._means64, self._thetas64
        sv = self._sv[None, :]
        z, w = _gauss_grid(float(self._sv.max()), step_u=1.0)  # about 1e-8: a metric only
        v = self._mv[None, :, None] + sv[..., None] * z  # (1, K, points)
        sig = torch.sigmoid(v)
        out = []
        rows = max(1, _CHUNK // (mu.shape[0] * z.shape[0]))
        for x in xs.split(rows):
            r = (x * self._lam) @ th.T  # (k, K): cov(u, v)
            s2 = (x.square() * self._lam).sum(dim=1, keepdim=True)
            sd = (s2 - (r / sv).square()).clamp_min(1e-300).sqrt()  # sd of u given v
            mean_u = (x @ mu.T)[..., None] + (r / sv)[..., None] * z  # (k, K, points)
            above = torch.special.ndtr(mean_u / sd[..., None])
            acc = (sig * above + (1.0 - sig) * (1.0 - above)) @ w
            out.append(acc.mean(dim=1))
        return torch.cat(out)

    # ------------------------------------------------------------------ the Task protocol

    def sample(self, nodes: torch.Tensor, t: int, seed: int) -> Batch:
        """Draw ``(a (m, B, d), y (m, B))`` for ``nodes`` at round ``t``."""
        nodes = nodes.to(torch.int64)
        return self._batch(nodes, t, seed, self._component_tables([self], nodes))

    def _stacked(
        self, distinct: Sequence[Any], tasks: Sequence[Any], nodes: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """The means and label parameters of the distinct tasks stacked ``(U K, d)``."""
        means = torch.cat([t.means for t in distinct]).to(nodes.device)
        return means, torch.cat([t.thetas for t in distinct]).to(nodes.device)

    def _batch(
        self,
        nodes: torch.Tensor,
        t: int,
        seed: int | Sequence[int],
        tables: tuple[torch.Tensor, ...],
    ) -> Batch:
        """Samples of every row (node-major over replicas): a component each, uniformly."""
        n, b, d = self.num_nodes, self.batch_size, self.dim
        means, thetas, base, high = tables
        raw = _stream.normal(seed, _LP_FEATURES, t, nodes, b * d, n, self.dtype)
        u = _stream.uniform(seed, _LP_LABELS, t, nodes, b, n, self.dtype)
        rows = raw.shape[0]
        if self._per_node > 1:
            j = _stream.integers(seed, _LP_COMPONENT, t, nodes, b, n, high)
            comp = j.mul_(n).add_(base).view(-1)
        else:
            comp = base.expand(rows, b).reshape(-1)
        a = raw.view(rows, b, d)
        if self.spectrum != "identity":
            a.mul_(self._sqrt_lam.to(a.device))
        a.add_(means.index_select(0, comp).view(rows, b, d))
        theta = thetas.index_select(0, comp).view(rows, b, d)
        prob = positionless(torch.sigmoid, (a * theta).sum(dim=2))
        return a, (u < prob).to(raw.dtype)

    @classmethod
    def replica_sampler(
        cls, tasks: Sequence[LogisticPopulation], seeds: Sequence[int], nodes: torch.Tensor
    ) -> Callable[[int], Batch]:
        """All replicas' batches for the simulator's rows, node-major, from one closure."""
        check_family(tasks, cls.replica_fields)
        first = tasks[0]
        tables = first._component_tables(tasks, nodes)

        def sample(t: int) -> Batch:
            return first._batch(nodes, t, seeds, tables)

        return sample

    def evaluate(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        """Population loss ``f`` and accuracy of ``k`` models ``(k, d)`` (quadrature)."""
        xs = params.to(torch.float64)
        out = {
            "loss": self._objective64(xs),
            "accuracy": self._accuracy64(xs),
            "dist2_to_opt": (xs - self._xstar64.to(xs.device)).square().sum(dim=1),
        }
        return {k: v.to(params.dtype) for k, v in out.items()}

    @property
    def bayes_accuracy(self) -> float:
        """Population accuracy of each component's own ``theta_c`` (a ceiling): the label
        agrees with ``sign(v)`` with probability ``sigmoid(|v|)``."""
        z, w = _gauss_grid(float(self._sv.max()))
        v = self._mv[:, None] + self._sv[:, None] * z[None, :]
        return float((torch.sigmoid(v.abs()) @ w).mean())


__all__ = ["LogisticPopulation"]
