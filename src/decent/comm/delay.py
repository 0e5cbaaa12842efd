"""Stale mixing over any transport: the one implementation of "neighbours are behind".

A node mixes its own current value with its neighbours' values from ``delay`` mix calls
ago, as when round ``t``'s exchange runs during round ``t + 1``'s gradients. Over the
simulator it is the reference; over the ranks it *is* the overlap mode of
:class:`~decent.comm.dist.DistCommunicator` (``delay = 1``): the same code. The simulated
network's bounded delays (a delay per link and round, lost messages remembered) and the
threaded ranks' ``staleness`` (the freshest version within the bound: a race) mean
something else and are not this combiner.
"""

from __future__ import annotations

from collections import deque

import torch

from decent._types import NodeTensor
from decent.comm.base import Buffers, Combiner, Posted, Transport
from decent.comm.sim import SimCommunicator
from decent.topology._matrix import MixingMatrix, Topology

__all__ = ["DelayedCommunicator"]


class DelayedCommunicator(Combiner):
    """Mix with neighbours' values from ``delay`` calls ago (a constant delay, seed-free).

    With ``x(c)`` the value passed to the ``c``-th call of :meth:`mix` (the held rows),

    .. math::
        x_i \\leftarrow W_t[i, i]\\, x_i(c) + \\sum_{j \\ne i} W_t[i, j]\\, x_j(c - D),
        \\qquad x(c') = x(1) \\text{ for } c' < 1,

    computed as ``A_t Z(c - D) + diag(W_t) * (x(c) - x(c - D))`` with ``Z(c - D)`` what the
    transport received for ``x(c - D)``: every call posts its exchange and completes the
    one ``D`` calls old. ``delay = 0`` is plain mixing. Each call counts one gossip round.

    Args:
        inner: the transport, or a topology to put in a simulator.
        delay: ``D >= 0`` calls.

    Raises:
        ValueError: a bad ``delay``, or a time-varying topology on ranks (what arrived
            ``D`` calls ago was chosen by an older ``W``).

    Example:
        >>> import torch
        >>> from decent.topology import ring
        >>> comm = DelayedCommunicator(ring(4), delay=1)
        >>> x = torch.eye(4, dtype=torch.float64)
        >>> comm.mix(x, 1).equal(SimCommunicator(ring(4)).mix(x, 1))  # first call: no delay yet
        True
    """

    inner: Transport

    def __init__(self, inner: Transport | Topology, delay: int = 1) -> None:
        if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
            raise ValueError(
                f"delay must be an integer >= 0 (mix calls), got {delay!r}; use delay=1 for "
                "the one-step-stale overlap mode"
            )
        super().__init__(inner if isinstance(inner, Transport) else SimCommunicator(inner))
        self.delay = delay
        self.topology = self.inner.topology
        if delay and not self.topology.is_static and self.node_ids.numel() < self.num_nodes:
            raise ValueError(
                f"delay={delay} on ranks needs a static topology, got time-varying "
                f"{self.topology.name!r}: a rank posts round t's values before it knows the "
                "neighbours of the next round it mixes in; use delay=0 (overlap=False) or a "
                "static topology"
            )
        self._posted: deque[Posted] = deque()
        self._calls = 0
        self._buffers = Buffers()

    @property
    def staleness(self) -> int:
        """``delay``: neighbours' values are this many mix calls old."""
        return self.delay

    def weights(self, t: int) -> MixingMatrix:
        """``W_t`` (the weights the stale values are mixed with)."""
        return self.inner.weights(t)

    def mix(self, x: NodeTensor, t: int) -> NodeTensor:
        """Return row ``i`` = ``W_ii x_i + sum_{j != i} W_ij x_j`` (``x_j`` ``delay`` calls old)."""
        inner = self.inner
        inner.count(t, x.shape[1] * x.element_size())
        if self.delay == 0:
            return inner.combine(inner.post(x, t).wait(), t)
        self._calls += 1
        slots = self.delay + 1
        if not self._posted:  # first call: nothing stale yet, exchange x itself
            stale: Posted = inner.post(x, t, slot=0)
        elif len(self._posted) == self.delay:
            stale = self._posted.popleft()  # x(c - D), no longer needed after this call
        else:
            stale = self._posted[0]  # x(1) until D calls have been posted
        z = stale.wait()
        prev = stale.x
        if prev.shape != x.shape or prev.dtype != x.dtype:
            raise ValueError(
                f"delayed mixing needs the same shape and dtype on every call; got "
                f"{tuple(x.shape)} {x.dtype} after {tuple(prev.shape)} {prev.dtype}"
            )
        diag = torch.as_tensor(inner.self_weights(t), dtype=x.dtype, device=x.device)
        # out = A Z + diag * (x - prev), with the correction in one reused buffer: the
        # same roundings as the plain expression, one message-sized temporary fewer
        fix = self._buffers.get("fix", x.shape, x)
        torch.sub(x, prev, out=fix).mul_(diag[:, None])
        out = inner.combine(z, t).add_(fix)
        self._posted.append(inner.post(x, t, slot=self._calls % slots, keep=True))
        return out

    def close(self) -> None:
        """Complete the exchanges still in flight (every rank calls it after its last mix),
        then close the inner communicator, as every other combiner does."""
        while self._posted:
            self._posted.popleft().wait()
        self.inner.close()

    def __repr__(self) -> str:
        return f"DelayedCommunicator({self.inner!r}, delay={self.delay})"
