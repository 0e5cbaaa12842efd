"""Byzantine nodes and robust aggregation of neighbour values, in both runtimes.

A set ``B`` of nodes is Byzantine: an attack forges what they send, and every honest node
``i`` combines the values it holds, ``V_i = {x_i} U {v_{j->i} : j in N_i}`` (``c_i = |N_i|
+ 1`` values; ``N_i`` its in-neighbours), with a robust rule instead of ``sum_j W_ij x_j``.
Byzantine nodes average what they receive with the plain weights, their own value in place
of a fellow Byzantine node's message. :class:`RobustCommunicator` is a combiner over any
synchronous transport, so every method that calls ``comm.mix`` runs unchanged.

Attacks (:data:`ATTACKS`): ``sign_flip`` ``-s x_j``; ``noise`` ``x_j + sigma xi_j`` drawn
from ``(seed, t)``; ``alie`` ``mu_i - z sigma_i`` per coordinate, over the honest values
of ``V_i`` (Baruch et al. 2019, https://arxiv.org/abs/1902.06156; ``z``: :func:`alie_z`);
``dissensus`` ``x_i - eps (sum_{k in N_i \\ B} W_ik (x_k - x_i)) / (sum_{j in N_i & B}
W_ij)``, which moves ``i`` by ``(1 - eps)`` times its honest gossip step (He, Karimireddy,
Jaggi 2022, https://arxiv.org/abs/2202.01545). Rules (:data:`AGGREGATIONS`) at honest
``i``: ``mean`` (plain gossip); ``clipping`` ``x_i + sum_{j in N_i} W_ij clip(v_{j->i} -
x_i, tau)``, ``clip(z, tau) = z min(1, tau / ||z||)`` over the whole row; ``trimmed_mean``
per coordinate without the ``b`` largest and ``b`` smallest (needs ``f_i <= b`` and ``2b <
c_i``); ``median`` per coordinate (needs ``2 f_i < c_i``). ``docs/concepts.md`` has the
tables.

Both runtimes gather ``V`` of the held rows as one padded slot-major ``(1 + D, m, k)``
tensor (``D`` the largest in-degree) from the transport's ``Z = [x; received]``; no Python
loop runs over nodes. ``sign_flip`` and ``noise`` are forged in the rows a Byzantine node
sends, ``alie`` and ``dissensus`` on the receiving side from the values that arrived there
(an adversary eavesdropping on ``i``'s incoming links). The runtimes agree to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Annotated, Literal

import annotated_types as at
import numpy as np
import torch

from decent._params import SEED, SIZE_MAX, Doc, check_value, declared
from decent._types import NodeTensor
from decent.comm.base import AliveRanks, Buffers, Combiner, Stale, Transport, period_of
from decent.topology._matrix import MixingMatrix, Topology

__all__ = [
    "AGGREGATIONS",
    "ATTACKS",
    "PLACEMENTS",
    "RobustCommunicator",
    "alie_z",
    "choose_byzantine",
    "tolerance_error",
]

Attack = Literal["sign_flip", "noise", "alie", "dissensus"]
Aggregation = Literal["mean", "trimmed_mean", "median", "clipping"]
ATTACKS: tuple[str, ...] = ("sign_flip", "noise", "alie", "dissensus")
AGGREGATIONS: tuple[str, ...] = ("mean", "trimmed_mean", "median", "clipping")
Placement = Literal["random", "bottleneck"]
PLACEMENTS: tuple[str, ...] = ("random", "bottleneck")
NodeId = Annotated[int, at.Interval(ge=0, le=SIZE_MAX)]
_SENDER_SIDE = ("sign_flip", "noise")


def alie_z(num_nodes: int, num_byzantine: int) -> float:
    """Baruch et al.'s ``z = Phi^{-1}((n - s) / n)``, ``s = floor(n/2 + 1) - f`` clamped to
    ``1 .. n - 1`` (``z`` stays finite).

    Example:
        >>> round(alie_z(16, 3), 4)
        0.3186
    """
    n, f = int(num_nodes), int(num_byzantine)
    s = min(max(math.floor(n / 2 + 1) - f, 1), max(n - 1, 1))
    return float(NormalDist().inv_cdf((n - s) / n)) if n > 1 else 0.0


def choose_byzantine(
    w: MixingMatrix,
    *,
    nodes: Annotated[
        Sequence[NodeId] | None,
        at.MaxLen(SIZE_MAX),
        Doc("Explicit Byzantine node ids, distinct (give nodes or fraction, not both)."),
    ] = None,
    fraction: Annotated[
        float | None,
        at.Interval(ge=0.0, lt=1.0),
        Doc("Fraction of nodes that are Byzantine, in [0, 1)."),
    ] = None,
    seed: Annotated[int, SEED, Doc("Seed of the random placement and the noise attack.")] = 0,
    placement: Annotated[
        Placement,
        Doc("With fraction: random nodes, or the highest-betweenness (bottleneck) ones."),
    ] = "random",
) -> np.ndarray:
    """Return the sorted ids of the Byzantine nodes: ``nodes``, or ``round(fraction * n)``
    nodes placed at random from ``seed`` or on the bottlenecks (``"bottleneck"``: highest
    betweenness centrality of the undirected graph of ``W``, ties by lower id).

    Raises:
        ValueError: both or neither of ``nodes``/``fraction``, a node out of range, a
            fraction outside ``[0, 1)``, an unknown placement.

    Example:
        >>> from decent.topology import ring
        >>> choose_byzantine(ring(8).weights(1), fraction=0.25, seed=0).tolist()
        [1, 2]
    """
    n = w.n
    if (nodes is None) == (fraction is None):
        raise ValueError("give either nodes (a list of ids) or fraction (with seed), not both")
    if nodes is not None:
        ids = np.unique(np.asarray(list(nodes), dtype=np.int64))
        bad = ids[(ids < 0) | (ids >= n)]
        if bad.size:
            raise ValueError(f"node {int(bad[0])} is out of range: the graph has nodes 0..{n - 1}")
        return ids
    assert fraction is not None
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    count = round(fraction * n)
    if placement == "random":
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB12]))
        return np.sort(rng.choice(n, size=count, replace=False)).astype(np.int64)
    if placement == "bottleneck":
        import networkx as nx

        score = nx.betweenness_centrality(nx.from_scipy_sparse_array(w.off_diagonal))
        order = sorted(range(n), key=lambda i: (-score[i], i))
        return np.sort(np.asarray(order[:count], dtype=np.int64))
    raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")


def tolerance_error(
    w: MixingMatrix, byzantine: np.ndarray, aggregation: str, trim: int
) -> str | None:
    """Why ``aggregation`` cannot tolerate ``byzantine`` on ``W`` (``None`` when it can).

    ``trimmed_mean`` needs ``f_i <= b`` and ``2b < c_i`` at every honest node ``i``
    (``f_i`` its Byzantine in-neighbours, ``c_i`` = in-degree + 1 values, ``b = trim``);
    ``median`` needs ``2 f_i < c_i``. ``mean`` and ``clipping`` have no count bound. A node
    without in-neighbours (a lost rank's, cut off in the survivors' ``W``) is not checked.
    """
    n = w.n
    is_byz = np.zeros(n, dtype=bool)
    is_byz[byzantine] = True
    off = w.off_diagonal
    rows = np.repeat(np.arange(n), np.diff(off.indptr))
    f = np.bincount(rows, weights=is_byz[off.indices].astype(np.float64), minlength=n)
    f = f.astype(np.int64)
    c = w.in_degree + 1
    honest = np.flatnonzero(~is_byz & (c > 1))
    if aggregation == "trimmed_mean":
        over = honest[f[honest] > trim]
        if over.size:
            i = int(over[np.argmax(f[over])])
            return (
                f"trimmed_mean with trim b={trim} tolerates at most b Byzantine in-neighbours "
                f"at each honest node, but node {i} has {int(f[i])} on {w.name}; raise trim, "
                "place fewer Byzantine nodes, or use a denser graph"
            )
        small = honest[2 * trim >= c[honest]]
        if small.size:
            i = int(small[np.argmin(c[small])])
            return (
                f"trimmed_mean with trim b={trim} needs 2b < c_i (the node's {int(c[i])} "
                f"values: itself and {int(c[i]) - 1} in-neighbours) at every honest node, "
                f"but node {i} has c_i={int(c[i])} on {w.name}; lower trim"
            )
    elif aggregation == "median":
        over = honest[2 * f[honest] >= c[honest]]
        if over.size:
            i = int(over[0])
            return (
                f"median needs a strict honest majority of each honest node's values "
                f"(2 f_i < c_i, c_i = in-degree + 1), but node {i} has {int(f[i])} Byzantine "
                f"of c_i={int(c[i])} values on {w.name}; place fewer Byzantine nodes or use "
                "a denser graph"
            )
    return None


@dataclass(frozen=True)
class _Gather:
    """The padded neighbourhoods of the held rows for one ``W_t``, slot-major: slot 0 the
    node, slots ``1..D`` its in-neighbours. ``flat`` (D m,) rows of ``Z`` (padding: row 0),
    ``weight`` (1 + D, m) (padding: 0), ``valid`` and ``byz`` masks, ``count`` (m,) ``c_i``;
    ``attacked`` the honest held rows with a Byzantine in-neighbour, ``writes[s - 1]``
    (held rows, positions in ``attacked``) whose slot ``s`` is Byzantine; ``colluders``
    (held rows, rows of ``Z``, weights) of the edges between Byzantine nodes."""

    matrix: MixingMatrix
    flat: torch.Tensor
    weight: torch.Tensor
    valid: torch.Tensor
    byz: torch.Tensor
    count: torch.Tensor
    slots: int
    any_byz: bool
    padded: bool
    attacked: torch.Tensor
    writes: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    colluders: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _gather_plan(
    w: MixingMatrix,
    rows: np.ndarray,
    zpos: np.ndarray,
    is_byz: np.ndarray,
    dtype: torch.dtype,
    device: torch.device,
) -> _Gather:
    off = w.off_diagonal
    start, stop = off.indptr[rows], off.indptr[rows + 1]
    deg = (stop - start).astype(np.int64)
    m, width = rows.size, int(deg.max()) if rows.size else 0
    index = np.zeros((width, m), dtype=np.int64)
    weight = np.zeros((1 + width, m), dtype=np.float64)
    valid = np.zeros((1 + width, m), dtype=bool)
    byz = np.zeros((1 + width, m), dtype=bool)
    r = np.repeat(np.arange(m), deg)
    pos = np.arange(int(deg.sum())) - np.repeat(np.cumsum(deg) - deg, deg)
    src = np.repeat(start, deg) + pos  # entries of the held rows in the CSR arrays
    cols = off.indices[src]
    index[pos, r] = zpos[cols]
    weight[pos + 1, r] = off.data[src]
    weight[0] = w.csr.diagonal()[rows]
    valid[0] = True
    valid[pos + 1, r] = True
    byz[pos + 1, r] = is_byz[cols]
    if np.any(index < 0):  # pragma: no cover - internal invariant
        raise RuntimeError("a neighbour's row is missing from Z; this is a bug in decent")
    target = byz & ~is_byz[rows][None, :]
    attacked = np.flatnonzero(target.any(axis=0))
    at = np.full(m, -1, dtype=np.int64)
    at[attacked] = np.arange(attacked.size)

    def _t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.int64, device=device)

    writes = tuple(
        (_t(np.flatnonzero(target[slot])), _t(at[np.flatnonzero(target[slot])]))
        for slot in range(1, 1 + width)
    )
    among = is_byz[rows][r] & is_byz[cols]
    colluders = (
        _t(r[among]),
        _t(zpos[cols[among]]),
        torch.as_tensor(off.data[src[among]], dtype=dtype, device=device),
    )
    return _Gather(
        matrix=w,
        flat=torch.as_tensor(index.reshape(-1), device=device),
        weight=torch.as_tensor(weight, dtype=dtype, device=device),
        valid=torch.as_tensor(valid, device=device),
        byz=torch.as_tensor(byz, device=device),
        count=torch.as_tensor(deg + 1, device=device),
        slots=1 + width,
        any_byz=bool(byz.any()),
        padded=not bool(valid.all()),
        attacked=_t(attacked),
        writes=writes,
        colluders=colluders,
    )


_NETWORK_SLOTS = 8  # up to this many values per node: a sorting network, else torch.sort


def _sort_slots_(v: list[torch.Tensor], spare: torch.Tensor) -> list[torch.Tensor]:
    """Sort the ``S`` slot values ``(m, k)`` elementwise across the slots, in place.

    For a few slots an odd-even transposition network of elementwise min/max on the
    contiguous ``(m, k)`` slices, written into the slots' own buffers and one ``spare``,
    is far faster than ``torch.sort`` along a short axis (ring, ``S = 3``, ``m = 1024``,
    ``k = 650``: three compare-exchanges instead of 50 ms). Returns the slots in ascending
    order (the buffers permuted).
    """
    slots = len(v)
    if slots > _NETWORK_SLOTS:
        return list(torch.stack(v).sort(dim=0).values.unbind(0))
    s = list(v)
    for p in range(slots):
        for i in range(p % 2, slots - 1, 2):
            torch.minimum(s[i], s[i + 1], out=spare)
            torch.maximum(s[i], s[i + 1], out=s[i + 1])
            s[i], spare = spare, s[i]
    return s


def _weighted(weight: torch.Tensor, v: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum_s weight[s, :, None] * v[s]`` for ``weight (S, m)`` and ``S`` tensors ``(m, k)``."""
    out = v[0] * weight[0][:, None]
    for s in range(1, len(v)):
        out.addcmul_(v[s], weight[s][:, None])
    return out


