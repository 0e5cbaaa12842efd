"""Accelerated gossip: Chebyshev acceleration of the mixing matrix, ``K`` gossip steps per call.

One :meth:`ChebyshevCommunicator.mix` applies, through the three-term recurrence (one
gossip step of the wrapped communicator per term),

.. math::
    P_K(W) = \\frac{T_K(W / \\lambda)}{T_K(1 / \\lambda)}, \\qquad
    \\lambda = \\max(|\\lambda_2(W)|, |\\lambda_n(W)|) = 1 - \\gamma,

the polynomial of degree ``K`` with ``P(1) = 1`` of least maximum modulus on
``[-lambda, lambda]`` (``T_K`` Chebyshev's, ``gamma`` the spectral gap of a symmetric
doubly stochastic ``W``): ``K`` steps contract the disagreement by about
``2 (1 - sqrt(gamma))^K`` against ``(1 - gamma)^K`` plain. Any algorithm gets it by
wrapping its communicator, which counts ``K`` gossip rounds per call.

Reference: Scaman, Bach, Bubeck, Lee, Massoulié, "Optimal algorithms for smooth and strongly
convex distributed optimization in networks", ICML 2017, https://arxiv.org/abs/1702.08704
(accelerated gossip, after Auzinger, "Iterative Solution of Large Linear Systems", lecture
notes, TU Wien, 2011); Golub, Varga, "Chebyshev semi-iterative methods, successive
overrelaxation iterative methods, and second order Richardson iterative methods",
Numerische Mathematik 3, 1961.
"""

from __future__ import annotations

import math
import numbers
from typing import cast

from decent._types import NodeTensor
from decent.comm.base import (
    Clocked,
    Combiner,
    Communicator,
    Replicable,
    Stale,
    Topological,
)
from decent.comm.sim import SimCommunicator
from decent.topology._matrix import Topology, TopologyError
from decent.topology._spectral import spectral_gap

__all__ = [
    "ChebyshevCommunicator",
    "ClockedChebyshevCommunicator",
    "accelerate",
    "chebyshev_contraction",
    "chebyshev_steps_for",
]


def _real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_lambda2(lambda2: object, *, who: str) -> float:
    if not (_real(lambda2) and 0.0 <= float(lambda2) <= 1.0):  # type: ignore[arg-type]  # nan
        raise ValueError(
            f"{who}: lambda2 must be a number in [0, 1] (the second largest eigenvalue "
            f"modulus of a symmetric doubly stochastic W, i.e. 1 - spectral gap), got {lambda2!r}"
        )
    return float(lambda2)  # type: ignore[arg-type]


