"""Decentralized schedule-free SGD (experimental): gradients between the iterate and its average.

Defazio et al.'s schedule-free SGD takes its gradient at an interpolation ``y`` of the
iterate ``z`` and its running weighted average ``x``; DAT-SGD is its ``beta = 1`` case. The
decentralized form here gossips ``z`` and ``x`` as DAT-SGD gossips ``w`` and ``x``. It has
not been published or analysed; results with it are labelled experimental.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from annotated_types import Ge, Interval

from decent._types import NodeTensor
from decent.algorithms.base import (
    WEIGHT_POWER,
    LearningRate,
    Method,
    MixingAssumptions,
    add_scaled_,
    communicates,
    hparam,
)
from decent.algorithms.dat_sgd import ANYTIME_HINT, AnytimeIterate, DATSGDState, anytime_step
from decent.comm.base import Communicator

ScheduleFreeState = DATSGDState
"""DAT-SGD's state: ``z = [z | x]`` packed ``(m, 2d)`` (its ``w`` is the iterate ``z``), and
``weight_sum = A_{t-1}``."""

_LR_DOC = (
    'Step size eta: a number, or a schedule table such as {kind = "cosine", lr = 0.1}. '
    "The step on z is eta * t^weight_power."
)
_BETA_DOC = (
    "Interpolation beta: gradients at y = (1 - beta) z + beta x; 1 is DAT-SGD (at the "
    "average), 0 is D-SGD on z (at the iterate)."
)


def interpolate(state: DATSGDState, beta: float) -> NodeTensor:
    """``y = (1 - beta) z + beta x``, a fresh contiguous ``(m, d)`` tensor.

    A product then a sum (no fused multiply-add), so a replica's rows get the bits of its
    single run; ``beta = 1`` gives ``x`` and ``beta = 0`` gives ``z`` exactly.
    """
    y = state.w.mul(1.0 - beta)
    return add_scaled_(y, state.x, beta)


@dataclass(frozen=True)
class ScheduleFreeDSGD(AnytimeIterate, Method):
    r"""Decentralized schedule-free SGD (experimental): gossip the iterate and its average.

    Per node ``i`` at round ``t = 1..T`` with weights ``alpha_t = t ** weight_power`` and
    ``A_t = alpha_1 + ... + alpha_t``:

    1. ``y_t^i = (1 - beta) z_t^i + beta x_t^i``
    2. ``g_t^i = \nabla f_i(y_t^i; xi_t^i)``
    3. ``z_{t+1/2}^i = z_t^i - eta_t alpha_t g_t^i``
    4. ``x_{t+1/2}^i = (A_{t-1} / A_t) x_t^i + (alpha_t / A_t) z_{t+1/2}^i``
    5. ``z_{t+1}^i = sum_j W_t[i, j] z_{t+1/2}^j``,  ``x_{t+1}^i = sum_j W_t[i, j] x_{t+1/2}^j``

    All nodes start at ``z_1 = x_1``; the output (what is evaluated) is ``x``. Step 5 sends
    ``[z | x]``, ``2d`` values per neighbour, every ``local_steps``-th round.

    Special cases, tested on the same draws: ``beta = 1`` is DAT-SGD
    (:class:`~decent.algorithms.DATSGD`, whose ``w`` is ``z``); ``beta = 0`` takes the
    gradient at ``z``, whose trajectory is D-SGD's (ATC) with step ``eta_t alpha_t``
    (``weight_power = 0``: D-SGD with step ``eta_t``), ``x`` then its running average. On
    the complete graph it is centralized schedule-free SGD
    (:class:`ScheduleFreeSGD`). With ``weight_power = 0`` and a constant ``eta`` the
    local recursion is Defazio et al.'s schedule-free SGD without warm-up (constant weights
    ``c_{t+1} = 1 / (t + 1)``); ``weight_power = 1`` uses DAT-SGD's anytime weights, so as
    for DAT-SGD tune ``gamma = eta T``.

    Experimental: the decentralized method is this library's construction (DAT-SGD's
    gossip of both sequences, with schedule-free's interpolated query point); it has no
    published analysis.

    Paper symbols: ``z`` is ``state.w`` (DAT-SGD's iterate), ``x`` is ``state.x``.

    References:
        Defazio, Yang, Mehta, Mishchenko, Khaled, Cutkosky, "The Road Less Scheduled",
        NeurIPS 2024, https://arxiv.org/abs/2405.15682. Eisen, Dorfman, Levy, "Enhancing
        Parallelism in Decentralized Stochastic Convex Optimization", ICML 2025,
        https://arxiv.org/abs/2506.00961.

    Example:
        >>> import torch
        >>> from decent.comm import SimCommunicator
        >>> from decent.topology import ring
        >>> algo = ScheduleFreeDSGD(lr=0.1, beta=0.5)
        >>> state = algo.init(torch.zeros(3, 2, dtype=torch.float64))
        >>> comm, ones = SimCommunicator(ring(3)), torch.ones(3, 2, dtype=torch.float64)
        >>> for t in (1, 2):
        ...     state = algo.update(state, ones, comm, t)
        >>> [round(float(v[0, 0]), 4) for v in (state.w, state.x, algo.query(state, 1))]
        [-0.3, -0.2333, -0.2667]
    """

    lr: LearningRate = hparam(doc=_LR_DOC)
    beta: float = hparam(0.9, Interval(ge=0.0, le=1.0), doc=_BETA_DOC)
    weight_power: float = hparam(1.0, WEIGHT_POWER, doc="alpha_t = t ** weight_power.")
    local_steps: int = hparam(1, Ge(1), doc="Gossip every this many rounds.")

    name: ClassVar[str] = "schedule_free_dsgd"
    label: ClassVar[str] = "Schedule-free D-SGD"
    assumes: ClassVar[MixingAssumptions] = MixingAssumptions(symmetric=True, doubly_stochastic=True)
    reference: ClassVar[str | None] = "schedule_free_sgd"
    horizon_scaled: ClassVar[bool] = True
    divergence_hint: ClassVar[str] = ANYTIME_HINT
    experimental: ClassVar[bool] = True

    def query(self, state: DATSGDState, t: int) -> NodeTensor:
        return interpolate(state, self.beta)

    def update(
        self, state: DATSGDState, grads: NodeTensor, comm: Communicator, t: int
    ) -> DATSGDState:
        alpha = float(t) ** self.weight_power
        z, total = anytime_step(state, grads, self.eta(t), alpha)
        if communicates(t, self.local_steps):
            z = comm.mix(z, t)
        return DATSGDState(z=z, weight_sum=total)


@dataclass(frozen=True)
class ScheduleFreeSGD(AnytimeIterate, Method):
    r"""Centralized schedule-free SGD: all-reduced gradients at ``y = (1 - beta) z + beta x``.

    With ``alpha_t = t ** weight_power``, ``A_t = alpha_1 + ... + alpha_t`` and
    ``g_t = (1/n) sum_i \nabla f_i(y_t; xi_t^i)`` (all-reduce):

    * ``y_t = (1 - beta) z_t + beta x_t``
    * ``z_{t+1} = z_t - eta_t alpha_t g_t``
    * ``x_{t+1} = (A_{t-1} / A_t) x_t + (alpha_t / A_t) z_{t+1}``

    ``beta = 1`` is Anytime SGD; decentralized schedule-free SGD on the complete graph
    equals this method.

    Reference: Defazio et al., "The Road Less Scheduled", NeurIPS 2024,
    https://arxiv.org/abs/2405.15682.
    """

    lr: LearningRate = hparam(doc=_LR_DOC)
    beta: float = hparam(0.9, Interval(ge=0.0, le=1.0), doc=_BETA_DOC)
    weight_power: float = hparam(1.0, WEIGHT_POWER, doc="alpha_t = t ** weight_power.")

    name: ClassVar[str] = "schedule_free_sgd"
    label: ClassVar[str] = "Schedule-free SGD"
    centralized: ClassVar[bool] = True
    horizon_scaled: ClassVar[bool] = True
    divergence_hint: ClassVar[str] = ANYTIME_HINT

    def query(self, state: DATSGDState, t: int) -> NodeTensor:
        return interpolate(state, self.beta)

    def update(
        self, state: DATSGDState, grads: NodeTensor, comm: Communicator, t: int
    ) -> DATSGDState:
        g_mean = comm.all_reduce(grads, "mean")
        alpha = float(t) ** self.weight_power
        z, total = anytime_step(state, g_mean, self.eta(t), alpha)
        return DATSGDState(z=z, weight_sum=total)


__all__ = ["ScheduleFreeDSGD", "ScheduleFreeSGD", "ScheduleFreeState", "interpolate"]
