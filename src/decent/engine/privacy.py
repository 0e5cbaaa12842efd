r"""Differential privacy per node: DP-SGD gradients for every held node, and their budgets.

Node ``i`` privatizes each stochastic gradient with DP-SGD's Gaussian mechanism (Abadi et
al. 2016, https://arxiv.org/abs/1607.00133) on its minibatch ``b_i`` of ``B_i`` samples:

.. math::

    \tilde g_i = \frac{1}{B_i} \Big( \sum_{j \in b_i} g_{ij}
        \min\Big(1, \frac{C}{\|g_{ij}\|_2}\Big) + \sigma C\, \xi_i^t \Big),
    \qquad g_{ij} = \nabla_x \ell(x_i; z_j),\quad \xi_i^t \sim \mathcal N(0, I_d).

:class:`PrivateOracle` computes it for all nodes and samples in one batched call, with
``xi_i^t`` keyed by ``(seed, stream, t, node)``; :class:`PrivacyAccountant` reports each
node's ``(epsilon_i, delta)`` from Opacus's accountant at sampling rate ``q_i = B_i / n_i``
over ``T`` steps (a streaming task's fresh samples: one unsubsampled step). See
``docs/privacy.md`` for the details and for what is and is not claimed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import annotated_types as at
import numpy as np
import torch
from torch.func import grad_and_value, vmap

from decent import _stream
from decent._params import check_declared, hparam
from decent._types import Batch, NodeTensor
from decent.tasks.base import Task

Accountant = Literal["rdp", "prv"]
ACCOUNTANTS: tuple[str, ...] = ("rdp", "prv")

_NOISE_STREAM = 0xD1FF_0001
"""The stream of the Gaussian noise of private gradients (one draw per node and round)."""


class PrivacyError(ValueError):
    """Bad privacy input; the message names the field, the value and the allowed values."""


@dataclass(frozen=True)
class Privacy:
    """DP-SGD at every node: per-sample clipping, Gaussian noise, and the accountant.

    Attributes:
        clip: ``C > 0``, the L2 norm every per-sample gradient is clipped to.
        noise_multiplier: ``sigma`` in ``[0, 1000]``; the noise added to the clipped sum has standard
            deviation ``sigma C`` per coordinate (``0``: clipping only, no privacy).
        delta: the ``delta`` of the reported ``(epsilon, delta)``, in ``(0, 1)``; take it
            well below ``1 / n_i`` (e.g. ``1e-5``).
        accountant: ``"rdp"`` (Rényi DP, Mironov 2017; fast) or ``"prv"`` (privacy random
            variables, Gopi et al. 2021; tighter, about a second per distinct sampling rate
            and evaluation), both from Opacus.

    Raises:
        PrivacyError: a field outside its range, naming it and the allowed values.

    Example:
        >>> Privacy(clip=1.0, noise_multiplier=1.1, delta=1e-5)
        Privacy(clip=1.0, noise_multiplier=1.1, delta=1e-05, accountant='rdp')
    """

    clip: float = hparam(
        dataclasses.MISSING,
        at.Gt(0.0),
        doc="C: every per-sample gradient is clipped to L2 norm C.",
    )
    noise_multiplier: float = hparam(
        dataclasses.MISSING,
        at.Interval(ge=0.0, le=1e3),
        doc=(
            "sigma: Gaussian noise of standard deviation sigma C is added to the sum of the "
            "clipped gradients (0: clipping only, no privacy)."
        ),
    )
    delta: float = hparam(
        1e-5, at.Interval(gt=0.0, lt=1.0), doc="The delta of the reported (epsilon, delta)."
    )
    accountant: Accountant = hparam(
        "rdp",
        doc=(
            "Opacus's accountant: rdp (Renyi DP, fast) or prv (privacy random variables, "
            "tighter, about a second per distinct sampling rate and evaluation)."
        ),
    )

    def __post_init__(self) -> None:
        check_declared(self, "privacy", PrivacyError)


# ------------------------------------------------------------------------ gradients


def _weighted(task: Task) -> bool:
    """Whether the task's batches are ``(x, y, w)`` with per-sample weights (padding 0)."""
    from decent.tasks.models import ModuleTask

    return isinstance(task, ModuleTask) and task.sampling == "without_replacement"


def per_sample_grads(task: Task) -> Any:
    """``(params (m, d), samples) -> (grads (m, B, d), losses (m, B))``, one batched call.

    ``samples`` is a batch whose leaves are ``(m, B, ...)``: sample ``j`` of row ``r`` is
    the slice ``[r, j]`` of every leaf, and its loss is ``task.loss`` of a batch of that one
    sample (the task's ridge term included).
    """

    def one(params: torch.Tensor, sample: Batch) -> torch.Tensor:
        batch = torch.utils._pytree.tree_map(lambda leaf: leaf.unsqueeze(0), sample)
        return task.loss(params, batch)

    return vmap(vmap(grad_and_value(one), in_dims=(None, 0)), in_dims=(0, 0))


