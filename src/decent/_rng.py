"""Counter-based random numbers: every draw is a pure function of ``(seed, node, t, k)``.

Decentralized runs must be reproducible bit for bit and independent of how nodes are
placed on processes: node 17's minibatch at round 250 must be the same whether node 17 is
row 17 of the simulator's stacked tensor or the only node of rank 17. A stateful generator
cannot give that without every process generating every node's samples. A counter-based
generator can (the idea behind Philox and JAX's threefry): hash the coordinates.

The hash is MurmurHash3's 32-bit finalizer applied in a chain, evaluated on int64 tensors
with every intermediate masked to 32 bits, so it is exact on any device. Uniforms in
float64 take 53 bits from two independent 32-bit words.
"""

from __future__ import annotations

import math

import torch

_M32 = 0xFFFFFFFF
_C1 = 0x85EBCA6B
_C2 = 0xC2B2AE35
_GOLDEN = 0x9E3779B9


def _fmix32(h: torch.Tensor) -> torch.Tensor:
    """MurmurHash3 fmix32 on non-negative int64 values below 2**32."""
    h = h ^ (h >> 16)
    h = (h * _C1) & _M32  # low 32 bits of the product are exact even if int64 wraps
    h = h ^ (h >> 13)
    h = (h * _C2) & _M32
    return h ^ (h >> 16)


def _mix_in(h: torch.Tensor, v: torch.Tensor | int) -> torch.Tensor:
    return _fmix32((h ^ ((v + _GOLDEN) & _M32)) & _M32)


def _key(seed: int, stream: int, t: int, device: torch.device | None) -> torch.Tensor:
    h = torch.tensor(seed & _M32, dtype=torch.int64, device=device)
    h = _mix_in(h, (seed >> 32) & _M32)
    h = _mix_in(h, stream & _M32)
    return _mix_in(h, t & _M32)


def random_bits(
    seed: int,
    stream: int,
    t: int,
    nodes: torch.Tensor,
    count: int,
) -> torch.Tensor:
    """Return ``(len(nodes), count)`` int64 words in ``[0, 2**32)``.

    Word ``[r, k]`` depends only on ``(seed, stream, t, nodes[r], k)``.

    Args:
        seed: the experiment seed.
        stream: a constant that separates independent uses (data index, noise, features).
        t: the round.
        nodes: ``(m,)`` int64 global node ids.
        count: words per node.
    """
    nodes = nodes.to(torch.int64)
    key = _key(seed, stream, t, nodes.device)
    h = _mix_in(key.expand(nodes.shape[0]), nodes & _M32)[:, None]
    k = torch.arange(count, dtype=torch.int64, device=nodes.device)[None, :]
    return _fmix32(_mix_in(h, k) ^ 0x5BD1E995)


def uniform(
    seed: int, stream: int, t: int, nodes: torch.Tensor, shape: tuple[int, ...],
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Uniform draws in ``(0, 1)`` of shape ``(len(nodes), *shape)``, 53 random bits each."""
    count = math.prod(shape)
    bits = random_bits(seed, stream, t, nodes, 2 * count)
    hi, lo = bits[:, :count] >> 5, bits[:, count:] >> 6  # 27 + 26 = 53 bits
    u = (hi.to(torch.float64) * 67108864.0 + lo.to(torch.float64) + 0.5) / 9007199254740992.0
    return u.reshape(nodes.shape[0], *shape).to(dtype)


def normal(
    seed: int, stream: int, t: int, nodes: torch.Tensor, shape: tuple[int, ...],
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Standard normal draws of shape ``(len(nodes), *shape)`` (Box-Muller on two uniforms)."""
    count = math.prod(shape)
    half = (count + 1) // 2
    u = uniform(seed, stream, t, nodes, (2, half))
    r = torch.sqrt(-2.0 * torch.log(u[:, 0]))
    theta = 2.0 * math.pi * u[:, 1]
    z = torch.cat([r * torch.cos(theta), r * torch.sin(theta)], dim=1)[:, :count]
    return z.reshape(nodes.shape[0], *shape).to(dtype)


def integers(
    seed: int, stream: int, t: int, nodes: torch.Tensor, count: int, high: torch.Tensor
) -> torch.Tensor:
    """Integers in ``[0, high[r])`` of shape ``(len(nodes), count)``; ``high`` is ``(m,)``.

    Uses 53-bit uniforms scaled by ``high``, so the modulo bias is below 2**-40 for any
    dataset that fits in memory.
    """
    u = uniform(seed, stream, t, nodes, (count,))
    idx = (u * high.to(torch.float64)[:, None]).to(torch.int64)
    return torch.minimum(idx, (high.to(torch.int64) - 1)[:, None])
