"""What a replica batch needs besides the loop: per-row step sizes and stacked sampling.

A replica batch is ``R`` independent runs that share the algorithm's class and structure
(every hyperparameter but the step size), the task's family and shapes, and the topology,
and differ in seed, step size and the task's scalar parameters. They run as one stacked
``(n * R, d)`` tensor in node-major order (row ``i * R + r`` is node ``i`` of replica
``r``; see :class:`decent.comm.sim.ReplicatedCommunicator`), through the same
round loop as a single run (:func:`decent.engine.train_replicas`).

Every replica computes what its single run computes, bit for bit: its draws come from its
own seed (one keyed draw per replica and round), its step size is a per-row factor applied
by the same kernel as a scalar one (:func:`decent.algorithms.base.add_scaled_`), and its
rows are mixed only with its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

from decent._stack import ReplicaError, check_family, interleave
from decent._types import Batch
from decent.algorithms.base import Constant, as_schedule


class RowSchedule:
    """Per-row step sizes of a replica batch: ``eta(t)`` is a float64 column ``(n * R, 1)``.

    Args:
        schedules: replica ``r``'s step size (a number or a schedule), ``R`` of them.
        num_nodes: ``n``.
        active: replicas still running (a diverged replica gets step size 0).
    """

    def __init__(
        self,
        schedules: Sequence[Any],
        num_nodes: int,
        active: Sequence[bool] | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.schedules = [as_schedule(s) for s in schedules]
        self.num_nodes = num_nodes
        self.active = list(active) if active is not None else [True] * len(self.schedules)
        self.device = device
        constant = all(isinstance(s, Constant) for s in self.schedules)
        self._fixed = self._column(1) if constant else None

    def values(self, t: int) -> list[float]:
        """Each replica's step size at round ``t`` (0 for a stopped one)."""
        return [s(t) if on else 0.0 for s, on in zip(self.schedules, self.active, strict=True)]

    def _column(self, t: int) -> torch.Tensor:
        per = torch.tensor(self.values(t), dtype=torch.float64, device=self.device)
        r = len(self.schedules)
        return per.view(1, r, 1).expand(self.num_nodes, r, 1).reshape(self.num_nodes * r, 1)

    def __call__(self, t: int) -> torch.Tensor:
        return self._fixed if self._fixed is not None else self._column(t)

    def stopping(self, r: int) -> RowSchedule:
        """The same schedules with replica ``r`` stopped (step size 0 from now on)."""
        active = list(self.active)
        active[r] = False
        return RowSchedule(self.schedules, self.num_nodes, active, self.device)

    def __repr__(self) -> str:
        return f"RowSchedule({[getattr(s, 'lr', s) for s in self.schedules]})"


def _structure(algorithm: Any) -> tuple[type, dict[str, Any]]:
    fields = {f.name: getattr(algorithm, f.name) for f in dataclasses.fields(algorithm) if f.init}
    fields.pop("lr", None)
    return type(algorithm), fields


def replicate(algorithms: Sequence[Any], num_nodes: int, device: Any = None) -> Any:
    """One algorithm object that steps every replica with its own step size.

    All algorithms must be of one class with equal hyperparameters but ``lr``. When all
    step sizes are equal the first algorithm is returned as it is (a scalar step).

    Raises:
        ReplicaError: naming the class or the field that differs.
    """
    first = algorithms[0]
    kind, fields = _structure(first)
    for other in algorithms[1:]:
        okind, ofields = _structure(other)
        if okind is not kind:
            raise ReplicaError(
                f"replicas must share the algorithm, got {kind.__name__} and {okind.__name__}"
            )
        diff = sorted(k for k in fields if fields[k] != ofields.get(k))
        if diff:
            raise ReplicaError(
                f"replicas may differ only in lr, but {first.name} differs in {diff}"
            )
    lrs = [a.lr for a in algorithms]
    if all(lr == lrs[0] for lr in lrs):
        return first
    return dataclasses.replace(first, lr=RowSchedule(lrs, num_nodes, device=device))


def stop_replica(algorithm: Any, replicas: int, num_nodes: int, r: int) -> Any:
    """``algorithm`` with replica ``r``'s step size set to 0 from now on."""
    lr = algorithm.lr
    if not isinstance(lr, RowSchedule):
        lr = RowSchedule([lr] * replicas, num_nodes)
    return dataclasses.replace(algorithm, lr=lr.stopping(r))


def stacked_sampler(
    tasks: Sequence[Any], seeds: Sequence[int], nodes: torch.Tensor
) -> Callable[[int], Batch]:
    """``t -> batch`` for all ``n * R`` rows, node-major: the round loop's sampler, ``R = 1``
    included.

    A task family with ``replica_sampler(tasks, seeds, nodes)`` (the streaming tasks and
    ``ModuleTask``) draws each replica's raw numbers from its own seed and transforms all
    rows at once, with the same code as its single run, and sets up once what each round
    would otherwise look up; any other task is sampled replica by replica and interleaved.
    """
    nodes = nodes.to(torch.int64)
    family = type(tasks[0])
    batched = getattr(family, "replica_sampler", None)
    if batched is not None:
        return batched(tasks, seeds, nodes)  # type: ignore[no-any-return]
    if len(tasks) == 1:
        task, seed = tasks[0], seeds[0]
        return lambda t: task.sample(nodes, t, seed)

    def generic(t: int) -> Batch:
        batches = [task.sample(nodes, t, seed) for task, seed in zip(tasks, seeds, strict=True)]
        return torch.utils._pytree.tree_map(lambda *leaves: interleave(leaves), *batches)

    return generic


__all__ = [
    "ReplicaError",
    "RowSchedule",
    "check_family",
    "interleave",
    "replicate",
    "stacked_sampler",
    "stop_replica",
]
