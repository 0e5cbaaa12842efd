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

import torch

from decent._types import NodeTensor
from decent.comm.base import Communicator, HonestRows
from decent.tasks.base import Task

EVAL_CHUNK = 64
"""Node models evaluated per call of ``task.evaluate``."""


def _honest(comm: Communicator) -> tuple[torch.Tensor, int] | None:
    """``(mask (m,), count)`` of the honest held rows when the comm has Byzantine nodes.

    A :class:`~decent.comm.robust.RobustCommunicator` exposes ``honest`` and
    ``num_honest``; every metric is then over the honest nodes only (a Byzantine node's
    model means nothing). Every rank takes the same branch (the attribute is global).
    """
    if not isinstance(comm, HonestRows):
        return None
    return comm.honest, int(comm.num_honest)


def _mean_rows(x: NodeTensor, comm: Communicator) -> torch.Tensor:
    honest = _honest(comm)
    if honest is None:
        return comm.all_reduce(x, "mean", accounted=False)
    mask, count = honest
    mask = mask.to(x.device)
    kept = torch.where(mask[:, None], x, torch.zeros((), dtype=x.dtype, device=x.device))
    return comm.all_reduce(kept, "sum", accounted=False) / count


def _extreme_rows(x: NodeTensor, comm: Communicator, op: str) -> torch.Tensor:
    honest = _honest(comm)
    if honest is None:
        return comm.all_reduce(x, op, accounted=False)  # type: ignore[arg-type]
    fill = torch.tensor(math.inf if op == "min" else -math.inf, dtype=x.dtype, device=x.device)
    kept = torch.where(honest[0].to(x.device)[:, None], x, fill)
    return comm.all_reduce(kept, op, accounted=False)  # type: ignore[arg-type]


def network_mean(x: NodeTensor, comm: Communicator) -> torch.Tensor:
    """``x_bar = (1/n) sum_i x_i`` as ``(d,)`` (a metric collective, not accounted).

    With Byzantine nodes (a comm exposing ``honest``), the mean of the honest nodes.
    """
    return _mean_rows(x, comm)


def consensus_distance(
    x: NodeTensor, comm: Communicator, x_bar: torch.Tensor | None = None
) -> float:
    """``(1/n) sum_i ||x_i - x_bar||^2`` over all ``n`` nodes (the honest ones, if any)."""
    if x_bar is None:
        x_bar = network_mean(x, comm)
    sq = (x - x_bar).square().sum(dim=1, keepdim=True)
    return float(_mean_rows(sq, comm).item())


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
    x_bar = network_mean(x, comm)
    out: dict[str, float] = {}
    b_bar = network_mean(buffers, comm) if buffers is not None else None
    at_mean = (
        task.evaluate(x_bar[None, :])
        if b_bar is None
        else task.evaluate(x_bar[None, :], buffers=b_bar[None, :])  # type: ignore[call-arg]
    )
    for key, value in at_mean.items():
        out[f"eval/{key}@mean"] = float(value[0].item())
    if task.optimum is not None:
        out["eval/subopt@mean"] = out["eval/loss@mean"] - float(task.optimum)
    out["consensus/dist2"] = consensus_distance(x, comm, x_bar)
    if per_node:
        # models in chunks: a (k, N) loss matrix of many nodes on a large evaluation set
        # would otherwise be one multi-GB temporary
        if buffers is None:
            parts = [task.evaluate(chunk) for chunk in x.split(EVAL_CHUNK)]
        else:
            parts = [
                task.evaluate(chunk, buffers=b)  # type: ignore[call-arg]
                for chunk, b in zip(x.split(EVAL_CHUNK), buffers.split(EVAL_CHUNK), strict=True)
            ]
        at_nodes = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
        for key, value in at_nodes.items():
            col = value.reshape(-1, 1).to(x.dtype)
            out[f"eval/{key}@node_min"] = float(_extreme_rows(col, comm, "min").item())
            out[f"eval/{key}@node_mean"] = float(_mean_rows(col, comm).item())
            out[f"eval/{key}@node_max"] = float(_extreme_rows(col, comm, "max").item())
        if task.optimum is not None:
            out["eval/subopt@node_max"] = out["eval/loss@node_max"] - float(task.optimum)
    return out


__all__ = ["EVAL_CHUNK", "consensus_distance", "evaluate", "metric_label", "network_mean"]