class RobustCommunicator(Combiner):
    """Gossip with Byzantine senders and a robust aggregation rule (see the module docstring).

    Args:
        inner: a synchronous transport (the simulator, synchronous or fault-tolerant ranks;
            a lost rank's nodes leave the survivors' ``W`` and the honest count).
        byzantine: global ids of the Byzantine nodes.
        attack: one of :data:`ATTACKS`.
        aggregation: one of :data:`AGGREGATIONS`.
        trim: ``b`` of ``trimmed_mean``.
        tau: the clipping radius of ``clipping``.
        scale: ``s`` of ``sign_flip``.
        sigma: the noise level of ``noise``.
        z: ALIE's ``z`` (default :func:`alie_z` of ``n`` and ``|B|``).
        epsilon: the dissensus strength ``eps``.
        seed: seeds the ``noise`` attack (with ``t``).

    Attributes:
        honest: ``(m,)`` bool, the honest held rows (the only ones evaluated).
        num_honest: ``n - |B|``; over a fault-tolerant transport, the honest nodes whose
            rows its latest ``all_reduce`` summed (a lost rank's are not).

    Raises:
        ValueError: unknown attack or rule, bad parameters, a node out of range, a stale or
            non-transport ``inner``, or more Byzantine neighbours than the rule tolerates
            on ``W_1`` (each new ``W_t`` is checked when first used).

    Example:
        >>> import torch
        >>> from decent.comm import SimCommunicator
        >>> from decent.topology import ring
        >>> comm = RobustCommunicator(SimCommunicator(ring(6)), [0], "sign_flip", "median")
        >>> x = torch.ones(6, 2, dtype=torch.float64)
        >>> comm.mix(x, 1)[1].tolist()  # node 1 holds 1, 1 and -1 (from node 0): median 1
        [1.0, 1.0]
    """

    inner: Transport

    def __init__(
        self,
        inner: Transport,
        byzantine: Sequence[int] | np.ndarray,
        attack: Annotated[
            Attack,
            Doc(
                "sign_flip: send -scale x; noise: x + sigma N(0, I); alie: mean - z std of the "
                "receiver's honest values; dissensus: undo the receiver's honest gossip (epsilon)."
            ),
        ] = "sign_flip",
        aggregation: Annotated[
            Aggregation,
            Doc(
                "How honest nodes combine their values: mean (plain gossip), trimmed_mean (trim "
                "per side), median (coordinate-wise), clipping (self-centred, radius tau)."
            ),
        ] = "mean",
        *,
        trim: Annotated[
            int, at.Interval(ge=0, le=SIZE_MAX), Doc("b: values trimmed per side by trimmed_mean.")
        ] = 1,
        tau: Annotated[float, at.Gt(0.0), Doc("Clipping radius of clipping.")] = 1.0,
        scale: Annotated[float, at.Ge(0.0), Doc("s of sign_flip: the attacker sends -s x.")] = 1.0,
        sigma: Annotated[float, at.Ge(0.0), Doc("Noise level of the noise attack.")] = 10.0,
        z: Annotated[
            float | None,
            Doc("ALIE's z (None: Baruch et al.'s z from n and the Byzantine count)."),
        ] = None,
        epsilon: Annotated[float, at.Ge(0.0), Doc("Strength of the dissensus attack.")] = 1.0,
        seed: Annotated[int, SEED, Doc("Seed of the noise attack (with t).")] = 0,
    ) -> None:
        given = locals()
        for p in declared(RobustCommunicator, skip=("inner", "byzantine")):
            check_value("byzantine", p.name, p.hint, p.rules, given[p.name], ValueError)
        if not isinstance(inner, Transport) or (isinstance(inner, Stale) and inner.staleness):
            raise ValueError(
                "Byzantine nodes need a synchronous transport: the simulator, or ranks with "
                "the synchronous DistCommunicator or GossipCommunicator(staleness=0); robust "
                f"rules take this round's value of every in-neighbour, got {inner!r}; use "
                "mode = 'sync' or 'fault_tolerant'"
            )
        super().__init__(inner)
        self.topology: Topology = inner.topology
        n = self.num_nodes
        ids = np.unique(np.asarray(list(byzantine), dtype=np.int64))
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            raise ValueError(f"Byzantine node ids must be in 0..{n - 1}, got {ids.tolist()}")
        self.byzantine = ids
        self._is_byz = np.zeros(n, dtype=bool)
        self._is_byz[ids] = True
        self.attack, self.aggregation = attack, aggregation
        self.trim, self.tau, self.scale, self.sigma = int(trim), float(tau), scale, sigma
        self.z = alie_z(n, ids.size) if z is None else float(z)
        self.epsilon, self.seed = float(epsilon), int(seed)
        held = inner.node_ids.cpu().numpy().astype(np.int64)
        self._held = held
        self.honest = torch.as_tensor(~self._is_byz[held], device=inner.node_ids.device)
        self._byz_rows = torch.as_tensor(np.flatnonzero(self._is_byz[held]), dtype=torch.int64)
        self._byz_rank = np.full(n, -1, dtype=np.int64)  # position in the sorted Byzantine ids
        self._byz_rank[ids] = np.arange(ids.size)
        self._alive = inner if isinstance(inner, AliveRanks) else None
        self._period = period_of(self.topology)
        self._plans: dict[tuple[int, torch.dtype, torch.device], _Gather] = {}
        self._buffers = Buffers()  # reused slot buffers: a robust mix near its arithmetic
        self._check(inner.weights(1), 1)

    @property
    def num_honest(self) -> int:
        """Honest nodes whose rows the latest ``all_reduce`` summed (see Attributes)."""
        if self._alive is not None:
            return int(np.count_nonzero(~self._is_byz[self._alive.counted_nodes()]))
        return self.num_nodes - int(self.byzantine.size)

    # -- checks and plans ----------------------------------------------------------------
    def _check(self, w: MixingMatrix, t: int) -> None:
        why = tolerance_error(w, self.byzantine, self.aggregation, self.trim)
        if why is not None:
            raise ValueError(why if t == 1 else f"at round t={t}: {why}")

    def _gather(self, t: int, x: torch.Tensor) -> _Gather:
        """The neighbourhoods for ``W_t`` as the exchange just used it (cached per matrix of a
        periodic topology, rebuilt when the transport's ``W`` changes: survivors)."""
        w = self.inner.weights(t)
        key = None if self._period is None else ((t - 1) % self._period, x.dtype, x.device)
        plan = None if key is None else self._plans.get(key)
        if plan is None or plan.matrix is not w:
            self._check(w, t)
            zpos = self.inner.layout(t)
            plan = _gather_plan(w, self._held, zpos, self._is_byz, x.dtype, x.device)
            if key is not None:
                if len(self._plans) > 1024:
                    self._plans.clear()
                self._plans[key] = plan
        return plan

    # -- attacks -------------------------------------------------------------------------
    def _forge_sent(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """The rows the held nodes send: Byzantine rows forged by a sender-side attack."""
        rows = self._byz_rows.to(x.device)
        if self.attack not in _SENDER_SIDE or rows.numel() == 0:
            return x
        own = x.index_select(0, rows)
        if self.attack == "sign_flip":
            forged = own * -self.scale
        else:  # noise: one (|B|, k) draw per (seed, t) on every process; each takes its rows
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(t), 0xB12]))
            draw = rng.standard_normal((self.byzantine.size, x.shape[1]))
            pick = self._byz_rank[self._held[rows.cpu().numpy()]]
            xi = torch.as_tensor(draw[pick], dtype=x.dtype, device=x.device)
            forged = own + self.sigma * xi
        return x.index_copy(0, rows, forged)

    def _forge_received(self, v: list[torch.Tensor], g: _Gather) -> None:
        """Write ALIE's or dissensus' value into the Byzantine slots of honest receivers.

        Computed on the attacked rows only (honest held rows with a Byzantine neighbour).
        """
        if self.attack in _SENDER_SIDE or g.attacked.numel() == 0:
            return
        rows = g.attacked
        good = (g.valid & ~g.byz).to(v[0].dtype)[:, rows]  # (S, r), slot 0 included
        vals = [part.index_select(0, rows) for part in v]
        if self.attack == "alie":
            cnt = good.sum(dim=0)[:, None]
            mu = _weighted(good, vals) / cnt
            sq = _weighted(good, [(part - mu).square() for part in vals])
            forged = mu - self.z * (sq / cnt).sqrt()
        else:  # dissensus
            own = vals[0]
            weight = g.weight[:, rows]
            good_nbr = good * weight
            good_nbr[0] = 0
            step = _weighted(good_nbr, vals) - good_nbr.sum(dim=0)[:, None] * own
            wb = (g.byz[:, rows].to(own.dtype) * weight).sum(dim=0)
            forged = own - self.epsilon * step / torch.where(wb > 0, wb, 1.0)[:, None]
        for slot, (dst, src) in enumerate(g.writes, start=1):
            if dst.numel():
                v[slot].index_copy_(0, dst, forged.index_select(0, src))

    # -- rules ---------------------------------------------------------------------------
    def _aggregate(self, v: list[torch.Tensor], g: _Gather, plain: torch.Tensor) -> torch.Tensor:
        """The rule's value at honest rows, ``plain`` (the weighted mean) at Byzantine rows."""
        rule, own = self.aggregation, v[0]
        if rule == "mean":
            robust = _weighted(g.weight, v)
        elif rule == "clipping":
            robust = own.clone()
            for slot in range(1, g.slots):
                diff = v[slot] - own
                norm = torch.linalg.vector_norm(diff, dim=1)
                factor = torch.where(norm > self.tau, self.tau / norm.clamp_min(1e-300), 1.0)
                robust.addcmul_(diff, (g.weight[slot] * factor)[:, None])
        else:
            if g.padded:  # padding sorts last: the largest finite value (times 0 is 0)
                big = torch.finfo(own.dtype).max
                for slot in range(1, g.slots):
                    v[slot].masked_fill_(~g.valid[slot][:, None], big)
            work = self._buffers.get("sort", (2, *own.shape), own)  # the node's own row and a spare
            work[0].copy_(own)
            ranked = _sort_slots_([work[0], *v[1:]], work[1])
            c = g.count
            pos = torch.arange(g.slots, device=own.device)[:, None]  # (S, 1)
            if rule == "trimmed_mean":
                b = self.trim
                keep = ((pos >= b) & (pos < (c - b)[None, :])).to(own.dtype)
                robust = _weighted(keep, ranked)
                robust /= (c - 2 * b).clamp_min(1).to(own.dtype)[:, None]
            else:  # median: the mean of ranks (c - 1) // 2 and c // 2
                lo, hi = pos == ((c - 1) // 2)[None, :], pos == (c // 2)[None, :]
                robust = _weighted((lo.to(own.dtype) + hi.to(own.dtype)) / 2, ranked)
        rows = self._byz_rows.to(own.device)
        if rows.numel():
            robust.index_copy_(0, rows, plain.index_select(0, rows))
        return robust

    # -- Communicator --------------------------------------------------------------------
    def mix(self, x: NodeTensor, t: int) -> NodeTensor:
        """One robust gossip step for the held rows (see the module docstring).

        Raises:
            ValueError: ``x`` has the wrong shape, or ``W_t`` gives some honest node more
                Byzantine neighbours than the rule tolerates.
        """
        if self.aggregation == "mean" and self.byzantine.size == 0:
            return self.inner.mix(x, t)  # exactly plain gossip
        if x.ndim != 2 or x.shape[0] != self._held.size:
            raise ValueError(
                f"mix expects a (m, k) = ({self._held.size}, k) tensor, got {tuple(x.shape)}"
            )
        x = x.contiguous()
        sent = self._forge_sent(x, t)
        self.inner.count(t, x.shape[1] * x.element_size())
        z = self.inner.post(sent.contiguous(), t).wait()
        g = self._gather(t, x)  # after the wait: the W that Z was gathered for
        plain = self.inner.combine(z, t)
        rows = self._byz_rows.to(x.device)
        if sent is not x and rows.numel():  # a forging Byzantine node keeps its own value
            fix = (x - sent).index_select(0, rows) * g.weight[0].index_select(0, rows)[:, None]
            plain.index_add_(0, rows, fix)
        at, src, weight = g.colluders
        if at.numel():  # ... and takes it in place of its colluders' forged messages
            fix = (x.index_select(0, at) - z.index_select(0, src)) * weight[:, None]
            plain.index_add_(0, at, fix)
        if self.aggregation == "mean" and (self.attack in _SENDER_SIDE or not g.any_byz):
            return plain
        m, k, d = x.shape[0], x.shape[1], g.slots - 1
        got = self._buffers.get("slots", (d, m, k), x)  # slot-major neighbour values (d, m, k)
        torch.index_select(z, 0, g.flat, out=got.view(d * m, k))
        v = [x, *got.unbind(0)]  # (m, k) per slot: the node, then its neighbours
        self._forge_received(v, g)
        return self._aggregate(v, g, plain)

    def metrics(self) -> dict[str, float]:
        """The inner transport's metrics and ``byzantine/count``, ``byzantine/fraction``."""
        out: dict[str, float] = dict(self.inner.metrics())
        out["byzantine/count"] = float(self.byzantine.size)
        out["byzantine/fraction"] = float(self.byzantine.size) / self.num_nodes
        return out

    def __repr__(self) -> str:
        return (
            f"RobustCommunicator({self.inner!r}, byzantine={self.byzantine.tolist()}, "
            f"attack={self.attack!r}, aggregation={self.aggregation!r})"
        )
