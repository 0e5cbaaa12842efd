"""The one round loop shared by every backend (simulator and torch.distributed)."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import torch

from decent.algorithms.base import Algorithm
from decent.comm.base import Communicator
from decent.engine.callbacks import Callback
from decent.engine.oracle import GradientOracle
from decent.engine.result import DivergenceWarning, RunInfo, RunResult, Status
from decent.metrics import evaluate
from decent.tasks.base import Task

PerNode = Literal["every", "final", "none"]


def _divergence_message(algorithm: Algorithm[Any], t: int, what: str) -> str:
    lr = getattr(algorithm, "lr", "?")
    hint = getattr(algorithm, "divergence_hint", "lower the step size (try lr / 10)")
    return (
        f"run diverged at round {t}: {algorithm.name} with lr={lr} {what}; {hint}. "
        "Records up to the last evaluation are kept."
    )


def train(
    algorithm: Algorithm[Any],
    task: Task,
    comm: Communicator,
    *,
    rounds: int,
    seed: int = 0,
    eval_every: int | None = None,
    callbacks: Sequence[Callback] = (),
    per_node_eval: bool | PerNode = "final",
    check_every: int | None = 16,
    divergence_factor: float | None = 1e4,
    x0: torch.Tensor | None = None,
    compile: bool = False,
    topology_name: str | None = None,
) -> RunResult:
    """Run ``algorithm`` on ``task`` for ``rounds`` rounds, mixing through ``comm``.

    Each round: query points -> minibatches -> gradients (one ``vmap`` call for all held
    nodes) -> ``algorithm.update`` -> callbacks. Every ``eval_every`` rounds (and at
    round 0 and the last round) the metrics of :func:`decent.metrics.evaluate` plus
    training loss, gradient evaluations, communication and wall time are recorded.

    Args:
        algorithm: the method (frozen dataclass with init/query/update/output).
        task: the learning problem (functional model, data, evaluation).
        comm: the communicator (simulator or torch.distributed); its ``node_ids`` are the
            nodes held here.
        rounds: ``T``, the number of rounds (one stochastic gradient per node per round).
        seed: experiment seed (initial point and every minibatch draw).
        eval_every: evaluation period in rounds (default ``max(1, rounds // 20)``).
        callbacks: progress bars, stores, ...
        per_node_eval: when to also evaluate every node's own model (min/mean/max over
            nodes): ``"every"`` evaluation, the ``"final"`` one only (the default: a
            per-node evaluation of a large evaluation set can cost more than a short run
            itself), or ``"none"``; ``True`` means ``"every"``, ``False`` ``"none"``.
        check_every: rounds between divergence checks of the training loss (``None``: only
            at evaluation rounds, which keeps other rounds free of host synchronisation).
        divergence_factor: a run has diverged when a training or evaluation loss is not
            finite or exceeds ``divergence_factor * max(|f(x_0)|, 1)`` (``f(x_0)`` the loss
            at the start); ``None`` stops only at NaN or inf.
        x0: the starting point: ``(d,)`` shared by every node, or ``(n, d)`` one row per
            node of the network (default ``task.init_params(seed)`` for every node).
        compile: ``torch.compile`` the gradient oracle.
        topology_name: the name recorded in :class:`RunInfo` (default: the comm's topology).

    Returns:
        A :class:`RunResult`; ``status == "diverged"`` (with a :class:`DivergenceWarning`
        and the reason in ``message``) when the loss blew up.

    Raises:
        ValueError: bad ``rounds``, ``eval_every``, ``check_every``, ``divergence_factor``
            or ``x0``, or a task built for another number of nodes than ``comm``.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    if eval_every is None:
        eval_every = max(1, rounds // 20)
    if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1:
        raise ValueError(f"eval_every must be an integer >= 1, got {eval_every!r}")
    if check_every is not None and (not isinstance(check_every, int) or check_every < 1):
        raise ValueError(f"check_every must be an integer >= 1 or None, got {check_every!r}")
    if divergence_factor is not None and not divergence_factor > 1:
        raise ValueError(
            f"divergence_factor must be a number > 1 (or None), got {divergence_factor!r}"
        )
    per_node = (
        ("every" if per_node_eval else "none") if isinstance(per_node_eval, bool) else per_node_eval
    )
    if per_node not in ("every", "final", "none"):
        raise ValueError(
            f"per_node_eval must be 'every', 'final', 'none' or a bool, got {per_node_eval!r}"
        )
    if comm.num_nodes != task.num_nodes:
        raise ValueError(
            f"the topology has {comm.num_nodes} nodes but the task was built for "
            f"{task.num_nodes}; build both with the same num_nodes"
        )
    nodes = comm.node_ids
    m = int(nodes.shape[0])
    oracle = GradientOracle(task, compile=compile)
    info = RunInfo(
        algorithm=algorithm.name,
        task=task.name,
        topology=topology_name or str(getattr(getattr(comm, "topology", None), "name", "?")),
        num_nodes=comm.num_nodes,
        dim=task.dim,
        rounds=rounds,
        eval_every=eval_every,
        seed=seed,
    )
    start_rows = _start_rows(task, seed, x0, nodes)
    state = algorithm.init(start_rows)
    records: list[dict[str, float]] = []
    start = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64)
    loss_count = 0
    limit = math.inf  # set from the first evaluation

    def record(t: int) -> dict[str, float]:
        nonlocal loss_sum, loss_count
        nodes_too = per_node == "every" or (per_node == "final" and t == rounds)
        metrics = evaluate(task, algorithm.output(state), comm, per_node=nodes_too)
        if loss_count:
            # one row per held node, so a rank holding m of the n nodes weighs its mean by m
            local = (loss_sum / loss_count).reshape(1, 1).to(task.dtype).expand(m, 1)
            metrics["train/loss"] = float(comm.all_reduce(local, "mean", accounted=False).item())
        metrics["grad_evals"] = float(t * comm.num_nodes)
        metrics.update(comm.stats.summary())
        metrics["time/wall_s"] = time.perf_counter() - start
        row = {"round": float(t), **metrics}
        records.append(row)
        loss_sum = torch.zeros((), dtype=torch.float64)
        loss_count = 0
        for cb in callbacks:
            cb.on_eval(t, metrics)
        return row

    def finish(status: Status, t: int, message: str | None) -> RunResult:
        result = RunResult(
            records=records,
            status=status,
            rounds_completed=t,
            state=state,
            output=algorithm.output(state),
            message=message,
            info=info,
        )
        for cb in callbacks:
            cb.on_end(result)
        return result

    def diverged(t: int, what: str) -> RunResult:
        message = _divergence_message(algorithm, t, what)
        warnings.warn(message, DivergenceWarning, stacklevel=3)
        return finish("diverged", t, message)

    for cb in callbacks:
        cb.on_start(info)
    t = 0
    try:
        first = record(0)
        initial = first.get("eval/loss@mean", math.nan)
        if divergence_factor is not None and math.isfinite(initial):
            limit = divergence_factor * max(abs(initial), 1.0)
        for t in range(1, rounds + 1):
            # 1. where gradients are taken (DAT-SGD: the query point x, not w)
            query = algorithm.query(state)
            # 2. each node's minibatch: a pure function of (seed, node, t)
            batch = task.sample(nodes, t, seed)
            # 3. all held nodes' gradients in one batched call
            grads, losses = oracle(query, batch)
            loss_sum = loss_sum + losses.detach().to(torch.float64).sum() / losses.shape[0]
            loss_count += 1
            # 4. the algorithm's step; rows interact only through comm
            state = algorithm.update(state, grads, comm, t)
            for cb in callbacks:
                cb.on_round(t)
            # 5. divergence check (one flag reduced over every rank, so all stop together)
            is_eval = t % eval_every == 0 or t == rounds
            if is_eval or (check_every is not None and t % check_every == 0):
                worst = _worst_loss(losses.detach(), comm)
                if not worst <= limit:
                    return diverged(t, _what(worst, limit, divergence_factor, initial, "training"))
            # 6. evaluation
            if is_eval:
                row = record(t)
                value = row.get("eval/loss@mean", 0.0)
                if not value <= limit:
                    return diverged(t, _what(value, limit, divergence_factor, initial, "evaluation"))
    except KeyboardInterrupt:
        finish("interrupted", max(t - 1, 0), "interrupted by the user (Ctrl-C or SIGTERM)")
        raise
    return finish("finished", rounds, None)


def _start_rows(
    task: Task, seed: int, x0: torch.Tensor | None, nodes: torch.Tensor
) -> torch.Tensor:
    """The ``(m, d)`` starting rows of the held nodes (a fresh tensor the state may own)."""
    d = task.dim
    if x0 is None:
        x0 = task.init_params(seed)
    if not isinstance(x0, torch.Tensor) or x0.shape not in ((d,), (task.num_nodes, d)):
        shape = tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__
        raise ValueError(
            f"x0 must be a tensor of shape (d,) = ({d},) shared by every node, or "
            f"(n, d) = ({task.num_nodes}, {d}) with one row per node; got {shape}"
        )
    x0 = x0.detach().to(dtype=task.dtype, device=nodes.device)
    if x0.ndim == 1:
        return x0.expand(nodes.shape[0], -1).clone()
    return x0.index_select(0, nodes.to(x0.device)).clone()


def _worst_loss(losses: torch.Tensor, comm: Communicator) -> float:
    """The largest training loss over every node (``inf`` when any is NaN or inf)."""
    worst = torch.nan_to_num(losses.to(torch.float64), nan=math.inf).amax()
    column = worst.reshape(1, 1).expand(int(comm.node_ids.shape[0]), 1)
    return float(comm.all_reduce(column, "max", accounted=False).item())


def _what(value: float, limit: float, factor: float | None, initial: float, kind: str) -> str:
    if math.isnan(value):
        return f"made the {kind} loss NaN"
    if math.isinf(value):
        return f"made the {kind} loss infinite"
    return (
        f"drove the {kind} loss to {value:.3g}, above divergence_factor = {factor:g} times "
        f"the initial loss {initial:.3g} (limit {limit:.3g})"
    )
