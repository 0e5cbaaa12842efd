"""The one round loop shared by every backend (simulator and torch.distributed)."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from decent.algorithms.base import Algorithm
from decent.comm.base import Communicator
from decent.engine.callbacks import Callback
from decent.engine.oracle import GradientOracle
from decent.engine.result import DivergenceWarning, RunInfo, RunResult, Status
from decent.metrics import evaluate
from decent.tasks.base import Task


def _divergence_message(algorithm: Algorithm[Any], t: int, losses: torch.Tensor) -> str:
    kind = "NaN" if bool(torch.isnan(losses).any()) else "inf"
    lr = getattr(algorithm, "lr", "?")
    hint = "lower the step size (try lr / 10)"
    if algorithm.name in ("dat_sgd", "anytime_sgd"):
        hint += "; the step on w is lr * alpha_t, which reaches lr * T, so tune gamma = lr * T"
    return (
        f"run diverged at round {t}: {algorithm.name} with lr={lr} produced a {kind} training "
        f"loss; {hint}. Records up to the last evaluation are kept."
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
    per_node_eval: bool = True,
    check_every: int = 16,
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
        eval_every: evaluation period in rounds (default ``max(1, rounds // 50)``).
        callbacks: progress bars, stores, ...
        per_node_eval: also evaluate every node's own model (min/mean/max over nodes).
        check_every: rounds between finiteness checks of the training loss.
        compile: ``torch.compile`` the gradient oracle.

    Returns:
        A :class:`RunResult`; ``status == "diverged"`` (with a :class:`DivergenceWarning`)
        when the loss became NaN or inf.
    """
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    if eval_every is None:
        eval_every = max(1, rounds // 50)
    if eval_every < 1:
        raise ValueError(f"eval_every must be >= 1, got {eval_every}")
    if comm.num_nodes != task.num_nodes:
        raise ValueError(
            f"the topology has {comm.num_nodes} nodes but the task was built for "
            f"{task.num_nodes}; build both with the same num_nodes"
        )
    nodes = comm.node_ids
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
    x0 = task.init_params(seed).to(dtype=task.dtype, device=nodes.device)
    state = algorithm.init(x0.expand(nodes.shape[0], -1).contiguous())
    records: list[dict[str, float]] = []
    start = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64)
    loss_count = 0

    def record(t: int) -> dict[str, float]:
        nonlocal loss_sum, loss_count
        metrics = evaluate(task, algorithm.output(state), comm, per_node=per_node_eval)
        if loss_count:
            # one row per held node, so a rank holding m of the n nodes weighs its mean by m
            local = (loss_sum / loss_count).reshape(1, 1).to(x0.dtype).expand(nodes.shape[0], 1)
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

    for cb in callbacks:
        cb.on_start(info)
    t = 0
    try:
        record(0)
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
            # 5. divergence check and evaluation
            is_eval = t % eval_every == 0 or t == rounds
            if (t % check_every == 0 or is_eval) and not bool(torch.isfinite(losses).all()):
                message = _divergence_message(algorithm, t, losses)
                warnings.warn(message, DivergenceWarning, stacklevel=2)
                return finish("diverged", t, message)
            if is_eval:
                row = record(t)
                bad = [
                    k for k, v in row.items() if k.startswith("eval/loss") and not math.isfinite(v)
                ]
                if bad:
                    message = _divergence_message(algorithm, t, torch.tensor([math.inf]))
                    warnings.warn(message, DivergenceWarning, stacklevel=2)
                    return finish("diverged", t, message)
    except KeyboardInterrupt:
        finish("interrupted", max(t - 1, 0), "interrupted by the user (Ctrl-C)")
        raise
    return finish("finished", rounds, None)