def _check_steps(steps: object, *, who: str, minimum: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or int(steps) < minimum:
        raise ValueError(
            f"{who}: steps must be an integer >= {minimum} (gossip steps per mix), got {steps!r}"
        )
    return int(steps)


def _ratio(lambda2: float) -> float:
    """``c = lambda / (1 + sqrt(1 - lambda^2)) = exp(-arccosh(1 / lambda))``, in ``[0, 1]``."""
    return lambda2 / (1.0 + math.sqrt((1.0 - lambda2) * (1.0 + lambda2)))


def chebyshev_contraction(lambda2: float, steps: int) -> float:
    """Return ``1 / T_K(1 / lambda2)``: the worst contraction of ``K`` accelerated steps.

    ``|P_K(mu)| <= 1 / T_K(1 / lambda2)`` for every eigenvalue ``|mu| <= lambda2`` of ``W``
    (equality at ``mu = +-lambda2``). In closed form,

    .. math::
        \\frac{1}{T_K(1/\\lambda)} = \\frac{2 c^K}{1 + c^{2K}} < 2 c^K
        \\le 2 (1 - \\sqrt{\\gamma})^K, \\qquad
        c = \\frac{\\lambda}{1 + \\sqrt{1 - \\lambda^2}}, \\quad \\gamma = 1 - \\lambda,

    since ``T_K(z) = cosh(K arccosh z)``, ``arccosh(1 / lambda) = -ln c`` and
    ``1 - lambda^2 >= gamma``. ``K`` plain steps contract by ``lambda^K``.

    Args:
        lambda2: ``lambda``, the second largest eigenvalue modulus, in ``[0, 1]``.
        steps: ``K >= 0`` (``K = 0``: the identity, contraction 1).

    Raises:
        ValueError: ``lambda2`` outside ``[0, 1]`` or ``steps`` not an integer ``>= 0``.

    Example:
        >>> round(chebyshev_contraction(0.5, 2), 12)  # 1 / T_2(2) = 1 / (2 * 2**2 - 1)
        0.142857142857
    """
    rho = _check_lambda2(lambda2, who="chebyshev_contraction")
    k = _check_steps(steps, who="chebyshev_contraction", minimum=0)
    ck = _ratio(rho) ** k
    return 2.0 * ck / (1.0 + ck * ck)


def chebyshev_steps_for(gap: float, target: float) -> int:
    """Return the smallest ``K >= 1`` with ``1 / T_K(1 / (1 - gap)) <= target``.

    .. math::
        K = \\left\\lceil \\frac{\\operatorname{arccosh}(1 / \\varepsilon)}
        {\\operatorname{arccosh}(1 / (1 - \\gamma))} \\right\\rceil
        \\le \\left\\lceil \\frac{\\ln(2 / \\varepsilon)}{\\sqrt{\\gamma}} \\right\\rceil,

    against ``~ ln(1 / eps) / gamma`` plain steps; checked against
    :func:`chebyshev_contraction`, so the two always agree.

    Args:
        gap: ``gamma = 1 - lambda2`` of ``W``, in ``(0, 1]`` (:func:`decent.topology.spectral_gap`).
        target: ``eps``, the contraction wanted, in ``(0, 1)``.

    Raises:
        ValueError: ``gap`` outside ``(0, 1]`` or ``target`` outside ``(0, 1)``.

    Example:
        >>> chebyshev_steps_for(0.5, 0.15)  # 1 / T_2(2) = 1/7 <= 0.15 < 1 / T_1(2) = 1/2
        2
    """
    if not (_real(gap) and 0.0 < gap <= 1.0):
        raise ValueError(
            f"chebyshev_steps_for: gap must be in (0, 1], got {gap!r}; a gap of 0 (a "
            "disconnected or bipartite W) never contracts, whatever the number of steps"
        )
    if not (_real(target) and 0.0 < target < 1.0):
        raise ValueError(f"chebyshev_steps_for: target must be in (0, 1), got {target!r}")
    rho, eps = 1.0 - float(gap), float(target)
    if rho == 0.0:
        return 1  # W = J: one step is exact consensus
    per_step = -math.log(_ratio(rho))  # arccosh(1 / rho), without cancellation near rho = 1
    steps = max(1, math.ceil(math.acosh(1.0 / eps) / per_step))
    while steps > 1 and chebyshev_contraction(rho, steps - 1) <= eps:
        steps -= 1
    while chebyshev_contraction(rho, steps) > eps:
        steps += 1
    return steps


def _recurrence_weights(lambda2: float, steps: int) -> tuple[float, ...]:
    """``omega_2 .. omega_K`` of the recurrence (see :class:`ChebyshevCommunicator`)."""
    out: list[float] = []
    quarter = lambda2 * lambda2 / 4.0
    omega = 2.0 / (2.0 - lambda2 * lambda2)
    for _ in range(2, steps + 1):
        out.append(omega)
        omega = 1.0 / (1.0 - quarter * omega)
    return tuple(out)


class ChebyshevCommunicator(Combiner):
    """Mix with the Chebyshev polynomial ``P_K(W_t)``: ``K`` gossip steps of ``inner`` per call.

    With ``lambda = lambda2`` and ``y_k = P_k(W_t) x``, the recurrence
    ``T_{k+1}(z) = 2 z T_k(z) - T_{k-1}(z)`` divided by ``T_{k+1}(1 / lambda)`` reads

    .. math::
        y_0 = x, \\qquad y_1 = W_t x, \\qquad
        y_{k+1} = \\omega_{k+1} W_t y_k + (1 - \\omega_{k+1})\\, y_{k-1}
        \\quad (k = 1, \\dots, K - 1),

        \\omega_{k+1} = \\frac{2\\, T_k(1/\\lambda)}{\\lambda\\, T_{k+1}(1/\\lambda)}:
        \\qquad \\omega_2 = \\frac{2}{2 - \\lambda^2}, \\qquad
        \\omega_{k+1} = \\Big(1 - \\frac{\\lambda^2}{4}\\, \\omega_k\\Big)^{-1},

    so ``1 <= omega_k <= 2`` (stable, no ``T_K`` that overflows) and every ``W_t y_k`` is one
    ``inner.mix(., t)``. ``P_K(1) = 1`` keeps the average of the rows for a doubly
    stochastic ``W_t``; every other eigenvalue ``|mu| <= lambda`` becomes
    ``|P_K(mu)| <= 1 / T_K(1 / lambda)`` (:func:`chebyshev_contraction`). ``P_K(W)`` has
    negative entries for ``K >= 2``: it is applied, never formed. ``K = 1`` is
    ``inner.mix`` bit for bit. The inner communicator counts ``K`` gossip rounds per call
    and gives ``stats``, ``all_reduce``, ``metrics``, ``close``, ``num_nodes``,
    ``node_ids`` and ``topology``.

    Args:
        inner: the communicator of one plain step (simulator, replica batch, synchronous
            ranks, another ChebyshevCommunicator, ...); each ``mix`` must be exactly
            ``W_t @ x`` (stale mixing is rejected).
        steps: ``K >= 1`` gossip steps per :meth:`mix`.
        lambda2: ``lambda`` (``1 - spectral gap``); default: computed from the static
            ``inner.topology`` (around another ChebyshevCommunicator: its contraction). A
            given value must bound every non-unit ``|mu|`` of every ``W_t``.

    Raises:
        ValueError: ``steps`` or ``lambda2`` out of range, stale ``inner``, or no
            ``topology`` and no ``lambda2``.
        TopologyError: (a ValueError) ``W`` (``W_1``) is not symmetric, or the topology is
            time-varying and no ``lambda2`` is given.

    Example:
        >>> import torch
        >>> from decent.topology import ring
        >>> comm = ChebyshevCommunicator(SimCommunicator(ring(8)), steps=3)
        >>> x = torch.arange(8.0, dtype=torch.float64)[:, None]
        >>> y = comm.mix(x, t=1)
        >>> round(float(y.mean()), 12), comm.stats.rounds   # the mean is kept; 3 gossip rounds
        (3.5, 3)
        >>> bool((y - 3.5).norm() <= comm.contraction * (x - 3.5).norm())
        True
    """

    def __init__(self, inner: Communicator, steps: int, lambda2: float | None = None) -> None:
        who = "ChebyshevCommunicator"
        self.steps = _check_steps(steps, who=who, minimum=1)
        super().__init__(inner)
        if isinstance(inner, Stale) and inner.staleness > 0:
            raise ValueError(
                f"Chebyshev acceleration needs every inner mix to be exactly W_t @ x, but "
                f"{type(inner).__name__} mixes with stale values (staleness={inner.staleness}); "
                "wrap the synchronous communicator instead (delay=0, overlap=False, staleness=0)"
            )
        topology = inner.topology if isinstance(inner, Topological) else None
        if topology is not None:
            self.topology = topology
            w = topology.weights(1)  # W_1 of a time-varying topology
            if not w.is_symmetric:
                raise TopologyError(
                    f"Chebyshev acceleration needs a symmetric doubly stochastic W (W == W.T), "
                    f"but {topology.name} gives a non-symmetric W ({w.name}); its eigenvalues "
                    "do not bound the contraction. Use an undirected graph with "
                    "metropolis_hastings or max_degree weights"
                )
        if lambda2 is None:
            lambda2 = _lambda2_of(inner, topology)
        self.lambda2 = _check_lambda2(lambda2, who=who)
        self._omegas = _recurrence_weights(self.lambda2, self.steps)

    # -- what the polynomial does --------------------------------------------------------
    @property
    def contraction(self) -> float:
        """``1 / T_K(1 / lambda2)``: the worst factor on ``x - mean(x)`` of one :meth:`mix`."""
        return chebyshev_contraction(self.lambda2, self.steps)

    # -- Communicator --------------------------------------------------------------------
    def mix(self, x: NodeTensor, t: int) -> NodeTensor:
        """Return ``P_K(W_t) x`` for the held rows; counts ``K`` gossip rounds in ``inner``."""
        prev = x
        cur = self.inner.mix(x, t)  # y_1 = W_t x
        for omega in self._omegas:
            # y_{k+1} = omega W_t y_k + (1 - omega) y_{k-1}; separate products and a sum,
            # so every element is rounded the same way whatever the layout (replicas)
            nxt = self.inner.mix(cur, t) * omega + prev * (1.0 - omega)
            prev, cur = cur, nxt
        return cur

    def replicated(self, replicas: int) -> ChebyshevCommunicator:
        """The same acceleration around ``R`` stacked replicas of the inner simulator
        (replica ``r`` equals this communicator's ``mix`` of replica ``r`` alone, bit for bit).

        Raises:
            ValueError: the inner communicator is not a simulator, or a bad ``replicas``.
        """
        if not isinstance(self.inner, Replicable):
            raise ValueError(
                "a replica batch runs in the simulator: the accelerated communicator must "
                f"wrap a SimCommunicator, got {type(self.inner).__name__}"
            )
        return ChebyshevCommunicator(self.inner.replicated(replicas), self.steps, self.lambda2)

    def __repr__(self) -> str:
        lam = f"{self.lambda2:.6g}"
        return f"ChebyshevCommunicator({self.inner!r}, steps={self.steps}, lambda2={lam})"


class ClockedChebyshevCommunicator(ChebyshevCommunicator):
    """Chebyshev acceleration on a simulated network, whose clock and churn it keeps: each
    inner mix is one gossip round on the clock under its own faults (without faults:
    :class:`ChebyshevCommunicator` over the simulator, bit for bit)."""

    def begin_round(self, t: int) -> list[tuple[int, int]]:
        """The network's clock: see :meth:`~decent.comm.network.NetworkCommunicator.begin_round`."""
        return cast(Clocked, self.inner).begin_round(t)


def accelerate(
    comm: Communicator | Topology, steps: int, *, lambda2: float | None = None
) -> ChebyshevCommunicator:
    """Return ``comm`` with Chebyshev-accelerated gossip: ``P_K(W_t)`` per ``mix``.

    A topology is first put in a :class:`SimCommunicator`; a simulated network keeps its
    clock. ``steps`` and ``lambda2`` (and what raises) are :class:`ChebyshevCommunicator`'s;
    :func:`chebyshev_steps_for` picks ``steps``.

    Example:
        >>> from decent.topology import ring
        >>> comm = accelerate(ring(16), steps=4)
        >>> round(comm.contraction, 4), round(comm.lambda2**4, 4)  # 4 plain steps: lambda^4
        (0.5064, 0.8119)
    """
    inner = comm if isinstance(comm, Communicator) else SimCommunicator(comm)
    if isinstance(inner, Clocked):
        return ClockedChebyshevCommunicator(inner, steps, lambda2=lambda2)
    return ChebyshevCommunicator(inner, steps, lambda2=lambda2)


def _lambda2_of(inner: object, topology: Topology | None) -> float:
    """``1 - spectral gap`` of the static ``W`` behind ``inner``."""
    if isinstance(inner, ChebyshevCommunicator):
        return inner.contraction  # P_K(W) is symmetric with SLEM 1 / T_K(1 / lambda2)
    if topology is None:
        raise ValueError(
            f"ChebyshevCommunicator: {type(inner).__name__} has no topology to compute "
            "lambda2 from; pass lambda2 = 1 - spectral_gap(W)"
        )
    if not topology.is_static:
        raise TopologyError(
            f"ChebyshevCommunicator: {topology.name} is time-varying, so there is no single "
            "lambda2 to compute; pass lambda2 explicitly (a bound on the second largest "
            "eigenvalue modulus of every symmetric doubly stochastic W_t)"
        )
    gap = getattr(topology, "spectral_gap", None)  # cached on StaticTopology
    if not isinstance(gap, float):
        gap = spectral_gap(topology.weights(1))
    return min(1.0, max(0.0, 1.0 - gap))
