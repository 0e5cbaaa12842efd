"""Message compressors: exact encodings, exact sizes, and the statistics each one promises."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from decent.comm.compress import (
    Compressor,
    CompressorError,
    pack_bits,
    row_nodes,
    unpack_bits,
)

KINDS = [
    Compressor("identity"),
    Compressor("top_k", ratio=0.1),
    Compressor("random_k", ratio=0.25, seed=3),
    Compressor("qsgd", bits=1),
    Compressor("qsgd", bits=4),
    Compressor("qsgd", bits=11),
    Compressor("sign"),
]


def _v(m: int, d: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(m, d, generator=g, dtype=torch.float64).to(dtype)
    v[0, : d // 3] = 0.0  # zeros, ties and a zero row are part of real traffic
    v[1] = 0.0
    return v


@pytest.mark.parametrize("comp", KINDS, ids=lambda c: c.describe())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [7, 300, 40000])
def test_the_wire_decodes_to_the_values_bit_for_bit(comp, dtype, d):
    m = 5 if d < 40000 else 3
    v = _v(m, d, dtype)
    p = comp.compress(v, t=4, nodes=torch.arange(m), num_nodes=m)
    wire = p.wire()
    assert wire.dtype == torch.uint8 and wire.shape == (m, p.nbytes)
    assert p.nbytes == comp.message_bytes(d, dtype)
    assert p.dense.dtype == dtype and p.dense.shape == v.shape
    # a receiver gets the bytes only (a copy, as from a socket)
    assert torch.equal(p.decode(wire.clone()), p.dense)


def test_message_sizes_are_the_real_encodings():
    d = 650
    assert Compressor("identity").message_bytes(d, torch.float32) == 2600
    # k = 65 values of 4 bytes and 65 int16 indices (d > 256)
    assert Compressor("top_k", ratio=0.1).message_bytes(d, torch.float32) == 65 * 6
    assert Compressor("top_k", ratio=0.1).message_bytes(200, torch.float64) == 20 * 9  # uint8 idx
    # a float norm and 5 bits per entry, packed: ceil(650 * 5 / 8) = 407
    assert Compressor("qsgd", bits=4).message_bytes(d, torch.float32) == 4 + 407
    assert Compressor("sign").message_bytes(d, torch.float64) == 8 + 82


def test_top_k_keeps_the_largest_entries():
    v = _v(6, 50, seed=2)
    v[2, 10] = v[2, 11] = 7.0  # a tie among the kept entries
    p = Compressor("top_k", ratio=0.2).compress(v, 1, torch.arange(6), 6)
    a = v.numpy()
    for i in range(6):
        keep = np.argsort(-np.abs(a[i]), kind="stable")[:10]
        thresh = np.abs(a[i][keep]).min()
        got = p.dense[i].numpy()
        assert np.count_nonzero(got) <= 10
        kept = got != 0
        np.testing.assert_array_equal(got[kept], a[i][kept])
        assert np.all(np.abs(a[i][~kept]) <= thresh)


def test_random_k_picks_each_coordinate_with_probability_k_over_d():
    d, k, rounds = 40, 10, 2000
    comp = Compressor("random_k", ratio=k / d, seed=1)
    v = torch.ones(3, d, dtype=torch.float64)
    counts = torch.zeros(3, d)
    for t in range(1, rounds + 1):
        p = comp.compress(v, t, torch.arange(3), 3)
        chosen = p.dense != 0
        assert torch.all(chosen.sum(dim=1) == k)  # k distinct coordinates
        counts += chosen
    # each count is Binomial(rounds, 1/4): mean 500, sd 19.4; 5 sd bounds every one
    p_hat = k / d
    sd = math.sqrt(rounds * p_hat * (1 - p_hat))
    assert float((counts - rounds * p_hat).abs().max()) < 5 * sd
    # the nodes draw differently from each other
    assert not torch.equal(counts[0], counts[1])


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_qsgd_is_unbiased(bits):
    """E[Q(v)] = v: the mean of N independent quantizations is within 5 standard errors.

    Each entry's level is ``floor(r + u)``, a Bernoulli step of size ``||v|| / s`` above
    ``floor(r)``: its variance is at most ``(||v|| / s)^2 / 4``, so the standard error of a
    mean of ``N`` draws is at most ``||v|| / (2 s sqrt(N))``.
    """
    d, n_draws = 16, 4000
    v = _v(2, d, seed=5)
    v[1] = torch.linspace(-1, 1, d, dtype=torch.float64)
    comp = Compressor("qsgd", bits=bits, seed=9)
    total = torch.zeros_like(v)
    for t in range(1, n_draws + 1):
        total += comp.compress(v, t, torch.tensor([4, 7]), 8).dense
    mean = total / n_draws
    s = 2**bits - 1
    se = torch.linalg.vector_norm(v, dim=1, keepdim=True) / (2 * s * math.sqrt(n_draws))
    assert torch.all((mean - v).abs() <= 5 * se + 1e-15)
    # and it is not the identity: the quantization error is real
    one = comp.compress(v, 1, torch.tensor([4, 7]), 8).dense
    assert float((one - v).abs().max()) > 1e-3


def test_qsgd_levels():
    v = _v(4, 30, seed=6)
    p = Compressor("qsgd", bits=1).compress(v, 2, torch.arange(4), 4)
    norms = torch.linalg.vector_norm(v, dim=1, keepdim=True)
    ok = (p.dense == 0) | (p.dense == norms) | (p.dense == -norms)
    assert bool(ok.all())
    assert torch.all(torch.sign(p.dense) * torch.sign(v) >= 0)  # never the wrong sign
    assert torch.all(p.dense[1] == 0)  # the zero row stays zero


def test_scaled_sign():
    v = _v(4, 30, seed=7)
    p = Compressor("sign").compress(v, 2, torch.arange(4), 4)
    scale = v.abs().mean(dim=1, keepdim=True)
    expect = torch.where(v < 0, -scale, scale)
    torch.testing.assert_close(p.dense, expect, rtol=1e-15, atol=0)


@pytest.mark.parametrize("comp", KINDS, ids=lambda c: c.describe())
def test_a_node_compresses_the_same_wherever_it_is_held(comp):
    """Node 5's message at round 3 is the same as a row of the whole network and alone."""
    n, d = 8, 33
    v = _v(n, d, seed=8)
    full = comp.compress(v, 3, torch.arange(n), n).dense
    alone = comp.compress(v[5:6], 3, torch.tensor([5]), n).dense
    assert torch.equal(full[5:6], alone)
    # replica rows (node-major, R = 3 copies of each node) draw their node's numbers
    reps = v.repeat_interleave(3, dim=0)
    batched = comp.compress(reps, 3, row_nodes(torch.arange(n), n * 3), n).dense
    assert torch.equal(batched.view(n, 3, d)[:, 1], full)


