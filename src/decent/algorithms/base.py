"""The Algorithm protocol and step-size schedules.

An algorithm is a frozen dataclass of hyperparameters with pure methods over a
``NamedTuple`` state:

* ``init(params) -> state``: ``params`` is ``(m, d)``, every row the common start point;
* ``query(state) -> (m, d)``: where gradients are taken;
* ``update(state, grads, comm, t) -> state``: one round; the only place rows interact is
  ``comm``;
* ``output(state) -> (m, d)``: what is evaluated.

``update`` may reuse the storage of the ``state`` it is given (the way JAX donates
buffers): the input state is consumed. Clone it first if you need it afterwards. This is
what lets thousands of nodes' parameters be updated without a fresh multi-megabyte
allocation every round.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from decent._types import NodeTensor
from decent.comm.base import Communicator

S = TypeVar("S")


@runtime_checkable
class Algorithm(Protocol[S]):
    """A decentralized (or centralized reference) first-order method."""

    name: str

    def init(self, params: NodeTensor) -> S: ...

    def query(self, state: S) -> NodeTensor: ...

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


@dataclass(frozen=True)
class Constant:
    """``eta_t = lr``."""

    lr: float

    def __call__(self, t: int) -> float:
        return self.lr


@dataclass(frozen=True)
class InverseSqrt:
    """``eta_t = lr * sqrt(t0 / (t0 + t - 1))``: constant ``lr`` at ``t = 1``, then ``~ 1/sqrt(t)``."""

    lr: float
    t0: int = 1

    def __call__(self, t: int) -> float:
        return self.lr * math.sqrt(self.t0 / (self.t0 + t - 1))


@dataclass(frozen=True)
class Cosine:
    """``eta_t = final + (lr - final) * (1 + cos(pi (t - 1) / total)) / 2`` for ``t <= total``."""

    lr: float
    total: int
    final: float = 0.0

    def __call__(self, t: int) -> float:
        frac = min(max(t - 1, 0), self.total) / max(self.total, 1)
        return self.final + (self.lr - self.final) * 0.5 * (1.0 + math.cos(math.pi * frac))


@dataclass(frozen=True)
class Warmup:
    """Linear warm-up over ``steps`` rounds into ``then``: ``eta_t = then(t) * min(1, t / steps)``."""

    then: Any
    steps: int

    def __call__(self, t: int) -> float:
        base = self.then(t) if callable(self.then) else float(self.then)
        return base * min(1.0, t / max(self.steps, 1))
