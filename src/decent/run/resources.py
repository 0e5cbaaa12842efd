"""Check before training that a run fits the machine: memory up front, evaluation cost.

A run of ``n`` nodes holds its algorithm's state (one or two ``(n, d)`` tensors), the
gradients and query points, one round's minibatches, the mixing output and, at
evaluation rounds, per-node evaluation temporaries. :func:`estimate` adds these up from
the built objects (the state is measured by running ``algorithm.init`` on one and two rows
and scaling to ``n``, so no ``(n, d)`` memory is touched; meta tensors would cost the import
of ``torch._dynamo``, seconds in every process); :func:`check` refuses a run that cannot
fit, with the estimate, what is available and what to change, before anything is allocated.
"""

from __future__ import annotations

import itertools
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from decent.metrics import EVAL_CHUNK


class ResourceError(ValueError):
    """A run that cannot fit the machine; the message has the estimate and the fix."""


class CostWarning(UserWarning):
    """A run that fits but spends much of its time on something that can be turned off."""


MANY_NODES = 100_000
"""From this many nodes on, a per-node evaluation is warned of (one model per node)."""


@dataclass(frozen=True)
class Estimate:
    """Bytes a run needs at its peak, by part, and the flops of one per-node evaluation."""

    state: int
    work: int
    batch: int
    evaluation: int
    node_eval_flops: float

    @property
    def total(self) -> int:
        return self.state + self.work + self.batch + self.evaluation


def _sizes(tree: Any) -> list[int]:
    """Bytes of every tensor in a pytree (tuples, lists, dicts, named tuples)."""
    leaves = torch.utils._pytree.tree_leaves(tree)
    return [t.numel() * t.element_size() for t in leaves if isinstance(t, torch.Tensor)]


def _nbytes(tree: Any) -> int:
    return sum(_sizes(tree))


_PROBE = 64
"""Largest ``batch_size`` whose minibatch :func:`estimate` draws to measure it."""


def _batch_bytes(task: Any, comm: Any, m: int, d: int, item: int) -> int:
    """Bytes of one round's minibatches of ``m`` nodes, drawn only when small.

    A larger batch is sized from its shape, ``batch_size`` samples of the data's features
    (``d`` for a streaming task) and a label each, so nothing is allocated.
    """
    b = getattr(task, "batch_size", None)
    if isinstance(b, int) and b > _PROBE:
        data = getattr(task, "train", None)
        width = int(getattr(data, "num_features", d) or d)
        return m * b * (width + 1) * item
    return _nbytes(task.sample(comm.node_ids[:1], 1, 0)) * m


def estimate(algorithm: Any, task: Any, comm: Any) -> Estimate:
    """Peak bytes of a run of ``algorithm`` on ``task`` over the nodes ``comm`` holds."""
    m = int(comm.node_ids.shape[0])
    d = int(task.dim)
    item = torch.empty((), dtype=task.dtype).element_size()
    try:  # a state is linear in its rows: measured on one and two rows, scaled to m
        one, two = (_sizes(algorithm.init(torch.zeros(k, d, dtype=task.dtype))) for k in (1, 2))
        sizes = [a + (b - a) * (m - 1) for a, b in zip(one, two, strict=True)]
        state_bytes, biggest = sum(sizes), max(sizes, default=0)
    except Exception:  # an algorithm that cannot start from two rows: assume two copies
        state_bytes, biggest = 2 * m * d * item, 2 * m * d * item
    # gradients, the query point, the mixing output (as large as the largest message)
    work = 2 * m * d * item + biggest
    batch = _batch_bytes(task, comm, m, d, item)
    eval_size = int(getattr(task, "eval_size", 0) or 0)
    # per-node evaluation: EVAL_CHUNK node models on the whole evaluation set at once
    evaluation = min(m, EVAL_CHUNK) * max(eval_size, 1) * item * 4
    flops = 2.0 * m * eval_size * d
    return Estimate(state_bytes, work, batch, evaluation, flops)


