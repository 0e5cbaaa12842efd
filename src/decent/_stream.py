"""Per-round bulk draws: torch's own generator, keyed so that every process agrees.

Every round a streaming task draws fresh samples for all its nodes, and a dataset task
draws minibatch indices. These draws are the hot path of the simulator, so they come from
torch's generator in bulk (mt19937 on the CPU, Philox on CUDA: well-kept generators with
vectorized Box-Muller), on the device the run uses, with no per-node host work.

Placement independence (node 17's draw at round 250 is the same in the simulator and on
rank 17) comes from the keys: node ids are grouped in fixed blocks of ``block_size(n)``
(the smallest power of two >= ``n``, at most :data:`NODE_BLOCK`), and the draws of block
``b`` at round ``t`` of stream ``s`` with seed ``k`` are one whole ``(block, width)`` draw of
a generator seeded with ``key(k, s, t, b)`` (a SplitMix64 chain); node ``i`` gets row
``i - b * block``. A whole block is always drawn, because torch's CPU ``normal_`` treats the
last 16 values of a buffer differently from the rest: a shorter draw would not be a prefix
of a longer one. The simulator, holding every node, draws each block once; a rank draws the
blocks of the nodes it holds (at most ``NODE_BLOCK`` rows each).

Normals and uniforms are drawn in float32 (24 random bits; normals by torch's Box-Muller) and
cast to the requested dtype: a float64 run computes in float64 on samples with float32
resolution, which is what a data generator needs and is 6x cheaper on the CPU (torch's
float64 ``normal_`` is not vectorized there). Index draws use float64 uniforms (53 bits), so
shards of any size are indexed without bias. CPU and CUDA generators differ: a draw is a
pure function of ``(seed, stream, t, node, device type)``.
"""

from __future__ import annotations

import functools
import math
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from decent import _threads

NODE_BLOCK = 1024
"""Node ids per generator key at most (a rank draws at most this many rows per block it
touches; a large draw is cut into smaller blocks, drawn on parallel threads)."""

_MASK64 = (1 << 64) - 1
_PARALLEL = 1 << 16
"""Values per block above which a draw is cut into blocks drawn on parallel threads."""
_PARALLEL_JOB = 1 << 12
"""Values per block below which blocks are drawn on the calling thread (a job's Python
work and the pool's locks would cost more than the draw)."""


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer in uint64 arithmetic (which wraps modulo ``2**64``)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def keys(
    seeds: Sequence[int], stream: int, t: int | Sequence[int], blocks: Sequence[int]
) -> list[int]:
    """:func:`key` of every ``(t, seed, block)``, round-major then seed-major, in one
    vectorized pass; ``t`` is one round or a sequence of rounds."""
    ts = [t] if isinstance(t, int) else list(t)
    with np.errstate(over="ignore"):
        h = _splitmix(np.array([sd & _MASK64 for sd in seeds], dtype=np.uint64))
        h = _splitmix(h ^ np.uint64(stream & _MASK64))  # (S,)
        r = np.array([x & _MASK64 for x in ts], dtype=np.uint64)
        h = _splitmix(h[None, :] ^ r[:, None])  # (T, S)
        b = np.array([x & _MASK64 for x in blocks], dtype=np.uint64)
        h = _splitmix(h[:, :, None] ^ b[None, None, :])  # (T, S, B)
    return (h >> np.uint64(1)).reshape(-1).tolist()  # manual_seed takes a non-negative int64


def key(seed: int, stream: int, t: int, block: int) -> int:
    """The generator seed of ``(seed, stream, t, block)``: the SplitMix64 chain
    ``h = mix(seed)``, ``h = mix(h ^ part)`` for ``stream``, ``t``, ``block``, shifted to 63
    bits (every part taken modulo ``2**64``)."""
    return keys([seed], stream, t, [block])[0]


