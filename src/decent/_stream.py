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

import math
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

NODE_BLOCK = 1024
"""Node ids per generator key at most (a rank draws at most this many rows per block it
touches; a large draw is cut into smaller blocks, drawn on parallel threads)."""

_MASK64 = (1 << 64) - 1
_PARALLEL = 1 << 16
"""Values per block above which a draw is cut into blocks drawn on parallel threads."""


def _splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def key(seed: int, stream: int, t: int, block: int) -> int:
    """The generator seed of ``(seed, stream, t, block)``: a SplitMix64 chain, 63 bits."""
    h = _splitmix(seed & _MASK64)
    for part in (stream, t, block):
        h = _splitmix(h ^ (part & _MASK64))
    return h >> 1  # manual_seed takes a non-negative int64


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


_LAYOUTS: dict[int, tuple[weakref.ref[torch.Tensor], dict[int, _Layout]]] = {}
"""Layouts by ``id`` of the node-id tensor (tensors compare elementwise, so not dict keys);
an entry goes when its tensor does."""


def _layouts_of(nodes: torch.Tensor) -> dict[int, _Layout]:
    entry = _LAYOUTS.get(id(nodes))
    if entry is not None and entry[0]() is nodes:
        return entry[1]
    ident = id(nodes)
    ref = weakref.ref(nodes, lambda _: _LAYOUTS.pop(ident, None))
    per: dict[int, _Layout] = {}
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


def _fill_block(
    fill: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    k: int,
    rows: torch.Tensor,
    block: int,
    buffer_dtype: torch.dtype,
) -> torch.Tensor | None:
    """Draw one whole block with key ``k``: into ``rows`` when they are the whole block in
    the buffer's dtype, else into a fresh buffer that is returned."""
    gen = torch.Generator(device=rows.device)
    gen.manual_seed(k)
    if rows.shape[0] == block and rows.dtype == buffer_dtype:
        fill(rows, gen)
        return None
    width = rows.shape[1]
    return fill(torch.empty((block, width), dtype=buffer_dtype, device=rows.device), gen)


def _draw(
    fill: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    buffer_dtype: torch.dtype,
    seed: int,
    stream: int,
    t: int,
    nodes: torch.Tensor,
    width: int,
    dtype: torch.dtype,
    num_nodes: int,
) -> torch.Tensor:
    """``(len(nodes), width)`` draws in ``dtype``; row ``r`` is node ``nodes[r]``'s.

    Blocks have their own generators, so large draws of several blocks run on
    ``torch.get_num_threads()`` threads at once (torch's CPU generators are sequential, and
    drawing dominates a round of a large streaming task); the numbers do not depend on it.
    """
    device = nodes.device
    layout = _layout(nodes, num_nodes, width)
    block = layout.block
    m = int(nodes.numel())
    out = torch.empty((m, width), dtype=dtype, device=device)
    jobs: list[tuple[int, torch.Tensor | None]]
    if layout.contiguous:
        jobs = [(b, out[b * block : min(m, (b + 1) * block)]) for b in range(math.ceil(m / block))]
    else:
        jobs = [(b, None) for b, _, _ in layout.gathers]

    def one(b: int, rows: torch.Tensor | None) -> torch.Tensor | None:
        target = rows if rows is not None else torch.empty((0, width), dtype=dtype, device=device)
        return _fill_block(fill, key(seed, stream, t, b), target, block, buffer_dtype)

    threads = torch.get_num_threads()
    if device.type == "cpu" and len(jobs) > 1 and threads > 1 and block * width * 2 >= _PARALLEL:
        drawn = list(_executor(threads).map(lambda job: one(*job), jobs))
    else:
        drawn = [one(b, rows) for b, rows in jobs]
    if layout.contiguous:
        for (_, rows), full in zip(jobs, drawn, strict=True):
            if full is not None and rows is not None:
                rows.copy_(full[: rows.shape[0]])
        return out
    for (_, where, rows), full in zip(layout.gathers, drawn, strict=True):
        assert full is not None
        out[where] = full[rows].to(dtype)
    return out


_EXECUTORS: dict[int, ThreadPoolExecutor] = {}


def _executor(threads: int) -> ThreadPoolExecutor:
    pool = _EXECUTORS.get(threads)
    if pool is None:
        pool = _EXECUTORS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="decent-draw")
    return pool


def _normal_(buf: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return buf.normal_(generator=g)


def _uniform_(buf: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return buf.uniform_(generator=g)


def normal(
    seed: int,
    stream: int,
    t: int,
    nodes: torch.Tensor,
    width: int,
    num_nodes: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal draws ``(len(nodes), width)`` (float32 resolution, cast to ``dtype``).

    Args:
        seed, stream, t: the key (experiment seed, the use, the round).
        nodes: ``(m,)`` global node ids, on the device to draw on.
        width: draws per node.
        num_nodes: ``n`` of the network (fixes the block size, the same on every process).
        dtype: the output dtype.
    """
    return _draw(_normal_, torch.float32, seed, stream, t, nodes, width, dtype, num_nodes)


def uniform(
    seed: int,
    stream: int,
    t: int,
    nodes: torch.Tensor,
    width: int,
    num_nodes: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Uniform draws in ``[0, 1)``, ``(len(nodes), width)`` (float32 resolution)."""
    return _draw(_uniform_, torch.float32, seed, stream, t, nodes, width, dtype, num_nodes)


def integers(
    seed: int,
    stream: int,
    t: int,
    nodes: torch.Tensor,
    width: int,
    num_nodes: int,
    high: torch.Tensor,
) -> torch.Tensor:
    """Integers in ``[0, high[r])``, ``(len(nodes), width)`` int64, from 53-bit uniforms."""
    u = _draw(_uniform_, torch.float64, seed, stream, t, nodes, width, torch.float64, num_nodes)
    h = high.to(device=u.device)
    return torch.minimum((u * h[:, None]).to(torch.int64), (h - 1)[:, None])


__all__ = ["NODE_BLOCK", "block_size", "integers", "is_range", "key", "normal", "uniform"]
