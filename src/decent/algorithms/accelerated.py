"""Accelerated DAT-SGD: anytime averaging with a one-step-delayed query (AC-SA), gossiped.

Our reading of Kluger, Attia and Koren, "Near-Optimal Decentralized Stochastic Convex
Optimization over Networks" (arXiv 2606.04757, 2026), of which only the abstract is
reachable here ("a one-step-delayed stochastic acceleration scheme that lets workers
interleave minibatching with accelerated gossip"; see ``docs/concepts.md``). Assumed:

* **The acceleration scheme** is Lan's AC-SA written as anytime averaging: with
  ``alpha_t = t``, AC-SA's ``beta_t^{-1} = 2 / (t + 1)`` is ``alpha_t / A_t``, its aggregate
  point is DAT-SGD's ``x``, and its gradient is taken at ``(A_{t-1} x_{t-1} + alpha_t
  w_{t-1}) / A_t``, the average the next step would give if the iterate did not move: the
  iterate of one step before, which we take "one-step-delayed" to mean. This query gives
  AC-SA's ``L D^2 / T^2`` deterministic term (DAT-SGD: ``L D^2 / T``).
* **Minibatching with accelerated gossip**: batch ``b = K`` and ``K`` Chebyshev gossip
  steps (``chebyshev_steps``, Scaman et al. 2017) per round.
* Not reproduced: the paper's step-size and batch schedules, its handling of heterogeneity,
  any restart or projection. Results with this class are labelled as our reconstruction.

References:
    Lan, "An optimal method for stochastic composite optimization", Math. Programming 2012.
    Ghadimi, Lan, "Optimal stochastic approximation algorithms for strongly convex stochastic
    composite optimization I", SIAM J. Optim. 2012. Kluger, Attia, Koren, arXiv 2606.04757.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from decent._types import NodeTensor
from decent.algorithms.base import LearningRate, add_scaled_, hparam
from decent.algorithms.dat_sgd import DATSGD, DATSGDState

AcceleratedState = DATSGDState
"""DAT-SGD's state ``z = [w | x]``, ``A_{t-1}``; ``x`` is the output, AC-SA's aggregate point."""


@dataclass(frozen=True)
class AcceleratedDATSGD(DATSGD):
    r"""Decentralized AC-SA: DAT-SGD with a one-step-delayed, extrapolated query point.

    Per node ``i`` at round ``t`` with ``alpha_t = t ** weight_power`` and
    ``A_t = alpha_1 + ... + alpha_t``:

    1. ``y_t^i = (A_{t-1} / A_t) x_t^i + (alpha_t / A_t) w_t^i``  (the query point)
    2. ``g_t^i = \nabla f_i(y_t^i; z_t^i)``
    3. ``w_{t+1/2}^i = w_t^i - eta_t alpha_t g_t^i``
    4. ``x_{t+1/2}^i = (A_{t-1} / A_t) x_t^i + (alpha_t / A_t) w_{t+1/2}^i``
    5. ``[w | x]_{t+1}^i = sum_j W_t[i, j] [w | x]_{t+1/2}^j``

    Steps 3-5 are DAT-SGD's (:class:`~decent.algorithms.DATSGD`, whose update this is);
    step 1 replaces DAT-SGD's query ``x_t`` (our reading of Kluger, Attia and Koren 2026,
    see the module docstring for what is assumed). On one node it is Lan's AC-SA with
    ``beta_t = A_t / alpha_t`` and ``gamma_t = eta alpha_t``. Use it with
    ``chebyshev_steps = K`` and batch ``K`` for the accelerated-gossip construction. The
    step on ``w`` grows like ``eta alpha_t``: tune ``gamma = eta T``.
    """

    lr: LearningRate = hparam(
        doc="Step size eta: a number or a schedule table. The step on w is eta * t^weight_power."
    )

    name: ClassVar[str] = "accelerated_dat_sgd"
    label: ClassVar[str] = "Accelerated DAT-SGD (our reading of Kluger-Attia-Koren 2026)"
    reference: ClassVar[str | None] = None

    def query(self, state: DATSGDState, t: int) -> NodeTensor:
        alpha = self.alpha(t)
        total = state.weight_sum + alpha
        y = state.x * (state.weight_sum / total)  # a product then a sum, never fused
        return add_scaled_(y, state.w, alpha / total)