@functools.lru_cache(maxsize=1024)  # called on every draw of every round
def block_size(num_nodes: int, width: int = 1) -> int:
    """Node ids per generator key for a network of ``num_nodes`` nodes drawing ``width`` each.

    The smallest power of two that covers the network, at most :data:`NODE_BLOCK`, and no
    more than about ``2^16`` values per block (at least 64 nodes) so that large draws
    split into blocks that run on parallel threads. A function of ``(n, width)`` only, the
    same on every process.
    """
    cover = 1 << max(0, int(num_nodes) - 1).bit_length()
    per_values = 1 << max(6, (_PARALLEL // max(1, width)).bit_length() - 1)
    return max(1, min(NODE_BLOCK, cover, per_values))


@dataclass(frozen=True)
class _Layout:
    """Which blocks a node-id tensor touches, and where each block's rows go."""

    block: int
    contiguous: bool  # nodes == arange(m): block b fills output rows b*block ...
    gathers: tuple[tuple[int, torch.Tensor, torch.Tensor], ...]  # (block id, out rows, rows)


_LAYOUTS: dict[int, tuple[weakref.ref[torch.Tensor], dict[Any, Any]]] = {}
"""What is cached per node-id tensor (its block layouts, the read-ahead of its draws), by
``id`` of the tensor (tensors compare elementwise, so not dict keys); an entry goes when its
tensor does."""


def _layouts_of(nodes: torch.Tensor) -> dict[Any, Any]:
    entry = _LAYOUTS.get(id(nodes))
    if entry is not None and entry[0]() is nodes:
        return entry[1]
    ident = id(nodes)
    ref = weakref.ref(nodes, lambda _: _LAYOUTS.pop(ident, None))
    per: dict[Any, Any] = {}
    _LAYOUTS[ident] = (ref, per)
    return per


def _layout(nodes: torch.Tensor, num_nodes: int, width: int = 1) -> _Layout:
    """The block layout of ``nodes``, computed once per tensor (it is a run's node ids)."""
    per = _layouts_of(nodes)
    block = block_size(num_nodes, width)
    found = per.get(block)
    if found is not None:
        return found
    ids = nodes.detach().to("cpu", torch.int64)
    m = int(ids.numel())
    contiguous = m > 0 and bool(torch.equal(ids, torch.arange(m)))
    gathers = []
    if not contiguous:
        for b in torch.unique(ids // block).tolist():
            where = torch.nonzero(ids // block == b).reshape(-1)
            rows = ids[where] - b * block
            gathers.append((int(b), where.to(nodes.device), rows.to(nodes.device)))
    out = _Layout(block, contiguous, tuple(gathers))
    per[block] = out
    return out


def is_range(nodes: torch.Tensor) -> bool:
    """Whether ``nodes`` is ``0, 1, ..., m - 1`` (the simulator's node ids); cached per tensor."""
    return _layout(nodes, max(1, int(nodes.shape[0]))).contiguous


_LOCAL = threading.local()


def _generator(device: torch.device) -> torch.Generator:
    """This thread's generator for ``device`` (re-seeded for every block it draws)."""
    gens = _LOCAL.__dict__.setdefault("gens", {})
    if device not in gens:
        gens[device] = torch.Generator(device=device)
    return gens[device]  # type: ignore[no-any-return]


def _fill_block(
    fill: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    k: int,
    rows: torch.Tensor,
    block: int,
    buffer_dtype: torch.dtype,
) -> torch.Tensor | None:
    """Draw one whole block with key ``k``: into ``rows`` when they are the whole block in
    the buffer's dtype, else into a fresh buffer that is returned."""
    gen = _generator(rows.device)
    gen.manual_seed(k)  # resets the whole state, cached normals included
    if rows.shape[0] == block and rows.dtype == buffer_dtype:
        fill(rows, gen)
        return None
    width = rows.shape[1]
    return fill(torch.empty((block, width), dtype=buffer_dtype, device=rows.device), gen)


def _draw(
    fill: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    buffer_dtype: torch.dtype,
    seeds: Sequence[int],
    stream: int,
    ts: Sequence[int],
    nodes: torch.Tensor,
    width: int,
    dtype: torch.dtype,
    num_nodes: int,
) -> torch.Tensor:
    """``(len(ts), R, len(nodes), width)`` draws in ``dtype``; ``[i, k, r]`` is node
    ``nodes[r]``'s at round ``ts[i]`` under ``seeds[k]``.

    Every (round, seed, block) has its own key, so the blocks of a large draw are shared
    out over :func:`decent._threads.draw_threads` threads (torch's CPU generators are
    sequential, and drawing dominates a round of a large streaming task); the numbers do not
    depend on it, nor on which rounds are drawn together.
    """
    unique = list(dict.fromkeys(seeds))
    if len(unique) < len(seeds):  # replicas sharing a seed share its draw (e.g. a step grid)
        shared = _draw(fill, buffer_dtype, unique, stream, ts, nodes, width, dtype, num_nodes)
        # gathered node-major, (rounds, m, R, width), and handed back as a (rounds, R, m,
        # width) view: _node_major's transpose and reshape are then free (one copy, not two)
        where = _positions(tuple(seeds), nodes.device)
        return shared.transpose(1, 2).index_select(2, where).transpose(1, 2)
    device = nodes.device
    layout = _layout(nodes, num_nodes, width)
    block = layout.block
    m = int(nodes.numel())
    # whole blocks are drawn straight into the buffer, cast once at the end
    nt, ns = len(ts), len(seeds)
    buf = torch.empty((nt, ns, m, width), dtype=buffer_dtype, device=device)
    blocks = (
        list(range(math.ceil(m / block)))
        if layout.contiguous
        else [b for b, _, _ in layout.gathers]
    )
    all_keys = keys(seeds, stream, ts, blocks)  # round-major, then seed, then block
    threads = min(_threads.draw_threads(), len(all_keys))
    # threads pay off only for blocks large enough to hide the Python work of a job
    big = block * width >= _PARALLEL_JOB and len(all_keys) * block * width >= _PARALLEL
    parallel = device.type == "cpu" and threads > 1 and big
    if layout.contiguous and m % block == 0 and not parallel:  # the hot path: whole blocks
        gen = _generator(device)
        for k, rows in zip(all_keys, buf.view(-1, block, width).unbind(0), strict=True):
            gen.manual_seed(k)  # resets the whole state, cached normals included
            fill(rows, gen)
        return buf if dtype == buffer_dtype else buf.to(dtype)
    empty = torch.empty((0, width), dtype=buffer_dtype, device=device)
    jobs: list[tuple[int, torch.Tensor]] = []  # (generator key, rows to fill), round-major
    flat = buf.view(nt * ns, m, width)
    nb = len(blocks)
    for j, k in enumerate(all_keys):
        i, b = divmod(j, nb)
        rows = flat[i, b * block : min(m, (b + 1) * block)] if layout.contiguous else empty
        jobs.append((k, rows))

    def run(part: Sequence[tuple[int, torch.Tensor]]) -> list[torch.Tensor | None]:
        return [_fill_block(fill, k, rows, block, buffer_dtype) for k, rows in part]

    if parallel:
        step = math.ceil(len(jobs) / threads)
        parts = [jobs[i : i + step] for i in range(0, len(jobs), step)]
        drawn = [x for got in _executor(len(parts)).map(run, parts) for x in got]
    else:
        drawn = run(jobs)
    if layout.contiguous:
        for (_, rows), full in zip(jobs, drawn, strict=True):
            if full is not None:
                rows.copy_(full[: rows.shape[0]])
        return buf if dtype == buffer_dtype else buf.to(dtype)
    out = torch.empty((nt * ns, m, width), dtype=dtype, device=device)
    per_seed = len(layout.gathers)
    for j, full in enumerate(drawn):
        assert full is not None
        _, where, rows = layout.gathers[j % per_seed]
        out[j // per_seed, where] = full[rows].to(dtype)
    return out.view(nt, ns, m, width)


@functools.lru_cache(maxsize=256)
def _positions(seeds: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Each seed's row in the draw of the distinct seeds (cached: the same every round)."""
    position = {sd: i for i, sd in enumerate(dict.fromkeys(seeds))}
    return torch.tensor([position[sd] for sd in seeds], device=device)


def _node_major(draws: torch.Tensor) -> torch.Tensor:
    """``(rounds, R, m, width)`` to the replica batch's node-major ``(rounds, m * R, width)``."""
    nt, r, m, width = draws.shape
    return draws.squeeze(1) if r == 1 else draws.transpose(1, 2).reshape(nt, m * r, width)


_AHEAD_VALUES = 1 << 18
"""Values read ahead per draw at most (2 MB of float64): small draws pay their fixed cost
(keys, seeding, casting, reordering, Python) once per chunk of rounds, not every round."""
_AHEAD_ROUNDS = 64
_AHEAD_ENTRIES = 32
"""Draws read ahead per node-id tensor at most (runs that reuse a communicator leave theirs)."""


def _ahead(values_per_round: int) -> int:
    """Rounds to draw at once for a draw of this many values per round (1: no read-ahead)."""
    return max(1, min(_AHEAD_ROUNDS, _AHEAD_VALUES // max(1, values_per_round)))


class _Reader:
    """``reader(t)``: round ``t`` of one keyed draw (``draw: rounds -> an item per round``).

    For the simulator's node ids asked in order, rounds ``first .. first + len(items) - 1``
    are drawn together (a large draw: one round, ahead only with a second core free, which
    draws the next chunk on a background thread). Any other request draws its round alone,
    so each item is handed out once and a caller may write into it; the numbers are the same
    either way. A reader kept per node-id tensor (:func:`_cached`) gets its ``draw`` with
    every call: holding it would hold the tensor.
    """

    __slots__ = ("ahead", "draw", "first", "items", "last", "pending", "pin", "rounds")

    def __init__(
        self,
        draw: Callable[[Sequence[int]], Sequence[Any]] | None,
        nodes: torch.Tensor,
        values: int,
        pin: object = None,
    ) -> None:
        self.draw = draw
        self.rounds = _ahead(values)
        self.ahead = is_range(nodes)
        self.items: Sequence[Any] = ()
        self.first = 0
        self.last = -2
        self.pin = pin  # keeps alive an object whose id is part of a cache key
        self.pending: tuple[int, Future[Sequence[Any]]] | None = None

    def __call__(self, t: int, draw: Callable[[Sequence[int]], Sequence[Any]] | None = None) -> Any:
        draw = draw or self.draw
        assert draw is not None
        sequential, self.last = t == self.last + 1, t
        if not (sequential and self.ahead) or (self.rounds == 1 and _threads.draw_threads() < 2):
            return draw([t])[0]
        items, rounds = self.items, self.rounds
        if not self.first <= t < self.first + len(items):
            pending, self.pending = self.pending, None
            if pending is not None and pending[0] == t:
                items = pending[1].result()
            else:
                items = draw(range(t, t + rounds))
            self.items, self.first = items, t
            if _threads.draw_threads() > 1:  # the next chunk, while this one is used
                after = t + rounds
                self.pending = (after, _prefetcher().submit(draw, range(after, after + rounds)))
        return items[t - self.first]


@functools.cache
def _prefetcher() -> ThreadPoolExecutor:
    """The one background thread that draws the next chunks ahead (one torch thread there:
    the draws themselves are sequential)."""
    return ThreadPoolExecutor(
        1, thread_name_prefix="decent-ahead", initializer=torch.set_num_threads, initargs=(1,)
    )


def _cached(
    nodes: torch.Tensor,
    ident: tuple[object, ...],
    t: int,
    values: int,
    draw: Callable[[Sequence[int]], Sequence[Any]],
    pin: object = None,
) -> Any:
    """Round ``t`` of the draw ``ident`` through a reader kept per node-id tensor and thread,
    so that calling :func:`normal` round after round reads ahead too."""
    per = _layouts_of(nodes)
    entry_key = ("ahead", threading.get_ident(), *ident)
    found = per.get(entry_key)
    if found is None:
        stale = [k for k in per if isinstance(k, tuple) and k[:1] == ("ahead",)]
        for k in stale[: max(0, len(stale) - _AHEAD_ENTRIES + 1)]:  # the oldest go
            del per[k]
        found = per[entry_key] = _Reader(None, nodes, values, pin)
    return found(t, draw)


@functools.cache
def _executor(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="decent-draw")


def _normal_(buf: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return buf.normal_(generator=g)


def _uniform_(buf: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return buf.uniform_(generator=g)


def normal(
    seed: int | Sequence[int],
    stream: int,
    t: int,
    nodes: torch.Tensor,
    width: int,
    num_nodes: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal draws ``(len(nodes), width)`` (float32 resolution, cast to ``dtype``).

    Args:
        seed, stream, t: the key (experiment seed, the use, the round). A sequence of ``R``
            seeds draws a replica batch: ``(len(nodes) * R, width)`` node-major, row
            ``r * R + k`` being what seed ``seeds[k]`` alone gives row ``r``.
        nodes: ``(m,)`` global node ids, on the device to draw on.
        width: draws per node.
        num_nodes: ``n`` of the network (fixes the block size, the same on every process).
        dtype: the output dtype.

    The result is the caller's (it may write into it). Rounds asked for in order by the
    simulator are drawn ahead, several at once (small draws only); the numbers are the same.
    """
    return _floats(_normal_, seed, stream, t, nodes, width, num_nodes, dtype)  # type: ignore[no-any-return]


def uniform(
    seed: int | Sequence[int],
    stream: int,
    t: int,
    nodes: torch.Tensor,
    width: int,
    num_nodes: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Uniform draws in ``[0, 1)``, ``(len(nodes), width)`` (float32 resolution; a sequence of
    seeds as in :func:`normal`)."""
    return _floats(_uniform_, seed, stream, t, nodes, width, num_nodes, dtype)  # type: ignore[no-any-return]


def reader(
    kind: Literal["normal", "uniform"],
    seed: int | Sequence[int],
    stream: int,
    nodes: torch.Tensor,
    width: int,
    num_nodes: int,
    dtype: torch.dtype = torch.float32,
    post: Callable[[torch.Tensor], Sequence[Any]] | None = None,
) -> Callable[[int], Any]:
    """``t ->`` :func:`normal` (or :func:`uniform`) of round ``t`` for a caller that draws
    every round (a task's sampler in the loop): their per-call lookups are done once.

    ``post`` turns each chunk of rounds ``(rounds, rows, width)`` into one item per round,
    which the reader returns (samples made once per chunk); it must treat every ``(round,
    row)`` alike, so that the items do not depend on the chunking.
    """
    fill = _normal_ if kind == "normal" else _uniform_
    return _floats(fill, seed, stream, None, nodes, width, num_nodes, dtype, post)  # type: ignore[no-any-return]


def _floats(
    fill: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    seed: int | Sequence[int],
    stream: int,
    t: int | None,
    nodes: torch.Tensor,
    width: int,
    num_nodes: int,
    dtype: torch.dtype,
    post: Callable[[torch.Tensor], Sequence[Any]] | None = None,
) -> Any:
    """Round ``t`` of :func:`normal` or :func:`uniform` (by ``fill``: float32 draws), or
    with ``t = None`` its reader (:func:`reader`)."""
    seeds = _seeds(seed)

    def draw(ts: Sequence[int]) -> Sequence[Any]:
        out = _node_major(
            _draw(fill, torch.float32, seeds, stream, ts, nodes, width, dtype, num_nodes)
        )
        return out.unbind(0) if post is None else post(out)

    values = len(seeds) * int(nodes.numel()) * width
    if t is None:
        return _Reader(draw, nodes, values)
    ident = (fill.__name__, tuple(seeds), stream, width, num_nodes, dtype)
    return _cached(nodes, ident, t, values, draw)


def integers(
    seed: int | Sequence[int],
    stream: int,
    t: int,
    nodes: torch.Tensor,
    width: int,
    num_nodes: int,
    high: torch.Tensor,
) -> torch.Tensor:
    """Integers in ``[0, high[r])``, ``(len(nodes), width)`` int64, from 53-bit uniforms (a
    sequence of seeds as in :func:`normal`; ``high`` is per row of ``nodes``)."""
    seeds = _seeds(seed)

    def draw(ts: Sequence[int]) -> Sequence[torch.Tensor]:
        u = _draw(
            _uniform_, torch.float64, seeds, stream, ts, nodes, width, torch.float64, num_nodes
        )
        h = high.to(device=u.device)[:, None]
        return _node_major(torch.minimum((u * h).to(torch.int64), h - 1)).unbind(0)

    ident = ("integers", tuple(seeds), stream, width, num_nodes, id(high), high._version)
    values = len(seeds) * int(nodes.numel()) * width
    return _cached(nodes, ident, t, values, draw, pin=high)  # type: ignore[no-any-return]


def _seeds(seed: int | Sequence[int]) -> Sequence[int]:
    return list(seed) if isinstance(seed, Sequence) else [int(seed)]


__all__ = [
    "NODE_BLOCK",
    "block_size",
    "integers",
    "is_range",
    "key",
    "keys",
    "normal",
    "reader",
    "uniform",
]