def available_memory(device: torch.device | str | None = None) -> int | None:
    """Bytes available for a new allocation on ``device`` (``None`` if unknown)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**27 else f"{n / 2**20:.3g} MiB"


def check(
    algorithm: Any,
    task: Any,
    comm: Any,
    *,
    per_node_eval: Any = "final",
    available: int | None = None,
    flop_limit: float = 1e13,
) -> Estimate:
    """Refuse a run that cannot fit in memory, or whose per-node evaluation takes hours.

    Args:
        algorithm, task, comm: the built run.
        per_node_eval: the run's setting; per-node evaluation cost only counts when on.
        available: bytes available (default: :func:`available_memory` of the task's data).
        flop_limit: a per-node evaluation above this many flops is refused (about an hour
            at a few GFLOP/s).

    Warns:
        CostWarning: a per-node evaluation of :data:`MANY_NODES` or more node models.

    Raises:
        ResourceError: with the estimate by part, the memory available and what to change.
    """
    est = estimate(algorithm, task, comm)
    nodes_on = per_node_eval not in (False, "none")
    m = int(comm.node_ids.shape[0])
    if nodes_on and m >= MANY_NODES:
        shown = per_node_eval if isinstance(per_node_eval, str) else "every"
        warnings.warn(
            f'per_node_eval = "{shown}" evaluates each of the {m} nodes\' own models ({m} '
            "model evaluations "
            + ("at the last evaluation" if shown == "final" else "at every evaluation")
            + ", besides the network average's one); "
            'set per_node_eval = "none" to keep only the metrics at the network average',
            CostWarning,
            stacklevel=2,
        )
    need = est.total if nodes_on else est.total - est.evaluation
    if available is None:
        available = available_memory(comm.node_ids.device)
    if available is not None and need > 0.9 * available:
        raise ResourceError(
            f"this run needs about {_gib(need)} (state {_gib(est.state)}, gradients and "
            f"mixing {_gib(est.work)}, minibatches {_gib(est.batch)}"
            + (f", per-node evaluation {_gib(est.evaluation)}" if nodes_on else "")
            + f") but {_gib(available)} is available; "
            + ("lower task.batch_size, " if est.batch > need / 2 else "")
            + "use fewer nodes "
            "(topology.num_nodes), a smaller model (task.hidden) or batch, "
            + ('per_node_eval = "none", fewer eval_samples, ' if nodes_on else "")
            + 'or dtype = "float32"'
        )
    if nodes_on and est.node_eval_flops > flop_limit:
        raise ResourceError(
            f"one per-node evaluation scores {int(comm.node_ids.shape[0])} node models on "
            f"{int(getattr(task, 'eval_size', 0))} samples: about "
            f'{est.node_eval_flops:.2g} flops, hours of work; set per_node_eval = "none" '
            "(the metrics at the network average stay), or use fewer eval_samples"
        )
    return est


def check_batch(algorithm: Any, task: Any, comm: Any, replicas: int) -> None:
    """Refuse a replica batch whose ``replicas`` copies of the per-row state do not fit.

    Raises:
        ResourceError: with the estimate and a smaller batch that would fit.
    """
    est = estimate(algorithm, task, comm)
    per = est.state + est.work + est.batch
    available = available_memory(comm.node_ids.device)
    if available is not None and per * replicas > 0.9 * available:
        fits = max(1, int(0.9 * available // max(per, 1)))
        raise ResourceError(
            f"a batch of {replicas} replicas needs about {_gib(per * replicas)} but "
            f"{_gib(available)} is available; use at most {fits} replicas per batch "
            "(decent sweep --replicas)"
        )


_FEATURES = {"digits": 64, "breast_cancer": 30}
"""Feature counts of the built-in datasets, known before they are loaded."""


def check_config(config: Any, *, available: int | None = None) -> None:
    """A coarse check from the config alone, before the task is built (its set-up draws).

    A streaming task of ``n`` nodes in ``d`` dimensions draws ``(n, d)`` blocks in float64
    while it is built (local optima, feature shifts: about three such blocks at the peak)
    and a run then holds several ``(n, d)`` tensors; every task draws ``batch_size``
    samples per node and round (``n b (d + 1)`` values), and an MLP's hidden layers give
    at least ``sum_i h_i h_{i+1}`` parameters per node (the data's feature count counts as
    1 where the config does not give it). A dataset task's full size is only known once it
    is loaded, so it is checked by :func:`check` after the build. The message names the
    field of the largest part.

    Raises:
        ResourceError: when even this lower bound does not fit.
    """
    task = config.task
    n = int(config.topology.num_nodes)
    item = 4 if config.dtype == "float32" else 8
    d = getattr(task, "dim", None)
    dataset = getattr(task, "dataset", None)
    features = int(  # a file's feature count is unknown before loading: 1 is a lower bound
        getattr(dataset, "num_features", None) or _FEATURES.get(getattr(dataset, "kind", ""), 1)
    )
    width = int(d) if d is not None else features
    parts: list[tuple[int, str]] = []
    if d is not None:
        parts.append(
            (
                n * int(d) * (3 * 8 + 6 * item),
                f"several (n, d) = ({n}, {d}) tensors; use fewer nodes (topology.num_nodes) or a "
                "smaller task.dim",
            )
        )
    hidden = getattr(task, "hidden", None)
    if hidden:  # the model's parameters: one module to build, and several copies per node
        widths = [features, *(int(h) for h in hidden), 2]
        params = sum(a * b + b for a, b in itertools.pairwise(widths))
        parts.append(
            (
                (n * 6 + 2) * params * item,
                f"task.hidden = {list(hidden)} gives at least {params:.3g} parameters per node; "
                "use smaller hidden layers or fewer nodes (topology.num_nodes)",
            )
        )
    b = getattr(task, "batch_size", None)
    if isinstance(b, int) and not isinstance(b, bool):
        parts.append(
            (
                n * b * (width + 1) * item,
                f"task.batch_size = {b} samples of {width} features at each of {n} nodes; use a "
                "smaller task.batch_size",
            )
        )
    if not parts:
        return
    need = sum(bytes_ for bytes_, _ in parts)
    if available is None:
        available = available_memory()
    if available is not None and need > 0.9 * available:
        _, why = max(parts)
        raise ResourceError(
            f"this run needs at least {_gib(need)} to build and train ({why}), but "
            f"{_gib(available)} is available"
        )


__all__ = [
    "MANY_NODES",
    "CostWarning",
    "Estimate",
    "ResourceError",
    "available_memory",
    "check",
    "check_batch",
    "check_config",
    "estimate",
]
