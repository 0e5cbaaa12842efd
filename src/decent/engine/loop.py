"""The one round loop shared by every backend (simulator and torch.distributed)."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import torch

from decent import _threads
from decent.algorithms.base import Algorithm, static_violation
from decent.comm.base import Clocked, Communicator, Replicable, Topological
from decent.comm.sim import MixedReplicatedCommunicator
from decent.engine import replicas
from decent.engine.callbacks import Callback
from decent.engine.oracle import GradientOracle
from decent.engine.privacy import Privacy, PrivacyAccountant, PrivateOracle, sampling_rates
from decent.engine.result import DivergenceWarning, RunInfo, RunResult, Status
from decent.metrics import evaluate
from decent.tasks.base import Task, objective_of

PerNode = Literal["every", "final", "none"]
Average = Literal["tail", "weighted"]
AVERAGES: tuple[str, ...] = ("tail", "weighted")
"""Output averages the loop can keep besides the last iterate (no communication)."""


def _divergence_message(algorithm: Algorithm[Any], t: int, what: str) -> str:
    lr = getattr(algorithm, "lr", "?")
    hint = getattr(algorithm, "divergence_hint", "lower the step size (try lr / 10)")
    if isinstance(lr, (int, float)) and lr == 0:  # no step was taken: the step size is not it
        hint = "with lr = 0 no step grew, so check the task's data and parameters"
    return (
        f"run diverged at round {t}: {algorithm.name} with lr={lr} {what}; {hint}. "
        "Records up to the last evaluation are kept."
    )


def _require(value: Any, argument: str, members: tuple[str, ...], fix: str) -> None:
    """Refuse ``value`` for ``argument`` unless it has ``members`` (a string, a class or a
    config name where a built object belongs), with one line naming the argument."""
    if isinstance(value, (str, bytes, int, float, type)) or not all(
        hasattr(value, m) for m in members
    ):
        raise TypeError(f"{argument} must be {fix}; got {type(value).__name__} {value!r:.60}")


_ALGORITHM = "an algorithm object such as decent.algorithms.DSGD(lr=0.05)"
_TASK = "a task object such as decent.tasks.LeastSquares(num_nodes=8, dim=10)"
_COMM = "a communicator such as decent.comm.SimCommunicator(decent.topology.ring(8))"


def _not_finite_message(t: int, what: str, initial: float) -> str:
    """A run whose problem is not finite before any step could grow: not a divergence."""
    start = f"the loss at the start is {initial:.3g}" if t else "before any step"
    return (
        f"the {what} not finite at round {t}, {start}: the problem itself is not finite, "
        "not the step size; check the task's data and parameters (e.g. task.heterogeneity, "
        "task.noise, privacy.noise_multiplier). Records up to the last evaluation are kept."
    )


EVALUATIONS = 20
"""Evaluations a run makes by default, besides the one at round 0."""


def default_eval_every(rounds: int) -> int:
    """The evaluation period when none is given: ``max(1, rounds // 20)``."""
    return max(1, rounds // EVALUATIONS)


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
    autograd: bool = False,
    topology_name: str | None = None,
    averages: Sequence[Average] = (),
    privacy: Privacy | None = None,
) -> RunResult:
    """Run ``algorithm`` on ``task`` for ``rounds`` rounds, mixing through ``comm``.

    Each round: query points -> minibatches -> gradients (one batched call for all held
    nodes) -> ``algorithm.update`` -> callbacks. Every ``eval_every`` rounds (and at
    round 0 and the last round) the metrics of :func:`decent.metrics.evaluate` plus
    training loss, gradient evaluations, communication and wall time are recorded.
    This is :func:`train_replicas` with one replica: the one round loop.

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
        autograd: take gradients by ``vmap(grad(task.loss))`` even where the task has them
            in closed form (``task.grad_and_loss``), e.g. to check one against the other.
        topology_name: the name recorded in :class:`RunInfo` (default: the comm's topology).
        averages: also evaluate averages of the outputs over rounds, kept per node in
            float64 at no communication cost: ``"tail"``, the uniform average of the outputs
            of rounds ``T//2 + 1 .. t`` (recorded once ``t > T//2``), and ``"weighted"``,
            ``sum_s s x_s / sum_s s`` (weights ``alpha_s = s``). Their metrics are those of
            the network mean, named ``eval/<metric>@tail`` and ``eval/<metric>@weighted``
            (e.g. ``eval/subopt@tail``); the last iterate stays ``eval/<metric>@mean``.
        privacy: differential privacy per node (:class:`~decent.engine.privacy.Privacy`):
            every gradient is DP-SGD's (per-sample clipping plus Gaussian noise, see
            :class:`~decent.engine.privacy.PrivateOracle`), and every evaluation records
            ``privacy/epsilon`` (the worst node's epsilon at ``privacy.delta``, from
            Opacus's accountant) and ``privacy/epsilon_mean``; ``autograd`` does not apply to
            private gradients (always per-sample autograd).

    Returns:
        A :class:`RunResult`; ``status == "diverged"`` (with a :class:`DivergenceWarning`
        and the reason in ``message``) when the loss blew up.

        A problem that is not finite before any step (the loss at the start, or the
        first round's gradients) also ends ``"diverged"``, with a message that names the
        task's data and parameters rather than the step size.

    Raises:
        TypeError: ``algorithm``, ``task`` or ``comm`` is not such an object (a name such as
            ``"dsgd"`` or ``"ring"``, or a class); the message says what to pass.
        ValueError: bad ``rounds``, ``eval_every``, ``check_every``, ``divergence_factor``
            or ``x0``, or a task built for another number of nodes than ``comm``.
    """
    (result,) = train_replicas(
        [algorithm],
        [task],
        comm,
        rounds=rounds,
        seeds=[seed],
        eval_every=eval_every,
        callbacks=[callbacks],
        per_node_eval=per_node_eval,
        check_every=check_every,
        divergence_factor=divergence_factor,
        x0s=[x0],
        autograd=autograd,
        topology_name=topology_name,
        averages=averages,
        privacy=privacy,
    )
    return result


def train_replicas(
    algorithms: Sequence[Algorithm[Any]],
    tasks: Sequence[Task],
    comm: Communicator | Sequence[Communicator],
    *,
    rounds: int,
    seeds: Sequence[int],
    eval_every: int | None = None,
    callbacks: Sequence[Sequence[Callback]] | None = None,
    per_node_eval: bool | PerNode = "final",
    check_every: int | None = 16,
    divergence_factor: float | None = 1e4,
    x0s: Sequence[torch.Tensor | None] | None = None,
    autograd: bool = False,
    topology_name: str | None = None,
    averages: Sequence[Average] = (),
    privacy: Privacy | None = None,
) -> list[RunResult]:
    """Run ``R`` independent runs on one graph as one stacked tensor: a replica batch.

    Replica ``r`` is the run of ``algorithms[r]`` on ``tasks[r]`` with seed ``seeds[r]``:
    the algorithms share their class and every hyperparameter but ``lr``; the tasks share
    their family and shapes (``task.replica_fields``) and may differ in their scalar
    parameters (heterogeneity, noise, problem seed). All ``R`` runs go through the round
    loop together: one batched gradient call, one algorithm step with a step size per row,
    and one sparse product for every replica's gossip
    (:class:`~decent.comm.sim.ReplicatedCommunicator`); replica ``r`` computes bit for
    bit what :func:`train` computes for it alone. Each replica is evaluated, recorded (its
    own ``callbacks[r]``), checked for divergence and finished on its own: a diverged
    replica is recorded as diverged and stopped (step size 0, state zeroed), the others go
    on. With ``R > 1``, ``comm`` must be the simulator's (one replica's network).

    ``comm`` may also be a list, replica ``r``'s communicator: replicas may then run on
    different static topologies with the same number of nodes (plain simulator
    communicators, see :class:`~decent.comm.sim.MixedReplicatedCommunicator`), each mixed,
    accounted and named with its own.

    Args: as :func:`train`, with one entry per replica in ``algorithms``, ``tasks``,
    ``seeds``, ``callbacks`` and ``x0s`` (and ``comm``, optionally).

    Returns:
        One :class:`RunResult` per replica, in order.
    """
    for name, seq in (("algorithms", algorithms), ("tasks", tasks), ("seeds", seeds)):
        if isinstance(seq, (str, bytes)) or not isinstance(seq, Sequence):
            raise TypeError(f"{name} must be a list (one entry per replica), got {seq!r:.60}")
    for algo in algorithms:
        _require(algo, "algorithm", ("init", "query", "update", "output", "name"), _ALGORITHM)
    for task in tasks:
        _require(task, "task", ("sample", "dim", "num_nodes", "dtype"), _TASK)
    R = len(algorithms)
    comms = list(comm) if isinstance(comm, Sequence) else [comm] * R
    for c in comms:
        _require(c, "comm", ("mix", "all_reduce", "node_ids", "num_nodes"), _COMM)
    if R < 1 or len(tasks) != R or len(seeds) != R or len(comms) != R:
        raise ValueError(
            f"a replica batch needs as many tasks, seeds (and comms) as algorithms, got {R} "
            f"algorithms, {len(tasks)} tasks, {len(seeds)} seeds, {len(comms)} comms"
        )
    comm = comms[0]
    mixed = len({id(c) for c in comms}) > 1  # replicas on different topologies
    callbacks = [list(c) for c in callbacks] if callbacks is not None else [[] for _ in tasks]
    x0s = list(x0s) if x0s is not None else [None] * R
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    if eval_every is None:
        eval_every = default_eval_every(rounds)
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
    averages = tuple(averages)
    for avg in averages:
        if avg not in AVERAGES:
            raise ValueError(f"averages may hold {list(AVERAGES)}, got {avg!r}")
    for c, task in zip(comms, tasks, strict=True):
        if c.num_nodes != task.num_nodes:
            raise ValueError(
                f"the topology has {c.num_nodes} nodes but the task was built for "
                f"{task.num_nodes}; build both with the same num_nodes"
            )
    nodes = comm.node_ids
    n = comm.num_nodes
    m = int(nodes.shape[0])
    oracle = GradientOracle(tasks[0], autograd=autograd)
    private, accountant = None, None
    if privacy is not None and (oracle.stateful or bool(getattr(tasks[0], "stochastic", False))):
        raise ValueError(
            f"privacy needs per-sample gradients, which {tasks[0].name}'s running statistics "
            "or dropout do not have; use GroupNorm/LayerNorm and no dropout"
        )
    if privacy is not None:  # DP-SGD gradients, and every node's budget at evaluations
        accountant = PrivacyAccountant(privacy, sampling_rates(tasks[0]))
        private = PrivateOracle(tasks[0], privacy, seeds=seeds, nodes=nodes, num_nodes=n)
    for c in {id(c): c for c in comms}.values():
        if isinstance(c, Topological):
            refused = static_violation(algorithms[0], c.topology)
            if refused is not None:
                raise ValueError(refused)
    topo_names = [
        topology_name or (c.topology.name if isinstance(c, Topological) else "?") for c in comms
    ]
    infos = [
        RunInfo(
            algorithm=algo.name,
            task=task.name,
            topology=topo_name,
            num_nodes=n,
            dim=task.dim,
            rounds=rounds,
            eval_every=eval_every,
            seed=seed,
            objective=objective_of(task),
        )
        for algo, task, seed, topo_name in zip(algorithms, tasks, seeds, topo_names, strict=True)
    ]
    starts = [_start_rows(task, s, x, nodes) for task, s, x in zip(tasks, seeds, x0s, strict=True)]
    sample = replicas.stacked_sampler(tasks, seeds, nodes)  # t -> every row's minibatch
    loop_comm: Communicator
    if R == 1:
        algorithm, loop_comm = algorithms[0], comm
        state = algorithm.init(starts[0])
    else:
        if mixed:
            loop_comm = MixedReplicatedCommunicator(comms)  # type: ignore[arg-type]
        elif isinstance(comm, Replicable):
            loop_comm = comm.replicated(R)  # a wrapper (ChebyshevCommunicator) re-wraps its own
        else:
            raise ValueError(
                f"a replica batch runs in the simulator: comm must be a SimCommunicator, got "
                f"{type(comm).__name__}"
            )
        algorithm = replicas.replicate(algorithms, n, device=nodes.device)
        state = algorithm.init(replicas.interleave(starts))

    def rows_of(x: torch.Tensor, r: int) -> torch.Tensor:
        return x if R == 1 else x.view(n, R, *x.shape[1:])[:, r].contiguous()

    records: list[list[dict[str, float]]] = [[] for _ in range(R)]
    results: list[RunResult | None] = [None] * R
    active = list(range(R))
    start = time.perf_counter()
    loss_rows = torch.zeros(m * R, dtype=torch.float64, device=nodes.device)
    loss_count = 0
    limits = [math.inf] * R  # set from the first evaluation
    initial = [math.nan] * R
    tail_start = rounds // 2
    sums: dict[str, torch.Tensor] = {
        a: torch.zeros(m * R, tasks[0].dim, dtype=torch.float64, device=nodes.device)
        for a in averages
    }

    def accumulate(t: int) -> None:
        output = algorithm.output(state)
        if "weighted" in sums:
            sums["weighted"].add_(output, alpha=float(t))
        if "tail" in sums and t > tail_start:
            sums["tail"].add_(output)

    def averaged(t: int) -> dict[str, torch.Tensor]:
        out = {}
        if "weighted" in sums and t > 0:
            out["weighted"] = sums["weighted"] / (t * (t + 1) / 2)
        if "tail" in sums and t > tail_start:
            out["tail"] = sums["tail"] / (t - tail_start)
        return out

    def record(t: int) -> None:
        nonlocal loss_count
        nodes_too = per_node == "every" or (per_node == "final" and t == rounds)
        output = algorithm.output(state)
        stats = _replica_summaries(loop_comm, R)
        transport = loop_comm.metrics()  # a simulated network's clock and faults, alive ranks
        loss_sum = loss_rows.view(m, R).mean(dim=0)  # per replica: mean over its rows
        train_loss = (loss_sum / loss_count).tolist() if loss_count and R > 1 else None
        means = averaged(t)
        for r in list(active):
            bufs = None if oracle.buffers is None else rows_of(oracle.buffers, r)
            metrics = evaluate(
                tasks[r], rows_of(output, r), comms[r], per_node=nodes_too, buffers=bufs
            )
            for avg, x in means.items():
                rows = rows_of(x, r).to(tasks[r].dtype)
                at_avg = evaluate(tasks[r], rows, comms[r], per_node=False, buffers=bufs)
                for key, at in at_avg.items():
                    if key.startswith("eval/") and key.endswith("@mean"):
                        metrics[key.removesuffix("@mean") + "@" + avg] = at
            if loss_count:
                if train_loss is not None:
                    metrics["train/loss"] = train_loss[r]
                else:  # one row per held node: a rank holding m of the n nodes weighs by m
                    local = (loss_sum[0] / loss_count).reshape(1, 1).to(tasks[0].dtype)
                    value = comm.all_reduce(local.expand(m, 1), "mean", accounted=False)
                    metrics["train/loss"] = float(value.item())
            metrics["grad_evals"] = float(t * n)
            if accountant is not None:
                metrics.update(accountant.metrics(t))
            metrics.update(stats[r])
            metrics.update(transport)
            metrics["time/wall_s"] = time.perf_counter() - start
            records[r].append({"round": float(t), **metrics})
            for cb in callbacks[r]:
                cb.on_eval(t, metrics)
        loss_rows.zero_()
        loss_count = 0

    def finish(r: int, status: Status, t: int, message: str | None) -> None:
        rows = (
            type(state)._make(  # type: ignore[attr-defined]
                rows_of(f, r) if isinstance(f, torch.Tensor) and f.shape[:1] == (n * R,) else f
                for f in state
            )
            if R > 1
            else state
        )
        result = RunResult(
            records=records[r],
            status=status,
            rounds_completed=t,
            state=rows,
            output=rows_of(algorithm.output(state), r),
            message=message,
            info=infos[r],
        )
        if oracle.buffers is not None:  # each node's running statistics (BatchNorm)
            result.extra["buffers"] = rows_of(oracle.buffers, r)
        results[r] = result
        active.remove(r)
        for cb in callbacks[r]:
            cb.on_end(result)

    def diverged(r: int, t: int, what: str, message: str | None = None) -> None:
        nonlocal algorithm
        message = message or _divergence_message(algorithms[r], t, what)
        warnings.warn(message, DivergenceWarning, stacklevel=3)
        finish(r, "diverged", t, message)
        if R > 1 and active:  # stop it: no step, no values that could overflow
            algorithm = replicas.stop_replica(algorithm, R, n, r)
            for f in state:
                if isinstance(f, torch.Tensor) and f.shape[:1] == (n * R,):
                    f.view(n, R, -1)[:, r].zero_()

    for r in range(R):
        for cb in callbacks[r]:
            cb.on_start(infos[r])
    t = 0
    threads = _threads.ThreadPolicy(work=m * R * tasks[0].dim)  # see decent._threads
    try:
        record(0)
        for r in range(R):
            initial[r] = records[r][0].get("eval/loss@mean", math.nan)
            if divergence_factor is not None and math.isfinite(initial[r]):
                limits[r] = divergence_factor * max(abs(initial[r]), 1.0)
            if not math.isfinite(initial[r]):  # the start point's loss: no step was taken yet
                diverged(r, 0, "", _not_finite_message(0, "evaluation loss is", initial[r]))
        clock = loop_comm if isinstance(loop_comm, Clocked) else None  # a simulated network
        for t in range(1, rounds + 1 if active else 1):
            threads.tick()
            if clock is not None:
                joins = clock.begin_round(t)
                if joins:  # a joining node pulls its state (and output sums) from a neighbour
                    held = [oracle.buffers] if oracle.buffers is not None else []
                    _pull_rows([*state, *sums.values(), *held], joins, n * R)
            # 1. where gradients are taken (DAT-SGD: the query point x, not w)
            query = algorithm.query(state, t)
            # 2. each node's minibatch: a pure function of (seed, node, t)
            batch = sample(t)
            # 3. all held nodes' (all replicas') gradients in one batched call
            grads, losses = oracle(query, batch) if private is None else private(query, batch, t)
            if t == 1:  # non-finite first gradients: the problem, not a step, is at fault
                finite = torch.isfinite(grads.detach()).all(dim=1) & torch.isfinite(losses)
                bad = _replica_max((~finite).to(torch.float64), comm, n, R)
                for r in [r for r in active if bad[r] > 0]:
                    diverged(r, 0, "", _not_finite_message(1, "gradients are", initial[r]))
                    if active:  # a stopped replica's rows must not reach the others' mixing
                        grads, losses = grads.clone(), losses.clone()
                        grads.view(n, R, -1)[:, r] = 0
                        losses.view(n, R)[:, r] = 0
                if not active:
                    break
            loss_rows.add_(losses.detach())  # summed per row, reduced at evaluation rounds
            loss_count += 1
            # 4. the algorithm's step; rows interact only through comm
            state = algorithm.update(state, grads, loop_comm, t)
            if sums:
                accumulate(t)
            for r in active:
                for cb in callbacks[r]:
                    cb.on_round(t)
            # 5. divergence check (one flag reduced over every rank, so all stop together)
            is_eval = t % eval_every == 0 or t == rounds
            if is_eval or (check_every is not None and t % check_every == 0):
                nan_inf = torch.nan_to_num(losses.detach().to(torch.float64), nan=math.inf)
                worst = _replica_max(nan_inf, comm, n, R)
                for r in list(active):
                    if not worst[r] <= limits[r]:
                        what = _what(worst[r], limits[r], divergence_factor, initial[r], "training")
                        diverged(r, t, what)
            # 6. evaluation
            if is_eval and active:
                record(t)
                for r in list(active):
                    value = records[r][-1].get("eval/loss@mean", 0.0)
                    if not value <= limits[r]:
                        what = _what(value, limits[r], divergence_factor, initial[r], "evaluation")
                        diverged(r, t, what)
            if not active:
                break
    except KeyboardInterrupt:
        for r in list(active):
            finish(r, "interrupted", max(t - 1, 0), "interrupted by the user (Ctrl-C or SIGTERM)")
        raise
    finally:
        threads.close()
    for r in list(active):
        finish(r, "finished", rounds, None)
    return [res for res in results if res is not None]


def _replica_summaries(comm: Communicator, R: int) -> list[dict[str, float]]:
    """Each replica's traffic metrics: its own topology's with mixed topologies
    (:meth:`~decent.comm.sim.MixedReplicatedCommunicator.replica_stats`), else the one
    replica's accounting every replica shares."""
    if isinstance(comm, MixedReplicatedCommunicator):
        summaries: dict[int, dict[str, float]] = {}
        out = []
        for r in range(R):
            stats = comm.replica_stats(r)
            summary = summaries.get(id(stats))
            if summary is None:
                summary = summaries[id(stats)] = stats.summary()
            out.append(summary)
        return out
    return [comm.stats.summary()] * R


def _pull_rows(tensors: Sequence[Any], joins: Sequence[tuple[int, int]], rows: int) -> None:
    """Copy row ``source`` into row ``node`` of every node-stacked tensor, per join."""
    node = torch.tensor([a for a, _ in joins])
    source = torch.tensor([b for _, b in joins])
    for f in tensors:
        if isinstance(f, torch.Tensor) and f.shape[:1] == (rows,):
            f[node.to(f.device)] = f[source.to(f.device)]


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


def _replica_max(values: torch.Tensor, comm: Communicator, n: int, R: int) -> list[float]:
    """Each replica's largest entry of ``values`` (one per row, node-major) over every node.

    A single run reduces over every rank, so all ranks take the same decision.
    """
    if R > 1:
        return values.view(n, R).amax(dim=0).tolist()  # type: ignore[no-any-return]
    column = values.amax().reshape(1, 1).expand(int(comm.node_ids.shape[0]), 1)
    return [float(comm.all_reduce(column, "max", accounted=False).item())]


def _what(value: float, limit: float, factor: float | None, initial: float, kind: str) -> str:
    if math.isnan(value):
        return f"made the {kind} loss NaN"
    if math.isinf(value):
        return f"made the {kind} loss infinite"
    return (
        f"drove the {kind} loss to {value:.3g}, above divergence_factor = {factor:g} times "
        f"the initial loss {initial:.3g} (limit {limit:.3g})"
    )
