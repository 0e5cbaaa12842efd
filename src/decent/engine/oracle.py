"""Gradients for all held nodes in one batched call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.func import grad_and_value, vmap

from decent._types import Batch, NodeTensor
from decent.tasks.base import Task


class GradientOracle:
    """``(params (m, d), batch) -> (grads (m, d), losses (m,))`` for all held nodes at once.

    A task with a closed-form ``grad_and_loss(params, batch)`` (the streaming convex tasks)
    is used directly: no autograd, a handful of batched ops. Any other task goes through
    ``vmap(grad_and_value(task.loss))``. A task with per-node running statistics
    (``buffer_dim > 0``, e.g. a :class:`~decent.tasks.ModuleTask` with BatchNorm) goes
    through ``vmap(grad_and_value(task.loss_and_buffers, has_aux=True))`` and keeps every
    row's statistics in :attr:`buffers` ``(m, buffer_dim)`` from call to call, starting
    from ``task.init_buffers()`` (the rows are the same nodes every call, as in the round
    loop). There is no ``torch.compile`` option: compiling the oracle was slower than eager
    at every ``M`` the engine benchmark ran (issue 27).

    Args:
        task: supplies ``grad_and_loss`` or the pure per-node ``loss(params (d,), batch)``.
        autograd: use ``vmap(grad_and_value(loss))`` even where a closed form exists (the
            tests compare the two).
    """

    def __init__(self, task: Task, *, autograd: bool = False) -> None:
        self._task = task
        self.stateful = int(getattr(task, "buffer_dim", 0) or 0) > 0
        self.buffers: NodeTensor | None = None
        closed = None if autograd or self.stateful else getattr(task, "grad_and_loss", None)
        self.closed_form = closed is not None
        self._fn: Callable[..., Any]
        if self.stateful:
            self._fn = vmap(grad_and_value(task.loss_and_buffers, has_aux=True))  # type: ignore[attr-defined]
        else:
            self._fn = closed if closed is not None else vmap(grad_and_value(task.loss))

    def __call__(self, params: NodeTensor, batch: Batch) -> tuple[NodeTensor, torch.Tensor]:
        # contiguous query points: batched products take another code path for strided
        # operands (DAT-SGD's x inside [w | x]), one whose rounding depends on the rows
        params = params.contiguous()
        if not self.stateful:
            return self._fn(params, batch)  # type: ignore[no-any-return]
        # a task with running statistics (BatchNorm): each row's buffers go in and come
        # back updated, carried here from round to round; they start as the task's own
        if self.buffers is None or self.buffers.shape[0] != params.shape[0]:
            start = self._task.init_buffers()  # type: ignore[attr-defined]
            self.buffers = start.to(params.device).expand(params.shape[0], -1).clone()
        grads, (losses, self.buffers) = self._fn(params, self.buffers, batch)
        return grads, losses
