"""Centralized references: minibatch SGD, Anytime SGD and local SGD (FedAvg-style).

They run on the same ``(m, d)`` node tensors and Communicator as the decentralized methods,
so "decentralized vs centralized" is one config switch. Exact averages go through
``comm.all_reduce`` (an all-reduce on real processes) and are accounted as ring all-reduces.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from decent._types import NodeTensor
from decent.algorithms._common import check_finite, check_local_steps, check_lr, communicates
from decent.algorithms.base import LearningRate
from decent.algorithms.dat_sgd import AnytimeIterate, DATSGDState, anytime_step
from decent.algorithms.dsgd import DSGDState, SingleIterate
from decent.comm.base import Communicator


@dataclass(frozen=True)
class MinibatchSGD(SingleIterate):
    r"""Minibatch SGD with the exact average of all nodes' gradients (all-reduce).

    ``x_{t+1} = x_t - eta_t (1/n) sum_i g_t^i`` with ``g_t^i = \nabla f_i(x_t; z_t^i)``;
    every node holds the same ``x``. Equals D-SGD (ATC) with ``W = J``.

    Reference: Dekel et al., "Optimal Distributed Online Prediction Using Mini-Batches",
    JMLR 2012, https://arxiv.org/abs/1012.1367.
    """

    lr: LearningRate
    name: ClassVar[str] = "minibatch_sgd"
    _eta: Callable[[int], float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_eta", check_lr("minibatch_sgd", self.lr))

    def update(self, state: DSGDState, grads: NodeTensor, comm: Communicator, t: int) -> DSGDState:
        g_mean = comm.all_reduce(grads, "mean")
        return DSGDState(x=state.x.sub_(g_mean, alpha=self._eta(t)))


@dataclass(frozen=True)
class AnytimeSGD(AnytimeIterate):
    r"""Centralized Anytime SGD: minibatch gradients at the running weighted average.

    With ``alpha_t = t ** weight_power``, ``A_t = alpha_1 + ... + alpha_t`` and
    ``g_t = (1/n) sum_i \nabla f_i(x_t; z_t^i)`` (all-reduce):

    * ``w_{t+1} = w_t - eta_t alpha_t g_t``
    * ``x_{t+1} = (A_{t-1} / A_t) x_t + (alpha_t / A_t) w_{t+1}``

    DAT-SGD on the complete graph equals this method.

    Reference: Cutkosky, "Anytime Online-to-Batch, Optimism and Acceleration", ICML 2019,
    https://arxiv.org/abs/1903.00974.
    """

    lr: LearningRate
    weight_power: float = 1.0
    name: ClassVar[str] = "anytime_sgd"
    _eta: Callable[[int], float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_eta", check_lr("anytime_sgd", self.lr))
        check_finite("anytime_sgd", "weight_power", self.weight_power, minimum=0.0)

    def update(
        self, state: DATSGDState, grads: NodeTensor, comm: Communicator, t: int
    ) -> DATSGDState:
        g_mean = comm.all_reduce(grads, "mean")
        a = float(t) ** self.weight_power
        z, total = anytime_step(state, g_mean, self._eta(t), a)
        return DATSGDState(z=z, weight_sum=total)


@dataclass(frozen=True)
class LocalSGD(SingleIterate):
    r"""Local SGD / FedAvg-style periodic exact averaging.

    Every node takes ``x^i <- x^i - eta_t g_t^i``; every ``local_steps``-th round all
    models are replaced by their exact average (all-reduce). ``local_steps = 1`` is
    minibatch SGD. The decentralized counterpart is D-SGD with ``local_steps``.

    References: Stich, "Local SGD Converges Fast and Communicates Little", ICLR 2019,
    https://arxiv.org/abs/1805.09767; McMahan et al., FedAvg, AISTATS 2017,
    https://arxiv.org/abs/1602.05629.
    """

    lr: LearningRate
    local_steps: int = 1
    name: ClassVar[str] = "local_sgd"
    _eta: Callable[[int], float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_eta", check_lr("local_sgd", self.lr))
        check_local_steps("local_sgd", self.local_steps)

    def update(self, state: DSGDState, grads: NodeTensor, comm: Communicator, t: int) -> DSGDState:
        x = state.x.add_(grads, alpha=-self._eta(t))
        if communicates(t, self.local_steps):
            x.copy_(comm.all_reduce(x, "mean").expand_as(x))
        return DSGDState(x=x)
