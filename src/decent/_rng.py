"""Counter-based random numbers: every draw is a pure function of ``(seed, stream, t, node, k)``.

Decentralized runs must be reproducible bit for bit and independent of how nodes are
placed on processes: node 17's minibatch at round 250 must be the same whether node 17 is
row 17 of the simulator's stacked tensor or the only node of rank 17. A stateful generator
cannot give that without every process generating every node's samples. A counter-based
generator can (the idea behind Philox and JAX's threefry): hash the coordinates.

The hash is MurmurHash3's 32-bit finalizer (fmix32), in numpy ``uint32`` arithmetic (which
wraps modulo 2**32 natively). The key ``(seed, stream, t)`` is hashed in Python; the node
ids and the counters ``k`` are hashed once each, combined, and finalized with one more
fmix32 over the ``(m, count)`` block. Integer arithmetic only, so the words are identical
on every machine; they are made on the CPU (a handful of numpy calls, a few microseconds
for small blocks) and moved to the requested device.
"""

from __future__ import annotations

import math

import numpy as np
import torch

_M32 = 0xFFFFFFFF
_C1 = 0x85EBCA6B
_C2 = 0xC2B2AE35
_GOLDEN = 0x9E3779B9
_C1_U32 = np.uint32(_C1)
_C2_U32 = np.uint32(_C2)
_GOLDEN_U32 = np.uint32(_GOLDEN)


def _fmix32_int(h: int) -> int:
    h &= _M32
    h ^= h >> 16
    h = (h * _C1) & _M32
    h ^= h >> 13
    h = (h * _C2) & _M32
    return h ^ (h >> 16)


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3 fmix32, in place on a ``uint32`` array."""
    h ^= h >> np.uint32(16)
    h *= _C1_U32
    h ^= h >> np.uint32(13)
    h *= _C2_U32
    h ^= h >> np.uint32(16)
    return h


def _keys(seed: int, stream: int, t: int) -> tuple[int, int]:
    h = _fmix32_int(seed & _M32)
    h = _fmix32_int(h ^ ((seed >> 32) + _GOLDEN))
    h = _fmix32_int(h ^ (stream + _GOLDEN))
    h = _fmix32_int(h ^ ((t & _M32) + _GOLDEN))
    return h, _fmix32_int(h ^ 0x5BD1E995)


def _bits(seed: int, stream: int, t: int, nodes: torch.Tensor, count: int) -> np.ndarray:
    key_k, key_n = _keys(seed, stream, t)
    cols = _fmix32(np.arange(count, dtype=np.uint32) ^ np.uint32(key_k))
    ids = nodes.detach().cpu().numpy().astype(np.uint32, copy=True).reshape(-1)
    rows = _fmix32(ids ^ np.uint32(key_n))
    rows *= _GOLDEN_U32
    return _fmix32(rows[:, None] + cols[None, :])


def _uniform_np(seed: int, stream: int, t: int, nodes: torch.Tensor, count: int) -> np.ndarray:
    bits = _bits(seed, stream, t, nodes, 2 * count)
    hi = (bits[:, :count] >> np.uint32(5)).astype(np.float64)  # 27 bits
    lo = (bits[:, count:] >> np.uint32(6)).astype(np.float64)  # 26 bits
    hi *= 67108864.0
    hi += lo
    hi += 0.5
    hi *= 1.0 / 9007199254740992.0  # 2**-53: values in (0, 1), never 0 or 1
    return hi


def _to(arr: np.ndarray, nodes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(arr).to(device=nodes.device, dtype=dtype)


def uniform(
    seed: int,
    stream: int,
    t: int,
    nodes: torch.Tensor,
    shape: tuple[int, ...],
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Uniform draws in ``(0, 1)`` of shape ``(len(nodes), *shape)``, 53 random bits each."""
    count = math.prod(shape)
    u = _uniform_np(seed, stream, t, nodes, count)
    return _to(u.reshape(len(u), *shape), nodes, dtype)


def normal(
    seed: int,
    stream: int,
    t: int,
    nodes: torch.Tensor,
    shape: tuple[int, ...],
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Standard normal draws of shape ``(len(nodes), *shape)`` (Box-Muller on two uniforms)."""
    count = math.prod(shape)
    half = (count + 1) // 2
    u = _uniform_np(seed, stream, t, nodes, 2 * half)
    r = np.sqrt(-2.0 * np.log(u[:, :half]))
    theta = (2.0 * math.pi) * u[:, half:]
    z = np.empty((len(u), 2 * half), dtype=np.float64)
    np.multiply(r, np.cos(theta), out=z[:, :half])
    np.multiply(r, np.sin(theta), out=z[:, half:])
    return _to(z[:, :count].reshape(len(u), *shape), nodes, dtype)