def test_bits_pack_and_unpack():
    g = torch.Generator().manual_seed(0)
    for length in (1, 8, 13, 64, 999):
        bits = torch.rand(3, length, generator=g) < 0.5
        packed = pack_bits(bits)
        assert packed.shape == (3, math.ceil(length / 8)) and packed.dtype == torch.uint8
        assert torch.equal(unpack_bits(packed, length), bits)
    assert (
        pack_bits(torch.tensor([[True, False, False, False, False, False, False, True]])).item()
        == 129
    )


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"kind": "zip"}, "compressor.kind must be 'identity' or 'top_k'"),
        ({"kind": "top_k", "ratio": 0.0}, "compressor.ratio must be a finite number > 0.0, <= 1.0"),
        ({"kind": "top_k", "ratio": 1.5}, "compressor.ratio must be a finite number > 0.0, <= 1.0"),
        ({"kind": "qsgd", "bits": 0}, "compressor.bits must be an integer >= 1, <= 16"),
        ({"kind": "qsgd", "seed": -1}, "compressor.seed must be an integer >= 0"),
    ],
)
def test_bad_settings_name_the_field(kwargs, field):
    with pytest.raises(CompressorError, match=re.escape(field)):
        Compressor(**kwargs)


def test_contractive_qsgd_is_the_unbiased_one_over_tau_and_contracts():
    """``E[Q / tau] = v / tau`` and ``E ||Q / tau - v||^2 <= (1 - 1 / tau) ||v||^2``."""
    d, n_draws, bits = 30, 3000, 2
    v = _v(3, d, seed=11)[2:]  # one nonzero row
    plain = Compressor("qsgd", bits=bits, seed=4)
    scaled = Compressor("qsgd", bits=bits, seed=4, contractive=True)
    tau = scaled.qsgd_tau(d)
    s = 2**bits - 1
    assert tau == pytest.approx(1 + min(d / s**2, math.sqrt(d) / s))
    err = 0.0
    for t in range(1, n_draws + 1):
        a = plain.compress(v, t, torch.tensor([0]), 1).dense
        b = scaled.compress(v, t, torch.tensor([0]), 1)
        torch.testing.assert_close(b.dense, a / tau, rtol=1e-12, atol=0)  # same draws
        assert torch.equal(b.decode(b.wire()), b.dense)
        err += float(((b.dense - v) ** 2).sum())
    assert err / n_draws <= (1 - 1 / tau) * float((v**2).sum())
