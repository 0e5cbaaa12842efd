"""The one way to run a config into the results store.

``decent run``, every sweep worker and every rank of a distributed run call
:func:`run_config`; what differs between the simulator and torch.distributed is only the
communicator factory (and, on ranks, which one records). Building, training, recording,
closing the transport and the outcome are written here once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from decent.config import CommFactory, Experiment, ExperimentConfig, build, build_privacy
from decent.engine import Callback, RunResult, train
from decent.results import Store, run_id_for
from decent.run import resources
from decent.run.recorders import StoreRecorder

HEADLINE = ("eval/subopt@mean", "eval/test_accuracy@mean", "eval/accuracy@mean", "eval/loss@mean")
"""Metrics shown (first present) when a run ends."""


@dataclass(frozen=True)
class RunOutcome:
    """How one run ended.

    Attributes:
        run_id: the run's id in the store.
        label: its human-readable name.
        status: ``finished``, ``diverged``, ``failed``, ``interrupted`` or ``skipped``.
        final: the final metrics.
        message: why it stopped early (or failed).
        result: the engine's :class:`~decent.engine.RunResult` (``None`` when skipped or
            failed before training).
    """

    run_id: str
    label: str
    status: str
    final: dict[str, float] = field(default_factory=dict)
    message: str | None = None
    result: RunResult | None = field(default=None, compare=False, repr=False)

    def headline(self) -> str:
        """``subopt@mean=1.2e-03`` for the first headline metric present, else ``""``."""
        import math

        for key in HEADLINE:
            value = self.final.get(key)
            if value is not None and math.isfinite(value):
                return f"{key.split('/')[-1]}={value:.3e}"
        return ""


def run_label(config: ExperimentConfig) -> str:
    """A short human-readable name of a run: ``dsgd lr=0.05 ring(n=16) least_squares seed=0``."""
    if config.name:
        base = config.name
    else:
        lr = config.algorithm.lr
        lr_text = f"{lr:.3g}" if isinstance(lr, float) else lr.kind
        base = (
            f"{config.algorithm.method} lr={lr_text} {config.topology.kind}"
            f"(n={config.topology.num_nodes}) {config.task.kind}"
        )
        byz = config.byzantine
        if byz is not None:
            base += f" byzantine {byz.attack}/{byz.aggregation}"
    return f"{base} seed={config.seed}"


def train_experiment(
    experiment: Experiment, callbacks: Sequence[Callback] = (), **kwargs: Any
) -> RunResult:
    """Train a built experiment with its config's rounds, seed and evaluation settings.

    ``kwargs`` go to :func:`decent.engine.train` (e.g. ``autograd=True``).
    """
    e = experiment
    return train(
        e.algorithm,
        e.task,
        e.comm,
        seed=e.config.seed,
        callbacks=callbacks,
        **_settings(e),
        **kwargs,
    )


def _settings(experiment: Experiment) -> dict[str, Any]:
    """The training settings of a config that every replica of a batch shares."""
    cfg = experiment.config
    return {
        "rounds": cfg.rounds,
        "eval_every": cfg.eval_every,
        "per_node_eval": cfg.per_node_eval,
        "divergence_factor": cfg.divergence_factor,
        "averages": cfg.averages,
        "topology_name": experiment.topology.name,
        "privacy": build_privacy(cfg),
    }


@overload
def run_config(
    config: ExperimentConfig,
    store: Store | None,
    *,
    comm_factory: CommFactory | None = None,
    resolved: dict[str, Any] | None = None,
    label: str | None = None,
    force: bool = False,
    callbacks: Sequence[Callback] = (),
    recording: Callable[[], bool] | None = None,
    experiment: Experiment | None = None,
) -> RunOutcome: ...


@overload
def run_config(
    config: Sequence[ExperimentConfig],
    store: Store | None,
    *,
    label: Sequence[str] | None = None,
    force: bool = False,
    callbacks: Sequence[Sequence[Callback]] = (),
) -> list[RunOutcome]: ...


def run_config(
    config: ExperimentConfig | Sequence[ExperimentConfig],
    store: Store | None,
    *,
    comm_factory: CommFactory | None = None,
    resolved: dict[str, Any] | None = None,
    label: Any = None,
    force: bool = False,
    callbacks: Sequence[Any] = (),
    recording: Callable[[], bool] | None = None,
    experiment: Experiment | None = None,
) -> RunOutcome | list[RunOutcome]:
    """Build ``config``, train it and record it in ``store``; skip it if already done.

    A list of configs with one :func:`replica_key` trains as one replica batch
    (:func:`decent.engine.train_replicas`), each replica stored exactly as it would be
    alone (its own run id, config, records and status), so reports, resume and export do
    not know the difference; ``label`` and ``callbacks`` then hold one entry per config,
    and a list of one config is a single run. This is the one place that starts, aborts and
    closes recorders and closes the transport, however training ends.

    Args:
        config: one run's config (its ``sweep`` section is ignored), or a list of them.
        store: the results store; ``None`` records nothing.
        comm_factory: makes the communicator from the topology (default: the simulator);
            the distributed runtime passes its transport here.
        resolved: the config as stored (default ``config.run_dict()``; a distributed run
            adds its world size and mode).
        label: the run's name in the store (default :func:`run_label`).
        force: run again even if the store has it finished.
        callbacks: extra engine callbacks (a progress bar, sinks, fault injection).
        recording: whether this process writes the store now (default: always); a rank
            for which it is false stands by and takes over when it turns true (see
            :class:`~decent.run.recorders.StoreRecorder`).
        experiment: ``build(config, comm_factory)`` if already built.

    Returns:
        The :class:`RunOutcome` (a list of them for a list of configs); ``status ==
        "skipped"`` when a single run's store already had it.

    Raises:
        ValueError: configs with different replica keys.
        ConfigError: the config cannot be built (nothing is written then).
        ResourceError: the run cannot fit in memory (checked before anything is allocated).
        KeyboardInterrupt: after every run is marked ``interrupted``.
    """
    from decent.engine import train_replicas

    batch = isinstance(config, Sequence)
    configs = list(config) if isinstance(config, Sequence) else [config]
    if batch:
        labels = list(label) if label else [run_label(c) for c in configs]
        extra = [list(c) for c in callbacks] if callbacks else [[] for _ in configs]
    else:
        labels, extra = [label or run_label(configs[0])], [list(callbacks)]
    stored = [c.run_dict() if resolved is None or batch else resolved for c in configs]
    if len(configs) == 1:
        run_id = run_id_for(configs[0].study, stored[0])
        if store is not None and not force and store.is_finished(run_id):
            skipped = RunOutcome(run_id, labels[0], "skipped", store.final_values(run_id))
            return [skipped] if batch else skipped
        if experiment is None:
            resources.check_config(configs[0])
            experiment = build(configs[0], comm_factory)
        experiments = [experiment]
    else:
        if len({replica_key(c) for c in configs}) != 1:
            raise ValueError(
                "a replica batch needs configs that differ only in seed, lr, task scalars "
                "and static graph"
            )
        for c in configs:
            resources.check_config(c)
        experiments = _build_batch(configs)
    first = experiments[0]
    resources.check(  # one replica, its evaluation included
        first.algorithm, first.task, first.comm, per_node_eval=first.config.per_node_eval
    )
    if len(configs) > 1:
        resources.check_batch(first.algorithm, first.task, first.comm, len(configs))
    comms = list({id(e.comm): e.comm for e in experiments}.values())
    recorders = [
        None
        if store is None
        else StoreRecorder(
            store,
            e.config.study,
            res,
            name=lab,
            replace=force,
            extra=first.comm.metrics if len(configs) == 1 else None,
            active=recording,
        )
        for e, res, lab in zip(experiments, stored, labels, strict=True)
    ]
    every = [
        [*([rec] if rec is not None else []), *cbs]
        for rec, cbs in zip(recorders, extra, strict=True)
    ]
    try:
        if len(configs) == 1:
            results = [train_experiment(first, every[0])]
        else:
            settings = _settings(first)
            if len(comms) > 1:  # replicas on different static topologies: each names its own
                settings["topology_name"] = None
            results = train_replicas(
                [e.algorithm for e in experiments],
                [e.task for e in experiments],
                [e.comm for e in experiments] if len(comms) > 1 else first.comm,
                seeds=[e.config.seed for e in experiments],
                callbacks=every,
                **settings,
            )
    except BaseException as err:
        for rec in recorders:
            if rec is not None:
                rec.abort(err)
        for comm in comms:
            with contextlib.suppress(Exception):  # the error above is the one to report
                comm.close()
        raise
    for comm in comms:
        comm.close()
    outcomes = []
    for e, res, lab, rec, result in zip(
        experiments, stored, labels, recorders, results, strict=True
    ):
        if rec is not None:
            rec.close(result)
        rid = run_id_for(e.config.study, res)
        outcomes.append(RunOutcome(rid, lab, result.status, result.final, result.message, result))
    return outcomes if batch else outcomes[0]


def replica_key(config: ExperimentConfig) -> str:
    """Runs with equal keys can share one replica batch (:func:`run_config`).

    The key is the resolved config without what replicas may differ in: the training
    seed, the step size, for the streaming tasks every task field but the shapes the
    task family requires replicas to share (``replica_fields``), and the graph of a static
    topology (:func:`mixes_any_topology`) but its number of nodes.
    """
    from decent.config._models import STREAMING_TASKS
    from decent.results._canon import canonical_json

    data = config.run_dict()
    if config.network or config.byzantine or config.algorithm.transforms:  # one replica at a time
        return canonical_json(data)
    for key in ("seed", "name", "study"):
        data.pop(key, None)
    data["algorithm"] = {k: v for k, v in data["algorithm"].items() if k != "lr"}
    if mixes_any_topology(config):
        data["topology"] = {"num_nodes": config.topology.num_nodes}
    family: Any = STREAMING_TASKS.get(data["task"]["kind"])
    if family is not None:
        shared = set(family.replica_fields) | {"kind"}
        data["task"] = {k: v for k, v in data["task"].items() if k in shared}
    return canonical_json(data)


def mixes_any_topology(config: ExperimentConfig) -> bool:
    """Whether ``config``'s replicas may share a batch with other static graphs of its size.

    True for a built-in static topology kind on the plain simulator (no network, Byzantine
    nodes, Chebyshev gossip or transforms) with a method that only mixes and reduces (not
    compressed, not on a network's clock): each replica then mixes with its own ``W``
    (:class:`~decent.comm.sim.MixedReplicatedCommunicator`).
    """
    from typing import get_args

    from decent.algorithms import ALGORITHMS
    from decent.topology._registry import StaticKind

    if config.network or config.byzantine or config.algorithm.transforms:
        return False
    if config.chebyshev_steps > 1 or config.backend != "sim":
        return False
    if config.topology.kind not in get_args(StaticKind):
        return False
    method = ALGORITHMS.get(config.algorithm.kind)
    return method is not None and not (
        getattr(method, "compressed", False) or getattr(method, "needs_clock", False)
    )


def _build_batch(configs: Sequence[ExperimentConfig]) -> list[Experiment]:
    """Build a replica batch: each distinct topology with its communicator and each distinct
    task once (a grid of step sizes shares one task; a large one takes a noticeable time to
    draw; replicas on one graph share its communicator, see :func:`mixes_any_topology`)."""
    from decent.comm import SimCommunicator
    from decent.config import build_algorithm, build_task, build_topology
    from decent.config._build import check_mixing, check_static

    first = build(configs[0])
    tasks = {(configs[0].task.model_dump_json(), configs[0].dtype): first.task}
    graphs = {configs[0].topology.model_dump_json(): (first.topology, first.comm)}
    out = [first]
    for c in configs[1:]:
        key = (c.task.model_dump_json(), c.dtype)
        task = tasks.get(key)
        if task is None:
            task = tasks[key] = build_task(c.task, first.topology.num_nodes, c.dtype)
        algorithm = build_algorithm(c.algorithm, c.rounds)
        graph = graphs.get(c.topology.model_dump_json())
        if graph is None:  # another static graph on the plain simulator: build's checks
            topology = build_topology(c.topology)
            check_static(algorithm, topology, c)
            check_mixing(algorithm, topology, c)
            graph = graphs[c.topology.model_dump_json()] = (topology, SimCommunicator(topology))
        out.append(Experiment(c, graph[0], algorithm, task, graph[1]))
    return out


__all__ = [
    "HEADLINE",
    "RunOutcome",
    "mixes_any_topology",
    "replica_key",
    "run_config",
    "run_label",
    "train_experiment",
]
