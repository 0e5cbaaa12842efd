"""The simulator's communicator: all ``n`` nodes stacked in one tensor, mixing is ``W_t @ X``.

The kernel follows the matrix (measured on 2 cores, ``benchmarks/``): CSR for sparse graphs
(ring of 1024 nodes, ``d = 650``: 0.5 ms against 10 ms dense), dense for small dense ones,
a mean and a broadcast for the exact average ``W = J``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from decent._types import NodeTensor
from decent.comm.base import (
    BaseTransport,
    CommStats,
    Communicator,
    Pending,
    ReduceOp,
    period_of,
    reduce_rows,
)
from decent.topology._matrix import MixingMatrix, Topology

Kernel = Literal["auto", "dense", "sparse", "mean"]
KERNELS = ("auto", "dense", "sparse", "mean")
_SMALL_N = 128
_SMALL_WORK = 1 << 17  # n^2 k below which a dense product beats CSR (measured, 2 cores)


@dataclass(frozen=True)
class _Plan:
    kind: str
    matrix: MixingMatrix
    weights: torch.Tensor | None
    dense: torch.Tensor | None = None  # also kept for a small sparse W: see apply_plan
    kron: dict[int, torch.Tensor] = field(default_factory=dict, compare=False)
    """``W ⊗ I_R`` in CSR per replica count ``R`` (built on first use)."""


def _is_exact_average(w: MixingMatrix) -> bool:
    n = w.n
    return w.csr.nnz == n * n and bool(np.allclose(w.csr.data, 1.0 / n, rtol=0, atol=1e-15))


class SimCommunicator(BaseTransport):
    """Mix stacked node values with ``W_t`` in one process.

    Args:
        topology: who talks to whom at round ``t`` (``weights(t)`` gives ``W_t``).
        kernel: ``"auto"`` (default): ``"mean"`` for ``W = J``, ``"dense"`` when ``n <= 256``
            and a quarter of the entries are nonzero, else ``"sparse"`` (CSR), applied
            densely when ``n <= 128`` and ``n^2 k <= 2^17`` (ring(64), ``k = 20``: 4.5 us
            against 8.1 us).
        device: where the mixing matrix lives (the node tensors' device).

    Raises:
        TypeError: ``topology`` is not a topology (e.g. the name ``"ring"``).

    Example:
        >>> import torch
        >>> from decent.topology import ring
        >>> comm = SimCommunicator(ring(4))
        >>> x = torch.arange(4.0, dtype=torch.float64)[:, None]
        >>> comm.mix(x, t=1).squeeze(1).tolist()
        [1.3333333333333333, 1.0, 2.0, 1.6666666666666665]
    """

    def __init__(
        self,
        topology: Topology,
        *,
        kernel: Kernel = "auto",
        device: torch.device | str | None = None,
    ) -> None:
        if isinstance(topology, (str, bytes, int, float, type)) or not all(
            hasattr(topology, m) for m in ("num_nodes", "weights", "name")
        ):
            raise TypeError(
                f"topology must be a topology object such as decent.topology.ring(8), got "
                f"{type(topology).__name__} {topology!r:.60}"
            )
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        self.topology = topology
        self.kernel = kernel
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.num_nodes = topology.num_nodes
        self.node_ids = torch.arange(self.num_nodes, dtype=torch.int64, device=self.device)
        self.stats = CommStats(num_nodes=self.num_nodes)
        self._plans: dict[tuple[int, torch.dtype], _Plan] = {}
        self._period = period_of(topology)

    # -- kernels -------------------------------------------------------------------------
    def _choose(self, w: MixingMatrix) -> str:
        if self.kernel != "auto":
            return self.kernel
        if _is_exact_average(w):
            return "mean"
        if w.n <= 256 and w.density >= 0.25:
            return "dense"
        return "sparse"

    def _build(self, w: MixingMatrix, dtype: torch.dtype) -> _Plan:
        kind = self._choose(w)
        if kind == "mean" and not _is_exact_average(w):
            raise ValueError(f"kernel='mean' needs W = J (every entry 1/n); {w.name} is not")
        if kind != "sparse":
            weights = None
            if kind == "dense":
                weights = torch.as_tensor(w.dense(), dtype=dtype, device=self.device)
            return _Plan(kind=kind, matrix=w, weights=weights)
        csr = w.csr
        small = None
        if self.kernel == "auto" and w.n <= _SMALL_N:
            small = torch.as_tensor(w.dense(), dtype=dtype, device=self.device)
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            weights = torch.sparse_csr_tensor(
                torch.as_tensor(csr.indptr, dtype=torch.int64),
                torch.as_tensor(csr.indices, dtype=torch.int64),
                torch.as_tensor(csr.data, dtype=dtype),
                size=csr.shape,
                device=self.device,
                check_invariants=False,
            )
        return _Plan(kind=kind, matrix=w, weights=weights, dense=small)

    def _plan(self, t: int, dtype: torch.dtype) -> _Plan:
        key = None if self._period is None else ((t - 1) % self._period, dtype)
        plan = None if key is None else self._plans.get(key)
        if plan is None:
            plan = self._build(self.topology.weights(t), dtype)
            if key is not None:
                self._plans[key] = plan
        return plan

    def weights(self, t: int) -> MixingMatrix:
        """``W_t`` as used by :meth:`mix` (cached for periodic topologies)."""
        return self._plan(t, torch.float64).matrix

    # -- Communicator --------------------------------------------------------------------
    def mix(self, x: NodeTensor, t: int) -> NodeTensor:
        """Return ``W_t @ x`` for ``x`` of shape ``(n, k)``; counts one gossip round."""
        plan = self.checked_plan(x, t)
        self.stats.add_gossip(plan.matrix.out_degree, x.shape[1] * x.element_size())
        return self.apply_plan(plan, x)

    # -- Transport: every row is here, nothing moves ------------------------------------
    def post(self, x: NodeTensor, t: int, *, slot: int = 0, keep: bool = False) -> Pending:
        """The exchange for ``W_t``: nothing to move, ``Z = x`` (a copy with ``keep``)."""
        self.checked_plan(x, t)
        return Pending(x.clone() if keep else x)

    def combine(self, z: NodeTensor, t: int) -> NodeTensor:
        """``W_t @ z`` without counting it (callers count what they send)."""
        return self.apply_plan(self.checked_plan(z, t), z)

    def self_weights(self, t: int) -> np.ndarray:
        """``(n,)`` the diagonal of ``W_t``."""
        return np.asarray(self.weights(t).csr.diagonal())

    def layout(self, t: int) -> np.ndarray:
        """``Z = x``: node ``i`` is row ``i``."""
        return np.arange(self.num_nodes, dtype=np.int64)

    def checked_plan(self, x: NodeTensor, t: int) -> _Plan:
        """The kernel and matrix that mix ``x`` at round ``t`` (for :meth:`apply_plan`).

        Raises:
            ValueError: ``x`` is not ``(num_nodes, k)``.
        """
        if x.ndim != 2 or x.shape[0] != self.num_nodes:
            raise ValueError(
                f"mix expects a (num_nodes, k) = ({self.num_nodes}, k) tensor, got {tuple(x.shape)}"
            )
        return self._plan(t, x.dtype)

    @staticmethod
    def apply_plan(plan: _Plan, x: NodeTensor, replicas: int = 1) -> NodeTensor:
        """``W @ x``; ``x`` of shape ``(n, replicas * k)`` holds ``replicas`` side by side.

        Neither product is column-invariant (a dense BLAS product's summation order depends
        on the width; MKL's CSR product treats the columns past the last full vector
        register differently), so replicas keep the single run's width ``k``: a sparse
        ``W`` mixes them in one CSR product of ``W ⊗ I_R`` on the ``(n R, k)`` rows, a small
        dense ``W`` takes one product per replica.
        """
        if plan.kind == "mean":
            return x.mean(dim=0, keepdim=True).expand_as(x).clone()
        k = x.shape[1] // replicas
        if plan.dense is not None and plan.matrix.n**2 * k <= _SMALL_WORK:
            dense = plan.dense
        else:
            assert plan.weights is not None
            dense = plan.weights  # dense or CSR
        if replicas == 1:
            return dense @ x
        n = x.shape[0]
        if dense.layout == torch.sparse_csr:
            # one CSR product of W ⊗ I_R on the node-major (n R, k) rows: every stacked row
            # is one of W's rows with its columns moved, computed by the same kernel on the
            # same width k as the single run (tests/comm/test_sim.py checks it bit for bit)
            wide = plan.kron.get(replicas)
            if wide is None:
                wide = plan.kron[replicas] = _kron_rows(dense, replicas)
            return (wide @ x.view(n * replicas, k)).view(n, replicas * k)
        # each replica's (n, k) block starts on a 64-byte boundary, as a fresh tensor does:
        # a BLAS product into an output at another offset may round differently (measured:
        # torus(3x3), k = 3, an output 216 bytes in)
        parts = _aligned_blocks(replicas, n, k, x)
        parts.copy_(x.view(n, replicas, k).transpose(0, 1))  # (R, n, k)
        if dense.layout == torch.strided:
            per = _aligned_blocks(replicas, n, k, x)
            for r in range(replicas):
                torch.mm(dense, parts[r], out=per[r])
        else:
            per = torch.stack([dense @ parts[r] for r in range(replicas)])
        return per.transpose(0, 1).contiguous().view(n, replicas * k)

    def replicated(self, replicas: int) -> Communicator:
        """``R`` replicas of this network mixed in one product
        (:class:`ReplicatedCommunicator`)."""
        return ReplicatedCommunicator(self, replicas)

    def all_reduce(
        self, x: NodeTensor, op: ReduceOp = "mean", *, accounted: bool = True
    ) -> torch.Tensor:
        """Reduce ``(n, k)`` over all nodes; an accounted call counts one ring all-reduce."""
        out = x.mean(dim=0) if op == "mean" else reduce_rows(x, op)  # all n rows are here
        if accounted:
            self.stats.add_all_reduce(x.shape[1] * x.element_size())
        return out

    def __repr__(self) -> str:
        return f"SimCommunicator({self.topology.name}, n={self.num_nodes}, kernel={self.kernel!r})"


class _Stacked(BaseTransport):
    """``R`` replicas of ``n`` nodes stacked node-major in ``(n * R, k)`` rows."""

    num_nodes: int
    replicas: int

    @property
    def rows(self) -> int:
        """``n * R``, the rows of every stacked node tensor."""
        return self.num_nodes * self.replicas

    def _check(self, x: NodeTensor, what: str) -> None:
        if x.ndim != 2 or x.shape[0] != self.rows:
            raise ValueError(
                f"{what} expects a (num_nodes * replicas, k) = ({self.rows}, k) tensor, "
                f"got {tuple(x.shape)}"
            )


class ReplicatedCommunicator(_Stacked):
    """Mix ``R`` replicas of a simulated network, stacked node-major in ``(n * R, k)``.

    Row ``i * R + r`` is node ``i`` of replica ``r``, so ``x.view(n, R * k)`` puts every
    replica's copy of a node on one row and ``W_t`` acts on the node axis only: replica
    ``r`` sees only replica ``r`` (a diverged replica cannot contaminate the others), and
    no ``(nR, nR)`` matrix is built. :attr:`stats` counts one replica's traffic.

    Args:
        inner: the simulator communicator of one replica (``n`` nodes).
        replicas: ``R >= 1``.

    Example:
        >>> import torch
        >>> from decent.topology import ring
        >>> comm = ReplicatedCommunicator(SimCommunicator(ring(4)), replicas=2)
        >>> x = torch.arange(8.0, dtype=torch.float64)[:, None]   # node i, replica r: 2 i + r
        >>> single = SimCommunicator(ring(4)).mix(x.view(4, 2)[:, :1].contiguous(), 1)
        >>> torch.equal(comm.mix(x, 1).view(4, 2)[:, :1], single)
        True
    """

    def __init__(self, inner: SimCommunicator, replicas: int) -> None:
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ValueError(f"replicas must be an integer >= 1, got {replicas!r}")
        self.inner = inner
        self.replicas = replicas
        self.topology = inner.topology
        self.num_nodes = inner.num_nodes
        self.node_ids = inner.node_ids
        self.stats = CommStats(num_nodes=self.num_nodes)

    def mix(self, x: NodeTensor, t: int) -> NodeTensor:
        """Every replica's ``W_t @ x_r`` in one product; counts one replica's gossip round."""
        return self._mix(x, t, x.shape[1] * x.element_size())

    # -- Exchange: every row is here, nothing moves -------------------------------------
    def weights(self, t: int) -> MixingMatrix:
        """``W_t`` of one replica."""
        return self.inner.weights(t)

    def post(self, x: NodeTensor, t: int, *, slot: int = 0, keep: bool = False) -> Pending:
        """Nothing to move, ``Z = x`` (a copy with ``keep``)."""
        return Pending(x.clone() if keep else x)

    def combine(self, z: NodeTensor, t: int) -> NodeTensor:
        """Every replica's ``W_t @ z_r`` without counting it."""
        return self._mix(z, t, None)

    def _mix(self, x: NodeTensor, t: int, nbytes: int | None) -> NodeTensor:
        self._check(x, "mix")
        n, k = self.num_nodes, x.shape[1]
        plan = self.inner.checked_plan(x.view(n, self.replicas * k), t)
        if nbytes is not None:
            self.stats.add_gossip(plan.matrix.out_degree, nbytes)
        if n == 1:  # W = [[1]]: every replica's row is its own average, exactly
            return x.clone()
        if plan.kind == "mean":  # the exact average, per replica as a single run sums it
            means = _block_means(x, n, self.replicas).view(1, self.replicas * k)
            return means.expand(n, self.replicas * k).reshape(self.rows, k)
        mixed = self.inner.apply_plan(plan, x.view(n, self.replicas * k), self.replicas)
        return mixed.view(self.rows, k)

    def all_reduce(
        self, x: NodeTensor, op: ReduceOp = "mean", *, accounted: bool = True
    ) -> torch.Tensor:
        """Each replica's reduction over its nodes, broadcast back to its rows ``(n * R, k)``
        (a single run returns ``(k,)``)."""
        self._check(x, "all_reduce")
        n, r, k = self.num_nodes, self.replicas, x.shape[1]
        if accounted:
            self.stats.add_all_reduce(k * x.element_size())
        if n == 1:  # one node: the reduction of a single row is the row, exactly
            return x.clone()
        # each replica's reduction on its own contiguous rows: the single run's kernel on
        # the single run's shape, so the sums come out in the same order, bit for bit
        if op == "mean":
            per = _block_means(x, n, r)
        else:
            per = torch.stack(
                [reduce_rows(self.replica_rows(x, i).contiguous(), op) for i in range(r)]
            )
        return per.view(1, r * k).expand(n, r * k).reshape(self.rows, k)

    def replica_rows(self, x: NodeTensor, r: int) -> NodeTensor:
        """Replica ``r``'s ``(n, k)`` rows of a stacked tensor (a strided view)."""
        return x.view(self.num_nodes, self.replicas, -1)[:, r, :]

    def __repr__(self) -> str:
        return f"ReplicatedCommunicator({self.inner!r}, replicas={self.replicas})"


class MixedReplicatedCommunicator(_Stacked):
    """Mix ``R`` replicas stacked node-major in ``(n * R, k)``, replica ``r`` with its own
    static topology's ``W`` (``comms[r]``, all of ``n`` nodes).

    Replicas that share a communicator are a group, mixed as
    :class:`ReplicatedCommunicator` mixes them: gathered to their own node-major
    ``(n R_g, k)`` rows, mixed with their topology's kernel (mean, dense or CSR, as the
    single run chooses), scattered back. So replica ``r`` computes bit for bit what its single
    run on ``comms[r]`` computes, and sees only its own rows. Each group counts its own
    traffic (:meth:`replica_stats`); a time-varying topology or a wrapped communicator
    (Chebyshev, a network, Byzantine nodes) runs one topology per batch instead.

    Args:
        comms: replica ``r``'s simulator communicator, ``R >= 1`` of them; replicas with
            the same object share a group.

    Raises:
        ValueError: a communicator that is not a plain :class:`SimCommunicator`, a
            time-varying topology, or different node counts.

    Example:
        >>> import torch
        >>> from decent.topology import complete, ring
        >>> a, b = SimCommunicator(ring(4)), SimCommunicator(complete(4))
        >>> comm = MixedReplicatedCommunicator([a, b, a])
        >>> x = torch.arange(12.0, dtype=torch.float64)[:, None]  # node i, replica r: 3 i + r
        >>> mixed = comm.mix(x, 1).view(4, 3)
        >>> torch.equal(mixed[:, 1:2], b.mix(x.view(4, 3)[:, 1:2].contiguous(), 1))
        True
    """

    def __init__(self, comms: Sequence[SimCommunicator]) -> None:
        if not comms:
            raise ValueError("comms must hold one communicator per replica, got none")
        for c in comms:
            if type(c) is not SimCommunicator:
                raise ValueError(
                    "replicas with different topologies need plain SimCommunicators, got "
                    f"{type(c).__name__}; run one topology per batch"
                )
            if not getattr(c.topology, "is_static", False):
                raise ValueError(
                    f"replicas with different topologies need static ones, but "
                    f"{c.topology.name} is time-varying; run one topology per batch"
                )
        n = comms[0].num_nodes
        if any(c.num_nodes != n for c in comms):
            sizes = sorted({c.num_nodes for c in comms})
            raise ValueError(f"every replica's topology needs the same num_nodes, got {sizes}")
        self.comms = list(comms)
        self.replicas = len(comms)
        self.num_nodes = n
        self.node_ids = comms[0].node_ids
        members: dict[int, list[int]] = {}
        for r, c in enumerate(comms):
            members.setdefault(id(c), []).append(r)
        self._groups = [
            (
                torch.tensor(idx, device=self.node_ids.device),
                ReplicatedCommunicator(comms[idx[0]], len(idx)),
            )
            for idx in members.values()
        ]
        self._of = {r: g for g, idx in enumerate(members.values()) for r in idx}
        self.stats = self.replica_stats(0)  # the first replica's (each one's: replica_stats)

    def replica_stats(self, r: int) -> CommStats:
        """Replica ``r``'s accounting: its group's, one replica's traffic on its topology."""
        return self._groups[self._of[r]][1].stats

    def _each(
        self, x: NodeTensor, apply: Callable[[ReplicatedCommunicator, NodeTensor], NodeTensor]
    ) -> NodeTensor:
        self._check(x, "mix")
        n, r, k = self.num_nodes, self.replicas, x.shape[1]
        stacked = x.view(n, r, k)
        out = torch.empty_like(stacked)
        for idx, group in self._groups:
            rows = stacked.index_select(1, idx).view(n * idx.numel(), k)
            out.index_copy_(1, idx, apply(group, rows).view(n, idx.numel(), k))
        return out.view(self.rows, k)

    def mix(self, x: NodeTensor, t: int) -> NodeTensor:
        """Every replica's ``W^(r) @ x_r``, one product per topology; counts each group's round."""
        return self._each(x, lambda group, rows: group.mix(rows, t))

    def all_reduce(
        self, x: NodeTensor, op: ReduceOp = "mean", *, accounted: bool = True
    ) -> torch.Tensor:
        """Each replica's reduction over its nodes, broadcast back to its rows ``(n * R, k)``."""
        return self._each(x, lambda group, rows: group.all_reduce(rows, op, accounted=accounted))

    def __repr__(self) -> str:
        names = [self.comms[int(idx[0])].topology.name for idx, _ in self._groups]
        return f"MixedReplicatedCommunicator({names}, n={self.num_nodes}, replicas={self.replicas})"


def _block_means(x: NodeTensor, n: int, replicas: int) -> torch.Tensor:
    """``(R, k)`` each replica's mean over its ``n`` node-major rows of ``x`` ``(n R, k)``.

    The rows go to one ``(R, n, k)`` copy whose ``mean(dim=1)`` reduces every ``(n, k)``
    block as ``x_r.mean(dim=0)`` reduces it alone, in the same order (the kernel splits
    work over the outputs, never along a column: checked bit for bit on 1 and 2 threads
    for n up to 4096 and k up to 200, ``tests/engine/test_replicas.py``), in 2 kernels
    instead of 2 per replica.
    """
    k = x.shape[1]
    return x.view(n, replicas, k).transpose(0, 1).contiguous().mean(dim=1)


_ALIGN = 64  # bytes: where a fresh tensor of the CPU allocator starts


def _aligned_blocks(count: int, n: int, k: int, like: torch.Tensor) -> torch.Tensor:
    """An empty ``(count, n, k)`` view whose every ``(n, k)`` block is contiguous and starts
    on a 64-byte boundary (blocks padded to a multiple of 64 bytes)."""
    per = max(1, _ALIGN // like.element_size())
    stride = -(-(n * k) // per) * per
    flat = torch.empty(count * stride + per, dtype=like.dtype, device=like.device)
    skip = (-flat.data_ptr() % _ALIGN) // like.element_size()
    return flat[skip : skip + count * stride].view(count, stride)[:, : n * k].view(count, n, k)


def _kron_rows(w: torch.Tensor, replicas: int) -> torch.Tensor:
    """``W ⊗ I_R`` as CSR for node-major rows: row ``i R + r`` holds row ``i`` of ``W`` with
    column ``j`` moved to ``j R + r``, its nonzeros in ``W``'s order."""
    crow, col, val = w.crow_indices(), w.col_indices(), w.values()
    n, r = w.shape[0], replicas
    deg = crow[1:] - crow[:-1]
    wide_crow = torch.zeros(n * r + 1, dtype=torch.int64, device=w.device)
    wide_crow[1:] = torch.cumsum(deg.repeat_interleave(r), 0)
    row = torch.arange(n, device=w.device).repeat_interleave(deg * r)  # row i, deg_i R times
    within = torch.arange(row.numel(), device=w.device) - (crow[:-1] * r)[row]
    copy, entry = within // deg[row], crow[:-1][row] + within % deg[row]
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            wide_crow,
            col[entry] * r + copy,
            val[entry],
            size=(n * r, n * r),
            device=w.device,
            check_invariants=False,
        )
