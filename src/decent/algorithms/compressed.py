r"""Compressed gossip: CHOCO-SGD, and DAT-SGD and gradient tracking in the same style.

CHOCO-Gossip (see ``docs/concepts.md``, "Compressed gossip") keeps per node a public copy
``\hat v_i`` and ``s_i = sum_j W[i, j] \hat v_j`` and sends only ``q_i = Q(v_i - \hat v_i)``
(:meth:`CompressedMethod.gossip`). The state of every method here is its uncompressed method's state
plus ``hat`` and ``s``, both ``(m, k)`` with ``k`` the gossiped width, starting at zero.
``W`` must stay fixed (``s`` accumulates ``W q``), so these methods need a static topology;
a node that joins late would pull ``hat`` and ``s`` from a neighbour, which is exact only
for ``hat`` of the neighbour's own, so they are not offered on networks with churn.

References:
    Koloskova, Stich, Jaggi, "Decentralized Stochastic Optimization and Gossip Algorithms
    with Compressed Communication", ICML 2019, https://arxiv.org/abs/1902.00340.
    Koloskova, Lin, Stich, Jaggi, "Decentralized Deep Learning with Arbitrary Communication
    Compression", ICLR 2020, https://arxiv.org/abs/1907.09356.
    Liao, Li, Li, Pu, "A Compressed Gradient Tracking Method for Decentralized Optimization
    with Linear Convergence", IEEE TAC 2022, https://arxiv.org/abs/2103.13748.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, NamedTuple

import torch
from annotated_types import Gt, Le

from decent._params import declared_as
from decent._types import NodeTensor
from decent.algorithms.base import (
    WEIGHT_POWER,
    LearningRate,
    Method,
    MixingAssumptions,
    add_scaled_,
    hparam,
)
from decent.algorithms.dat_sgd import ANYTIME_HINT, DATSGDState, anytime_step
from decent.algorithms.dsgd import LR_DOC
from decent.algorithms.gradient_tracking import tracking_step
from decent.comm.base import Communicator
from decent.comm.compress import Compressor, CompressorKind, Payload, mix_compressed, row_nodes

__all__ = [
    "ChocoSGD",
    "ChocoState",
    "CompressedDATSGD",
    "CompressedDATSGDState",
    "CompressedGradientTracking",
    "CompressedGradientTrackingState",
]


@dataclass(frozen=True)
class CompressedMethod(Method):
    """The hyperparameters every compressed method shares, and its compressor.

    The compressor's four settings are the :class:`~decent.comm.compress.Compressor`'s own
    declarations (default, rules, doc), taken as keyword-only fields.
    """

    compressor_kind: CompressorKind = declared_as(Compressor, "kind")
    ratio: float = declared_as(Compressor, "ratio")
    bits: int = declared_as(Compressor, "bits")
    compressor_seed: int = declared_as(Compressor, "seed")

    compressed: ClassVar[bool] = True
    blocks: ClassVar[int] = 1  # vectors per message, each compressed on its own

    @cached_property
    def compressor(self) -> Compressor:
        """The message compressor these hyperparameters describe."""
        return Compressor(
            self.compressor_kind,
            ratio=self.ratio,
            bits=self.bits,
            seed=self.compressor_seed,
            contractive=True,  # error feedback needs a contraction: QSGD as Q / tau
        )

    def query(self, state: Any, t: int) -> NodeTensor:
        return state.x  # type: ignore[no-any-return]

    def output(self, state: Any) -> NodeTensor:
        return state.x  # type: ignore[no-any-return]

    def gossip(
        self, v: NodeTensor, state: Any, comm: Communicator, t: int, gamma: float
    ) -> NodeTensor:
        """One CHOCO-Gossip step, in place on ``v`` and the state's ``hat`` and ``s``;
        returns ``v``.

        ``q = Q(v - hat)``, ``hat += q``, ``s += W_t q`` (the round's only message,
        :func:`~decent.comm.compress.mix_compressed`), ``v += gamma (s - hat)``. With the
        identity ``Q`` and ``gamma = 1`` this is plain gossip ``v <- W v`` (``s = W hat``,
        ``hat = v``); with ``W`` doubly stochastic the consensus step keeps the network mean
        of ``v``. With ``blocks > 1`` the ``blocks`` equal parts of each row are compressed
        on their own (DAT-SGD's ``[w | x]``) and sent as one message.

        Raises:
            TypeError: ``comm`` cannot carry compressed gossip (the message says why).
        """
        hat, s = state.hat, state.s
        nodes = row_nodes(comm.node_ids, v.shape[0])
        payload = _payload(self.compressor, v - hat, t, nodes, comm.num_nodes, self.blocks)
        s.add_(mix_compressed(comm, payload, t, self.name))  # raises before any state changes
        hat.add_(payload.dense)
        return add_scaled_(v, s - hat, gamma)


GAMMA_DOC = "Consensus step gamma of CHOCO-Gossip, in (0, 1]; 1 with identity is plain gossip."


def _payload(
    compressor: Compressor, v: torch.Tensor, t: int, nodes: torch.Tensor, n: int, blocks: int
) -> Payload:
    """Compress ``v`` as ``blocks`` vectors side by side, each on its own (one message)."""
    if blocks == 1:
        return compressor.compress(v, t, nodes, n)
    width = v.shape[1] // blocks
    parts = [
        compressor.compress(v[:, b * width : (b + 1) * width], t, nodes, n, block=b)
        for b in range(blocks)
    ]
    sizes = [p.nbytes for p in parts]
    bounds = [sum(sizes[:b]) for b in range(blocks + 1)]

    def encode() -> torch.Tensor:
        return torch.cat([p.wire() for p in parts], dim=1)

    def decode(wire: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [p.decode(wire[:, bounds[b] : bounds[b + 1]]) for b, p in enumerate(parts)], dim=1
        )

    return Payload(torch.cat([p.dense for p in parts], dim=1), bounds[-1], encode, decode)


class ChocoState(NamedTuple):
    x: NodeTensor  # (m, d) local models
    hat: NodeTensor  # (m, d) public copies
    s: NodeTensor  # (m, d) sum_j W[i, j] hat_j


@dataclass(frozen=True)
class ChocoSGD(CompressedMethod):
    r"""CHOCO-SGD: D-SGD whose gossip sends compressed messages (error feedback).

    Per node ``i`` at round ``t`` with ``g_t^i = \nabla f_i(x_t^i; z_t^i)``:

    1. ``x^i <- x^i - eta_t g_t^i``
    2. ``q^i = Q(x^i - \hat x^i)``, ``\hat x^i <- \hat x^i + q^i``,
       ``s^i <- s^i + sum_j W[i, j] q^j`` (one compressed message per neighbour)
    3. ``x^i <- x^i + gamma (s^i - \hat x^i)``

    With ``compressor_kind = "identity"`` and ``consensus_lr = 1`` this is D-SGD (ATC).
    Messages: ``Q``'s size (see :mod:`decent.comm.compress`), counted from the encoding.

    References:
        Koloskova, Stich, Jaggi, ICML 2019, https://arxiv.org/abs/1902.00340 (Algorithm 2).
    """

    lr: LearningRate = hparam(doc=LR_DOC)
    consensus_lr: float = hparam(1.0, Gt(0.0), Le(1.0), doc=GAMMA_DOC)

    name: ClassVar[str] = "choco_sgd"
    label: ClassVar[str] = "CHOCO-SGD"
    assumes: ClassVar[MixingAssumptions] = MixingAssumptions(doubly_stochastic=True, static=True)
    reference: ClassVar[str | None] = "minibatch_sgd"

    def init(self, params: NodeTensor) -> ChocoState:
        return ChocoState(
            x=params.clone(), hat=torch.zeros_like(params), s=torch.zeros_like(params)
        )

    def update(
        self, state: ChocoState, grads: NodeTensor, comm: Communicator, t: int
    ) -> ChocoState:
        x = add_scaled_(state.x, grads, -self.eta(t))
        x = self.gossip(x, state, comm, t, self.consensus_lr)
        return ChocoState(x=x, hat=state.hat, s=state.s)


class CompressedDATSGDState(NamedTuple):
    z: NodeTensor  # (m, 2d) [w | x]
    weight_sum: float
    hat: NodeTensor  # (m, 2d)
    s: NodeTensor  # (m, 2d)

    @property
    def w(self) -> NodeTensor:
        return self.z[:, : self.z.shape[1] // 2]

    @property
    def x(self) -> NodeTensor:
        return self.z[:, self.z.shape[1] // 2 :]


@dataclass(frozen=True)
class CompressedDATSGD(CompressedMethod):
    r"""DAT-SGD with CHOCO-compressed gossip of ``[w | x]`` (experimental).

    The local anytime step of :class:`~decent.algorithms.DATSGD` (``w <- w - eta alpha_t g``
    at the query point ``x``, then ``x <- (A_{t-1} x + alpha_t w) / A_t``), then one
    CHOCO-Gossip step of ``z = [w | x]``; ``w`` and ``x`` are compressed separately (each its
    own top-k, norm or scale) and sent as one message. With the identity compressor and
    ``consensus_lr = 1`` this is DAT-SGD up to rounding. No analysis of this combination is
    published; it is here to be measured.
    """

    lr: LearningRate = hparam(
        doc='Step size eta: a number, or a schedule table such as {kind = "cosine", lr = 0.1}. '
        "The step on w is eta * t^weight_power."
    )
    weight_power: float = hparam(1.0, WEIGHT_POWER, doc="alpha_t = t ** weight_power.")
    consensus_lr: float = hparam(1.0, Gt(0.0), Le(1.0), doc=GAMMA_DOC)

    name: ClassVar[str] = "choco_dat_sgd"
    label: ClassVar[str] = "CHOCO-DAT-SGD"
    assumes: ClassVar[MixingAssumptions] = MixingAssumptions(
        symmetric=True, doubly_stochastic=True, static=True
    )
    reference: ClassVar[str | None] = "anytime_sgd"
    horizon_scaled: ClassVar[bool] = True
    divergence_hint: ClassVar[str] = ANYTIME_HINT
    blocks: ClassVar[int] = 2

    def init(self, params: NodeTensor) -> CompressedDATSGDState:
        z = torch.cat([params, params], dim=1)
        return CompressedDATSGDState(
            z=z, weight_sum=0.0, hat=torch.zeros_like(z), s=torch.zeros_like(z)
        )

    def update(
        self, state: CompressedDATSGDState, grads: NodeTensor, comm: Communicator, t: int
    ) -> CompressedDATSGDState:
        alpha = float(t) ** self.weight_power
        plain = DATSGDState(z=state.z, weight_sum=state.weight_sum)
        z, total = anytime_step(plain, grads, self.eta(t), alpha)
        z = self.gossip(z, state, comm, t, self.consensus_lr)
        return CompressedDATSGDState(z=z, weight_sum=total, hat=state.hat, s=state.s)


class CompressedGradientTrackingState(NamedTuple):
    z: NodeTensor  # (m, 2d) [x | y]
    g_prev: NodeTensor  # (m, d)
    hat: NodeTensor  # (m, 2d)
    s: NodeTensor  # (m, 2d)

    @property
    def x(self) -> NodeTensor:
        return self.z[:, : self.z.shape[1] // 2]


@dataclass(frozen=True)
class CompressedGradientTracking(CompressedMethod):
    r"""Gradient tracking with CHOCO-compressed gossip of ``[x - eta y | y]`` (experimental).

    The step of :class:`~decent.algorithms.GradientTracking` (``y <- y + g_t - g_{t-1}``,
    ``x <- x - eta y``) followed by one CHOCO-Gossip step of ``[x | y]`` instead of the exact
    mix; ``x`` and ``y`` are compressed separately and sent as one message. The consensus
    step keeps the network mean of ``y`` (``W`` doubly stochastic), so ``y`` still tracks
    the mean gradient. With the identity compressor and ``consensus_lr = 1`` this is
    gradient tracking up to rounding. Close in spirit to C-GT (Liao et al. 2022), not its
    exact update.
    """

    lr: LearningRate = hparam(doc=LR_DOC)
    consensus_lr: float = hparam(1.0, Gt(0.0), Le(1.0), doc=GAMMA_DOC)

    name: ClassVar[str] = "choco_gradient_tracking"
    label: ClassVar[str] = "CHOCO-GT"
    assumes: ClassVar[MixingAssumptions] = MixingAssumptions(doubly_stochastic=True, static=True)
    reference: ClassVar[str | None] = "minibatch_sgd"
    blocks: ClassVar[int] = 2

    def init(self, params: NodeTensor) -> CompressedGradientTrackingState:
        z = torch.cat([params, torch.zeros_like(params)], dim=1)
        return CompressedGradientTrackingState(
            z=z, g_prev=torch.zeros_like(params), hat=torch.zeros_like(z), s=torch.zeros_like(z)
        )

    def update(
        self, state: CompressedGradientTrackingState, grads: NodeTensor, comm: Communicator, t: int
    ) -> CompressedGradientTrackingState:
        z = tracking_step(state.z, grads, state.g_prev, self.eta(t))
        z = self.gossip(z, state, comm, t, self.consensus_lr)
        return CompressedGradientTrackingState(z=z, g_prev=grads, hat=state.hat, s=state.s)
