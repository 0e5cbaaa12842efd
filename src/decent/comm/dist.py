"""The distributed communicator: each rank holds a few nodes and talks only to neighbours.

Every rank computes ``W_t = topology.weights(t)`` itself (a topology is a pure function of
``(seed, t)``), derives from it which of its rows each neighbouring rank needs, and swaps
exactly those rows in one ``torch.distributed.batch_isend_irecv`` call: one packed buffer
per peer rank and direction. Because every rank posts all of its sends and receives
together, the exchange cannot deadlock whatever the graph (directed, time-varying, a rank
with no neighbours in a round). Neighbours held on the same rank are mixed in locally.

Backends: gloo for CPU tensors, NCCL for CUDA tensors; the code path is the same. NCCL needs
every tensor on the rank's current CUDA device (call ``torch.cuda.set_device`` first) and a
first collective that all ranks join, which the communicator issues itself once per device.

Design note: the transport is the single method :meth:`DistCommunicator._exchange`. A
later transport (a process group per edge, groups re-formed through the rendezvous store
after a crash, non-blocking overlap) replaces that method and nothing else.

Performance note (measured with gloo on 127.0.0.1, 4 ranks on 2 cores): for large messages
the cost is memory, not gloo's point-to-point path. A ring exchange of 4 MB per neighbour
into buffers that are reused takes about as long as an all_reduce of 4 MB (~15 ms); into
fresh buffers it takes twice as long, and the fresh ``torch.cat`` of ``[x; received]``
and the ``index_select`` packing added as much again, because every fresh multi-MB tensor
is page-faulted in on first touch. So the transport sends consecutive rows as views of
``x``, packs other row sets into a reused buffer, and receives straight into a reused
``Z = [x; received]`` buffer (:meth:`DistCommunicator._workspace`); the communicator keeps
one such buffer per dtype and device, as large as the largest ``Z`` it has exchanged.
Splitting messages into chunks (256 KB - 1 MB) did not help and is not done.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

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
from decent.comm.base import CommStats, ReduceOp, period_of, reduce_rows
from decent.topology._matrix import MixingMatrix, Topology

__all__ = ["DistCommunicator", "DistConfigError", "block_placement"]

_PLAN_CACHE_SIZE = 1024
_DEFAULT_DENSE_LIMIT = 1 << 16


class DistCommunicator:
    """Mix the rows held by this rank with its graph neighbours over ``torch.distributed``.

    Rank ``r`` holds the global nodes ``node_ids`` (``m >= 1`` rows). One gossip step is

    .. math:: x_i \\leftarrow \\sum_j W_t[i, j]\\, x_j \\quad \\text{for every held } i,

    computed from the held rows and the rows received from ranks that hold in-neighbours;
    each rank sends each neighbouring rank exactly the rows it needs, in one packed buffer.
    The process group must already be initialized (``torchrun`` or
    ``dist.init_process_group``).

    Args:
        topology: who talks to whom at round ``t``; ``weights(t)`` is computed on every rank.
        nodes_per_rank: contiguous block placement, rank ``r`` holds nodes
            ``r*m .. r*m + m - 1``; needs ``num_nodes == world_size * nodes_per_rank``.
            Default 1 when ``placement`` is not given.
        placement: explicit placement instead, one list of global node ids per rank (in
            group-rank order); together they must cover ``0..n-1`` exactly once. Rows of
            ``x`` follow the order of this rank's list.
        group: the process group (default: the world). Ranks are group ranks.
        device: where node tensors live; when given, ``mix`` checks it, and a CUDA device
            issues the NCCL warm-up collective in the constructor.
        dense_limit: compute the local product ``A @ Z`` densely when ``A`` (held rows by
            held plus received rows) has at most this many entries, else as a sparse gather.
        overlap: non-blocking mode: ``mix`` posts the exchange of its input and returns
            at once with the neighbours' values of the *previous* call (one-step-stale
            mixing), so the exchange runs during the next gradient computation:

            .. math:: x_i \\leftarrow W_{ii} x_i(t) + \\sum_{j \\ne i} W_{ij} x_j(t - 1),

            with ``x_j(0) = x_j(1)``; it equals the simulator wrapped in
            :class:`decent.comm.delay.DelayedCommunicator` (delay 1). Needs a static
            topology; call :meth:`close` at the end to complete the last exchange.

    Raises:
        DistConfigError: the process group is not initialized, this process is not in
            ``group``, or the placement does not fit the topology and the world size.

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
        overlap: bool = False,
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
        self._warm: set[torch.device] = set()
        self.overlap = bool(overlap)
        if self.overlap and not topology.is_static:
            raise DistConfigError(
                f"overlap=True needs a static topology, got time-varying {topology.name!r}: a "
                "rank posts round t's values before it knows the neighbours of the next "
                "round it mixes in; use overlap=False (or a static topology)"
            )
        # overlap mode: (works, received buffers, held rows) of the exchange in flight
        self._pending: tuple[list[Any], torch.Tensor, torch.Tensor] | None = None
        # reused message buffers, see _workspace
        self._buffers: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}
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
        key = None if self._period is None else (t - 1) % self._period
        if key is not None:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
                return plan
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
        return plan

    def weights(self, t: int) -> MixingMatrix:
        """``W_t`` as used by :meth:`mix` (cached for static and periodic topologies)."""
        return self.plan(t).matrix

    def peers(self, t: int) -> tuple[list[int], list[int]]:
        """Group ranks this rank sends to and receives from at round ``t`` (ascending)."""
        plan = self.plan(t)
        return sorted(plan.send), sorted(plan.recv)

    # -- transport -----------------------------------------------------------------------
    def _workspace(self, name: str, rows: int, like: torch.Tensor) -> torch.Tensor:
        """A reused ``(rows, k)`` buffer with ``like``'s dtype, device and ``k`` columns.

        Fresh large tensors are page-faulted in on first touch (the allocator hands blocks
        of a few MB and more back to the OS when they are freed), which made a gossip step
        with 4 MB messages 2-3x slower than the exchange itself (see the module docstring).
        One flat buffer per (name, dtype, device) is kept, grown to the largest size asked
        for, and viewed to the shape needed.
        """
        k = like.shape[1]
        key = (name, like.dtype, like.device)
        flat = self._buffers.get(key)
        if flat is None or flat.numel() < rows * k:
            flat = torch.empty(rows * k, dtype=like.dtype, device=like.device)
            self._buffers[key] = flat
        return flat[: rows * k].view(rows, k)

    def exchange(self, x: torch.Tensor, plan: ExchangePlan) -> torch.Tensor:
        """Send each peer its rows of ``x``, receive theirs; return ``Z = [x; received]``.

        The only transport code. All sends and receives are posted together with
        ``batch_isend_irecv``, so no ordering between ranks can deadlock; the call returns
        when all have completed. ``x`` is copied into ``Z`` while the messages are in flight.

        Returns:
            ``Z`` of shape ``(m + r, k)``: the rows of ``x``, then the received rows, peers
            ascending (the column order of ``plan.weights``); ``x`` itself when nothing is
            received. ``Z`` is a reused buffer, valid until the next exchange.
        """
        works, z = self.post(x, plan)
        if z is not x:
            z[: x.shape[0]].copy_(x)
        for work in works:
            work.wait()
        return z

    def post(self, x: torch.Tensor, plan: ExchangePlan) -> tuple[list[Any], torch.Tensor]:
        """Post the exchange of :meth:`_exchange` without waiting; return (works, ``Z``).

        The received rows land in ``Z[m:]`` once the works complete; ``Z[:m]`` is left to
        the caller. Consecutive rows are sent as views of ``x`` (no copy); other row sets
        are packed into a reused buffer. ``x`` and the buffers must stay untouched until
        the works complete.
        """
        m = x.shape[0]
        ops: list[dist.P2POp] = []
        scattered = [p for p in sorted(plan.send) if plan.send_slice(p) is None]
        packed = self._workspace("send", sum(plan.send[p].size for p in scattered), x)
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
        if plan.recv:
            z = self._workspace("z", m + plan.num_received, x)
            offset = m
            for p in sorted(plan.recv):
                size = plan.recv[p].size
                buf = z[offset : offset + size]
                offset += size
                ops.append(dist.P2POp(dist.irecv, buf, self._global_rank[p], self.group))
        else:
            z = x
        works = list(dist.batch_isend_irecv(ops)) if ops else []
        return works, z

    # -- Communicator --------------------------------------------------------------------
    def mix(self, x: NodeTensor, t: int) -> NodeTensor:
        """One gossip step for the held rows: ``x_i <- sum_j W_t[i, j] x_j``.

        Every rank must call ``mix`` with the same ``t`` (it is a collective over the
        neighbours of this rank's nodes). Counts one gossip round in :attr:`stats`, with the
        global numbers of ``W_t``, so every rank's stats equal the simulator's.

        Args:
            x: ``(m, k)`` values of the held nodes, rows in :attr:`node_ids` order.
            t: the round, which selects ``W_t``.

        Returns:
            ``(m, k)`` mixed values, same dtype and device as ``x``.

        Raises:
            ValueError: ``x`` has the wrong shape or device.
            DistConfigError: the device does not match the process group's backend.
        """
        self.check_rows(x, "mix")
        if x.device.type != "cpu":
            self._warm_up(x.device)
        plan = self.plan(t)
        self.stats.add_gossip(plan.matrix.out_degree, x.shape[1] * x.element_size())
        x = x.contiguous()
        if self.overlap:
            return self._mix_overlap(x, plan)
        return plan.apply(self.exchange(x, plan), self.num_local)

    def mix_compressed(self, payload: Any, t: int) -> NodeTensor:
        """One gossip step on compressed messages: ``x_i <- sum_j W_t[i, j] dense_j``.

        Sends each neighbouring rank the encoded messages of the rows it needs
        (``payload.wire()``, ``payload.nbytes`` bytes each), decodes the received ones, and
        mixes them with the held rows' own reconstructed values. Counts one gossip round of
        ``payload.nbytes`` per message, which is what :attr:`wire_bytes` measures being sent.

        Raises:
            DistConfigError: in overlap mode (compressed gossip keeps exact reconstructions
                on both ends and does not mix stale values).
        """
        if self.overlap:
            raise DistConfigError(
                "compressed gossip needs overlap=False: it mixes this round's messages"
            )
        dense = payload.dense
        self.check_rows(dense, "mix_compressed")
        if dense.device.type != "cpu":
            self._warm_up(dense.device)
        plan = self.plan(t)
        self.stats.add_gossip(plan.matrix.out_degree, int(payload.nbytes))
        m = self.num_local
        if not plan.recv and not plan.send:
            return plan.apply(dense.contiguous(), m)
        wire = payload.wire()
        z_wire = self.exchange(wire, plan)
        if not plan.recv:
            return plan.apply(dense.contiguous(), m)
        z = self._workspace("zc", m + plan.num_received, dense)
        z[:m].copy_(dense)
        z[m:].copy_(payload.decode(z_wire[m:]))
        return plan.apply(z, m)

    def _mix_overlap(self, x: torch.Tensor, plan: ExchangePlan) -> torch.Tensor:
        """``A @ [x_prev; received_prev] + diag(W)_held * (x - x_prev)``, then post ``x``."""
        m = self.num_local
        if self._pending is None:  # first call: nothing stale yet, exchange x itself
            z = self.exchange(x, plan)
            prev = x
        else:
            works, z, prev = self._pending
            for work in works:
                work.wait()
            if prev.shape != x.shape or prev.dtype != x.dtype:
                raise ValueError(
                    f"overlap mode mixes the previous call's values, so every call must pass "
                    f"the same shape and dtype; got {tuple(x.shape)} {x.dtype} after "
                    f"{tuple(prev.shape)} {prev.dtype}"
                )
            if z is not prev:
                z[:m].copy_(prev)
        diag = torch.as_tensor(
            plan.matrix.csr.diagonal()[self._my_nodes], dtype=x.dtype, device=x.device
        )
        out = plan.apply(z, m) + diag[:, None] * (x - prev)
        # the sends read `own` until the next call waits for them, so keep a private copy
        own = self._workspace("own", m, x)
        own.copy_(x)
        works, z = self.post(own, plan)
        self._pending = (works, z, own)
        return out

    @property
    def staleness(self) -> int:
        """``1`` in overlap mode (neighbours' values one call old), else ``0``."""
        return int(self.overlap)

    def metrics(self) -> dict[str, float]:
        """Nothing beyond :attr:`stats` (this transport has no failure handling)."""
        return {}

    def close(self) -> None:
        """Complete the exchange still in flight (overlap mode); a no-op otherwise.

        Every rank must call it after its last :meth:`mix` (the last posted sends are
        matched by the neighbours' last posted receives).
        """
        if self._pending is not None:
            for work in self._pending[0]:
                work.wait()
            self._pending = None

    def all_reduce(
        self, x: NodeTensor, op: ReduceOp = "mean", *, accounted: bool = True
    ) -> torch.Tensor:
        """Reduce ``(m, k)`` over all ``n`` nodes of the network; returns ``(k,)`` on every rank.

        ``mean`` is the sum over ranks of row sums divided by ``n``. An accounted call
        counts one ring all-reduce of ``k`` values per node; ``accounted=False`` marks
        metric traffic.

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
