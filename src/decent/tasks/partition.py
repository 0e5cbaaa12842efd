"""Split sample indices across nodes: IID, Dirichlet label skew, and label shards.

Every partitioner takes the ``(N,)`` labels and returns ``num_nodes`` sorted int64 index
tensors that together hold every sample exactly once. The result is a pure function of the
arguments (numpy's ``default_rng(seed)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import annotated_types as at
import numpy as np
import torch

from decent._params import SIZE, Doc, checked_args
from decent.tasks._checks import Nodes, PartitionSeed
from decent.tasks.base import TaskError

Partition = list[torch.Tensor]
"""``num_nodes`` int64 index tensors, one per node."""


def _labels(labels: Any) -> np.ndarray:
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if y.ndim != 1:
        raise TaskError(f"labels must be 1-D (N,), got shape {y.shape}")
    if y.size == 0:
        raise TaskError("labels is empty; a partition needs at least one sample")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.number) or not np.all(y == np.round(y)):
            raise TaskError(f"labels must be integers, got dtype {y.dtype}")
        y = y.astype(np.int64)
    return y.astype(np.int64)


def _nodes(n: int, num_samples: int, per_node: int = 1) -> int:
    if n * per_node > num_samples:
        raise TaskError(
            f"num_nodes={n} needs at least {n * per_node} samples "
            f"({per_node} per node) but there are only {num_samples}; use fewer nodes "
            "or more data"
        )
    return n


def _to_tensors(groups: list[np.ndarray]) -> Partition:
    return [torch.as_tensor(np.sort(g).astype(np.int64)) for g in groups]


@checked_args("iid", TaskError)
def iid(labels: Any, num_nodes: Nodes, *, seed: PartitionSeed) -> Partition:
    """Shuffle the samples and deal them out in near-equal contiguous blocks.

    Node sizes differ by at most one.

    Args:
        labels: ``(N,)`` labels (only their count matters).
        num_nodes: ``n``, at most ``N``.
        seed: seed of the shuffle.

    Raises:
        TaskError: when ``num_nodes > N`` or an argument is malformed.
    """
    y = _labels(labels)
    n = _nodes(num_nodes, y.size)
    perm = np.random.default_rng(seed).permutation(y.size)
    return _to_tensors(np.array_split(perm, n))


@checked_args("dirichlet", TaskError)
def dirichlet(
    labels: Any,
    num_nodes: Nodes,
    alpha: Annotated[
        float,
        at.Interval(gt=0.0, le=1e3),
        Doc("Concentration: small = very skewed (0.1), large = iid (100 is nearly iid)."),
    ],
    *,
    seed: PartitionSeed,
    min_size: Annotated[int, at.Ge(0), Doc("Smallest shard.")] = 1,
) -> Partition:
    r"""Label-skewed split: class ``c``'s samples go to nodes in proportions ``p_c ~ Dir(alpha 1_n)``.

    Small ``alpha`` concentrates each class on few nodes; large ``alpha`` approaches an IID
    split. After the draw, nodes with fewer than ``min_size`` samples take random samples
    from the currently largest node until every node has ``min_size``.

    Args:
        labels: ``(N,)`` integer labels.
        num_nodes: ``n``.
        alpha: Dirichlet concentration ``> 0``.
        seed: seed of the draws.
        min_size: smallest allowed shard, ``0 <= min_size``, ``n * min_size <= N``.

    Raises:
        TaskError: for ``alpha <= 0``, ``n * min_size > N`` or malformed arguments.
    """
    y = _labels(labels)
    n = _nodes(num_nodes, y.size, per_node=min_size)
    a = float(alpha)
    rng = np.random.default_rng(seed)
    groups: list[list[np.ndarray]] = [[] for _ in range(n)]
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        p = rng.dirichlet(np.full(n, a))
        cuts = np.round(np.cumsum(p)[:-1] * members.size).astype(np.int64)
        for node, part in enumerate(np.split(members, cuts)):
            groups[node].append(part)
    shards = [np.concatenate(g) if g else np.zeros(0, np.int64) for g in groups]
    # Rebalance: move random samples from the largest shard to shards below min_size.
    for node in range(n):
        while shards[node].size < min_size:
            donor = int(np.argmax([s.size for s in shards]))
            take = min(min_size - shards[node].size, shards[donor].size - min_size)
            pick = rng.permutation(shards[donor].size)
            shards[node] = np.concatenate([shards[node], shards[donor][pick[:take]]])
            shards[donor] = shards[donor][pick[take:]]
    return _to_tensors(shards)


@checked_args("shards", TaskError)
def shards(
    labels: Any,
    num_nodes: Nodes,
    classes_per_node: Annotated[int, SIZE, Doc("Shards (about classes) per node.")],
    *,
    seed: PartitionSeed,
) -> Partition:
    """Pathological non-IID split: sort by label, cut into shards, give each node a few.

    The samples, sorted by label (ties in random order), are cut into
    ``num_nodes * classes_per_node`` near-equal shards and each node receives
    ``classes_per_node`` random shards, so a node sees about ``classes_per_node`` classes
    (McMahan et al., 2017, https://arxiv.org/abs/1602.05629).

    Args:
        labels: ``(N,)`` integer labels.
        num_nodes: ``n``.
        classes_per_node: shards per node, ``>= 1``.
        seed: seed of the tie order and the shard assignment.

    Raises:
        TaskError: when ``num_nodes * classes_per_node > N`` or an argument is malformed.
    """
    y = _labels(labels)
    k = classes_per_node
    n = _nodes(num_nodes, y.size, per_node=k)
    rng = np.random.default_rng(seed)
    tie = rng.permutation(y.size)
    order = tie[np.argsort(y[tie], kind="stable")]
    pieces = np.array_split(order, n * k)
    owner = rng.permutation(n * k)  # piece owner[j] goes to node owner[j] % n
    groups: list[list[np.ndarray]] = [[] for _ in range(n)]
    for j, piece in enumerate(pieces):
        groups[int(owner[j]) % n].append(piece)
    return _to_tensors([np.concatenate(g) for g in groups])


@checked_args("by_group", TaskError)
def by_group(groups: Any, num_nodes: Nodes, *, seed: PartitionSeed) -> Partition:
    """Whole groups to nodes: every sample of a group (a source file, a writer, a client)
    goes to the same node, and the nodes' sample counts are balanced.

    Groups are dealt largest first (ties in a seeded random order) to the node that holds
    the fewest samples so far (ties to the lowest node), the longest-processing-time rule.
    This is the natural non-iid split of text: each node holds its own files.

    Args:
        groups: ``(N,)`` integer group of each sample.
        num_nodes: ``n``, at most the number of groups.
        seed: seed of the order among groups of equal size.

    Raises:
        TaskError: when there are fewer groups than nodes, or an argument is malformed.

    Example:
        >>> [p.tolist() for p in by_group([0, 0, 0, 1, 2, 2], 2, seed=0)]
        [[0, 1, 2], [3, 4, 5]]
    """
    y = _labels(groups)
    ids, counts = np.unique(y, return_counts=True)
    n = num_nodes
    if ids.size < n:
        raise TaskError(
            f"num_nodes={n} needs at least {n} groups (one per node) but there are only "
            f"{ids.size}; use fewer nodes or more groups (files)"
        )
    tie = np.random.default_rng(seed).permutation(ids.size)
    order = tie[np.argsort(-counts[tie], kind="stable")]
    load = np.zeros(n, dtype=np.int64)
    owner = np.empty(ids.size, dtype=np.int64)
    for g in order:
        node = int(np.argmin(load))  # the first of the least loaded
        owner[g] = node
        load[node] += counts[g]
    node_of = owner[np.searchsorted(ids, y)]
    return _to_tensors([np.flatnonzero(node_of == i) for i in range(n)])


PARTITIONERS: dict[str, Callable[..., Partition]] = {
    "iid": iid,
    "dirichlet": dirichlet,
    "shards": shards,
}
"""Partitioners by name; call as ``PARTITIONERS[name](labels, num_nodes, ..., seed=seed)``."""


__all__ = ["PARTITIONERS", "Partition", "by_group", "dirichlet", "iid", "shards"]
