"""The per-round bulk draws (decent._stream): placement independence and statistical quality.

The generator is torch's own (mt19937 on the CPU); what decent adds is the keying by
(seed, stream, round, node block). So besides moments and the distribution, these tests
look for what keying could break: correlation between neighbouring nodes, rounds, seeds
(replicas) and streams, and between the blocks of a large network.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from decent import _stream


@pytest.mark.parametrize("n", [1, 7, 64, 100, 1024, 3000])
def test_a_node_draws_the_same_whichever_process_holds_it(n: int) -> None:
    everyone = _stream.normal(5, 1, 9, torch.arange(n), 6, n)
    some = torch.tensor(sorted({0, n // 2, n - 1, (7 * n) // 9}))
    assert torch.equal(_stream.normal(5, 1, 9, some, 6, n), everyone[some])
    one = _stream.normal(5, 1, 9, torch.tensor([n - 1]), 6, n)
    assert torch.equal(one[0], everyone[n - 1])
    reversed_ids = torch.arange(n - 1, -1, -1)
    assert torch.equal(_stream.normal(5, 1, 9, reversed_ids, 6, n), everyone.flip(0))


def test_dtypes_share_the_draw_and_integers_respect_their_range() -> None:
    nodes = torch.arange(50)
    z32 = _stream.normal(1, 2, 3, nodes, 8, 50)
    z64 = _stream.normal(1, 2, 3, nodes, 8, 50, torch.float64)
    assert z64.dtype == torch.float64 and torch.equal(z64.float(), z32)
    high = torch.arange(1, 51)
    idx = _stream.integers(1, 2, 3, nodes, 4000, 50, high)
    assert idx.dtype == torch.int64 and (idx >= 0).all() and (idx < high[:, None]).all()
    for r in (0, 9, 49):
        counts = np.bincount(idx[r].numpy(), minlength=int(high[r]))
        assert counts.min() > 4000 / int(high[r]) * 0.75


@pytest.mark.parametrize("change", ["seed", "stream", "t"])
def test_each_key_coordinate_gives_a_fresh_draw(change: str) -> None:
    args = {"seed": 3, "stream": 4, "t": 5}
    nodes = torch.arange(16)
    base = _stream.normal(args["seed"], args["stream"], args["t"], nodes, 64, 16)
    args[change] += 1
    other = _stream.normal(args["seed"], args["stream"], args["t"], nodes, 64, 16)
    assert not torch.isclose(base, other).any()


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.reshape(-1).numpy(), b.reshape(-1).numpy())[0, 1])


def test_moments_and_distribution() -> None:
    z = _stream.normal(11, 1, 2, torch.arange(2000), 500, 2000, torch.float64).reshape(-1)
    k = z.numel()
    assert abs(float(z.mean())) < 5 / k**0.5
    assert abs(float(z.var()) - 1) < 5 * (2 / k) ** 0.5
    assert abs(float((z**3).mean())) < 5 * (15 / k) ** 0.5  # skewness 0
    assert abs(float((z**4).mean()) - 3) < 5 * (96 / k) ** 0.5  # kurtosis 3
    assert stats.kstest(z[:200_000].numpy(), "norm").pvalue > 1e-4
    u = _stream.uniform(11, 2, 2, torch.arange(500), 400, 500, torch.float64).reshape(-1)
    assert float(u.min()) >= 0 and float(u.max()) < 1
    assert stats.kstest(u.numpy(), "uniform").pvalue > 1e-4
    counts = np.histogram(u.numpy(), bins=64, range=(0, 1))[0]
    assert stats.chisquare(counts).pvalue > 1e-4


def test_no_correlation_between_neighbours_rounds_seeds_streams_and_blocks() -> None:
    n, w = 2048, 256  # two blocks of 1024 node ids
    z = _stream.normal(0, 7, 1, torch.arange(n), w, n, torch.float64)
    limit = 5 / (n * w) ** 0.5
    assert abs(_corr(z[:-1], z[1:])) < 5 / ((n - 1) * w) ** 0.5  # neighbouring nodes
    assert abs(_corr(z[:1024], z[1024:])) < 5 / (1024 * w) ** 0.5  # the two blocks
    assert abs(_corr(z[:, :-1], z[:, 1:])) < 5 / (n * (w - 1)) ** 0.5  # neighbouring draws
    for other in (
        _stream.normal(0, 7, 2, torch.arange(n), w, n, torch.float64),  # the next round
        _stream.normal(1, 7, 1, torch.arange(n), w, n, torch.float64),  # the next seed
        _stream.normal(0, 8, 1, torch.arange(n), w, n, torch.float64),  # another stream
    ):
        assert abs(_corr(z, other)) < limit


def test_keys_are_a_pure_function_and_63_bit() -> None:
    assert _stream.key(1, 2, 3, 4) == _stream.key(1, 2, 3, 4)
    keys = {_stream.key(s, 0, t, b) for s in range(20) for t in range(20) for b in range(5)}
    assert len(keys) == 2000 and all(0 <= k < 2**63 for k in keys)
    assert _stream.block_size(1) == 1 and _stream.block_size(100) == 128
    assert _stream.block_size(10**6) == _stream.NODE_BLOCK
    assert _stream.block_size(1024, 21) == 1024  # a small draw: one block
    assert _stream.block_size(1024, 3200) == 64  # a large one: 16 blocks, drawn in parallel


def test_a_large_draw_is_the_same_with_one_thread_or_two() -> None:
    nodes = torch.arange(512)
    two = _stream.normal(1, 2, 3, nodes, 3000, 512)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = _stream.normal(1, 2, 3, nodes, 3000, 512)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    some = torch.tensor([511, 3, 200])
    assert torch.equal(_stream.normal(1, 2, 3, some, 3000, 512), two[some])


def _keyed_words(rounds: int) -> np.ndarray:
    """32-bit words from the keyed draws, blocks and rounds interleaved as a run reads them.

    Each round draws 64 uniforms for each of 1024 nodes (16 blocks of 64 ids); every four
    24-bit uniforms are packed into three 32-bit words.
    """
    out = []
    for t in range(1, rounds + 1):
        u = _stream.uniform(7, 3, t, torch.arange(1024), 64, 1024, torch.float64).reshape(-1)
        b = (u.numpy() * 2**24).astype(np.uint64).reshape(-1, 4)
        low = (
            b[:, 0] | (b[:, 1] << np.uint64(24)) | ((b[:, 2] & np.uint64(0xFFFF)) << np.uint64(48))
        )
        high = (b[:, 2] >> np.uint64(16)) | (b[:, 3] << np.uint64(8))
        words = np.stack(
            [(low & np.uint64(0xFFFFFFFF)), low >> np.uint64(32), high], axis=1
        ).astype(np.uint32)
        out.append(words.reshape(-1))
    return np.concatenate(out)


@pytest.mark.slow
def test_keyed_stream_passes_dieharder(tmp_path) -> None:
    """A standard battery (dieharder, from the system packages) on the keyed stream."""
    import shutil
    import subprocess

    if shutil.which("dieharder") is None:
        pytest.skip("dieharder is not installed (apt-get install dieharder)")
    data = tmp_path / "keyed.bin"
    _keyed_words(400).tofile(data)  # 19.7M words, enough that no test rewinds the file
    # birthdays, 32x32 binary rank, count the 1s, STS monobit / runs / serial; p-samples
    # chosen so that no test runs past the end of the data (dieharder would rewind it)
    for test, psamples in ((0, 10), (2, 5), (8, 10), (100, 10), (101, 10), (102, 10)):
        proc = subprocess.run(
            ["dieharder", "-g", "201", "-f", str(data), "-d", str(test), "-p", str(psamples)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        verdicts = [
            line
            for line in proc.stdout.splitlines()
            if ("|" in line and "PASS" in line) or "WEAK" in line or "FAIL" in line
        ]
        assert verdicts, proc.stdout + proc.stderr
        assert "rewound" not in proc.stdout + proc.stderr
        assert not any("FAILED" in v for v in verdicts), "\n".join(verdicts)


def _splitmix_chain(seed: int, stream: int, t: int, block: int) -> int:
    """The key written out in Python integers: SplitMix64 with explicit ``& mask``."""
    mask = (1 << 64) - 1

    def mix(x: int) -> int:
        x = (x + 0x9E3779B97F4A7C15) & mask
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
        return x ^ (x >> 31)

    h = mix(seed & mask)
    for part in (stream, t, block):
        h = mix(h ^ (part & mask))
    return h >> 1


def test_vectorized_keys_are_the_scalar_chain() -> None:
    seeds = [0, 1, 7, 2**31 - 1, 2**63 - 1, 2**64 - 1, 12345678901234]
    blocks = [0, 1, 5, 1023]
    for stream, t in ((0, 1), (0x0DA7_A001, 250), (2**40 + 3, 2**33)):
        got = _stream.keys(seeds, stream, t, blocks)
        want = [_splitmix_chain(sd, stream, t, b) for sd in seeds for b in blocks]
        assert got == want
        assert _stream.key(seeds[3], stream, t, 5) == _splitmix_chain(seeds[3], stream, t, 5)
        assert all(0 <= k < 2**63 for k in got)


def test_a_draw_of_many_seeds_is_each_seeds_own_draw_node_major() -> None:
    nodes = torch.arange(300)
    for dtype in (torch.float32, torch.float64):
        many = _stream.normal([3, 9, 4], 5, 17, nodes, 21, 300, dtype)
        assert many.shape == (900, 21) and many.dtype == dtype
        for k, sd in enumerate((3, 9, 4)):
            alone = _stream.normal(sd, 5, 17, nodes, 21, 300, dtype)
            assert torch.equal(many[k::3], alone)
    held = torch.tensor([17, 3, 250, 299])  # a rank's nodes: gathered from their blocks
    many = _stream.integers([1, 2], 7, 3, held, 5, 300, torch.tensor([10, 20, 30, 40]))
    for k, sd in enumerate((1, 2)):
        alone = _stream.integers(sd, 7, 3, held, 5, 300, torch.tensor([10, 20, 30, 40]))
        assert torch.equal(many[k::2], alone)


def test_reading_rounds_in_order_gives_each_rounds_own_draw_once() -> None:
    """The round loop reads small draws ahead in chunks; every round is still its own draw
    (compared with a fresh node-id tensor, which has no read-ahead), a caller may write into
    what it got, and out-of-order or repeated rounds are drawn alone."""
    n, width, seeds = 4, 7, [3, 5, 3]
    nodes = torch.arange(n)
    chunk = _stream._ahead(len(seeds) * n * width)
    assert chunk > 1
    order = [*range(1, 2 * chunk + 5), 3, 3, 4, 200, 201, 202]
    for t in order:
        got = _stream.normal(seeds, 11, t, nodes, width, n, torch.float64)
        alone = _stream.normal(seeds, 11, t, torch.arange(n), width, n, torch.float64)
        assert torch.equal(got, alone), t
        got.zero_()  # a consumer writing into its batch must not change later rounds
        ints = _stream.integers(seeds, 12, t, nodes, 2, n, torch.full((n,), 9))
        assert torch.equal(
            ints, _stream.integers(seeds, 12, t, torch.arange(n), 2, n, torch.full((n,), 9))
        )


def test_large_draws_are_not_read_ahead() -> None:
    assert _stream._ahead(1 << 18) == 1
    assert _stream._ahead(1 << 12) == 64


@pytest.mark.parametrize("width", [7, 1 << 17])  # read ahead in chunks, and one round ahead
def test_drawing_ahead_on_a_background_thread_gives_each_rounds_own_draw(
    width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With two cores free the next chunk is drawn on a background thread while the current
    one is used; every round is still its own draw, and a caller may write into it."""
    from decent import _threads

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    n, seeds = 4, [3, 5]
    nodes = torch.arange(n)
    # a fresh background drawer, so that its existence below is this test's doing (another
    # test in the same process may have made one: the assertion held only in some orders)
    _stream._prefetcher.cache_clear()
    with _threads.run_threads() as policy:
        assert policy.cores == 2 and _threads.draw_threads() == 2
        rounds = _stream._ahead(len(seeds) * n * width)
        for t in [*range(1, 2 * rounds + 3), 2, 3, 50]:
            got = _stream.normal(seeds, 13, t, nodes, width, n)
            # round 1 of a new reader is drawn alone; the first sequential round reads ahead
            assert _stream._prefetcher.cache_info().currsize or rounds == 1 or t == 1
            monkeypatch.setenv("OMP_NUM_THREADS", "1")
            with _threads.run_threads():  # no read-ahead: each round drawn alone
                alone = _stream.normal(seeds, 13, t, torch.arange(n), width, n)
            monkeypatch.setenv("OMP_NUM_THREADS", "2")
            assert torch.equal(got, alone), t
            got.zero_()
    assert _threads.draw_threads() == torch.get_num_threads()
