"""The virtual clock: when each node finishes each round (compute, then what it waits for).

``clock_i`` is the simulated second at which node ``i`` finished its latest step. A
gossip round makes a live node wait for its live in-neighbours' messages
(:func:`tick_gossip`), an all-reduce for the slowest live node and a ring all-reduce
(:func:`tick_all_reduce`). :func:`simulate_clock` runs the clock alone, without training.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from decent.comm.base import per_matrix
from decent.comm.network.models import ComputeModel, LinkModel, NetworkError
from decent.topology._matrix import MixingMatrix, Topology

__all__ = ["edges", "simulate_clock", "tick_all_reduce", "tick_gossip"]


@per_matrix
def edges(w: MixingMatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(dst, src, weight, diagonal)``: the off-diagonal entries ``dst <- src`` of ``W`` in
    CSR order, their weights, and ``W``'s diagonal (cached per matrix)."""
    csr = w.csr
    rows = np.repeat(np.arange(w.n), np.diff(csr.indptr))
    cols = csr.indices.astype(np.int64)
    off = rows != cols
    return rows[off], cols[off], csr.data[off], csr.diagonal()


def tick_gossip(
    clock: np.ndarray, dst: np.ndarray, src: np.ndarray, link: float, alive: np.ndarray | None
) -> np.ndarray:
    """``clock_i = max(clock_i, max_{j -> i} clock_j + link)`` for live ``i`` (``alive``
    ``None``: everyone); a dead node waits for nothing (and nobody waits for it: it is
    in neither ``dst`` nor ``src``)."""
    done = clock.copy()
    np.maximum.at(done, dst, clock[src] + link)
    return done if alive is None else np.where(alive, done, clock)


def tick_all_reduce(
    clock: np.ndarray, alive: np.ndarray, link: LinkModel, nbytes: int
) -> np.ndarray:
    """Every live node waits for the slowest, then a ring all-reduce among the live."""
    count = int(alive.sum())
    barrier = float(clock[alive].max())
    done = barrier + link.all_reduce_time(nbytes, count)
    return np.where(alive, done, clock)


def simulate_clock(
    topology: Topology,
    rounds: int,
    message_bytes: int,
    *,
    pattern: Literal["gossip", "all_reduce"] = "gossip",
    compute: ComputeModel | None = None,
    link: LinkModel | None = None,
    seed: int = 0,
) -> np.ndarray:
    """``(rounds,)`` ``time/sim`` after each round, from the clock alone (no training).

    A fault-free clock does not depend on the values exchanged, so ``[t - 1]`` is what a
    training run with a :class:`NetworkCommunicator` of the same models records at round
    ``t`` (tested). ``pattern``: one gossip of ``message_bytes`` per round (D-SGD, DAT-SGD)
    or one ring all-reduce of it (minibatch SGD).

    Raises:
        NetworkError: ``rounds < 1``, ``message_bytes < 0`` or an unknown ``pattern``.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise NetworkError(f"rounds must be an integer >= 1, got {rounds!r}")
    if message_bytes < 0:
        raise NetworkError(f"message_bytes must be >= 0, got {message_bytes!r}")
    if pattern not in ("gossip", "all_reduce"):
        raise NetworkError(f"pattern must be 'gossip' or 'all_reduce', got {pattern!r}")
    compute, link = compute or ComputeModel(), link or LinkModel()
    n = topology.num_nodes
    clock, everyone = np.zeros(n), np.ones(n, dtype=bool)
    out = np.empty(rounds)
    for t in range(1, rounds + 1):
        clock += compute.draw(seed, t, n)
        if pattern == "gossip":
            dst, src, _, _ = edges(topology.weights(t))
            clock = tick_gossip(clock, dst, src, link.time(message_bytes), None)
        else:
            clock = tick_all_reduce(clock, everyone, link, message_bytes)
        out[t - 1] = clock.max()
    return out
