"""The Algorithm protocol, the base of the built-in methods, and step-size schedules.

An algorithm is a frozen dataclass of hyperparameters with pure methods over a
``NamedTuple`` state:

* ``init(params) -> state``: ``params`` is ``(m, d)``, every row the common start point;
* ``query(state, t) -> (m, d)``: where the gradients of round ``t`` are taken;
* ``update(state, grads, comm, t) -> state``: one round; the only place rows interact is
  ``comm``;
* ``output(state) -> (m, d)``: what is evaluated.

``update`` may reuse the storage of the ``state`` it is given (the way JAX donates
buffers): the input state is consumed. Clone it first if you need it afterwards. This is
what lets thousands of nodes' parameters be updated without a fresh multi-megabyte
allocation every round.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import annotated_types as at
import torch

from decent._elementwise import scalar
from decent._params import ROUNDS_MAX, Checked, check_value, hparam
from decent._params import rule_text as rule_text
from decent._types import NodeTensor
from decent.comm.base import Communicator

S = TypeVar("S")


@runtime_checkable
class Algorithm(Protocol[S]):
    """A decentralized (or centralized reference) first-order method."""

    @property
    def name(self) -> str: ...

    def init(self, params: NodeTensor) -> S: ...

    def query(self, state: S, t: int) -> NodeTensor: ...

    def update(self, state: S, grads: NodeTensor, comm: Communicator, t: int) -> S: ...

    def output(self, state: S) -> NodeTensor: ...


class Schedule(Protocol):
    """A step size as a function of the round ``t >= 1``."""

    def __call__(self, t: int) -> float: ...


LearningRate = float | Schedule | Callable[[int], float]


def as_schedule(lr: LearningRate) -> Callable[[int], float]:
    """Turn a float into a constant schedule; pass callables through."""
    if callable(lr):
        return lr
    value = float(lr)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
    return Constant(value)


LR = at.Interval(ge=0.0, le=1e6)
"""A step size's rule."""
WEIGHT_POWER = at.Interval(ge=0.0, le=10.0)
"""The rule of an anytime method's ``alpha_t = t ** weight_power`` (beyond 10 it overflows)."""


@dataclass(frozen=True)
class Constant(Checked):
    """``eta_t = lr``."""

    lr: float = hparam(dataclasses.MISSING, LR, doc="The step size.")
    kind: ClassVar[str] = "constant"

    def __call__(self, t: int) -> float:
        return self.lr


@dataclass(frozen=True)
class InverseSqrt(Checked):
    """``eta_t = lr * sqrt(t0 / (t0 + t - 1))``: constant ``lr`` at ``t = 1``, then ``~ 1/sqrt(t)``."""

    lr: float = hparam(dataclasses.MISSING, LR, doc="Step size at t = 1.")
    t0: int = hparam(1, at.Interval(ge=1, le=ROUNDS_MAX), doc="Rounds before the decay sets in.")
    kind: ClassVar[str] = "inverse_sqrt"

    def __call__(self, t: int) -> float:
        return self.lr * math.sqrt(self.t0 / (self.t0 + t - 1))


@dataclass(frozen=True)
class Cosine(Checked):
    """``eta_t = final + (lr - final) * (1 + cos(pi (t - 1) / total)) / 2`` for ``t <= total``."""

    lr: float = hparam(dataclasses.MISSING, LR, doc="Step size at t = 1.")
    total: int = hparam(
        dataclasses.MISSING, at.Interval(ge=1, le=ROUNDS_MAX), doc="Decay length in rounds."
    )
    final: float = hparam(0.0, LR, doc="Step size reached at t = total + 1.")
    kind: ClassVar[str] = "cosine"

    def __call__(self, t: int) -> float:
        frac = min(max(t - 1, 0), self.total) / max(self.total, 1)
        return self.final + (self.lr - self.final) * 0.5 * (1.0 + math.cos(math.pi * frac))


@dataclass(frozen=True)
class Warmup(Checked):
    """Linear warm-up over ``steps`` rounds into ``then``: ``eta_t = then(t) * min(1, t / steps)``."""

    then: Any = hparam(doc="Step size or schedule after the warm-up.")
    steps: int = hparam(
        dataclasses.MISSING, at.Interval(ge=1, le=ROUNDS_MAX), doc="Warm-up length in rounds."
    )
    kind: ClassVar[str] = "warmup"

    def __call__(self, t: int) -> float:
        base = self.then(t) if callable(self.then) else float(self.then)
        return base * min(1.0, t / max(self.steps, 1))


