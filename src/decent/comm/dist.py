"""The distributed transport: each rank holds a few nodes and talks only to neighbours.

Every rank computes ``W_t = topology.weights(t)`` itself (a pure function of ``(seed, t)``),
derives which of its rows each neighbouring rank needs, and swaps exactly those in one
``torch.distributed.batch_isend_irecv``: one packed buffer per peer and direction, all
posted together, so no graph (directed, time-varying, a rank without neighbours) can
deadlock it. Neighbours on the same rank are mixed in locally. gloo for CPU tensors, NCCL
for CUDA ones (every tensor on the rank's current device; the communicator issues NCCL's
first collective itself); the code path is the same.

Performance (gloo on 127.0.0.1, 4 ranks on 2 cores): for large messages the cost is
memory. A ring exchange of 4 MB per neighbour into reused buffers takes about as long as
an all_reduce of 4 MB (~15 ms), into fresh ones twice as long, and a fresh ``torch.cat`` of
``[x; received]`` plus the packing as much again (fresh multi-MB tensors are page-faulted
in on first touch). So consecutive rows are sent as views of ``x``, other row sets packed
into a reused buffer, and rows received straight into a reused ``Z = [x; received]``
(:class:`~decent.comm.base.Buffers`). Chunking messages (256 KB - 1 MB) did not help.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from decent._types import NodeTensor
from decent.comm._exchange import (
    DistConfigError,
    ExchangePlan,
    block_placement,
    build_plan,
    dist_reduce_op,
    local_layout,
    resolve_placement,
)
from decent.comm.base import (
    BaseTransport,
    Buffers,
    CommStats,
    Pending,
    Posted,
    ReduceOp,
    period_of,
    reduce_rows,
)
from decent.topology._matrix import MixingMatrix, Topology

__all__ = ["DistCommunicator", "DistConfigError", "block_placement"]


def _complete(x: torch.Tensor, z: torch.Tensor, works: list[Any]) -> torch.Tensor:
    """Finish an exchange posted on ranks (see :meth:`DistCommunicator.post`): ``Z``."""
    if z.data_ptr() != x.data_ptr():  # copied into Z's own rows while messages are in flight
        z[: x.shape[0]].copy_(x)
    for work in works:
        work.wait()
    return z


_PLAN_CACHE_SIZE = 1024
_DEFAULT_DENSE_LIMIT = 1 << 16


class DistCommunicator(BaseTransport):
    """Mix the rows held by this rank with its graph neighbours over ``torch.distributed``.

    Rank ``r`` holds the nodes ``node_ids`` (``m >= 1`` rows) of an initialized process
    group; one gossip step is ``x_i <- sum_j W_t[i, j] x_j`` for every held ``i``.

    Args:
        topology: who talks to whom at round ``t`` (every rank computes ``W_t``).
        nodes_per_rank: rank ``r`` holds nodes ``r*m .. r*m + m - 1`` (default 1); needs
            ``num_nodes == world_size * nodes_per_rank``.
        placement: instead, one list of global node ids per group rank, covering
            ``0..n-1`` exactly once; rows of ``x`` follow this rank's list.
        group: the process group (default: the world); ranks are group ranks.
        device: where node tensors live; ``mix`` checks it, and a CUDA device issues the
            NCCL warm-up collective here.
        dense_limit: the most entries of ``A`` (held rows by ``Z``'s rows) for which
            ``A @ Z`` is a dense product rather than a sparse gather.

    The overlap mode (the exchange runs during the next gradients) is
    ``DelayedCommunicator(DistCommunicator(...), delay=1)``.

    Raises:
        DistConfigError: no process group, this process not in ``group``, or a placement
            that does not fit the topology and the world size.

    Example (on every rank, after ``dist.init_process_group``)::

        comm = DistCommunicator(ring(world_size))
        x = torch.randn(1, d, dtype=torch.float64)   # this rank's node
        x = comm.mix(x, t=1)
    """

    def __init__(
        self,
        topology: Topology,
        *,
        nodes_per_rank: int | None = None,
        placement: Sequence[Sequence[int]] | None = None,
        group: dist.ProcessGroup | None = None,
        device: torch.device | str | None = None,
        dense_limit: int = _DEFAULT_DENSE_LIMIT,
    ) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise DistConfigError(
                "DistCommunicator needs an initialized torch.distributed process group; "
                "launch with torchrun (or `decent launch`) or call "
                "torch.distributed.init_process_group first, or use SimCommunicator in one process"
            )
        self.topology = topology
        self.group = group
        self.rank = dist.get_rank(group)
        if self.rank < 0:
            raise DistConfigError(
                "this process is not a member of `group`; build the DistCommunicator only on "
                "the ranks of the group"
            )
        self.world_size = dist.get_world_size(group)
        self.num_nodes = int(topology.num_nodes)
        self.device = torch.device(device) if device is not None else None
        self.dense_limit = int(dense_limit)
        self.backend = str(dist.get_backend(group))

        blocks = resolve_placement(
            topology.name, self.num_nodes, self.world_size, nodes_per_rank, placement
        )
        self.placement, self._owner, self._my_nodes = local_layout(
            blocks, self.rank, self.num_nodes
        )
        self.num_local = int(self._my_nodes.size)
        self.node_ids = torch.as_tensor(self._my_nodes, dtype=torch.int64)
        self.stats = CommStats(num_nodes=self.num_nodes)
        self.wire_bytes = 0  # bytes this rank actually handed to isend (algorithmic gossip)
        self._global_rank = [
            r if group is None else dist.get_global_rank(group, r) for r in range(self.world_size)
        ]

        self._period = period_of(topology)
        self._plans: OrderedDict[int, ExchangePlan] = OrderedDict()
        self._latest: tuple[int, ExchangePlan] | None = None
        self._warm: set[torch.device] = set()
        self._buffers = Buffers()  # reused message buffers, see the module docstring
        if self.device is not None and self.device.type != "cpu":
            self._warm_up(self.device)

    # -- set-up --------------------------------------------------------------------------

    def _warm_up(self, device: torch.device) -> None:
        """Run one collective on ``device`` that all ranks join (NCCL's first-call rule)."""
        if device in self._warm:
            return
        dist.all_reduce(torch.zeros(1, device=device), group=self.group)
        self._warm.add(device)

    def check_rows(self, x: NodeTensor, what: str) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[0] != self.num_local:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"{what} expects x of shape (m, k) = ({self.num_local}, k), one row per node "
                f"held by rank {self.rank} (nodes {list(self.placement[self.rank])}), got {shape}"
            )
        if self.device is not None and x.device != self.device:
            raise ValueError(
                f"{what}: x is on {x.device}, but this DistCommunicator was built for "
                f"device={self.device}; move x with x.to({str(self.device)!r})"
            )
        cuda = x.device.type == "cuda"
        if cuda and "nccl" not in self.backend:
            raise DistConfigError(
                f"{what}: x is on {x.device}, but the process group backend is "
                f"{self.backend!r}; gloo point-to-point needs CPU tensors. Move x to CPU or "
                "init the process group with backend='nccl'"
            )
        if not cuda and self.backend == "nccl":
            raise DistConfigError(
                f"{what}: x is on {x.device}, but the process group backend is 'nccl', which "
                "needs CUDA tensors; move x to the rank's GPU or use backend='gloo'"
            )
        if not cuda and x.device.type != "cpu":
            raise DistConfigError(f"{what}: unsupported device {x.device}; use CPU or CUDA")

    # -- plans ---------------------------------------------------------------------------
    def plan(self, t: int) -> ExchangePlan:
        """The exchange for ``W_t`` (cached per matrix of a periodic topology, else the latest)."""
        key = None if self._period is None else (t - 1) % self._period
        if key is not None:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
                return plan
        elif self._latest is not None and self._latest[0] == t:
            return self._latest[1]
        w = self.topology.weights(t)
        if w.n != self.num_nodes:
            raise DistConfigError(
                f"topology {self.topology.name!r} returned a {w.n}x{w.n} matrix at t={t}, "
                f"but it declares num_nodes={self.num_nodes}"
            )
        plan = build_plan(w, self._my_nodes, self._owner, self.rank, self.dense_limit)
        if key is not None:
            self._plans[key] = plan
            if len(self._plans) > _PLAN_CACHE_SIZE:
                self._plans.popitem(last=False)
        else:
            self._latest = (t, plan)
        return plan

    def weights(self, t: int) -> MixingMatrix:
        """``W_t`` as used by :meth:`mix` (cached for static and periodic topologies)."""
        return self.plan(t).matrix

    def peers(self, t: int) -> tuple[list[int], list[int]]:
        """Group ranks this rank sends to and receives from at round ``t`` (ascending)."""
        plan = self.plan(t)
        return sorted(plan.send), sorted(plan.recv)

    # -- Transport -----------------------------------------------------------------------
    def post(self, x: NodeTensor, t: int, *, slot: int = 0, keep: bool = False) -> Posted:
        """Post the exchange of ``x`` for ``W_t`` in one ``batch_isend_irecv`` (the only
        transport code; see :class:`~decent.comm.base.Transport`). ``Z`` is valid until the
        next exchange on the same ``slot``; ``x`` (or its ``keep`` copy) must stay untouched
        until ``wait`` returns."""
        self.check_rows(x, "mix")
        if x.device.type != "cpu":
            self._warm_up(x.device)
        x = x.contiguous()
        plan = self.plan(t)
        m = x.shape[0]
        z = None
        if plan.recv:
            z = self._buffers.get(f"z{slot}", (m + plan.num_received, x.shape[1]), x)
        if keep:  # the private copy is Z's own rows when there are any: one buffer, not two
            own = z[:m] if z is not None else self._buffers.get(f"own{slot}", x.shape, x)
            own.copy_(x)
            x = own
        ops: list[dist.P2POp] = []
        scattered = [p for p in sorted(plan.send) if plan.send_slice(p) is None]
        packed = self._buffers.get(
            f"send{slot}", (sum(plan.send[p].size for p in scattered), x.shape[1]), x
        )
        index = plan.send_index(x.device) if scattered else {}
        offset = 0
        for p in sorted(plan.send):
            rows = plan.send_slice(p)
            if rows is None:
                size = plan.send[p].size
                buf = packed[offset : offset + size]
                torch.index_select(x, 0, index[p], out=buf)
                offset += size
            else:
                buf = x[rows]
            ops.append(dist.P2POp(dist.isend, buf, self._global_rank[p], self.group))
            self.wire_bytes += buf.numel() * buf.element_size()
        if z is not None:
            offset = m
            for p in sorted(plan.recv):
                size = plan.recv[p].size
                buf = z[offset : offset + size]
                offset += size
                ops.append(dist.P2POp(dist.irecv, buf, self._global_rank[p], self.group))
        else:
            z = x
        works = list(dist.batch_isend_irecv(ops)) if ops else []
        return Pending(x, functools.partial(_complete, x, z, works))

    def combine(self, z: NodeTensor, t: int) -> NodeTensor:
        """``A @ Z``: the held rows of ``W_t`` applied to ``Z = [x; received]``."""
        return self.plan(t).apply(z, self.num_local)

    def self_weights(self, t: int) -> np.ndarray:
        """``(m,)`` ``W_t[i, i]`` of the held rows."""
        return np.asarray(self.plan(t).matrix.csr.diagonal()[self._my_nodes])

    def layout(self, t: int) -> np.ndarray:
        """``(n,)`` each node's row in ``Z = [x; received]`` (``-1``: not here)."""
        return self.plan(t).layout

    def all_reduce(
        self, x: NodeTensor, op: ReduceOp = "mean", *, accounted: bool = True
    ) -> torch.Tensor:
        """Reduce ``(m, k)`` over all ``n`` nodes; ``(k,)`` on every rank (``mean``: the sum
        over ranks of row sums, divided by ``n``); an accounted call counts a ring all-reduce.

        Raises:
            ValueError: unknown ``op`` or a wrongly shaped ``x``.
        """
        self.check_rows(x, "all_reduce")
        local = reduce_rows(x, op).contiguous()
        if x.device.type != "cpu":
            self._warm_up(x.device)
        dist.all_reduce(local, op=dist_reduce_op(op), group=self.group)
        if accounted:
            self.stats.add_all_reduce(x.shape[1] * x.element_size())
        return local / self.num_nodes if op == "mean" else local

    def __repr__(self) -> str:
        return (
            f"DistCommunicator({self.topology.name}, n={self.num_nodes}, rank={self.rank}/"
            f"{self.world_size}, nodes={list(self.placement[self.rank])}, backend={self.backend})"
        )
