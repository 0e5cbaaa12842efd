"""Placement of nodes on ranks and the exchange plan one rank derives from ``W_t``, shared
by the torch.distributed transports; nothing here talks to a process group."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist

from decent.topology._matrix import MixingMatrix

__all__ = [
    "MODE_ENV",
    "TIMEOUT_ENV",
    "DistConfigError",
    "ExchangePlan",
    "block_placement",
    "build_plan",
    "dist_reduce_op",
    "local_layout",
    "resolve_placement",
]


MODE_ENV, TIMEOUT_ENV = "DECENT_DIST_MODE", "DECENT_FAILURE_TIMEOUT"
"""Set by ``decent launch --mode/--failure-timeout`` for a user's script; read by
:class:`~decent.parallel.DecentralizedDataParallel` as its defaults."""


class DistConfigError(ValueError):
    """A distributed set-up that cannot work; the message names the rule and the fix."""


def block_placement(num_nodes: int, world_size: int) -> list[list[int]]:
    """Split nodes ``0..n-1`` into ``world_size`` contiguous blocks, one list per rank; the
    first ``n mod world_size`` ranks hold one node more.

    Raises:
        DistConfigError: ``world_size < 1`` or fewer nodes than ranks.

    Example:
        >>> block_placement(5, 2)
        [[0, 1, 2], [3, 4]]
    """
    if world_size < 1:
        raise DistConfigError(f"world_size must be >= 1, got {world_size}")
    if num_nodes < world_size:
        raise DistConfigError(
            f"every rank must hold at least one node, but num_nodes={num_nodes} < "
            f"world_size={world_size}; launch at most {num_nodes} ranks"
        )
    return [b.tolist() for b in np.array_split(np.arange(num_nodes), world_size)]


@dataclass
class ExchangePlan:
    """What one rank sends, receives and computes for ``W_t``: ``send[p]`` local row
    positions sent to group rank ``p``, ``recv[p]`` the global ids received from ``p``
    (ascending), and ``out = A @ Z`` with ``Z = [x; recv[p_1]; recv[p_2]; ...]`` (peers
    ascending) and ``A = weights`` the held rows of ``W_t``, columns renumbered into ``Z``;
    ``layout`` ``(n,)`` each node's row of ``Z`` (``-1``: neither held nor received)."""

    matrix: MixingMatrix
    send: dict[int, np.ndarray]
    recv: dict[int, np.ndarray]
    weights: sp.csr_array  # (m, m + r)
    dense: bool
    layout: np.ndarray
    _torch: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, ...]] = field(
        default_factory=dict
    )
    _index: dict[torch.device, dict[int, torch.Tensor]] = field(default_factory=dict)

    @property
    def num_received(self) -> int:
        return int(sum(v.size for v in self.recv.values()))

    def send_slice(self, p: int) -> slice | None:
        """The rows sent to ``p`` as one slice of ``x`` when they are consecutive, else None."""
        pos = self.send[p]
        if pos.size and bool(np.all(np.diff(pos) == 1)):
            return slice(int(pos[0]), int(pos[-1]) + 1)
        return None

    def send_index(self, device: torch.device) -> dict[int, torch.Tensor]:
        idx = self._index.get(device)
        if idx is None:
            idx = {
                p: torch.as_tensor(pos, dtype=torch.int64, device=device)
                for p, pos in self.send.items()
            }
            self._index[device] = idx
        return idx

    def apply(self, z: torch.Tensor, m: int) -> torch.Tensor:
        """Return ``A @ z`` for ``z`` of shape ``(m + r, k)``."""
        key = (z.dtype, z.device)
        cached = self._torch.get(key)
        if cached is None:
            if self.dense:
                cached = (torch.as_tensor(self.weights.toarray(), dtype=z.dtype, device=z.device),)
            else:
                coo = self.weights.tocoo()
                cached = (
                    torch.as_tensor(coo.row, dtype=torch.int64, device=z.device),
                    torch.as_tensor(coo.col, dtype=torch.int64, device=z.device),
                    torch.as_tensor(coo.data, dtype=z.dtype, device=z.device),
                )
            self._torch[key] = cached
        if self.dense:
            return cached[0] @ z
        rows, cols, vals = cached
        out = torch.zeros((m, z.shape[1]), dtype=z.dtype, device=z.device)
        return out.index_add_(0, rows, z.index_select(0, cols) * vals[:, None])


