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

import functools
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, NamedTuple

import annotated_types as at
import torch
import torch.nn.functional as F

from decent import _rng, _stream
from decent._elementwise import positionless, scalar
from decent._params import SEED, SIZE, SIZE_MAX, Doc, checked_args
from decent._stack import check_family, interleave
from decent._types import Batch, Params
from decent.tasks._checks import (
    L2,
    SPREAD,
    BatchSize,
    Dim,
    Nodes,
    check_components,
)
from decent.tasks._optim import newton_minimize
from decent.tasks.base import TaskError

# Stream constants: one per independent use of the counter-based generator.
_LS_SAMPLES = 0x15A0_0003  # features and label noise of one round, drawn together
_LS_XSTAR = 0x15A0_0010
_LS_HETERO = 0x15A0_0011
_LS_SIGNS = 0x15A0_0012
_LS_COMPONENT = 0x15A0_0004  # which of its components a node's sample comes from
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


class _Stream:
    """What the streaming convex tasks share: the origin as start point, the ``dtype``
    check and the cache of component tables."""

    num_nodes: int
    dim: int
    dtype: torch.dtype
    _per_node: int
    replica_fields: tuple[str, ...]
    """What every replica of a replica batch must share (the rest may differ)."""

    def _set_up(self, num_nodes: int, dtype: torch.dtype) -> None:
        self.num_nodes = num_nodes
        self._tables: dict[torch.device, tuple[torch.Tensor, ...]] = {}
        self._tables_nodes: torch.Tensor | None = None
        if not dtype.is_floating_point:
            raise TaskError(f"dtype must be a floating dtype, got {dtype}; use torch.float64")
        self.dtype = dtype

    def init_params(self, seed: int) -> Params:
        """Return the origin ``(d,)``; the convex problem always starts there (seed unused)."""
        del seed
        return torch.zeros(self.dim, dtype=self.dtype)

    def _stacked(
        self, distinct: Sequence[Any], tasks: Sequence[Any], nodes: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def _component_tables(
        self, tasks: Sequence[Any], nodes: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """What a mixture draw needs, built once per device and node set: the tables of the
        distinct tasks (:meth:`_stacked`; replicas of one task, e.g. a grid of step sizes,
        share its table: a 4096-component table is 3 MB, and gathers from a small one stay
        in cache), each node-major row's first component ``u K + i`` as an ``(m R, 1)``
        column (``u`` its task's place among the distinct tasks) and each node's number of
        components ``(m,)``."""
        device, r, m = nodes.device, len(tasks), nodes.shape[0]
        if r == 1 and device in self._tables and self._tables_nodes is nodes:
            return self._tables[device]
        distinct = list({id(t): t for t in tasks}.values())
        slot = {id(t): u for u, t in enumerate(distinct)}
        rep = torch.tensor([slot[id(t)] for t in tasks], device=device).repeat(m)[:, None]
        base = (
            rep * (self.num_nodes * self._per_node)
            + nodes.to(torch.int64).repeat_interleave(r)[:, None]
        )
        high = torch.full((m,), self._per_node, dtype=torch.int64, device=device)
        tables = (*self._stacked(distinct, tasks, nodes), base, high)
        if r == 1:
            self._tables[device], self._tables_nodes = tables, nodes
        return tables


class _Logistic(_Stream):
    """The logistic loss, per node and in closed form for every row."""

    l2: float

    def loss(self, params: Params, batch: Batch) -> torch.Tensor:
        """Mean of ``softplus(a^T x) - y a^T x`` over one node's minibatch ``(a (B, d), y
        (B,))``, plus the ridge."""
        a, y = batch
        z = a @ params
        return (F.softplus(z) - y * z).mean() + 0.5 * self.l2 * params.square().sum()

    def grad_and_loss(
        self, params: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed-form gradients and losses of every row's minibatch: ``(m, d)``, ``(m,)``.

        ``z = a x``, ``loss = mean(softplus(z) - y z) + l2 ||x||^2 / 2``,
        ``grad = a^T (sigmoid(z) - y) / B + l2 x`` per row.
        """
        a, y = batch
        l2 = self.l2
        z = torch.bmm(a, params.unsqueeze(2)).squeeze(2)  # (m, B)
        losses = _mean_rows(F.softplus(z) - y * z)
        residual = positionless(torch.sigmoid, z).sub_(y)  # replicas: the same bits
        grads = _rows_mean(a, residual)
        if l2:
            grads.add_(params * l2)  # not add(alpha=): see add_scaled_
            losses = losses + 0.5 * l2 * params.square().sum(dim=1)
        return grads, losses


class LeastSquares(_Stream):
    r"""Streaming linear regression with Gaussian features and heterogeneous nodes.

    Node ``i`` draws ``a ~ N(0, Sigma_i)`` and ``y = a^T x*_i + noise * eps`` with
    ``eps ~ N(0, 1)``; its per-sample loss is ``(1/2) (a^T x - y)^2``. The covariances are
    diagonal: ``Sigma_i = diag(lambda_j (1 + h s_ij))`` with the spectrum ``lambda_j``
    either geometric (``spectrum="geometric"``: ``condition^{-k/(d-1)}``, ``k = 0..d-1``,
    from 1 to ``1/condition``) or a power law (``spectrum="power"``:
    ``lambda_j = j^{-power}``, ``j = 1..d``), node-specific by ``h =
    hessian_heterogeneity`` with signs ``s_ij = +-1`` balanced over nodes (half the nodes
    get ``+1`` in each coordinate), so ``(1/n) sum_i Sigma_i = diag(lambda) = H``. The
    local optima are ``x*_i = x_c + heterogeneity * u_i`` with ``x_c`` a fixed unit vector
    and ``sum_i u_i = 0``, ``mean_i ||u_i||^2 = 1`` (all fixed by ``seed``). In closed form,
    with ``b = (1/n) sum_i Sigma_i x*_i``,

    .. math::

        f_i(x) = \tfrac12 (x - x^*_i)^T \Sigma_i (x - x^*_i) + \tfrac{\sigma^2}{2},\qquad
        f = \tfrac1n \sum_i f_i,\qquad x^* = H^{-1} b,

        f(x) = f^* + \tfrac12 (x - x^*)^T H (x - x^*),\qquad
        f^* = \tfrac{\sigma^2}{2} + \tfrac{1}{2n} \sum_i x_i^{*T} \Sigma_i x^*_i
              - \tfrac12 x^{*T} H x^*.

    ``evaluate`` uses this closed form exactly: it is the population risk, not a loss on a
    sample. With ``hessian_heterogeneity = 0`` every node shares ``H``; then a linear
    method's network average follows its centralized counterpart exactly, whatever the
    graph (a useful sanity baseline); node-specific Hessians and optima break that.

    **Components** (``components = K``): the problem is then defined by ``K`` components
    (covariances, optima and signs are drawn over ``K``, not over ``n``), ``K`` a multiple of
    ``n``. Node ``i`` holds the components ``c = i + n j``, ``j = 0 .. K/n - 1``, and each of
    its samples comes from one of them, chosen uniformly. The global objective is the mean
    over the ``K`` components for every ``n`` dividing ``K``: the same problem, split over
    more or fewer machines, which is what a scaling study at a fixed sample budget needs;
    ``n = 1`` samples the mixture itself (the single-machine reference). Without
    ``components`` every node is one component (``K = n``).

    Args:
        num_nodes: ``n``; the other arguments (``noise`` is ``sigma``,
            ``hessian_heterogeneity`` is ``h``, ``components`` is ``K``) are declared in the
            signature; ``seed`` fixes ``x_c``, the ``u_i`` and the signs.
        dtype: floating dtype of parameters and samples.

    Raises:
        TaskError: for an argument outside its range.

    Example:
        >>> task = LeastSquares(4, dim=3, noise=0.1, hessian_heterogeneity=0.5)
        >>> abs(float(task.evaluate(task.x_star[None])["loss"][0]) - task.optimum) < 1e-15
        True
    """

    name = "least_squares"
    replica_fields = ("num_nodes", "dim", "batch_size", "dtype", "components")

    @checked_args("least_squares", TaskError)
    def __init__(
        self,
        num_nodes: Nodes,
        dim: Dim = 20,
        noise: Annotated[
            float, at.Interval(ge=0.0, le=1e6), Doc("Label noise standard deviation.")
        ] = 0.5,
        heterogeneity: Annotated[float, SPREAD, Doc("Spread of the local optima x*_i.")] = 0.0,
        batch_size: BatchSize = 1,
        condition: Annotated[
            float,
            at.Interval(ge=1.0, le=1e6),
            Doc("Condition number of the (geometric) feature spectrum."),
        ] = 1.0,
        seed: Annotated[int, SEED, Doc("Seed of the problem (optima), not of the samples.")] = 0,
        dtype: torch.dtype = torch.float64,
        hessian_heterogeneity: Annotated[
            float,
            at.Interval(ge=0.0, lt=1.0),
            Doc(
                "h: node i's covariance is diag(lambda_j (1 + h s_ij)), signs balanced over "
                "nodes (0: every node shares the Hessian)."
            ),
        ] = 0.0,
        spectrum: Annotated[
            Literal["geometric", "power"],
            Doc("geometric: from 1 to 1/condition; power: lambda_j = j^-power."),
        ] = "geometric",
        power: Annotated[
            float, at.Interval(gt=0.0, le=1e2), Doc("Exponent of the power-law spectrum.")
        ] = 1.0,
        components: Annotated[
            int | None,
            at.Interval(ge=1, le=SIZE_MAX),
            Doc(
                "K: the problem is K components, node i holds components i, i + n, ... and "
                "samples one uniformly (a multiple of num_nodes; the same problem for every "
                "n dividing K; None: one per node)."
            ),
        ] = None,
    ) -> None:
        self._set_up(num_nodes, dtype)
        self.components = check_components(components, num_nodes)
        self.dim = dim
        self.noise = float(noise)
        self.heterogeneity = float(heterogeneity)
        self.batch_size = batch_size
        self.condition = float(condition)
        self.seed = seed
        self.hessian_heterogeneity = float(hessian_heterogeneity)
        self.spectrum = spectrum
        self.power = float(power)

        n, d = self.num_nodes, self.dim
        kc = n if components is None else components
        self._per_node = kc // n
        problem = _ls_problem(
            self.seed,
            kc,
            d,
            spectrum,
            self.power,
            self.condition,
            self.hessian_heterogeneity,
            self.heterogeneity,
            dtype,
        )
        hess, x_star, const = problem.hess, problem.x_star, problem.const

        self.sigma_diag: torch.Tensor = problem.sigma_diag
        """``(d,)`` the global Hessian ``H = (1/n) sum_i Sigma_i`` (diagonal)."""
        self.node_sigma: torch.Tensor = problem.node_sigma
        """``(K, d)`` each component's feature covariance ``Sigma_c`` (diagonal; ``K = n``
        without ``components``: one per node)."""
        self.local_optima: torch.Tensor = problem.local_optima
        """``(K, d)`` each component's minimizer ``x*_c``."""
        self.x_star: torch.Tensor = problem.x_star_dtype
        """``(d,)`` minimizer of the global objective."""
        self._hess64, self._xstar64 = hess, x_star
        self._f_star = float(0.5 * self.noise**2 + const - 0.5 * (hess * x_star.square()).sum())
        self.optimum: float | None = self._f_star
        self.eval_size = 0  # evaluation is in closed form
        self._sqrt_rows = problem.sqrt_rows  # (K, d)
        self._noise = torch.tensor(self.noise, dtype=dtype)
        self._all_rows: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def loss(self, params: Params, batch: Batch) -> torch.Tensor:
        """Mean of ``(1/2) (a^T x - y)^2`` over one node's minibatch ``(a (B, d), y (B,))``."""
        a, y = batch
        residual = a @ params - y
        return 0.5 * residual.square().mean()

    def sample(self, nodes: torch.Tensor, t: int, seed: int) -> Batch:
        """Draw ``(a (m, B, d), y (m, B))`` for ``nodes`` at round ``t``."""
        nodes = nodes.to(torch.int64)
        if self._per_node > 1:
            tables = self._component_tables([self], nodes)
            return self._mixture_batch(self._raw(nodes, t, seed), nodes, seed, t, tables)
        rows = self._row_params(nodes)
        return _ls_batch(self._raw(nodes, t, seed), *rows, self.batch_size, self.dim)

    def _stacked(
        self, distinct: Sequence[Any], tasks: Sequence[Any], nodes: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """``sqrt(Sigma_c)`` and ``x*_c`` of the distinct tasks stacked ``(U K, d)`` and each
        row's noise level ``(m R, 1)``."""
        sqrt_c = torch.cat([t._sqrt_rows for t in distinct]).to(nodes.device)
        local_c = torch.cat([t.local_optima for t in distinct]).to(nodes.device)
        noise = torch.stack([t._noise for t in tasks]).to(nodes.device).repeat(nodes.shape[0])
        return sqrt_c, local_c, noise[:, None]

    def _mixture_batch(
        self,
        raw: torch.Tensor,
        nodes: torch.Tensor,
        seed: int | Sequence[int],
        t: int,
        tables: tuple[torch.Tensor, ...],
    ) -> Batch:
        """Samples of nodes holding several components: each sample picks one, uniformly.

        ``raw`` and the component draws are node-major over the replicas; replica ``r``'s
        rows read its own task's table (rows ``u K .. (u + 1) K - 1`` of ``tables``, ``u``
        its task's place among the distinct tasks).
        """
        n, b, d = self.num_nodes, self.batch_size, self.dim
        sqrt_c, local_c, noise, base, high = tables
        j = _stream.integers(seed, _LS_COMPONENT, t, nodes, b, n, high)  # (m R, b)
        comp = j.mul_(n).add_(base).view(-1)  # component r K + i + n j of each sample
        rows = raw.shape[0]
        a = raw[:, : b * d].reshape(rows, b, d).mul_(sqrt_c.index_select(0, comp).view(rows, b, d))
        local = local_c.index_select(0, comp).view(rows, b, d)
        y = (a * local).sum(dim=2).add_(raw[:, b * d :] * noise)
        return a, y

    def _raw(self, nodes: torch.Tensor, t: int, seed: int | Sequence[int]) -> torch.Tensor:
        width = self.batch_size * (self.dim + 1)
        return _stream.normal(seed, _LS_SAMPLES, t, nodes, width, self.num_nodes, self.dtype)

    def _row_params(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(sqrt(Sigma_i) (m, d), x*_i (m, d), noise (1, 1))`` for the rows of ``nodes``."""
        if nodes.shape[0] == self.num_nodes and _stream.is_range(nodes):
            cached = self._all_rows.get(nodes.device)
            if cached is None:
                cached = self._all_rows[nodes.device] = (
                    self._sqrt_rows.to(nodes.device),
                    self.local_optima.to(nodes.device),
                    self._noise.to(nodes.device).reshape(1, 1),
                )
            return cached[0], cached[1], cached[2]
        sqrt_rows = self._sqrt_rows.to(nodes.device)[nodes]
        local = self.local_optima.to(nodes.device)[nodes]
        return sqrt_rows, local, self._noise.to(nodes.device).reshape(1, 1)

    @classmethod
    def replica_sampler(
        cls, tasks: Sequence[LeastSquares], seeds: Sequence[int], nodes: torch.Tensor
    ) -> Callable[[int], Batch]:
        """``t ->`` all replicas' batches for the held rows, node-major (the round loop's
        sampler, of a single run too).

        Each replica's raw normals come from its own seed; scaling by ``sqrt(Sigma_i)``
        and the labels are computed once for all ``n * R`` rows with the single run's code,
        a chunk of rounds at a time when the rounds are read ahead.
        """
        check_family(tasks, cls.replica_fields)
        first = tasks[0]
        if first._per_node > 1:
            tables = first._component_tables(tasks, nodes)

            def mixture(t: int) -> Batch:
                raw = first._raw(nodes, t, seeds)
                return first._mixture_batch(raw, nodes, seeds, t, tables)

            return mixture
        params = [task._row_params(nodes) for task in tasks]
        sqrt_rows = interleave([p[0] for p in params])
        local = interleave([p[1] for p in params])
        noise = interleave([p[2].expand(nodes.shape[0], 1) for p in params])
        post = _LsSamples(sqrt_rows, local, noise, first.batch_size, first.dim)
        width = first.batch_size * (first.dim + 1)
        n = first.num_nodes
        return _stream.reader("normal", seeds, _LS_SAMPLES, nodes, width, n, first.dtype, post)

    def grad_and_loss(
        self, params: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed-form gradients and losses of every row's minibatch: ``(m, d)``, ``(m,)``.

        ``r = a x - y``, ``loss = mean(r^2) / 2``, ``grad = a^T r / B`` per row.
        """
        a, y = batch
        r = torch.bmm(a, params.unsqueeze(2)).squeeze(2).sub_(y)  # (m, B)
        return _rows_mean(a, r), _mean_rows(r.square()).mul_(scalar(0.5))

    def evaluate(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        """Closed-form ``f`` and squared distance to ``x*`` for ``k`` models ``(k, d)``."""
        diff = params - self.x_star.to(params.device)
        sigma = self.sigma_diag.to(params.device)
        gap = 0.5 * (diff.square() * sigma).sum(dim=-1)
        return {"loss": gap + self._f_star, "dist2_to_opt": diff.square().sum(dim=-1)}

    def excess_risk(self, params: torch.Tensor) -> torch.Tensor:
        """``f(x) - f*`` in float64 for ``(k, d)`` models, without cancellation."""
        diff = params.to(torch.float64) - self._xstar64.to(params.device)
        return 0.5 * (diff.square() * self._hess64.to(params.device)).sum(dim=-1)

    def local_loss(self, params: torch.Tensor) -> torch.Tensor:
        """Closed-form local objectives ``f_i(x_j)`` for ``(k, d)`` models: ``(k, n)``.

        A node holding several components has the mean of theirs.
        """
        diff = params[:, None, :] - self.local_optima.to(params.device)[None]
        sigma = self.node_sigma.to(params.device)[None]
        per = 0.5 * (diff.square() * sigma).sum(dim=-1) + 0.5 * self.noise**2  # (k, K)
        if self._per_node == 1:
            return per
        return per.view(params.shape[0], self._per_node, self.num_nodes).mean(dim=1)


def _rows_mean(a: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``a^T r / B`` per row: ``(m, B, d), (m, B) -> (m, d)`` (an elementwise product for B = 1).

    Both forms are row-independent, so a replica batch's rows get their single run's sums.
    """
    if a.shape[1] == 1:  # a batched (1, 1) x (1, d) product is 4x slower; / 1 changes nothing
        return a.squeeze(1) * r
    return torch.bmm(r.unsqueeze(1), a).squeeze(1).div_(a.shape[1])


def _mean_rows(v: torch.Tensor) -> torch.Tensor:
    """``v.mean(dim=1)`` for ``(m, B)``: for ``B = 1`` the column itself, the same numbers (a
    sum of one value, divided by 1) without the reduction kernel, 5-10 us a round."""
    return v.squeeze(1) if v.shape[1] == 1 else v.mean(dim=1)


def _ls_batch(
    raw: torch.Tensor,
    sqrt_rows: torch.Tensor,
    local: torch.Tensor,
    noise: torch.Tensor,
    b: int,
    d: int,
) -> Batch:
    """Features and labels from raw normals ``(m, b (d + 1))``: the one sampling code."""
    m = raw.shape[0]
    a = raw[:, : b * d].view(m, b, d).mul_(sqrt_rows[:, None, :])
    # a product then a sum (not a fused addcmul): the same rounding at every row position
    y = torch.bmm(a, local.unsqueeze(2)).squeeze(2).add_(raw[:, b * d :] * noise)
    return a, y


class _LsSamples:
    """:func:`_ls_batch` for whole chunks of rounds, in place: ``(a, y)`` per round.

    Given to :func:`decent._stream.reader` as its ``post``, it turns every chunk of rounds
    read ahead into features and labels with a handful of kernels per chunk (on the
    background thread that draws ahead), instead of per round, and hands out each round's
    ``(a (m, b, d), y (m, b))`` as views. Every ``(round, row)`` goes through the very
    operations of :func:`_ls_batch` (the same elementwise products and one batched product
    per row, whose sums do not depend on how many rows are batched), so a round's samples
    are the same bits either way.
    """

    def __init__(
        self, sqrt_rows: torch.Tensor, local: torch.Tensor, noise: torch.Tensor, b: int, d: int
    ) -> None:
        self.sqrt_rows, self.local, self.noise, self.b, self.d = sqrt_rows, local, noise, b, d
        self._local: dict[int, torch.Tensor] = {}

    def __call__(self, chunk: torch.Tensor) -> list[Batch]:
        nt, rows, _ = chunk.shape
        b, d = self.b, self.d
        a = chunk[..., : b * d].view(nt, rows, b, d).mul_(self.sqrt_rows[:, None, :])
        local = self._local.get(nt)
        if local is None:  # each row's x*_i for every round of the chunk, contiguous
            local = self.local.unsqueeze(0).expand(nt, rows, d).reshape(nt * rows, d, 1)
            self._local[nt] = local
        y = torch.bmm(a.view(nt * rows, b, d), local).squeeze(2)
        y.add_((chunk[..., b * d :] * self.noise).view(nt * rows, b))
        labels = chunk[..., b * d :]
        labels.copy_(y.view(nt, rows, b))
        return list(zip(a.unbind(0), labels.unbind(0), strict=True))


class _LsProblem(NamedTuple):
    """What a :class:`LeastSquares` problem is, shared read-only by every task built with
    the same arguments (see :func:`_ls_problem`)."""

    hess: torch.Tensor  # (d,) float64
    x_star: torch.Tensor  # (d,) float64
    const: torch.Tensor  # () float64
    sigma_diag: torch.Tensor  # (d,) dtype
    node_sigma: torch.Tensor  # (K, d) dtype
    local_optima: torch.Tensor  # (K, d) dtype
    x_star_dtype: torch.Tensor  # (d,) dtype
    sqrt_rows: torch.Tensor  # (K, d) dtype


@functools.lru_cache(maxsize=16)
def _ls_problem(
    seed: int,
    components: int,
    dim: int,
    spectrum: str,
    power: float,
    condition: float,
    hessian_heterogeneity: float,
    heterogeneity: float,
    dtype: torch.dtype,
) -> _LsProblem:
    """The covariances, optima and signs of ``K = components`` components, built once per
    process for each set of arguments.

    A scaling study builds the same ``K``-component problem for every ``n`` dividing ``K``
    and every replica batch (the draws of ``K = 4096`` signs and directions take ~90 ms);
    none of it depends on ``n``. The tensors are shared by every task built from them, so
    nothing may write into them: the tasks only read them (index, multiply into fresh
    tensors, copy to a device), and ``tests/tasks`` checks that a trained task's problem
    still equals a fresh build.
    """
    d = dim
    k = torch.arange(d, dtype=torch.float64)
    if spectrum == "power":
        lam = (k + 1.0) ** (-power)
    else:
        lam = condition ** (-(k / (d - 1) if d > 1 else k))
    signs = _balanced_signs(seed, _LS_SIGNS, components, d)
    node_sigma = lam[None, :] * (1.0 + hessian_heterogeneity * signs)  # (K, d)
    center = _unit_vector(seed, _LS_XSTAR, d)
    u = _centered_directions(seed, _LS_HETERO, components, d, torch.float64)
    local = center[None, :] + heterogeneity * u
    hess = node_sigma.mean(dim=0)  # = lam up to rounding
    b = (node_sigma * local).mean(dim=0)
    x_star = b / hess
    const = 0.5 * (node_sigma * local.square()).sum(dim=1).mean()
    return _LsProblem(
        hess=hess,
        x_star=x_star,
        const=const,
        sigma_diag=hess.to(dtype),
        node_sigma=node_sigma.to(dtype),
        local_optima=local.to(dtype),
        x_star_dtype=x_star.to(dtype),
        sqrt_rows=node_sigma.sqrt().to(dtype),
    )


def _balanced_signs(seed: int, stream: int, n: int, d: int) -> torch.Tensor:
    """``(n, d)`` signs ``+-1`` with, in every column, as many ``+1`` as ``-1`` (a 0 when n is odd)."""
    keys = _rng.uniform(seed, stream, 0, torch.arange(n, dtype=torch.int64), (d,))
    order = keys.argsort(dim=0)  # a random permutation of the nodes per coordinate
    ranks = torch.empty_like(order)
    ranks.scatter_(0, order, torch.arange(n).unsqueeze(1).expand(n, d))
    signs = torch.where(ranks < n // 2, 1.0, -1.0).to(torch.float64)
    if n % 2:
        signs[ranks == n - 1] = 0.0
    return signs


class LogisticRegressionStream(_Logistic):
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
        num_nodes: ``n``; the other arguments are declared in the signature
            (``heterogeneity`` scales the ``mu_i``; ``eval_samples`` are split equally
            across nodes, at least one each; ``seed`` fixes ``theta``, the ``u_i`` and the
            evaluation sample).
        dtype: floating dtype of parameters and samples.

    Raises:
        TaskError: for an argument outside its range.
    """

    name = "logistic_stream"
    replica_fields = ("num_nodes", "dim", "batch_size", "l2", "dtype")

    @checked_args("logistic_stream", TaskError)
    def __init__(
        self,
        num_nodes: Nodes,
        dim: Dim = 20,
        heterogeneity: Annotated[float, SPREAD, Doc("Spread of the node feature means.")] = 0.0,
        batch_size: BatchSize = 1,
        l2: L2 = 1e-3,
        eval_samples: Annotated[int, SIZE, Doc("Samples of the evaluation set.")] = 2**15,
        seed: Annotated[int, SEED, Doc("Seed of the problem.")] = 0,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self._set_up(num_nodes, dtype)
        self.dim = dim
        self.heterogeneity = float(heterogeneity)
        self.batch_size = batch_size
        self.l2 = float(l2)
        self.eval_samples = eval_samples
        self.seed = seed

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
        # the evaluation sample, drawn once with decent._rng
        z = _rng.normal(self.seed, _LR_EVAL_FEATURES, 0, nodes, (per_node, self.dim), dtype=dtype)
        a = z + self.means[nodes][:, None, :]
        prob = torch.sigmoid(a @ self.theta_true)
        u = _rng.uniform(self.seed, _LR_EVAL_LABELS, 0, nodes, (per_node,), dtype=torch.float64)
        y = (u < prob.to(torch.float64)).to(dtype)
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

    def sample(self, nodes: torch.Tensor, t: int, seed: int) -> Batch:
        """Draw ``(a (m, B, d), y (m, B))`` for ``nodes`` at round ``t``.

        ``a ~ N(mu_i, I)`` and ``y = 1[u < sigmoid(a^T theta)]`` with ``u`` uniform.
        """
        nodes = nodes.to(torch.int64)
        raw, u = self._raw(nodes, t, seed)
        return _logistic_batch(raw, u, *self._row_params(nodes), self.batch_size, self.dim)

    def _raw(
        self, nodes: torch.Tensor, t: int, seed: int | Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, d, n = self.batch_size, self.dim, self.num_nodes
        raw = _stream.normal(seed, _LR_SAMPLES, t, nodes, b * d, n, self.dtype)
        return raw, _stream.uniform(seed, _LR_LABELS, t, nodes, b, n, self.dtype)

    def _row_params(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu_i (m, d), theta (m, d))`` for the rows of ``nodes``."""
        means = self.means.to(nodes.device)
        if not (nodes.shape[0] == self.num_nodes and _stream.is_range(nodes)):
            means = means[nodes]
        theta = self.theta_true.to(nodes.device)
        # contiguous rows, as a replica batch has: einsum takes another path for a
        # broadcast (stride-0) operand, and the two must compute the same numbers
        return means, theta.expand(means.shape[0], -1).contiguous()

    @classmethod
    def replica_sampler(
        cls, tasks: Sequence[LogisticRegressionStream], seeds: Sequence[int], nodes: torch.Tensor
    ) -> Callable[[int], Batch]:
        """All replicas' batches, node-major (see :meth:`LeastSquares.replica_sampler`)."""
        check_family(tasks, cls.replica_fields)
        params = [task._row_params(nodes) for task in tasks]
        means = interleave([p[0] for p in params])
        theta = interleave([p[1] for p in params])
        first = tasks[0]
        b, d, n, dtype = first.batch_size, first.dim, first.num_nodes, first.dtype
        features = _stream.reader("normal", seeds, _LR_SAMPLES, nodes, b * d, n, dtype)
        labels = _stream.reader("uniform", seeds, _LR_LABELS, nodes, b, n, dtype)

        def sample(t: int) -> Batch:  # node-major
            return _logistic_batch(features(t), labels(t), means, theta, b, d)

        return sample

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


def _logistic_batch(
    raw: torch.Tensor, u: torch.Tensor, means: torch.Tensor, theta: torch.Tensor, b: int, d: int
) -> Batch:
    """Features and labels from raw normals ``(m, b d)`` and uniforms ``(m, b)``."""
    m = raw.shape[0]
    a = raw.view(m, b, d).add_(means[:, None, :])
    prob = positionless(torch.sigmoid, torch.bmm(a, theta.unsqueeze(2)).squeeze(2))
    return a, (u < prob).to(raw.dtype)


__all__ = ["LeastSquares", "LogisticRegressionStream"]