class PrivateOracle:
    """DP-SGD gradients ``(params (m, d), batch, t) -> (grads (m, d), losses (m,))``.

    Row ``r`` of ``params`` is node ``nodes[r // R]`` of replica ``r % R`` (``R =
    len(seeds)``, node-major as in a replica batch; ``R = 1`` for a single run); its noise
    ``xi`` is keyed by the replica's seed, the round ``t`` and the node, so node ``i`` gets
    the same noise in the simulator, on a rank that holds it and in a replica batch.
    ``B_i`` is the number of samples the row drew (a dataset task without replacement marks
    its padding with weight 0). Per-sample gradients come from one ``vmap`` (nodes) of
    ``vmap`` (samples) of ``grad_and_value`` (:func:`per_sample_grads`), also for tasks
    with closed-form gradients: clipping needs every sample's gradient.

    Args:
        task: the task (its ``loss`` of a one-sample batch is the per-sample loss).
        privacy: clipping norm and noise multiplier.
        seeds: the training seed of each replica (one for a single run).
        nodes: ``(m,)`` global ids of the held nodes.
        num_nodes: ``n`` of the network (fixes the noise's keys on every process).
    """

    def __init__(
        self,
        task: Task,
        privacy: Privacy,
        *,
        seeds: Sequence[int],
        nodes: torch.Tensor,
        num_nodes: int,
    ) -> None:
        self.privacy = privacy
        self.seeds = [int(s) for s in seeds]
        self.nodes = nodes
        self.num_nodes = num_nodes
        self.dim = task.dim
        self.weighted = _weighted(task)
        self._per_sample = per_sample_grads(task)

    def __call__(self, params: NodeTensor, batch: Batch, t: int) -> tuple[NodeTensor, torch.Tensor]:
        params = params.contiguous()
        if self.weighted:  # (x, y, w): w = 1 / B_i on the samples drawn, 0 on the padding
            samples, weights = tuple(batch[:2]), batch[2]
            mask = (weights > 0).to(params.dtype)
        else:
            samples, mask = batch, None
        grads, losses = self._per_sample(params, samples)  # (m, B, d), (m, B)
        norms = torch.linalg.vector_norm(grads, dim=2)  # (m, B)
        # min(1, C / ||g||): a zero gradient (C / 0 = inf) keeps factor 1
        factor = (self.privacy.clip / norms).clamp_(max=1.0)
        if mask is not None:
            factor = factor * mask
            size = mask.sum(dim=1, keepdim=True)  # (m, 1): B_i
            loss = (losses * weights).sum(dim=1)
        else:
            size = torch.full(
                (grads.shape[0], 1), grads.shape[1], dtype=params.dtype, device=params.device
            )
            loss = losses.mean(dim=1)
        total = torch.bmm(factor.unsqueeze(1), grads).squeeze(1)  # (m, d): sum of clipped
        sigma = self.privacy.noise_multiplier
        if sigma > 0:
            noise = _stream.normal(
                self.seeds, _NOISE_STREAM, t, self.nodes, self.dim, self.num_nodes, params.dtype
            )
            total.add_(noise, alpha=sigma * self.privacy.clip)
        return total.div_(size), loss


# ------------------------------------------------------------------------ accounting


@dataclass(frozen=True)
class SamplingRates:
    """Each node's sampling rate, and whether samples are fresh every round.

    Attributes:
        rates: ``q_i = B_i / n_i`` per node, all ``n`` of them (``1`` for fresh samples).
        fresh: the task draws new samples every round (streaming): each sample enters one
            step only, so a node's guarantee is one Gaussian mechanism whatever ``T`` is.
    """

    rates: tuple[float, ...]
    fresh: bool = False


def sampling_rates(task: Task) -> SamplingRates:
    """The sampling rate ``q_i`` of every node of ``task`` (see :class:`SamplingRates`).

    A dataset task (:class:`~decent.tasks.ModuleTask`) draws ``B_i = min(batch_size, n_i)``
    distinct samples of node ``i``'s shard of ``n_i`` each round: ``q_i = B_i / n_i``. The
    streaming tasks draw fresh samples.

    Raises:
        PrivacyError: a dataset task sampling with replacement (a sample can then appear
            twice in a minibatch, doubling its sensitivity, which no accountant here
            models), or a task whose sampling rate is unknown.
    """
    from decent.tasks.models import ModuleTask
    from decent.tasks.population import LogisticPopulation
    from decent.tasks.streaming import LeastSquares, LogisticRegressionStream

    if isinstance(task, (LeastSquares, LogisticRegressionStream, LogisticPopulation)):
        return SamplingRates((1.0,) * task.num_nodes, fresh=True)
    if isinstance(task, ModuleTask):
        if task.sampling != "without_replacement":
            raise PrivacyError(
                f"privacy needs task.sampling = 'without_replacement', got "
                f"{task.sampling!r}: with replacement a sample can appear twice in one "
                "minibatch, so its clipped gradient counts twice and the accountant's "
                "sensitivity C no longer holds"
            )
        sizes = [int(s.numel()) for s in task.partition]
        return SamplingRates(tuple(min(task.batch_size, n) / n for n in sizes))
    raise PrivacyError(
        f"privacy needs a task whose per-node sampling rate is known: a dataset task "
        f"(ModuleTask) or a streaming task (least_squares, logistic_stream, logistic_population); got "
        f"{type(task).__name__}"
    )


