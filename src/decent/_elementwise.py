"""Transcendental elementwise functions whose result does not depend on an element's place.

torch's CPU elementwise kernels run a vectorized body over ``2 * vector width`` elements at a
time and finish the last few elements of a tensor (or of each thread's share of a large one)
with the scalar function. For ``exp``, ``sigmoid`` and the like the two differ in the last
bit (SLEEF's vector ``exp`` against libm's), so the same value can round differently at the
end of a 24-row tensor than inside a 48-row one. A replica batch holds a single run's rows at
other positions, so the tasks take such functions through :func:`positionless`, which pads
the input to a whole number of vector blocks and cuts it into single-threaded chunks of
whole blocks: every element then takes the vectorized body, in the simulator, in a replica
batch and on a rank alike.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

_BLOCK = 64
"""Elements per padding unit: a multiple of ``2 * vector width`` for every dtype and ISA."""
_CHUNK = 1 << 14
"""Elements per call (a multiple of ``_BLOCK``, below torch's parallel grain size of 32768)."""


def positionless(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` for an elementwise ``fn``, each element through the vectorized kernel body."""
    if x.device.type != "cpu":
        return fn(x)
    n = x.numel()
    padded = torch.zeros(-(-n // _BLOCK) * _BLOCK, dtype=x.dtype)
    padded[:n] = x.reshape(-1)
    if padded.numel() <= _CHUNK:
        out = fn(padded)
    else:
        out = torch.cat([fn(part) for part in padded.split(_CHUNK)])
    return out[:n].view(x.shape)


_SCALARS: dict[float, torch.Tensor] = {}


def scalar(value: float) -> torch.Tensor:
    """``value`` as a cached 0-dim float64 CPU tensor, for the number in an elementwise op.

    A kernel reads a 0-dim operand as it reads a Python number (cast to the other operand's
    compute type), so ``x * scalar(v)`` is ``x * v`` bit for bit, without the 2-4 us of
    wrapping the number into a tensor on every call (a round of small kernels has several).
    """
    found = _SCALARS.get(value) if value else None  # -0.0 == 0.0 as a key: zeros not kept
    if found is None:
        if len(_SCALARS) > 64:
            _SCALARS.clear()
        found = _SCALARS[value] = torch.scalar_tensor(value, dtype=torch.float64)
    return found


__all__ = ["positionless", "scalar"]
