"""Delayed mixing in the simulator: the reference of the distributed overlap mode.

A node mixes its own current value with its neighbours' values from ``delay`` mix calls
ago: the network is one (or more) exchange behind, as when the exchange of round ``t`` runs
during the gradient computation of round ``t + 1``
(:class:`decent.comm.dist.DistCommunicator` with ``overlap=True``).
"""

from __future__ import annotations

from collections import deque

import torch

from decent._types import NodeTensor
from decent.comm.base import CommStats, ReduceOp
from decent.comm.sim import SimCommunicator
from decent.topology._matrix import MixingMatrix, Topology

__all__ = ["DelayedCommunicator"]


class DelayedCommunicator:
    """Mix with neighbours' values from ``delay`` calls ago (a constant, seeded-free delay).

    With ``x(c)`` the value passed to the ``c``-th call of :meth:`mix` (rows of all nodes),

    .. math::
        x_i \\leftarrow W_t[i, i]\\, x_i(c) + \\sum_{j \\ne i} W_t[i, j]\\, x_j(c - D),
        \\qquad x(c') = x(1) \\text{ for } c' < 1,

    computed as ``W_t @ x(c - D) + diag(W_t) * (x(c) - x(c - D))``. ``delay = 0`` is plain
    mixing. Each call counts one gossip round, as the simulator does.

    Args:
        inner: the simulator communicator (all ``n`` rows held), or a topology to build one.
        delay: ``D >= 0`` calls.

    Raises:
        ValueError: a negative or non-integer ``delay``.

    Example:
        >>> import torch
        >>> from decent.topology import ring
        >>> comm = DelayedCommunicator(ring(4), delay=1)
        >>> x = torch.eye(4, dtype=torch.float64)
        >>> comm.mix(x, 1).equal(SimCommunicator(ring(4)).mix(x, 1))  # first call: no delay yet
        True
    """

    def __init__(self, inner: SimCommunicator | Topology, delay: int = 1) -> None:
        if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
            raise ValueError(
                f"delay must be an integer >= 0 (mix calls), got {delay!r}; use delay=1 for "
                "the one-step-stale overlap mode"
            )
        self.inner = inner if isinstance(inner, SimCommunicator) else SimCommunicator(inner)
        self.delay = delay
        self.topology = self.inner.topology
        self.num_nodes = self.inner.num_nodes
        self.node_ids = self.inner.node_ids
        self._history: deque[torch.Tensor] = deque(maxlen=max(delay, 1))

    @property
    def stats(self) -> CommStats:
        """The inner simulator's accounting."""
        return self.inner.stats

    def mix(self, x: NodeTensor, t: int) -> NodeTensor:
        """Return row ``i`` = ``W_ii x_i + sum_{j != i} W_ij x_j`` (``x_j`` ``delay`` calls old)."""
        if self.delay == 0:
            return self.inner.mix(x, t)
        hist = self._history
        stale = hist[0] if len(hist) == self.delay else (hist[0] if hist else x)
        if stale.shape != x.shape or stale.dtype != x.dtype:
            raise ValueError(
                f"delayed mixing needs the same shape and dtype on every call; got "
                f"{tuple(x.shape)} {x.dtype} after {tuple(stale.shape)} {stale.dtype}"
            )
        diag = torch.as_tensor(self.inner.weights(t).csr.diagonal(), dtype=x.dtype)
        out = self.inner.mix(stale, t) + diag.to(x.device)[:, None] * (x - stale)
        hist.append(x.clone())
        return out

    def all_reduce(
        self, x: NodeTensor, op: ReduceOp = "mean", *, accounted: bool = True
    ) -> torch.Tensor:
        """Exact (undelayed) reduction, as :meth:`SimCommunicator.all_reduce`."""
        return self.inner.all_reduce(x, op, accounted=accounted)

    @property
    def staleness(self) -> int:
        """``delay``: neighbours' values are this many mix calls old."""
        return self.delay

    def weights(self, t: int) -> MixingMatrix:
        """``W_t`` (the weights the delayed values are mixed with)."""
        return self.inner.weights(t)

    def metrics(self) -> dict[str, float]:
        """Nothing beyond :attr:`stats`."""
        return {}

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"DelayedCommunicator({self.inner!r}, delay={self.delay})"
