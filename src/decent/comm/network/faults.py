"""What goes wrong: lost messages and churn, drawn per round from the run's seed.

Each message is dropped with probability ``drop``; each undirected link is a two-state
Markov chain (fails with ``link_fail``, recovers with ``link_recover`` per round), shared
by both directions. Churn (:func:`churn`) changes the set of live nodes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from decent.comm.network.clock import edges
from decent.comm.network.models import FAULT_STREAM, LINK_STREAM, Draws, FaultModel, NetworkError
from decent.topology._matrix import MixingMatrix

__all__ = ["Losses", "churn"]


def churn(
    faults: FaultModel, alive: np.ndarray, t: int, weights: Callable[[], MixingMatrix]
) -> list[tuple[int, int]]:
    """Apply round ``t``'s crashes, leaves and joins to ``alive`` in place.

    A joining node pulls its state from its in-neighbour in ``W_t = weights()`` of largest
    weight among those alive the round before and not leaving now (ties: the smallest id).

    Returns:
        ``(node, source)`` per joining node.

    Raises:
        NetworkError: a joining node has no such neighbour.
    """
    gone, joining = faults.events(t)
    eligible = alive.copy()
    eligible[gone] = False
    alive[gone] = False
    pairs = []
    if joining:
        dst, src, weight, _ = edges(weights())
        for node in joining:
            cand = (dst == node) & eligible[src]
            if not cand.any():
                raise NetworkError(
                    f"faults.joins[{node}] = {t}: none of node {node}'s neighbours in the "
                    f"round-{t} graph is alive then to pull its state from"
                )
            ids, wts = src[cand], weight[cand]
            pairs.append((node, int(ids[np.lexsort((ids, -wts))[0]])))
        alive[joining] = True
    return pairs


class Losses:
    """Which messages of ``W_t`` are lost at round ``t``; keeps each link's chain."""

    def __init__(self, faults: FaultModel, draws: Draws, num_nodes: int) -> None:
        self.faults, self.draws, self.num_nodes = faults, draws, num_nodes
        self._links: dict[int, tuple[MixingMatrix, np.ndarray, np.ndarray]] = {}

    def lost(self, w: MixingMatrix, t: int, dst: np.ndarray, src: np.ndarray) -> np.ndarray:
        """Which off-diagonal entries of ``W_t`` (``dst <- src``) lose their message at round
        ``t``: dropped, or on a link that is down."""
        f = self.faults
        lost = np.zeros(dst.shape[0], dtype=bool)
        if f.drop > 0:
            lost |= self.draws.uniforms(FAULT_STREAM, t, dst.shape[0]) < f.drop
        if f.link_fail > 0:
            # one chain per undirected link {i, j}, shared by both directions
            links = self._links.get(id(w))
            if links is None or links[0] is not w:
                lo, hi = np.minimum(dst, src), np.maximum(dst, src)
                uniq, inverse = np.unique(lo * self.num_nodes + hi, return_inverse=True)
                links = self._links[id(w)] = (w, inverse, np.zeros(uniq.shape[0], dtype=bool))
            _, inverse, down = links
            u = self.draws.uniforms(LINK_STREAM, t, down.shape[0])
            down[:] = np.where(down, u >= f.link_recover, u < f.link_fail)
            lost |= down[inverse]
        return lost
