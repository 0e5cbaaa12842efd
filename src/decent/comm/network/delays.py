"""Bounded-delay gossip on the simulated network: what each node sent, and when.

Not the fixed-delay combiner of :mod:`decent.comm.delay`: here each message's delay
``tau_ij(t) <= D`` is drawn per link and round (``uniform``, ``given``) or follows from the
clock (``clock``: the newest message that has arrived), and lost messages are remembered.
"""

from __future__ import annotations

import numpy as np
import torch

from decent._types import NodeTensor

__all__ = ["History"]


class History:
    """The last ``D + 1`` values sent through one mix slot, and when each node sent them."""

    def __init__(self, depth: int, x: NodeTensor) -> None:
        self.depth = depth
        self.values = torch.empty((depth, *x.shape), dtype=x.dtype, device=x.device)
        self.sent = np.zeros((depth, x.shape[0]))  # ready times s_j(r)
        self.lost: np.ndarray | None = None  # (depth, entries): never delivered, by round
        self.rounds = 0  # rounds pushed so far

    def push(self, t: int, x: NodeTensor, ready: np.ndarray) -> None:
        if self.values.shape[1:] != x.shape or self.values.dtype != x.dtype:
            raise ValueError(
                f"delayed mixing needs the same shape and dtype on every call; got "
                f"{tuple(x.shape)} {x.dtype} after {tuple(self.values.shape[1:])} "
                f"{self.values.dtype}"
            )
        self.values[t % self.depth].copy_(x)
        self.sent[t % self.depth] = ready
        self.rounds += 1
