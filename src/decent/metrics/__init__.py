"""Metrics computed through the Communicator, so they mean the same on every backend.

Names are stable and flat (see ``docs/metrics.md``):

* ``eval/loss@mean``: global objective ``f`` at the network average ``x_bar``;
  ``eval/subopt@mean = f(x_bar) - f*`` for tasks with a known optimum;
  ``eval/<metric>@mean`` for every metric the task reports (``accuracy``, ...);
* ``eval/<metric>@node_min|node_mean|node_max``: the same at each node's own model;
* ``consensus/dist2``: ``(1/n) sum_i ||x_i - x_bar||^2``.

With Byzantine nodes (a communicator exposing ``honest``, see :mod:`decent.comm.robust`)
every metric is over the honest nodes only: ``x_bar`` is their mean, ``node_*`` their
extremes and mean.
"""

from __future__ import annotations

import math
from typing import cast

import torch

from decent._types import NodeTensor
from decent.comm.base import Communicator, HonestRows
from decent.tasks.base import Task

EVAL_CHUNK = 64
"""Node models evaluated per call of ``task.evaluate``."""


_HONEST_ROWS: dict[type, bool] = {}
"""Whether a communicator class has :class:`~decent.comm.base.HonestRows`, decided on its
first instance: an ``isinstance`` against a runtime-checkable protocol reads every member
(about 30 us), and a run evaluates its metrics through it many times per evaluation."""


def _has_honest_rows(comm: Communicator) -> bool:
    kind = type(comm)
    found = _HONEST_ROWS.get(kind)
    if found is None:
        found = _HONEST_ROWS[kind] = isinstance(comm, HonestRows)
    return found


def network_mean(x: NodeTensor, comm: Communicator) -> torch.Tensor:
    """``x_bar = (1/n) sum_i x_i`` as ``(d,)`` (a metric collective, not accounted).

    With Byzantine nodes (a comm with :class:`~decent.comm.base.HonestRows`, whose mask is
    the same on every rank), the mean of the honest nodes.
    """
    if not _has_honest_rows(comm):
        return comm.all_reduce(x, "mean", accounted=False)
    rows = cast(HonestRows, comm)
    kept = torch.where(rows.honest.to(x.device)[:, None], x, x.new_zeros(()))
    return comm.all_reduce(kept, "sum", accounted=False) / int(rows.num_honest)


def _extreme_rows(x: NodeTensor, comm: Communicator, op: str) -> torch.Tensor:
    """The min or max (``op``) over every (honest) node of ``x``."""
    if _has_honest_rows(comm):
        fill = x.new_tensor(math.inf if op == "min" else -math.inf)
        x = torch.where(cast(HonestRows, comm).honest.to(x.device)[:, None], x, fill)
    return comm.all_reduce(x, op, accounted=False)  # type: ignore[arg-type]


def consensus_distance(
    x: NodeTensor, comm: Communicator, x_bar: torch.Tensor | None = None
) -> float:
    """``(1/n) sum_i ||x_i - x_bar||^2`` over all ``n`` nodes (the honest ones, if any)."""
    if x_bar is None:
        x_bar = network_mean(x, comm)
    sq = (x - x_bar).square().sum(dim=1, keepdim=True)
    return float(network_mean(sq, comm).item())


_LABELS = {
    "subopt": "f(x̄) − f*",
    "loss": "f(x̄)",
    "accuracy": "training accuracy",
    "test_loss": "test loss",
    "test_accuracy": "test accuracy",
    "dist2_to_opt": "‖x̄ − x*‖²",
}
_WHERE = {
    "mean": "",
    "node_min": " at the best node",
    "node_mean": ", mean over nodes",
    "node_max": " at the worst node",
    "tail": ", tail-averaged iterate",
    "weighted": ", t-weighted average",
}
_PLAIN = {
    "consensus/dist2": "consensus distance (1/n) Σ ‖xᵢ − x̄‖²",
    "train/loss": "training loss (minibatch)",
    "grad_evals": "gradient evaluations",
    "comm/bytes": "bytes sent, all nodes (B)",
    "comm/bytes_per_node_mean": "bytes sent per node (B)",
    "comm/bytes_per_node_max": "bytes sent by the busiest node (B)",
    "comm/messages": "messages sent",
    "time/wall_s": "wall-clock time (s)",
    "time/sim": "simulated time (s)",
    "rounds_completed": "rounds completed",
    "byzantine/count": "Byzantine nodes",
    "privacy/epsilon": "ε at δ, worst node (DP)",
    "privacy/epsilon_mean": "ε at δ, mean over nodes (DP)",
}


def metric_label(name: str) -> str:
    """How a table or an axis names a record: ``"eval/subopt@node_max"`` is
    ``"f(x̄) − f* at the worst node"``; names it does not know come back as they are."""
    if name in _PLAIN:
        return _PLAIN[name]
    if name.startswith("eval/") and "@" in name:
        key, where = name[len("eval/") :].rsplit("@", 1)
        base = _LABELS.get(key, key)
        if where.startswith("node_"):
            base = base.replace("x̄", "xᵢ")  # each node's own model
        if where in _WHERE:
            return base + _WHERE[where]
    return name


def evaluate(
    task: Task,
    x: NodeTensor,
    comm: Communicator,
    *,
    per_node: bool = True,
    buffers: NodeTensor | None = None,
) -> dict[str, float]:
    """Evaluate the averaged model and (optionally) every node's own model.

    ``buffers`` ``(m, b)``: the nodes' running statistics (BatchNorm) for a task that keeps
    them; the averaged model is evaluated with their network mean, node ``i`` with its own.
    """

    def at(rows: NodeTensor, bufs: NodeTensor | None) -> dict[str, torch.Tensor]:
        if bufs is None:
            return task.evaluate(rows)
        return task.evaluate(rows, buffers=bufs)  # type: ignore[call-arg]

    x_bar = network_mean(x, comm)
    b_bar = network_mean(buffers, comm)[None, :] if buffers is not None else None
    out = {f"eval/{k}@mean": float(v[0].item()) for k, v in at(x_bar[None, :], b_bar).items()}
    if task.optimum is not None:
        out["eval/subopt@mean"] = out["eval/loss@mean"] - float(task.optimum)
    out["consensus/dist2"] = consensus_distance(x, comm, x_bar)
    if per_node:
        # models in chunks: a (k, N) loss matrix of many nodes on a large evaluation set
        # would otherwise be one multi-GB temporary
        chunks = x.split(EVAL_CHUNK)
        held = buffers.split(EVAL_CHUNK) if buffers is not None else [None] * len(chunks)
        parts = [at(chunk, b) for chunk, b in zip(chunks, held, strict=True)]
        at_nodes = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
        for key, value in at_nodes.items():
            col = value.reshape(-1, 1).to(x.dtype)
            out[f"eval/{key}@node_min"] = float(_extreme_rows(col, comm, "min").item())
            out[f"eval/{key}@node_mean"] = float(network_mean(col, comm).item())
            out[f"eval/{key}@node_max"] = float(_extreme_rows(col, comm, "max").item())
        if task.optimum is not None:
            out["eval/subopt@node_max"] = out["eval/loss@node_max"] - float(task.optimum)
    return out


__all__ = ["EVAL_CHUNK", "consensus_distance", "evaluate", "metric_label", "network_mean"]
