"""Asynchronous decentralized parallel SGD (AD-PSGD), on a simulated network's clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from decent._types import NodeTensor
from decent.algorithms.base import AlgorithmError, LearningRate, Method, MixingAssumptions, hparam
from decent.algorithms.dsgd import LR_DOC
from decent.comm.base import Communicator, PairwiseEvents


class ADPSGDState(NamedTuple):
    x: NodeTensor  # (m, d) local models, averaged in place by neighbours at any time
    read: NodeTensor  # (m, d) the model each node's gradient in flight is taken at


@dataclass(frozen=True)
class ADPSGD(Method):
    r"""AD-PSGD (Lian et al. 2018): every node computes, averages with one neighbour, steps.

    Each node loops on its own clock, waiting for nobody: it reads its model
    ``\hat x_i``, computes ``g_i = \nabla f_i(\hat x_i; z)``, averages with one neighbour
    ``j`` drawn uniformly (``x_i, x_j <- (x_i + x_j) / 2``, atomically), and steps
    ``x_i <- x_i - eta g_i``. While it computes, its neighbours' averagings change ``x_i``,
    so ``g_i`` is taken at a stale model: that is the method's staleness, and fast nodes
    take more steps than slow ones.

    Runs on :class:`~decent.comm.network.NetworkCommunicator` only, whose clock decides
    which node finishes when (:meth:`~decent.comm.network.NetworkCommunicator.pairwise`).
    An engine round is a slice of simulated time (half a mean step), in which about half
    the nodes finish; the engine computes every node's gradient at its ``read`` point and
    the method uses those of the nodes that finished, in the order of their times, so the
    iterates are those of the one-event-at-a-time algorithm. ``grad_evals`` in the
    records counts the gradients used, ``time/sim`` the simulated seconds.

    Pairwise averaging is symmetric and doubly stochastic: the network average changes
    only by the gradient steps.

    References:
        Lian, Zhang, Zhang, Liu, "Asynchronous Decentralized Parallel Stochastic Gradient
        Descent", ICML 2018, https://arxiv.org/abs/1710.06952.
    """

    lr: LearningRate = hparam(doc=LR_DOC)

    name: ClassVar[str] = "ad_psgd"
    label: ClassVar[str] = "AD-PSGD"
    assumes: ClassVar[MixingAssumptions] = MixingAssumptions(symmetric=True)
    reference: ClassVar[str | None] = "minibatch_sgd"
    needs_clock: ClassVar[bool] = True

    def init(self, params: NodeTensor) -> ADPSGDState:
        return ADPSGDState(x=params.clone(), read=params.clone())

    def query(self, state: ADPSGDState, t: int) -> NodeTensor:
        return state.read

    def output(self, state: ADPSGDState) -> NodeTensor:
        return state.x

    def update(
        self, state: ADPSGDState, grads: NodeTensor, comm: Communicator, t: int
    ) -> ADPSGDState:
        if not isinstance(comm, PairwiseEvents):
            raise AlgorithmError(
                "ad_psgd runs on a simulated network's clock, which decides who finishes "
                "when: use decent.comm.network.NetworkCommunicator (a [network] section in "
                f"a config), got {type(comm).__name__}"
            )
        eta = self.eta(t)
        x, read = state.x, state.read
        for i, j, solo in comm.pairwise(x, t).passes:
            if i.numel():
                mean = x.index_select(0, i).add_(x.index_select(0, j)).mul_(0.5)
                x.index_copy_(0, j, mean)
                stepped = mean.sub_(grads.index_select(0, i), alpha=eta)
                x.index_copy_(0, i, stepped)
                read.index_copy_(0, i, stepped)
            if solo.numel():
                stepped = x.index_select(0, solo).sub_(grads.index_select(0, solo), alpha=eta)
                x.index_copy_(0, solo, stepped)
                read.index_copy_(0, solo, stepped)
        return ADPSGDState(x=x, read=read)
