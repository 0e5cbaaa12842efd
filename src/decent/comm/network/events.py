"""Asynchronous pairwise averaging (AD-PSGD) as events on the simulated clock."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from decent.comm.base import per_matrix
from decent.comm.network.clock import edges
from decent.comm.network.models import NetworkError
from decent.topology._matrix import MixingMatrix

__all__ = ["PairwiseClock", "PairwiseRound", "event_layers", "reverse_edges"]


@dataclass(frozen=True)
class PairwiseRound:
    """What happens in one round of asynchronous pairwise averaging (AD-PSGD).

    A round is a slice of simulated time. Each live node whose gradient finishes in it is an
    *event*: it averages with one live neighbour drawn uniformly (``(x_i + x_j) / 2`` into
    both), takes its gradient step and starts its next gradient. ``passes`` groups the
    events, in time order, into layers on disjoint nodes: applying the passes in turn is
    applying the events one by one.

    Attributes:
        passes: per layer, ``(i, j, solo)`` device index tensors: the events whose exchange
            with ``j`` went through, and those without one (no live neighbour, or a lost
            message: the node steps alone).
        nodes: ``(E,)`` the event nodes in time order; ``partners``: their neighbour or
            ``-1``; ``times``: when each finished its gradient (simulated seconds).
    """

    passes: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    nodes: np.ndarray
    partners: np.ndarray
    times: np.ndarray


@dataclass
class PairwiseClock:
    """Where every node's gradient in flight stands on the clock."""

    slice: float  # simulated seconds per round
    next: np.ndarray  # (n,) when each node's gradient in flight finishes
    alive: np.ndarray  # who was alive at the last round
    done: int = 0  # gradients completed
    now: float = 0.0  # the end of the last round's slice


def event_layers(
    nodes: np.ndarray, partners: np.ndarray, n: int, device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Events in time order as passes of events on disjoint nodes: an event goes in
    once no earlier event left touches either of its nodes."""
    out = []
    left = np.arange(nodes.size)
    first = np.empty(n, dtype=np.int64)
    while left.size:
        i, j = nodes[left], partners[left]
        pair = j >= 0
        first.fill(nodes.size)
        np.minimum.at(first, i, left)
        np.minimum.at(first, j[pair], left[pair])
        ready = (first[i] == left) & (~pair | (first[np.maximum(j, 0)] == left))
        both, solo = ready & pair, ready & ~pair
        out.append(
            (
                torch.as_tensor(i[both], device=device),
                torch.as_tensor(j[both], device=device),
                torch.as_tensor(i[solo], device=device),
            )
        )
        left = left[~ready]
    return out


@per_matrix
def reverse_edges(w: MixingMatrix, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per off-diagonal entry ``(i <- j)`` of :func:`~.clock.edges` the index of ``(j <- i)``;
    per node the first and one past the last of its entries (one run: CSR order)."""
    n = w.n
    dst, src, _, _ = edges(w)
    keys = dst * n + src
    order = np.argsort(keys, kind="stable")
    want = src * n + dst
    at = np.minimum(np.searchsorted(keys[order], want), max(keys.size - 1, 0))
    if keys.size and not np.array_equal(keys[order][at], want):
        raise NetworkError(
            f"AD-PSGD averages pairs over undirected links, but {name}'s "
            f"graph has a link one way only; use an undirected topology"
        )
    back = order[at] if keys.size else at
    nodes = np.arange(n)
    return back, np.searchsorted(dst, nodes, "left"), np.searchsorted(dst, nodes, "right")
