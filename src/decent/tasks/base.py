"""The Task protocol: a model, its loss, per-node data, and evaluation.

A task exposes its model *functionally*: flat parameters ``(d,)``, a pure
``loss(params, batch)`` for one node's minibatch that ``torch.func.vmap`` can batch over
nodes, per-node sampling that is a pure function of ``(seed, node, t)``, and evaluation of
the global objective.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from decent._types import Batch, Params


class TaskError(ValueError):
    """Bad task input; the message names the argument and the rule."""


@dataclass(frozen=True)
class Objective:
    """What a task is judged by: the record a report ranks methods with, and which way.

    Attributes:
        metric: the record key, e.g. ``"eval/subopt@mean"``.
        label: how a table or an axis names it, e.g. ``"f(x̄) − f*"``.
        lower_is_better: whether smaller values win (an error), or larger (an accuracy).
        worst_node: the record of the same quantity at the worst node, if there is one.
        log_scale: whether it spans decades (an error that goes to zero).
    """

    metric: str
    label: str
    lower_is_better: bool = True
    worst_node: str | None = None
    log_scale: bool = False

    def to_json(self) -> dict[str, Any]:
        """The plain dict a results store keeps with a run."""
        return dataclasses.asdict(self)


SUBOPTIMALITY = Objective(
    "eval/subopt@mean", "f(x̄) − f*", True, "eval/subopt@node_max", log_scale=True
)
"""The objective of every task with a known optimum ``f*``."""


def objective_of(task: Any) -> Objective:
    """The task's own :class:`Objective` when it declares one (a ``judged_by``
    attribute); else the suboptimality when ``f*`` is known, else the loss ``f(x̄)``."""
    declared = getattr(task, "judged_by", None)
    if isinstance(declared, Objective):
        return declared
    if getattr(task, "optimum", None) is not None:
        return SUBOPTIMALITY
    return Objective("eval/loss@mean", "f(x̄)", True, "eval/loss@node_max")


@runtime_checkable
class Task(Protocol):
    """What the engine needs from a learning problem.

    Attributes:
        name: short identifier (``"least_squares"``, ``"digits_mlp"``, ...).
        num_nodes: ``n``; data partitions and heterogeneity are built for this many nodes.
        dim: ``d``, the flat parameter dimension.
        dtype: the floating dtype of parameters and data.
        optimum: ``f*``, the minimum of the global objective ``f = (1/n) sum_i f_i`` as
            measured by ``evaluate(...)["loss"]``; ``None`` when unknown (non-convex).
    """

    name: str
    num_nodes: int
    dim: int
    dtype: torch.dtype
    optimum: float | None

    def init_params(self, seed: int) -> Params:
        """The common starting point ``(d,)`` shared by every node."""
        ...

    def loss(self, params: Params, batch: Batch) -> torch.Tensor:
        """Scalar loss of one node's minibatch (no node axis); must be vmappable."""
        ...

    def sample(self, nodes: torch.Tensor, t: int, seed: int) -> Batch:
        """Minibatches for the nodes ``nodes`` (``(m,)`` global ids) at round ``t``.

        Leaves have a leading axis ``m``. The draw for node ``i`` depends only on
        ``(seed, i, t)``, never on which other nodes are asked for.
        """
        ...

    def evaluate(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        """Evaluate ``k`` models given as ``(k, d)``; returns ``{metric: (k,)}``.

        ``"loss"`` is always present and is the global objective ``f`` (whose minimum is
        ``optimum``). Classification tasks add ``"accuracy"`` (and held-out
        ``"test_loss"`` / ``"test_accuracy"`` when a test split exists).
        """
        ...
