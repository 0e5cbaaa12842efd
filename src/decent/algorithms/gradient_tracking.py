"""Decentralized stochastic gradient tracking (DSGT)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch

from decent._types import NodeTensor
from decent.algorithms.base import (
    LearningRate,
    Method,
    MixingAssumptions,
    Scale,
    add_scaled_,
    hparam,
)
from decent.algorithms.dsgd import LR_DOC
from decent.comm.base import Communicator


class GradientTrackingState(NamedTuple):
    """Attributes:
    z: ``(m, 2d)`` = ``[x_t | W y_{t-1}]``: models and the mixed tracker of last round.
    g_prev: ``(m, d)`` the gradients of last round ``g_{t-1}`` (zeros before round 1).
    """

    z: NodeTensor
    g_prev: NodeTensor

    @property
    def x(self) -> NodeTensor:
        return self.z[:, : self.z.shape[1] // 2]


def tracking_step(z: NodeTensor, grads: NodeTensor, g_prev: NodeTensor, eta: Scale) -> NodeTensor:
    """The local half of a round, in place on ``z = [x | W y_{t-1}]``; returns ``z``.

    ``y_t = W y_{t-1} + g_t - g_{t-1}`` and ``x <- x_t - eta y_t``; gossip is the caller's.
    """
    d = z.shape[1] // 2
    x, y = z[:, :d], z[:, d:]
    y.add_(grads).sub_(g_prev)
    add_scaled_(x, y, -eta)
    return z


@dataclass(frozen=True)
class GradientTracking(Method):
    r"""Gradient tracking: each node also gossips a running estimate y of the mean gradient.

    Per node ``i`` at round ``t`` with ``g_t^i = \nabla f_i(x_t^i; z_t^i)``,
    ``y_0 = g_0 = 0``:

    * ``y_t^i = sum_j W[i, j] y_{t-1}^j + g_t^i - g_{t-1}^i``  (so ``y_1 = g_1``)
    * ``x_{t+1}^i = sum_j W_t[i, j] (x_t^j - eta_t y_t^j)``

    ``x - eta y`` and ``y`` are gossiped together as one message of ``2d`` values, so a
    round costs one communication step (the mixed ``y`` is kept for the next round). The
    mean of ``y`` equals the mean of the current gradients at every round when ``W`` is
    doubly stochastic, which removes the heterogeneity bias of D-SGD.

    References:
        Pu & Nedić, "Distributed Stochastic Gradient Tracking Methods", Math. Programming
        2021, https://arxiv.org/abs/1805.11454. Koloskova, Lin, Stich, "An Improved Analysis
        of Gradient Tracking for Decentralized Machine Learning", NeurIPS 2021,
        https://arxiv.org/abs/2202.03836.
    """

    lr: LearningRate = hparam(doc=LR_DOC)

    name: ClassVar[str] = "gradient_tracking"
    label: ClassVar[str] = "Gradient tracking"
    assumes: ClassVar[MixingAssumptions] = MixingAssumptions(doubly_stochastic=True)
    reference: ClassVar[str | None] = "minibatch_sgd"

    def init(self, params: NodeTensor) -> GradientTrackingState:
        return GradientTrackingState(
            z=torch.cat([params, torch.zeros_like(params)], dim=1), g_prev=torch.zeros_like(params)
        )

    def query(self, state: GradientTrackingState, t: int) -> NodeTensor:
        return state.x

    def output(self, state: GradientTrackingState) -> NodeTensor:
        return state.x

    def update(
        self, state: GradientTrackingState, grads: NodeTensor, comm: Communicator, t: int
    ) -> GradientTrackingState:
        z = tracking_step(state.z, grads, state.g_prev, self.eta(t))
        return GradientTrackingState(z=comm.mix(z, t), g_prev=grads)
