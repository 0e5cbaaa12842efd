r"""Gradient transforms: deep-learning optimizers composed in front of a decentralized update.

A transform maps the stochastic gradient ``g`` a node computed into the direction ``u`` its
algorithm steps along. It is a frozen dataclass of hyperparameters with pure methods over
a ``NamedTuple`` state (optax's shape):

* ``init(params) -> state``: ``params`` is the ``(m, d)`` point the algorithm steps;
* ``update(updates, state, params, t) -> (updates, state)``: ``params`` is the point the
  step moves (DAT-SGD's ``w``, D-SGD's ``x``) before the step, ``t`` the round;
* ``observe(state, before, after, scale) -> state``: what the transform learns from the
  model change of the round, ``(before - after) / scale`` where ``scale`` is the factor the
  algorithm multiplied ``u`` by (``eta_t``; ``eta_t alpha_t`` for the anytime methods).
  Only quasi-global momentum uses it.

:class:`Transformed` turns any :class:`~decent.algorithms.base.Algorithm` and a list of
transforms into an Algorithm again, so the engine, the simulator, the distributed runtime
and :class:`decent.parallel.DecentralizedDataParallel` run it unchanged::

    u_t = T_k( ... T_1(g_t) ... )            the chain, in list order
    state <- algorithm.update(state, u_t)    the unchanged decentralized step

Order matters as in optax: ``[weight_decay(l), momentum(b)]`` is L2 regularisation inside
the momentum (``torch.optim.SGD(weight_decay=l, momentum=b)``), ``[momentum(b),
weight_decay(l)]`` is decoupled weight decay (SGDW), ``[adam(), weight_decay(l)]`` is
AdamW (``torch.optim.AdamW(weight_decay=l)``; torch's ``p <- (1 - lr l) p`` is the same
step). Step sizes and schedules stay the algorithm's ``lr``.

How each combines with DAT-SGD's anytime averaging (the gradient is taken at the query
point ``x``, the transform acts on the step to ``w``, ``w <- w - eta_t alpha_t u_t``):
momentum and Adam accumulate gradients taken at the ``x_t`` of successive rounds; weight
decay pulls ``w`` (not ``x``) towards zero; quasi-global momentum measures the change of
``w`` over the round, gossip included, in units of ``eta_t alpha_t``. ``docs/concepts.md``
says the same with the formulas.

References:
    Polyak, "Some methods of speeding up the convergence of iteration methods", 1964.
    Sutskever et al., "On the importance of initialization and momentum in deep learning",
    ICML 2013. Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019,
    https://arxiv.org/abs/1711.05101. Kingma & Ba, "Adam", ICLR 2015,
    https://arxiv.org/abs/1412.6980. Lin, Karimireddy, Stich, Jaggi, "Quasi-Global
    Momentum: Accelerating Decentralized Deep Learning on Heterogeneous Data", ICML 2021,
    https://arxiv.org/abs/2102.04761.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from annotated_types import Ge, Lt

from decent._types import NodeTensor
from decent.algorithms.base import Algorithm, AlgorithmError, Method, hparam
from decent.comm.base import Communicator

__all__ = [
    "TRANSFORMS",
    "Adam",
    "AdamW",
    "GradientTransform",
    "Momentum",
    "QuasiGlobalMomentum",
    "Transformed",
    "TransformedState",
    "WeightDecay",
    "adam",
    "adamw",
    "momentum",
    "quasi_global_momentum",
    "step_scale",
    "stepped_point",
    "weight_decay",
    "with_transforms",
]


class EmptyState(NamedTuple):
    """A transform without state."""


class MomentumState(NamedTuple):
    buf: NodeTensor  # (m, d) the momentum buffer


class AdamState(NamedTuple):
    mu: NodeTensor  # (m, d) first moment
    nu: NodeTensor  # (m, d) second moment


class GradientTransform(Method):
    """Base of the transforms: hyperparameters checked from their :func:`hparam` rules.

    ``observes``: whether :meth:`observe` must see the model change of the round (the
    wrapper then keeps a copy of the stepped point across the update).
    """

    observes: ClassVar[bool] = False

    def init(self, params: NodeTensor) -> Any:
        return EmptyState()

    def update(
        self, updates: NodeTensor, state: Any, params: NodeTensor, t: int
    ) -> tuple[NodeTensor, Any]:
        raise NotImplementedError

    def observe(self, state: Any, before: NodeTensor, after: NodeTensor, scale: float) -> Any:
        return state


@dataclass(frozen=True)
class Momentum(GradientTransform):
    r"""Heavy-ball or Nesterov momentum (``torch.optim.SGD``'s, dampening 0).

    ``m_t = beta m_{t-1} + g_t`` (``m_0 = 0``); the output is ``u_t = m_t`` (heavy ball)
    or ``u_t = g_t + beta m_t`` (``nesterov=True``).

    Example:
        >>> import torch
        >>> mom = Momentum(beta=0.5)
        >>> g = torch.ones(1, 2, dtype=torch.float64)
        >>> s = mom.init(g)
        >>> u, s = mom.update(g, s, g, 1)
        >>> u, s = mom.update(g, s, g, 2)
        >>> u.tolist()
        [[1.5, 1.5]]
    """

    beta: float = hparam(0.9, Ge(0.0), Lt(1.0), doc="Momentum coefficient.")
    nesterov: bool = hparam(False, doc="Nesterov's look-ahead: u = g + beta * m.")

    name: ClassVar[str] = "momentum"
    label: ClassVar[str] = "momentum"

    def init(self, params: NodeTensor) -> MomentumState:
        return MomentumState(buf=torch.zeros_like(params))

    def update(
        self, updates: NodeTensor, state: MomentumState, params: NodeTensor, t: int
    ) -> tuple[NodeTensor, MomentumState]:
        buf = state.buf * self.beta + updates
        out = updates + buf * self.beta if self.nesterov else buf
        return out, MomentumState(buf=buf)


@dataclass(frozen=True)
class WeightDecay(GradientTransform):
    r"""Add ``decay * params`` to the update: ``u_t = v_t + lambda p_t``.

    ``p_t`` is the point the algorithm steps (DAT-SGD's ``w_t``). Placed before momentum
    or Adam it is L2 regularisation; after them it is decoupled weight decay.

    Example:
        >>> import torch
        >>> p = torch.full((1, 2), 2.0, dtype=torch.float64)
        >>> WeightDecay(0.5).update(torch.zeros(1, 2, dtype=torch.float64), (), p, 1)[0].tolist()
        [[1.0, 1.0]]
    """

    decay: float = hparam(dataclasses.MISSING, Ge(0.0), doc="Weight decay coefficient lambda.")

    name: ClassVar[str] = "weight_decay"
    label: ClassVar[str] = "weight decay"

    def update(
        self, updates: NodeTensor, state: Any, params: NodeTensor, t: int
    ) -> tuple[NodeTensor, Any]:
        return updates + params * self.decay, state


@dataclass(frozen=True)
class Adam(GradientTransform):
    r"""Adam's preconditioning (``torch.optim.Adam`` without its learning rate).

    ``mu_t = b1 mu_{t-1} + (1 - b1) g_t``, ``nu_t = b2 nu_{t-1} + (1 - b2) g_t^2``,
    ``u_t = (mu_t / (1 - b1^t)) / (sqrt(nu_t / (1 - b2^t)) + eps)``; ``t`` is the round.
    Follow with :class:`WeightDecay` for AdamW.

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
    https://arxiv.org/abs/1412.6980.

    Example:
        >>> import torch
        >>> g = torch.tensor([[2.0, -3.0]], dtype=torch.float64)
        >>> u, _ = Adam(eps=0.0).update(g, Adam().init(g), g, 1)
        >>> u.tolist()
        [[1.0, -1.0]]
    """

    b1: float = hparam(0.9, Ge(0.0), Lt(1.0), doc="First-moment decay.")
    b2: float = hparam(0.999, Ge(0.0), Lt(1.0), doc="Second-moment decay.")
    eps: float = hparam(1e-8, Ge(0.0), doc="Added to the root of the second moment.")

    name: ClassVar[str] = "adam"
    label: ClassVar[str] = "Adam"

    def init(self, params: NodeTensor) -> AdamState:
        return AdamState(mu=torch.zeros_like(params), nu=torch.zeros_like(params))

    def update(
        self, updates: NodeTensor, state: AdamState, params: NodeTensor, t: int
    ) -> tuple[NodeTensor, AdamState]:
        mu = state.mu * self.b1 + updates * (1.0 - self.b1)
        nu = state.nu * self.b2 + updates * updates * (1.0 - self.b2)
        mu_hat = mu / (1.0 - self.b1**t)
        denom = (nu / (1.0 - self.b2**t)).sqrt() + self.eps
        return mu_hat / denom, AdamState(mu=mu, nu=nu)


@dataclass(frozen=True)
class AdamW(Adam):
    r"""Adam with decoupled weight decay in one transform (``torch.optim.AdamW`` without its
    learning rate): ``u_t = adam(g_t) + lambda p_t``.

    The same step as the chain ``[adam(b1, b2, eps), weight_decay(decay)]``, with torch's
    default ``decay = 0.01`` so that a method can be named ``dsgd+adamw`` without a table
    (``p_t`` is the point the algorithm steps; torch's ``p <- (1 - lr lambda) p`` followed by
    the Adam step is ``p <- p - lr u_t``).

    Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019,
    https://arxiv.org/abs/1711.05101.

    Example:
        >>> import torch
        >>> g = torch.tensor([[2.0, -3.0]], dtype=torch.float64)
        >>> p = torch.full((1, 2), 10.0, dtype=torch.float64)
        >>> u, _ = AdamW(eps=0.0, decay=0.1).update(g, AdamW().init(p), p, 1)
        >>> u.tolist()
        [[2.0, 0.0]]
    """

    decay: float = hparam(0.01, Ge(0.0), doc="Decoupled weight decay coefficient lambda.")

    name: ClassVar[str] = "adamw"
    label: ClassVar[str] = "AdamW"

    def update(
        self, updates: NodeTensor, state: AdamState, params: NodeTensor, t: int
    ) -> tuple[NodeTensor, AdamState]:
        u, state = super().update(updates, state, params, t)
        return u + params * self.decay, state


@dataclass(frozen=True)
class QuasiGlobalMomentum(GradientTransform):
    r"""Quasi-global momentum (QG-DSGDm): momentum built from the model change after gossip.

    Per node with the buffer ``m_hat`` (``0`` at the start):

    1. ``u_t = g_t + beta m_hat_{t-1}``  (the algorithm then steps ``p <- p - s_t u_t``
       and gossips; ``s_t`` is the step's factor: ``eta_t``, or ``eta_t alpha_t`` for
       DAT-SGD)
    2. ``d_t = (p_t - p_{t+1}) / s_t``  (the whole round's change, gossip included)
    3. ``m_hat_t = mu m_hat_{t-1} + (1 - mu) d_t``  with ``mu = beta``

    A round with ``s_t = 0`` leaves ``m_hat`` unchanged. Gossip makes ``d_t`` carry the
    neighbours' directions, which is what helps under heterogeneous data.

    Reference: Lin, Karimireddy, Stich, Jaggi, "Quasi-Global Momentum: Accelerating
    Decentralized Deep Learning on Heterogeneous Data", ICML 2021, Algorithm 1,
    https://arxiv.org/abs/2102.04761.
    """

    beta: float = hparam(0.9, Ge(0.0), Lt(1.0), doc="Momentum coefficient (also mu).")

    name: ClassVar[str] = "quasi_global_momentum"
    label: ClassVar[str] = "QGM"
    observes: ClassVar[bool] = True

    def init(self, params: NodeTensor) -> MomentumState:
        return MomentumState(buf=torch.zeros_like(params))

    def update(
        self, updates: NodeTensor, state: MomentumState, params: NodeTensor, t: int
    ) -> tuple[NodeTensor, MomentumState]:
        return updates + state.buf * self.beta, state

    def observe(
        self, state: MomentumState, before: NodeTensor, after: NodeTensor, scale: float
    ) -> MomentumState:
        if scale == 0:
            return state
        change = (before - after) / scale
        return MomentumState(buf=state.buf * self.beta + change * (1.0 - self.beta))


TRANSFORMS: dict[str, type[GradientTransform]] = {
    cls.name: cls for cls in (Momentum, WeightDecay, Adam, AdamW, QuasiGlobalMomentum)
}
"""The transforms by ``kind``: what a config's ``algorithm.transforms`` tables name."""


def momentum(beta: float = 0.9, *, nesterov: bool = False) -> Momentum:
    """Heavy-ball (or Nesterov) momentum; see :class:`Momentum`."""
    return Momentum(beta=beta, nesterov=nesterov)


def weight_decay(decay: float) -> WeightDecay:
    """Weight decay ``u += decay * p``; see :class:`WeightDecay`."""
    return WeightDecay(decay=decay)


def adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Adam:
    """Adam preconditioning; see :class:`Adam`."""
    return Adam(b1=b1, b2=b2, eps=eps)


def adamw(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, decay: float = 0.01) -> AdamW:
    """Adam preconditioning with decoupled weight decay; see :class:`AdamW`."""
    return AdamW(b1=b1, b2=b2, eps=eps, decay=decay)


def quasi_global_momentum(beta: float = 0.9) -> QuasiGlobalMomentum:
    """Quasi-global momentum; see :class:`QuasiGlobalMomentum`."""
    return QuasiGlobalMomentum(beta=beta)


# --------------------------------------------------------------------------- the wrapper


def stepped_point(state: Any) -> NodeTensor:
    """The iterate a round's gradient step moves: ``w`` for the anytime methods, else ``x``.

    The anytime states pack ``[w | x]`` as ``z`` (``w`` the first half); the others keep the
    model as ``x`` (gradient tracking as the first half of ``z = [x | y]``).

    Raises:
        AlgorithmError: a state with neither (an algorithm this wrapper does not know).
    """
    for attr in ("w", "x"):
        value = getattr(state, attr, None)
        if isinstance(value, torch.Tensor):
            return value
    raise AlgorithmError(
        f"gradient transforms do not know which iterate a {type(state).__name__} steps; "
        "use them with DSGD, DATSGD, GradientTracking, the CHOCO family or the centralized "
        "references"
    )


def step_scale(algorithm: Any, t: int) -> float:
    """The factor ``s_t`` the algorithm multiplies the update by: ``eta_t`` or ``eta_t alpha_t``."""
    eta = float(algorithm.eta(t))
    if getattr(algorithm, "horizon_scaled", False):
        return eta * float(t) ** float(algorithm.weight_power)
    return eta


class TransformedState(NamedTuple):
    """The algorithm's state and one state per transform, in chain order."""

    inner: Any
    transforms: tuple[Any, ...]


def _inner(attr: str) -> Any:
    """A read-only property: the wrapped algorithm's ``attr`` (AttributeError if it has none)."""
    return property(lambda self: getattr(self.algorithm, attr))


@dataclass(frozen=True)
class Transformed:
    """``algorithm`` stepping along the output of a chain of gradient transforms.

    An :class:`~decent.algorithms.base.Algorithm` itself: ``query`` and ``output`` are the
    algorithm's, ``update`` runs the chain on the gradients (at the point the algorithm
    steps, before its step), then the algorithm's own ``update``, then lets observing
    transforms see the round's model change. ``label``, ``lr``, ``eta``, ``assumes``,
    ``centralized``, ``reference``, ``horizon_scaled``, ``divergence_hint``, ``needs_clock``
    and ``compressed`` are the algorithm's.

    Example:
        >>> import torch
        >>> from decent.algorithms import DSGD
        >>> from decent.comm import SimCommunicator
        >>> from decent.topology import complete
        >>> algo = with_transforms(DSGD(lr=1.0), [momentum(0.5)])
        >>> s = algo.init(torch.zeros(2, 1, dtype=torch.float64))
        >>> g = torch.ones(2, 1, dtype=torch.float64)
        >>> comm = SimCommunicator(complete(2))
        >>> s = algo.update(algo.update(s, g, comm, 1), g, comm, 2)
        >>> algo.output(s)[:, 0].tolist(), algo.name
        ([-2.5, -2.5], 'dsgd+momentum')
    """

    algorithm: Algorithm[Any]
    transforms: tuple[GradientTransform, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.transforms, tuple):
            object.__setattr__(self, "transforms", tuple(self.transforms))
        for i, tr in enumerate(self.transforms):
            if not isinstance(tr, GradientTransform):
                raise AlgorithmError(
                    f"transforms[{i}] must be a gradient transform ({', '.join(TRANSFORMS)}), "
                    f"got {type(tr).__name__}"
                )
        if isinstance(self.algorithm, Transformed):
            raise AlgorithmError(
                "algorithm is already Transformed; pass all transforms in one list"
            )
        if self.observes and not hasattr(self.algorithm, "eta"):
            raise AlgorithmError(
                f"quasi_global_momentum needs the algorithm's step size, and "
                f"{type(self.algorithm).__name__} has no eta(t)"
            )

    @property
    def name(self) -> str:
        return "+".join([self.algorithm.name, *(tr.name for tr in self.transforms)])

    @property
    def observes(self) -> bool:
        return any(tr.observes for tr in self.transforms)

    # what callers read of an algorithm (runners, configs, reports): the algorithm's own
    label = _inner("label")
    lr = _inner("lr")
    eta = _inner("eta")
    assumes = _inner("assumes")
    centralized = _inner("centralized")
    reference = _inner("reference")
    horizon_scaled = _inner("horizon_scaled")
    divergence_hint = _inner("divergence_hint")
    needs_clock = _inner("needs_clock")
    compressed = _inner("compressed")

    def init(self, params: NodeTensor) -> TransformedState:
        inner = self.algorithm.init(params)
        point = stepped_point(inner)
        return TransformedState(inner, tuple(tr.init(point) for tr in self.transforms))

    def query(self, state: TransformedState, t: int) -> NodeTensor:
        return self.algorithm.query(state.inner, t)

    def output(self, state: TransformedState) -> NodeTensor:
        return self.algorithm.output(state.inner)

    def update(
        self, state: TransformedState, grads: NodeTensor, comm: Communicator, t: int
    ) -> TransformedState:
        point = stepped_point(state.inner)
        u = grads
        new_states = []
        for tr, ts in zip(self.transforms, state.transforms, strict=True):
            u, ts = tr.update(u, ts, point, t)
            new_states.append(ts)
        before = point.clone() if self.observes else None  # update consumes the state
        inner = self.algorithm.update(state.inner, u, comm, t)
        if before is not None:
            after = stepped_point(inner)
            scale = step_scale(self.algorithm, t)
            new_states = [
                tr.observe(ts, before, after, scale) if tr.observes else ts
                for tr, ts in zip(self.transforms, new_states, strict=True)
            ]
        return TransformedState(inner, tuple(new_states))


def with_transforms(
    algorithm: Algorithm[Any], transforms: Sequence[GradientTransform]
) -> Algorithm[Any]:
    """``algorithm`` with the gradient transforms in front (itself when the list is empty)."""
    if not transforms:
        return algorithm
    return Transformed(algorithm, tuple(transforms))