def build_plan(
    w: MixingMatrix,
    my_nodes: np.ndarray,
    owner: np.ndarray,
    me: int,
    dense_limit: int,
) -> ExchangePlan:
    """Derive the exchange for rank ``me`` from ``W_t`` (the same on every rank)."""
    csr = w.csr
    m = my_nodes.size
    # Receive side: remote columns of my rows, grouped by owner, ascending global id.
    mine = csr[my_nodes]  # (m, n) rows held here
    cols = np.unique(mine.indices)
    remote = cols[owner[cols] != me]
    recv: dict[int, np.ndarray] = {}
    for p in np.unique(owner[remote]):
        recv[int(p)] = remote[owner[remote] == p]  # np.unique sorted, so ascending ids
    # Send side: my columns that rows held elsewhere use, grouped by that row's owner.
    to_me = sp.coo_array(csr[:, my_nodes])  # (n, m): W[i, j] for j held here
    away = owner[to_me.row] != me
    pairs = np.stack([owner[to_me.row[away]], my_nodes[to_me.col[away]]], axis=1)
    pairs = np.unique(pairs, axis=0) if pairs.size else pairs.reshape(0, 2)
    pos_of = np.full(w.n, -1, dtype=np.int64)
    pos_of[my_nodes] = np.arange(m)
    send: dict[int, np.ndarray] = {}
    for p in np.unique(pairs[:, 0]):
        ids = np.sort(pairs[pairs[:, 0] == p, 1])
        send[int(p)] = pos_of[ids]
    # Renumber columns into Z = [x; received rows in peer order].
    col_of = np.full(w.n, -1, dtype=np.int64)
    col_of[my_nodes] = np.arange(m)
    offset = m
    for p in sorted(recv):
        ids = recv[p]
        col_of[ids] = np.arange(offset, offset + ids.size)
        offset += ids.size
    new_cols = col_of[mine.indices]
    if new_cols.size and int(new_cols.min()) < 0:  # pragma: no cover - internal invariant
        raise RuntimeError("exchange plan misses a column; this is a bug in decent")
    a = sp.csr_array((mine.data, new_cols, mine.indptr), shape=(m, offset))
    return ExchangePlan(
        matrix=w,
        send=send,
        recv=recv,
        weights=a,
        dense=m * offset <= dense_limit,
        layout=col_of,
    )


def resolve_placement(
    topology_name: str,
    num_nodes: int,
    world_size: int,
    nodes_per_rank: int | None,
    placement: Sequence[Sequence[int]] | None,
) -> list[list[int]]:
    """Validate and return the node ids each rank holds (one list per rank).

    Raises:
        DistConfigError: both or neither way is usable, a rank holds no node, or the lists
            do not cover every node exactly once.
    """
    n, world = num_nodes, world_size
    if placement is not None and nodes_per_rank is not None:
        raise DistConfigError(
            "give either nodes_per_rank or placement, not both; placement already says "
            "how many nodes each rank holds"
        )
    if placement is None:
        per = 1 if nodes_per_rank is None else nodes_per_rank
        if isinstance(per, bool) or not isinstance(per, int) or per < 1:
            raise DistConfigError(f"nodes_per_rank must be an int >= 1, got {per!r}")
        if per * world != n:
            raise DistConfigError(
                f"topology {topology_name!r} has num_nodes={n}, but nodes_per_rank={per} "
                f"on world_size={world} ranks holds {per * world}; launch {n // per} ranks "
                f"or pass placement=block_placement({n}, {world})"
                if n % per == 0
                else f"topology {topology_name!r} has num_nodes={n}, which "
                f"nodes_per_rank={per} does not divide; pass "
                f"placement=block_placement({n}, {world})"
            )
        return [list(range(r * per, (r + 1) * per)) for r in range(world)]
    blocks = [[int(i) for i in b] for b in placement]
    if len(blocks) != world:
        raise DistConfigError(
            f"placement must have one list of node ids per rank (world_size={world}), "
            f"got {len(blocks)} lists"
        )
    for r, b in enumerate(blocks):
        if not b:
            raise DistConfigError(
                f"placement[{r}] is empty; every rank must hold at least one node "
                f"(use block_placement({n}, {world}))"
            )
    flat = np.asarray([i for b in blocks for i in b], dtype=np.int64)
    if flat.size != n or not np.array_equal(np.sort(flat), np.arange(n)):
        counts = np.bincount(flat[(flat >= 0) & (flat < n)], minlength=n)
        bad_range = flat[(flat < 0) | (flat >= n)]
        detail = (
            f"node id {int(bad_range[0])} is out of range 0..{n - 1}"
            if bad_range.size
            else f"node {int(np.flatnonzero(counts != 1)[0])} appears "
            f"{int(counts[np.flatnonzero(counts != 1)[0]])} times"
        )
        raise DistConfigError(
            f"placement must list every node 0..{n - 1} of topology "
            f"{topology_name!r} exactly once: {detail}"
        )
    return blocks


def local_layout(
    blocks: Sequence[Sequence[int]], rank: int, num_nodes: int
) -> tuple[tuple[tuple[int, ...], ...], np.ndarray, np.ndarray]:
    """``(placement, owner, my_nodes)``: the placement as tuples, the rank owning each node
    ``(n,)`` and this rank's node ids ``(m,)``."""
    owner = np.empty(num_nodes, dtype=np.int64)
    for r, b in enumerate(blocks):
        owner[np.asarray(b, dtype=np.int64)] = r
    return tuple(tuple(b) for b in blocks), owner, np.asarray(blocks[rank], dtype=np.int64)


def dist_reduce_op(op: str) -> Any:
    """The ``torch.distributed`` op that combines :func:`~decent.comm.base.reduce_rows` partials."""
    return {"min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}.get(op, dist.ReduceOp.SUM)