SCHEDULES: dict[str, type[Checked]] = {
    cls.kind: cls for cls in (Constant, InverseSqrt, Cosine, Warmup)
}
"""The step-size schedules by config ``kind``."""

# --------------------------------------------------------------------------- hyperparameters


class AlgorithmError(ValueError):
    """Bad hyperparameters; the message names the field, the value and the rule."""


def hparams(cls: type) -> list[dataclasses.Field[Any]]:
    """The hyperparameter fields of an algorithm dataclass (``init`` fields), in order."""
    return [f for f in dataclasses.fields(cls) if f.init]


@dataclass(frozen=True)
class MixingAssumptions:
    """What a method's analysis assumes of every mixing matrix ``W_t`` it gossips with.

    Attributes:
        doubly_stochastic: columns sum to one too, so gossip preserves the network mean.
        symmetric: ``W = W^T`` (an undirected graph with symmetric weights).
        static: ``W_t = W`` for every ``t``: the method's state sums products with ``W``
            over rounds (compressed gossip keeps ``s = W hat`` by adding ``W q``), which is
            wrong, not merely outside the analysis, when ``W`` changes. Refused by
            :func:`static_violation` on every entry path (``decent.train`` and configs).
    """

    doubly_stochastic: bool = False
    symmetric: bool = False
    static: bool = False

    def describe(self) -> str:
        """``"a symmetric, doubly stochastic W"``."""
        parts = [
            p
            for p, on in (
                ("symmetric", self.symmetric),
                ("doubly stochastic", self.doubly_stochastic),
            )
            if on
        ]
        return f"a {', '.join(parts)} W" if parts else "any row-stochastic W"


class MixingAssumptionWarning(UserWarning):
    """A method runs on mixing matrices outside what its analysis assumes."""


def mixing_violations(algorithm: Any, topology: Any, rounds: int, *, probe: int = 16) -> list[str]:
    """What ``topology`` breaks of ``algorithm.assumes`` over the first rounds (``[]``: nothing).

    Static topologies are checked once, periodic ones over one period, other time-varying
    ones over the first ``probe`` rounds (their matrices are drawn the same way each round).
    """
    assumes: MixingAssumptions = getattr(algorithm, "assumes", MixingAssumptions())
    if not (assumes.symmetric or assumes.doubly_stochastic):
        return []
    if getattr(topology, "is_static", False):
        ts: Sequence[int] = [1]
    else:
        period = getattr(topology, "period", None)
        ts = range(1, min(rounds, period if isinstance(period, int) else probe) + 1)
    weights = [topology.weights(t) for t in ts]
    found = [
        what
        for what, on, attr in (
            ("symmetric", assumes.symmetric, "is_symmetric"),
            ("doubly stochastic", assumes.doubly_stochastic, "is_doubly_stochastic"),
        )
        if on and not all(getattr(w, attr) for w in weights)
    ]
    return [f"W_t is not {what} (round {ts[0]}..{ts[-1]} checked)" for what in found]


def static_violation(algorithm: Any, topology: Any) -> str | None:
    """Why ``algorithm`` cannot run on ``topology`` (``None``: it can): a method that assumes
    a static ``W`` (:attr:`MixingAssumptions.static`) on a time-varying topology.

    Example:
        >>> from decent.algorithms import ChocoSGD
        >>> from decent.topology import OnePeerExponential, ring
        >>> static_violation(ChocoSGD(lr=0.1), ring(8)) is None
        True
        >>> print(static_violation(ChocoSGD(lr=0.1), OnePeerExponential(8)))  # doctest: +ELLIPSIS
        choco_sgd needs a static topology (W_t = W every round), but one_peer_exponential... is time-varying; ...
    """
    assumes: MixingAssumptions = getattr(algorithm, "assumes", MixingAssumptions())
    if not assumes.static or getattr(topology, "is_static", False):
        return None
    name = getattr(algorithm, "name", type(algorithm).__name__)
    return (
        f"{name} needs a static topology (W_t = W every round), but {topology.name} is "
        "time-varying; its state sums W q over rounds, which is exact only for a fixed W: "
        "use a static topology (ring, torus, exponential, random_regular, ...)"
    )


_HINTS: dict[type, dict[str, Any]] = {}


