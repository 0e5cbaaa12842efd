"""Lost messages: drops and link failures, drawn per round from the run's seed.

Each message is dropped with probability ``drop``; each undirected link is a two-state
Markov chain (fails with ``link_fail``, recovers with ``link_recover`` per round), shared
by both directions. Churn (crashes, leaves, joins) is the communicator's live set.
"""

from __future__ import annotations

import numpy as np

from decent.comm.network.models import FAULT_STREAM, LINK_STREAM, Draws, FaultModel
from decent.topology._matrix import MixingMatrix

__all__ = ["Losses"]


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
