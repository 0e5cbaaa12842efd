"""Decentralized SGD (D-SGD / D-PSGD), adapt-then-combine and combine-then-adapt."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal, NamedTuple

from decent._types import NodeTensor
from decent.algorithms._common import AlgorithmError, check_local_steps, check_lr, communicates
from decent.algorithms.base import LearningRate
from decent.comm.base import Communicator


class DSGDState(NamedTuple):
    x: NodeTensor  # (m, d) local models


class SingleIterate:
    """``init / query / output`` of methods whose state is one model per node."""

    def init(self, params: NodeTensor) -> DSGDState:
        return DSGDState(x=params.clone())

    def query(self, state: DSGDState) -> NodeTensor:
        return state.x

    def output(self, state: DSGDState) -> NodeTensor:
        return state.x


@dataclass(frozen=True)
class DSGD(SingleIterate):
    r"""Decentralized SGD: a local SGD step and one gossip step per round.

    Per node ``i`` at round ``t`` with ``g_t^i = \nabla f_i(x_t^i; z_t^i)``:

    * ``variant="atc"`` (adapt-then-combine, Koloskova et al. 2020):
      ``x_{t+1}^i = sum_j W_t[i, j] (x_t^j - eta_t g_t^j)``
    * ``variant="cta"`` (combine-then-adapt, Lian et al. 2017 D-PSGD):
      ``x_{t+1}^i = sum_j W_t[i, j] x_t^j - eta_t g_t^i``

    With ``local_steps = tau > 1`` nodes take plain SGD steps and gossip only every
    ``tau``-th round (local updates; ``tau = 1`` is plain D-SGD). D-SGD (ATC) on the complete
    graph ``W = J`` is minibatch SGD.

    Communicates one ``d``-vector per neighbour per gossip round.

    References:
        Lian et al., "Can Decentralized Algorithms Outperform Centralized Algorithms?",
        NeurIPS 2017, https://arxiv.org/abs/1705.09056. Koloskova et al., "A Unified
        Theory of Decentralized SGD with Changing Topology and Local Updates", ICML 2020,
        https://arxiv.org/abs/2003.10422.

    Example:
        >>> import torch
        >>> from decent.comm import SimCommunicator
        >>> from decent.topology import complete
        >>> algo = DSGD(lr=0.5)
        >>> state = algo.init(torch.zeros(3, 1, dtype=torch.float64))
        >>> grads = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
        >>> algo.update(state, grads, SimCommunicator(complete(3)), t=1).x.squeeze(1).tolist()
        [-1.0, -1.0, -1.0]
    """

    lr: LearningRate
    variant: Literal["atc", "cta"] = "atc"
    local_steps: int = 1
    name: ClassVar[str] = "dsgd"
    _eta: Callable[[int], float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_eta", check_lr("dsgd", self.lr))
        if self.variant not in ("atc", "cta"):
            raise AlgorithmError(
                f"dsgd.variant must be 'atc' (adapt-then-combine) or 'cta' (combine-then-adapt), "
                f"got {self.variant!r}"
            )
        check_local_steps("dsgd", self.local_steps)

    def update(self, state: DSGDState, grads: NodeTensor, comm: Communicator, t: int) -> DSGDState:
        eta = self._eta(t)
        x = state.x
        if not communicates(t, self.local_steps):
            return DSGDState(x=x.add_(grads, alpha=-eta))
        if self.variant == "atc":
            return DSGDState(x=comm.mix(x.add_(grads, alpha=-eta), t))
        return DSGDState(x=comm.mix(x, t).add_(grads, alpha=-eta))
