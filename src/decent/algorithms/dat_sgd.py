"""Decentralized Anytime SGD (DAT-SGD), Eisen, Dorfman & Levy, ICML 2025."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from annotated_types import Ge

from decent._types import NodeTensor
from decent.algorithms.base import (
    WEIGHT_POWER,
    LearningRate,
    Method,
    MixingAssumptions,
    Scale,
    add_scaled_,
    communicates,
    hparam,
)
from decent.comm.base import Communicator

ANYTIME_HINT = (
    "lower the step size (try lr / 10); the step on w is lr * alpha_t, which reaches "
    "lr * T, so tune gamma = lr * T"
)


class DATSGDState(NamedTuple):
    """``z = [w | x]`` packed as ``(m, 2d)`` so that both are gossiped as one message.

    Attributes:
        z: ``(m, 2d)``; ``z[:, :d]`` are the iterates ``w``, ``z[:, d:]`` the query points ``x``.
        weight_sum: ``A_{t-1} = alpha_1 + ... + alpha_{t-1}`` (``0`` before round 1).
    """

    z: NodeTensor
    weight_sum: float

    @property
    def w(self) -> NodeTensor:
        return self.z[:, : self.z.shape[1] // 2]

    @property
    def x(self) -> NodeTensor:
        return self.z[:, self.z.shape[1] // 2 :]


def anytime_step(
    state: DATSGDState, grads: NodeTensor, eta: Scale, alpha: float
) -> tuple[NodeTensor, float]:
    """The local half of an anytime round, in place on ``state.z``.

    ``w <- w - eta alpha g`` and ``x <- (A_{t-1} / A_t) x + (alpha / A_t) w`` with
    ``A_t = A_{t-1} + alpha``. Returns ``(z, A_t)``; gossip or averaging is the caller's.
    """
    prev, total = state.weight_sum, state.weight_sum + alpha
    w, x = state.w, state.x
    add_scaled_(w, grads, eta * -alpha)  # w_{t+1/2} (one product for a column eta)
    x.mul_(prev / total)  # x_{t+1/2} = (A_{t-1} / A_t) x + (alpha_t / A_t) w_{t+1/2}
    add_scaled_(x, w, alpha / total)
    return state.z, total


class AnytimeIterate:
    """``init / query / output`` of the anytime methods: start at ``w = x``, query and output ``x``."""

    def init(self, params: NodeTensor) -> DATSGDState:
        return DATSGDState(z=torch.cat([params, params], dim=1), weight_sum=0.0)

    def query(self, state: DATSGDState, t: int) -> NodeTensor:
        return state.x

    def output(self, state: DATSGDState) -> NodeTensor:
        return state.x


@dataclass(frozen=True)
class DATSGD(AnytimeIterate, Method):
    r"""Decentralized Anytime SGD: gradients at a running weighted average, gossip both.

    Per node ``i`` at round ``t = 1..T`` with weights ``alpha_t = t ** weight_power``
    (``weight_power = 1``: ``alpha_t = t``, the paper's choice) and
    ``A_t = alpha_1 + ... + alpha_t``:

    1. ``g_t^i = \nabla f_i(x_t^i; z_t^i)``  (at the query point ``x``, not at ``w``)
    2. ``w_{t+1/2}^i = w_t^i - eta_t alpha_t g_t^i``
    3. ``x_{t+1/2}^i = (A_{t-1} / A_t) x_t^i + (alpha_t / A_t) w_{t+1/2}^i``
    4. ``w_{t+1}^i = sum_j W_t[i, j] w_{t+1/2}^j``,  ``x_{t+1}^i = sum_j W_t[i, j] x_{t+1/2}^j``

    All nodes start at the same point, ``w_1 = x_1``. The output (what is evaluated) is
    ``x``. Step 4 sends ``[w | x]`` as one message of ``2d`` values per neighbour. With
    ``local_steps = tau > 1`` step 4 happens only every ``tau``-th round. On the complete
    graph this is centralized Anytime SGD (:class:`~decent.algorithms.AnytimeSGD`).

    The step on ``w`` grows like ``eta alpha_t``; with ``alpha_t = t`` the largest step is
    ``eta T``, so tune ``gamma = eta T`` rather than ``eta`` across horizons.

    References:
        Eisen, Dorfman, Levy, "Enhancing Parallelism in Decentralized Stochastic Convex
        Optimization", ICML 2025, https://arxiv.org/abs/2506.00961. Cutkosky, "Anytime
        Online-to-Batch, Optimism and Acceleration", ICML 2019, https://arxiv.org/abs/1903.00974.

    Example:
        >>> import torch
        >>> from decent.comm import SimCommunicator
        >>> from decent.topology import ring
        >>> algo = DATSGD(lr=0.1)
        >>> state = algo.init(torch.zeros(3, 2, dtype=torch.float64))
        >>> state = algo.update(state, torch.ones(3, 2, dtype=torch.float64), SimCommunicator(ring(3)), t=1)
        >>> [round(v, 12) for v in state.x[0].tolist()], state.weight_sum  # 1/3 + 1/3 + 1/3
        ([-0.1, -0.1], 1.0)
    """

    lr: LearningRate = hparam(
        doc='Step size eta: a number, or a schedule table such as {kind = "cosine", lr = 0.1}. '
        "The step on w is eta * t^weight_power."
    )
    weight_power: float = hparam(1.0, WEIGHT_POWER, doc="alpha_t = t ** weight_power.")
    local_steps: int = hparam(1, Ge(1), doc="Gossip every this many rounds.")

    name: ClassVar[str] = "dat_sgd"
    label: ClassVar[str] = "DAT-SGD"
    assumes: ClassVar[MixingAssumptions] = MixingAssumptions(symmetric=True, doubly_stochastic=True)
    reference: ClassVar[str | None] = "anytime_sgd"
    horizon_scaled: ClassVar[bool] = True
    divergence_hint: ClassVar[str] = ANYTIME_HINT

    def alpha(self, t: int) -> float:
        """The averaging weight ``alpha_t = t ** weight_power``."""
        return float(t) ** self.weight_power

    def update(
        self, state: DATSGDState, grads: NodeTensor, comm: Communicator, t: int
    ) -> DATSGDState:
        z, total = anytime_step(state, grads, self.eta(t), self.alpha(t))
        if communicates(t, self.local_steps):
            z = comm.mix(z, t)
        return DATSGDState(z=z, weight_sum=total)
