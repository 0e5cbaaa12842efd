"""The counter-based RNG: placement independence, distribution, separation of streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from decent import _rng, _stream


def test_rows_depend_only_on_their_node():
    nodes = torch.arange(50)
    full = _rng.normal(7, 1, 3, nodes, (4, 3))
    part = _rng.normal(7, 1, 3, torch.tensor([42, 3, 17]), (4, 3))
    assert torch.equal(part, full[[42, 3, 17]])
    assert torch.equal(
        _rng.uniform(7, 1, 3, torch.tensor([5]), (9,))[0], _rng.uniform(7, 1, 3, nodes, (9,))[5]
    )


@pytest.mark.parametrize("change", ["seed", "stream", "t", "node"])
def test_each_coordinate_changes_the_draw(change):
    args = {"seed": 1, "stream": 2, "t": 3, "node": 4}
    base = _rng.uniform(
        args["seed"], args["stream"], args["t"], torch.tensor([args["node"]]), (64,)
    )
    args[change] += 1
    other = _rng.uniform(
        args["seed"], args["stream"], args["t"], torch.tensor([args["node"]]), (64,)
    )
    # independent 53-bit uniforms agree with probability 2**-53 each
    assert (base == other).sum() <= 1


def test_large_seeds_and_rounds_are_accepted_and_distinct():
    a = _rng.uniform(2**40 + 1, 0, 2**33, torch.tensor([0]), (8,))
    b = _rng.uniform(1, 0, 2**33, torch.tensor([0]), (8,))
    assert a.min() > 0 and a.max() < 1 and not torch.equal(a, b)


def test_uniform_is_uniform_and_in_open_interval():
    u = _rng.uniform(0, 5, 1, torch.arange(200), (500,)).flatten().numpy()
    assert u.min() > 0.0 and u.max() < 1.0
    assert stats.kstest(u, "uniform").pvalue > 1e-4


def test_normal_moments_and_ks():
    z = _rng.normal(3, 9, 11, torch.arange(100), (1001,)).flatten().numpy()
    assert abs(z.mean()) < 5 / np.sqrt(z.size)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / z.size)
    assert stats.kstest(z, "norm").pvalue > 1e-4


def test_consecutive_draws_are_uncorrelated():
    bits = _rng.uniform(0, 0, 0, torch.arange(400), (256,)).numpy()
    x = bits[:, :-1].ravel()
    y = bits[:, 1:].ravel()
    assert abs(np.corrcoef(x, y)[0, 1]) < 5 / np.sqrt(x.size)
    rows = np.corrcoef(bits[:-1].ravel(), bits[1:].ravel())[0, 1]
    assert abs(rows) < 5 / np.sqrt(x.size)


def test_integers_cover_their_range_per_node():
    high = torch.tensor([1, 3, 10])
    idx = _stream.integers(0, 0, 0, torch.arange(3), 3000, 3, high)
    for r, h in enumerate(high.tolist()):
        counts = np.bincount(idx[r].numpy(), minlength=h)
        assert len(counts) == h and counts.min() > 3000 / h * 0.8


def test_dtype_and_shape():
    z = _rng.normal(0, 0, 0, torch.arange(4), (2, 3), dtype=torch.float32)
    assert z.shape == (4, 2, 3) and z.dtype == torch.float32
