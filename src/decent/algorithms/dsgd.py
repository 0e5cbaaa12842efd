"""Decentralized SGD (D-SGD / D-PSGD), adapt-then-combine and combine-then-adapt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple

from annotated_types import Ge

from decent._types import NodeTensor
from decent.algorithms.base import (
    LearningRate,
    Method,
    MixingAssumptions,
    add_scaled_,
    communicates,
    hparam,
)
from decent.comm.base import Communicator

LR_DOC = 'Step size eta: a number, or a schedule table such as {kind = "cosine", lr = 0.1}.'


class DSGDState(NamedTuple):
    x: NodeTensor  # (m, d) local models


class SingleIterate:
    """``init / query / output`` of methods whose state is one model per node."""

    def init(self, params: NodeTensor) -> DSGDState:
        return DSGDState(x=params.clone())

    def query(self, state: DSGDState, t: int) -> NodeTensor:
        return state.x

    def output(self, state: DSGDState) -> NodeTensor:
        return state.x


@dataclass(frozen=True)
class DSGD(SingleIterate, Method):
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

    lr: LearningRate = hparam(doc=LR_DOC)
    variant: Literal["atc", "cta"] = hparam(
        "atc", doc="atc: adapt then combine; cta: combine then adapt (D-PSGD)."
    )
    local_steps: int = hparam(1, Ge(1), doc="Gossip every this many rounds.")

    name: ClassVar[str] = "dsgd"
    label: ClassVar[str] = "D-SGD"
    assumes: ClassVar[MixingAssumptions] = MixingAssumptions(doubly_stochastic=True)
    reference: ClassVar[str | None] = "minibatch_sgd"

    def update(self, state: DSGDState, grads: NodeTensor, comm: Communicator, t: int) -> DSGDState:
        eta = self.eta(t)
        x = state.x
        if not communicates(t, self.local_steps):
            return DSGDState(x=add_scaled_(x, grads, -eta))
        if self.variant == "atc":
            return DSGDState(x=comm.mix(add_scaled_(x, grads, -eta), t))
        return DSGDState(x=add_scaled_(comm.mix(x, t), grads, -eta))
