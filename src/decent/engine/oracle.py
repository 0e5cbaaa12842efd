"""Gradients for all held nodes in one batched call."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import grad_and_value, vmap

from decent._types import Batch, NodeTensor
from decent.tasks.base import Task


class GradientOracle:
    """``(params (m, d), batch) -> (grads (m, d), losses (m,))`` via ``vmap(grad_and_value(loss))``.

    Args:
        task: supplies the pure per-node ``loss(params (d,), batch)``.
        compile: wrap the batched function in ``torch.compile`` (first call compiles, a
            few seconds on CPU; later calls are faster for small models).
    """

    def __init__(self, task: Task, *, compile: bool = False) -> None:
        fn: Callable[[NodeTensor, Batch], tuple[NodeTensor, torch.Tensor]] = vmap(
            grad_and_value(task.loss)
        )
        self.compiled = compile
        self._fn = torch.compile(fn, dynamic=False) if compile else fn

    def __call__(self, params: NodeTensor, batch: Batch) -> tuple[NodeTensor, torch.Tensor]:
        return self._fn(params, batch)
