"""Centralized references: minibatch SGD, Anytime SGD and local SGD (FedAvg-style).

They run on the same ``(m, d)`` node tensors and Communicator as the decentralized methods,
so "decentralized vs centralized" is one config switch. Exact averages go through
``comm.all_reduce`` (an all-reduce on real processes) and are accounted as ring all-reduces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from annotated_types import Ge

from decent._types import NodeTensor
from decent.algorithms.base import (
    WEIGHT_POWER,
    LearningRate,
    Method,
    add_scaled_,
    communicates,
    hparam,
)
from decent.algorithms.dat_sgd import ANYTIME_HINT, AnytimeIterate, DATSGDState, anytime_step
from decent.algorithms.dsgd import LR_DOC, DSGDState, SingleIterate
from decent.comm.base import Communicator


@dataclass(frozen=True)
class MinibatchSGD(SingleIterate, Method):
    r"""Minibatch SGD with the exact average of all nodes' gradients (all-reduce).

    ``x_{t+1} = x_t - eta_t (1/n) sum_i g_t^i`` with ``g_t^i = \nabla f_i(x_t; z_t^i)``;
    every node holds the same ``x``. Equals D-SGD (ATC) with ``W = J``.

    Reference: Dekel et al., "Optimal Distributed Online Prediction Using Mini-Batches",
    JMLR 2012, https://arxiv.org/abs/1012.1367.
    """

    lr: LearningRate = hparam(doc=LR_DOC)

    name: ClassVar[str] = "minibatch_sgd"
    label: ClassVar[str] = "Minibatch SGD"
    centralized: ClassVar[bool] = True

    def update(self, state: DSGDState, grads: NodeTensor, comm: Communicator, t: int) -> DSGDState:
        g_mean = comm.all_reduce(grads, "mean")
        return DSGDState(x=add_scaled_(state.x, g_mean, -self.eta(t)))


@dataclass(frozen=True)
class AnytimeSGD(AnytimeIterate, Method):
    r"""Centralized Anytime SGD: minibatch gradients at the running weighted average.

    With ``alpha_t = t ** weight_power``, ``A_t = alpha_1 + ... + alpha_t`` and
    ``g_t = (1/n) sum_i \nabla f_i(x_t; z_t^i)`` (all-reduce):

    * ``w_{t+1} = w_t - eta_t alpha_t g_t``
    * ``x_{t+1} = (A_{t-1} / A_t) x_t + (alpha_t / A_t) w_{t+1}``

    DAT-SGD on the complete graph equals this method.

    Reference: Cutkosky, "Anytime Online-to-Batch, Optimism and Acceleration", ICML 2019,
    https://arxiv.org/abs/1903.00974.
    """

    lr: LearningRate = hparam(doc=LR_DOC + " The step on w is eta * t^weight_power.")
    weight_power: float = hparam(1.0, WEIGHT_POWER, doc="alpha_t = t ** weight_power.")

    name: ClassVar[str] = "anytime_sgd"
    label: ClassVar[str] = "Anytime SGD"
    centralized: ClassVar[bool] = True
    horizon_scaled: ClassVar[bool] = True
    divergence_hint: ClassVar[str] = ANYTIME_HINT

    def update(
        self, state: DATSGDState, grads: NodeTensor, comm: Communicator, t: int
    ) -> DATSGDState:
        g_mean = comm.all_reduce(grads, "mean")
        a = float(t) ** self.weight_power
        z, total = anytime_step(state, g_mean, self.eta(t), a)
        return DATSGDState(z=z, weight_sum=total)


@dataclass(frozen=True)
class LocalSGD(SingleIterate, Method):
    r"""Local SGD / FedAvg-style periodic exact averaging.

    Every node takes ``x^i <- x^i - eta_t g_t^i``; every ``local_steps``-th round all
    models are replaced by their exact average (all-reduce). ``local_steps = 1`` is
    minibatch SGD. The decentralized counterpart is D-SGD with ``local_steps``.

    References: Stich, "Local SGD Converges Fast and Communicates Little", ICLR 2019,
    https://arxiv.org/abs/1805.09767; McMahan et al., FedAvg, AISTATS 2017,
    https://arxiv.org/abs/1602.05629.
    """

    lr: LearningRate = hparam(doc=LR_DOC)
    local_steps: int = hparam(1, Ge(1), doc="Average every this many rounds.")

    name: ClassVar[str] = "local_sgd"
    label: ClassVar[str] = "Local SGD"
    centralized: ClassVar[bool] = True

    def update(self, state: DSGDState, grads: NodeTensor, comm: Communicator, t: int) -> DSGDState:
        x = add_scaled_(state.x, grads, -self.eta(t))
        if communicates(t, self.local_steps):
            x.copy_(comm.all_reduce(x, "mean").expand_as(x))
        return DSGDState(x=x)