def _type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints(cls)``, resolved once per class (it evaluates every string
    annotation: ~1.3 ms, which a study building thousands of algorithms paid each time);
    read-only."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


class Method:
    """Base of the built-in methods: hyperparameters checked from their declaration.

    Subclasses are frozen dataclasses whose fields are declared with :func:`hparam`;
    ``lr`` (a number or a schedule) is turned into :attr:`eta`. Class attributes say what
    the rest of the library needs to know without naming methods:

    * ``name``: the config ``kind``;  ``label``: the name shown in tables and figures;
    * ``assumes``: :class:`MixingAssumptions` of the method's analysis;
    * ``centralized``: uses exact averages (all-reduce), not gossip;
    * ``reference``: the ``kind`` of the centralized counterpart it is compared with;
    * ``horizon_scaled``: the largest step is ``lr * T`` (anytime weights), so tune
      ``gamma = lr * T`` rather than ``lr`` across horizons;
    * ``divergence_hint``: what to try when a run diverges;
    * ``needs_clock``: runs only on a simulated network's clock
      (:class:`~decent.comm.network.NetworkCommunicator`), as asynchronous AD-PSGD does.
    """

    name: ClassVar[str]
    label: ClassVar[str] = ""
    assumes: ClassVar[MixingAssumptions] = MixingAssumptions()
    centralized: ClassVar[bool] = False
    reference: ClassVar[str | None] = None
    horizon_scaled: ClassVar[bool] = False
    divergence_hint: ClassVar[str] = "lower the step size (try lr / 10)"
    needs_clock: ClassVar[bool] = False

    def __post_init__(self) -> None:
        owner = type(self).name
        hints = _type_hints(type(self))
        for f in hparams(type(self)):
            value = getattr(self, f.name)
            if f.name == "lr":
                try:
                    as_schedule(value)
                except ValueError as err:
                    raise AlgorithmError(f"{owner}.lr: {err}") from None
                continue
            rules = f.metadata.get("rules", ())
            check_value(owner, f.name, hints.get(f.name), rules, value, AlgorithmError)

    @cached_property
    def eta(self) -> Callable[[int], Any]:
        """The step size as a function of the round, ``eta(t)``.

        A number for a single run; a replica-batched run gives each row its replica's
        step size as a float64 column (see :mod:`decent.engine.replicas`).
        """
        return as_schedule(getattr(self, "lr"))  # noqa: B009


Scale = float | torch.Tensor
"""A step's factor: a number, or a float64 column ``(m, 1)`` with one value per row."""


def add_scaled_(x: NodeTensor, g: torch.Tensor, scale: Scale) -> NodeTensor:
    """``x += scale * g`` in place; ``scale`` a number or an ``(m, 1)`` float64 column.

    Computed as a product then a sum, two correctly rounded operations, never a fused
    multiply-add: vectorized kernels fuse (``add(alpha=...)``, ``addcmul``) in their vector
    body but not in their scalar tail, so which elements get which rounding would depend on
    the tensor's size. This way a replica of a replica-batched run (one step size per row,
    more rows) computes bit for bit what its single run computes. The factor is rounded to
    ``x``'s dtype from float64 in both forms (a number goes in as a cached 0-dim float64
    tensor, which the kernel reads as it reads a Python number, without wrapping one every
    call). The product goes to a reused scratch buffer (fresh multi-megabyte temporaries
    cost page faults).
    """
    if isinstance(scale, torch.Tensor):
        factor = scale.to(dtype=x.dtype, device=x.device)
    else:
        factor = scalar(scale)
    work = scratch(g.shape, x.dtype, x.device)
    torch.mul(g, factor, out=work)
    return x.add_(work)


_SCRATCH: dict[tuple[torch.Size, torch.dtype, torch.device], torch.Tensor] = {}


def scratch(shape: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A reused buffer of ``shape`` (one per shape, dtype and device; contents undefined)."""
    key = (shape, dtype, device)
    buf = _SCRATCH.get(key)
    if buf is None:
        if len(_SCRATCH) > 16:
            _SCRATCH.clear()
        buf = _SCRATCH[key] = torch.empty(shape, dtype=dtype, device=device)
    return buf


def communicates(t: int, local_steps: int) -> bool:
    """Whether round ``t`` ends with communication: every ``local_steps``-th round."""
    return t % local_steps == 0
