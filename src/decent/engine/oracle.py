"""Gradients for all held nodes in one batched call."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import grad_and_value, vmap

from decent._types import Batch, NodeTensor
from decent.tasks.base import Task


class GradientOracle:
    """``(params (m, d), batch) -> (grads (m, d), losses (m,))`` for all held nodes at once.

    A task with a closed-form ``grad_and_loss(params, batch)`` (the streaming convex tasks)
    is used directly: no autograd, a handful of batched ops. Any other task goes through
    ``vmap(grad_and_value(task.loss))``. There is no ``torch.compile`` option: compiling
    the oracle was slower than eager at every ``M`` the engine benchmark ran (issue 27).

    Args:
        task: supplies ``grad_and_loss`` or the pure per-node ``loss(params (d,), batch)``.
        autograd: use ``vmap(grad_and_value(loss))`` even where a closed form exists (the
            tests compare the two).
    """

    def __init__(self, task: Task, *, autograd: bool = False) -> None:
        closed = getattr(task, "grad_and_loss", None)
        fn: Callable[[NodeTensor, Batch], tuple[NodeTensor, torch.Tensor]]
        if closed is not None and not autograd:
            fn = closed
        else:
            fn = vmap(grad_and_value(task.loss))
        self.closed_form = closed is not None and not autograd
        self._fn = fn

    def __call__(self, params: NodeTensor, batch: Batch) -> tuple[NodeTensor, torch.Tensor]:
        # contiguous query points: batched products take another code path for strided
        # operands (DAT-SGD's x inside [w | x]), one whose rounding depends on the rows
        return self._fn(params.contiguous(), batch)