@functools.lru_cache(maxsize=1024)
def _one_step_rdp(rate: float, sigma: float) -> tuple[float, ...]:
    """Opacus's RDP of one step at every default order (the costly part: cached)."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp

    orders = RDPAccountant.DEFAULT_ALPHAS
    values = rdp.compute_rdp(q=rate, noise_multiplier=sigma, steps=1, orders=orders)
    return tuple(float(v) for v in values)


@functools.lru_cache(maxsize=4096)
def epsilon(rate: float, sigma: float, steps: int, delta: float, accountant: str) -> float:
    """Opacus's ``epsilon`` after ``steps`` steps of the subsampled Gaussian mechanism.

    ``"rdp"`` is ``RDPAccountant().get_epsilon(delta)`` with history
    ``[(sigma, rate, steps)]``, computed as that accountant computes it (the RDP of
    ``steps`` steps is ``steps`` times one step's, Opacus's ``compute_rdp``; its
    ``get_privacy_spent`` converts), with one step's RDP cached per ``(rate, sigma)``, so
    every evaluation round costs a conversion only. ``"prv"`` is
    ``PRVAccountant().get_epsilon(delta)`` with the same history. ``0`` for no step,
    ``inf`` for ``sigma = 0``.
    """
    if steps <= 0:
        return 0.0
    if sigma == 0:
        return math.inf
    if accountant == "rdp":
        from opacus.accountants import RDPAccountant
        from opacus.accountants.analysis import rdp

        one = np.asarray(_one_step_rdp(rate, sigma))
        eps, _ = rdp.get_privacy_spent(
            orders=RDPAccountant.DEFAULT_ALPHAS, rdp=one * steps, delta=delta
        )
        return float(eps)
    from opacus.accountants import PRVAccountant

    prv = PRVAccountant()
    prv.history = [(sigma, rate, steps)]
    with warnings.catch_warnings(), np.errstate(divide="ignore"):
        # log(1 - q) at q = 1 inside Opacus: -inf where it is meant to be, harmless
        warnings.filterwarnings("ignore", "divide by zero", RuntimeWarning)
        return float(prv.get_epsilon(delta=delta))


class PrivacyAccountant:
    """Every node's ``epsilon`` at ``delta`` after ``t`` rounds, from Opacus's accountant.

    Nodes with equal sampling rates share one computation, and results are cached, so an
    evaluation round costs one conversion per distinct rate.

    Args:
        privacy: noise multiplier, ``delta`` and the accountant.
        rates: from :func:`sampling_rates`.
    """

    def __init__(self, privacy: Privacy, rates: SamplingRates) -> None:
        self.privacy = privacy
        self.rates = rates
        distinct, self._index = np.unique(np.array(rates.rates), return_inverse=True)
        self._distinct: list[float] = distinct.tolist()

    def steps(self, t: int) -> int:
        """The mechanism's steps that involve one sample after ``t`` rounds."""
        return min(t, 1) if self.rates.fresh else t

    def epsilons(self, t: int) -> np.ndarray:
        """``(n,)`` each node's ``epsilon`` after ``t`` rounds."""
        p = self.privacy
        per_rate = np.array(
            [
                epsilon(q, p.noise_multiplier, self.steps(t), p.delta, p.accountant)
                for q in self._distinct
            ]
        )
        return per_rate[self._index]  # type: ignore[no-any-return]

    def metrics(self, t: int) -> dict[str, float]:
        """The records of round ``t``: ``privacy/epsilon`` (worst node), ``.._mean``."""
        eps = self.epsilons(t)
        return {"privacy/epsilon": float(eps.max()), "privacy/epsilon_mean": float(eps.mean())}


__all__ = [
    "ACCOUNTANTS",
    "Privacy",
    "PrivacyAccountant",
    "PrivacyError",
    "PrivateOracle",
    "SamplingRates",
    "epsilon",
    "per_sample_grads",
    "sampling_rates",
]
