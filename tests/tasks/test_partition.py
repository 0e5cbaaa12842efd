"""Partitioners: exact coverage, sizes, reproducibility and label skew (hypothesis)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from decent.tasks import PARTITIONERS, TaskError, dirichlet, iid, shards
from decent.tasks.partition import by_group

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def labelled(draw: st.DrawFn, per_node: int = 1) -> tuple[np.ndarray, int, int]:
    num_classes = draw(st.integers(1, 6))
    n_samples = draw(st.integers(per_node, 120))
    labels = np.asarray(
        draw(st.lists(st.integers(0, num_classes - 1), min_size=n_samples, max_size=n_samples))
    )
    num_nodes = draw(st.integers(1, max(1, n_samples // per_node)))
    seed = draw(st.integers(0, 2**31 - 1))
    return labels, num_nodes, seed


def _check_exact_cover(parts: list[torch.Tensor], n_samples: int, num_nodes: int) -> None:
    assert len(parts) == num_nodes
    assert all(p.dtype == torch.int64 and p.ndim == 1 for p in parts)
    assert torch.equal(torch.cat(parts).sort().values, torch.arange(n_samples))


@SETTINGS
@given(labelled())
def test_iid_covers_exactly_once_with_balanced_sizes(case: tuple[np.ndarray, int, int]) -> None:
    labels, n, seed = case
    parts = iid(labels, n, seed=seed)
    _check_exact_cover(parts, labels.size, n)
    sizes = [p.numel() for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert all(torch.equal(a, b) for a, b in zip(parts, iid(labels, n, seed=seed), strict=True))


@SETTINGS
@given(labelled(), st.floats(0.01, 100.0), st.integers(0, 3))
def test_dirichlet_covers_exactly_once_and_respects_min_size(
    case: tuple[np.ndarray, int, int], alpha: float, min_size: int
) -> None:
    labels, n, seed = case
    min_size = min(min_size, labels.size // n)
    parts = dirichlet(labels, n, alpha, seed=seed, min_size=min_size)
    _check_exact_cover(parts, labels.size, n)
    assert min(p.numel() for p in parts) >= min_size
    again = dirichlet(torch.as_tensor(labels), n, alpha, seed=seed, min_size=min_size)
    assert all(torch.equal(a, b) for a, b in zip(parts, again, strict=True))


@SETTINGS
@given(labelled(per_node=3), st.integers(1, 3))
def test_shards_cover_exactly_once_with_equal_shard_counts(
    case: tuple[np.ndarray, int, int], k: int
) -> None:
    labels, n, seed = case
    parts = shards(labels, n, k, seed=seed)
    _check_exact_cover(parts, labels.size, n)
    piece_lo, piece_hi = labels.size // (n * k), -(-labels.size // (n * k))
    assert all(k * piece_lo <= p.numel() <= k * piece_hi for p in parts)
    assert all(
        torch.equal(a, b) for a, b in zip(parts, shards(labels, n, k, seed=seed), strict=True)
    )


def _label_skew(parts: list[torch.Tensor], labels: np.ndarray, num_classes: int) -> float:
    """Mean total-variation distance between node label histograms and the global one."""
    glob = np.bincount(labels, minlength=num_classes) / labels.size
    tv = [
        0.5 * np.abs(np.bincount(labels[p.numpy()], minlength=num_classes) / p.numel() - glob).sum()
        for p in parts
    ]
    return float(np.mean(tv))


def test_dirichlet_skew_grows_as_alpha_shrinks() -> None:
    labels = np.arange(2000) % 10
    skew = [_label_skew(dirichlet(labels, 20, a, seed=0), labels, 10) for a in (0.05, 1.0, 1000.0)]
    assert skew[0] > skew[1] > skew[2]
    assert skew[0] > 0.6 and skew[2] < 0.1
    assert _label_skew(iid(labels, 20, seed=0), labels, 10) < 0.15


def test_shards_limit_classes_per_node() -> None:
    labels = np.repeat(np.arange(10), 100)  # 10 classes of 100; pieces of 50
    for k in (1, 2):
        parts = shards(labels, 10 // k * 2, k, seed=1)
        assert all(len(np.unique(labels[p.numpy()])) <= k for p in parts)


def test_different_seeds_give_different_partitions() -> None:
    labels = np.arange(200) % 4
    cases: list[tuple[str, dict[str, Any]]] = [
        ("iid", {}),
        ("dirichlet", {"alpha": 0.5}),
        ("shards", {"classes_per_node": 2}),
    ]
    for name, kwargs in cases:
        a = PARTITIONERS[name](labels, 5, seed=0, **kwargs)
        b = PARTITIONERS[name](labels, 5, seed=1, **kwargs)
        assert any(not torch.equal(x, y) for x, y in zip(a, b, strict=True)), name


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda y: iid(y, 11, seed=0), "num_nodes=11"),
        (lambda y: iid(y, 0, seed=0), "num_nodes"),
        (lambda y: iid(y, 2, seed=-1), "seed"),
        (lambda y: dirichlet(y, 2, 0.0, seed=0), "alpha"),
        (lambda y: dirichlet(y, 2, float("inf"), seed=0), "alpha"),
        (lambda y: dirichlet(y, 4, 1.0, seed=0, min_size=3), "3 per node"),
        (lambda y: shards(y, 3, 4, seed=0), "4 per node"),
        (lambda y: shards(y, 2, 0, seed=0), "classes_per_node"),
        (lambda y: iid(y.reshape(2, 5), 2, seed=0), "1-D"),
        (lambda y: iid(y[:0], 1, seed=0), "empty"),
        (lambda y: iid(y + 0.5, 2, seed=0), "integers"),
    ],
)
def test_bad_arguments_raise_task_error(call, needle: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TaskError, match=needle):
        call(np.arange(10) % 3)


def test_registry_names() -> None:
    assert set(PARTITIONERS) == {"iid", "dirichlet", "shards"}


@st.composite
def grouped(draw: st.DrawFn) -> tuple[np.ndarray, int, int]:
    num_groups = draw(st.integers(1, 12))
    n_samples = draw(st.integers(num_groups, 150))
    extra = draw(st.lists(st.integers(0, num_groups - 1), min_size=n_samples - num_groups))
    groups = np.asarray([*range(num_groups), *extra])[
        np.random.default_rng(draw(st.integers(0, 99))).permutation(n_samples)
    ]
    num_nodes = draw(st.integers(1, num_groups))
    return groups, num_nodes, draw(st.integers(0, 2**31 - 1))


@SETTINGS
@given(grouped())
def test_by_group_keeps_groups_whole_and_balances(case: tuple[np.ndarray, int, int]) -> None:
    groups, num_nodes, seed = case
    parts = by_group(groups, num_nodes, seed=seed)
    _check_exact_cover(parts, groups.size, num_nodes)
    owners = [set(groups[p.numpy()].tolist()) for p in parts]
    for i in range(num_nodes):  # no group on two nodes
        for j in range(i + 1, num_nodes):
            assert not owners[i] & owners[j]
    # largest first to the least loaded: the spread is at most the largest group
    sizes = [p.numel() for p in parts]
    assert max(sizes) - min(sizes) <= np.bincount(groups).max()
    again = by_group(groups, num_nodes, seed=seed)
    assert all(torch.equal(a, b) for a, b in zip(parts, again, strict=True))


def test_by_group_needs_a_group_per_node() -> None:
    with pytest.raises(TaskError, match=r"num_nodes=3 needs at least 3 groups .* only 2"):
        by_group([0, 0, 1], 3, seed=0)
