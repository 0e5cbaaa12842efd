"""Shared type aliases.

Every tensor that describes nodes has shape ``(m, d)``: ``m`` rows, one per node held by
this process (``m = n`` in the simulator, ``m = 1`` or a few on a distributed rank), and
``d`` the flat parameter dimension.
"""

from __future__ import annotations

from typing import Any

import torch

NodeTensor = torch.Tensor
"""A ``(m, d)`` tensor: one row per node held by this process."""

Params = torch.Tensor
"""A flat ``(d,)`` parameter vector of one model."""

Batch = Any
"""A pytree (tensor, tuple or dict of tensors) whose leaves have a leading node axis ``m``."""
