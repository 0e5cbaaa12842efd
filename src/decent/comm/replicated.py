"""R independent runs on one graph, mixed in one product: the replica-batched communicator.

A replica batch holds ``R`` runs of ``n`` nodes as one ``(n * R, k)`` tensor in
**node-major** order: row ``i * R + r`` is node ``i`` of replica ``r``. Then
``x.view(n, R * k)`` puts every replica's copy of a node on one row, and one sparse product
``W_t @ x.view(n, R * k)`` mixes all replicas at once: ``W`` acts on the node axis only, so
the result is block-diagonal mixing (replica ``r`` sees only replica ``r``) without ever
building an ``(nR, nR)`` matrix, and with no copy in or out. A replica's columns never
meet another's, so a diverged replica cannot contaminate the others.

Accounting is per replica: each replica's run is the single run it stands for, so
:attr:`stats` counts one replica's traffic (every replica's is the same).
"""

from __future__ import annotations

from typing import Any

import torch

from decent._types import NodeTensor
from decent.comm.base import CommStats, ReduceOp, reduce_rows
from decent.comm.sim import SimCommunicator

__all__ = ["ReplicatedCommunicator"]


class ReplicatedCommunicator:
    """Mix ``R`` replicas of a simulated network, stacked node-major in ``(n * R, k)``.

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

    def mix(self, x: NodeTensor, t: int) -> NodeTensor:
        """Every replica's ``W_t @ x_r`` in one product; counts one replica's gossip round."""
        return self._mix(x, t, x.shape[1] * x.element_size())

    def _mix(self, x: NodeTensor, t: int, nbytes: int) -> NodeTensor:
        self._check(x, "mix")
        n, k = self.num_nodes, x.shape[1]
        plan = self.inner._checked_plan(x.view(n, self.replicas * k), t)
        self.stats.add_gossip(plan.matrix.out_degree, nbytes)
        if n == 1:  # W = [[1]]: every replica's row is its own average, exactly
            return x.clone()
        if plan.kind == "mean":  # the exact average: per replica, summed as a single run sums
            parts = [self.replica_rows(x, r).contiguous() for r in range(self.replicas)]
            means = torch.stack([p.mean(dim=0) for p in parts]).view(1, self.replicas * k)
            return means.expand(n, self.replicas * k).reshape(self.rows, k)
        mixed = self.inner._apply(plan, x.view(n, self.replicas * k), self.replicas)
        return mixed.view(self.rows, k)

    def mix_compressed(self, payload: Any, t: int) -> NodeTensor:
        """Every replica's ``W_t @ dense_r``; counts one replica's round of ``payload.nbytes``."""
        out = self._mix(payload.dense, t, int(payload.nbytes))
        return out

    def all_reduce(
        self, x: NodeTensor, op: ReduceOp = "mean", *, accounted: bool = True
    ) -> torch.Tensor:
        """Each replica's reduction over its nodes, broadcast back to its rows ``(n * R, k)``.

        A single run returns ``(k,)``; a replica's rows need their own replica's value, so
        the result has one row per stacked row.
        """
        self._check(x, "all_reduce")
        n, r, k = self.num_nodes, self.replicas, x.shape[1]
        if accounted:
            self.stats.add_all_reduce(k * x.element_size())
        if n == 1:  # one node: the reduction of a single row is the row, exactly
            return x.clone()
        # each replica's reduction on its own contiguous rows: the single run's kernel on
        # the single run's shape, so the sums come out in the same order, bit for bit
        parts = [self.replica_rows(x, i).contiguous() for i in range(r)]
        per = torch.stack([p.mean(dim=0) if op == "mean" else reduce_rows(p, op) for p in parts])
        return per.view(1, r * k).expand(n, r * k).reshape(self.rows, k)

    def replica_rows(self, x: NodeTensor, r: int) -> NodeTensor:
        """Replica ``r``'s ``(n, k)`` rows of a stacked tensor (a strided view)."""
        return x.view(self.num_nodes, self.replicas, -1)[:, r, :]

    def metrics(self) -> dict[str, float]:
        """Nothing beyond :attr:`stats`."""
        return {}

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"ReplicatedCommunicator({self.inner!r}, replicas={self.replicas})"
