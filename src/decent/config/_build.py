"""Turn a validated config into the runtime objects of the core."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from decent.config import _models as m
from decent.config._errors import ConfigError, ConfigWarning, Issue

if TYPE_CHECKING:
    import torch

    from decent.comm.base import Communicator
    from decent.tasks.base import Task
    from decent.topology import StaticTopology, Topology

CommFactory = Callable[["Topology"], "Communicator"]


@dataclass(frozen=True)
class Experiment:
    """The runtime objects of one config: plain objects for :func:`decent.engine.train`.

    Building runs nothing; :func:`decent.run.train_experiment` trains it with the config's
    rounds, seed and evaluation settings.
    """

    config: m.ExperimentConfig
    topology: Topology
    algorithm: Any
    task: Task
    comm: Communicator


def _fields(section: BaseModel, *drop: str) -> dict[str, Any]:
    return {k: getattr(section, k) for k in type(section).model_fields if k not in ("kind", *drop)}


def _guard(section: str, value: Any, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ConfigError:
        raise
    except ValueError as err:  # TopologyError, TaskError, AlgorithmError, ...
        raise ConfigError([Issue(section, value, str(err))]) from None


_BUILT: dict[tuple[Any, ...], StaticTopology] = {}
"""The static topologies most recently used from config sections, by their fields: a study
builds the same graphs over and over, one size after another (the flagship built
``complete(4096)``, 6 s each, 8 times), and a static topology is immutable (its lazy
properties are computed once). At most :data:`_BUILT_MAX` of them holding at most
:data:`_BUILT_NNZ` matrix entries together (``complete(4096)`` has 16.8M); the least recently
used go first."""
_BUILT_MAX = 16
_BUILT_NNZ = 1 << 25


def _nnz(topology: StaticTopology) -> int:
    return int(topology.matrix.csr.nnz)


def build_topology(cfg: Any) -> Topology:
    """Build the topology of a topology section (any of the ``kind`` models); a static
    topology built from the same fields moments ago is reused."""
    from decent.topology import StaticTopology, make

    kwargs = {k: v for k, v in _fields(cfg, "num_nodes").items() if v is not None}
    key = (cfg.kind, cfg.num_nodes, *sorted(kwargs.items()))
    try:
        found = _BUILT.pop(key, None)
    except TypeError:  # an unhashable field (a list): build it every time
        key, found = (), None
    if found is not None:
        _BUILT[key] = found  # now the most recently used
        return found
    built = _guard("topology", cfg, lambda: make(cfg.kind, cfg.num_nodes, **kwargs))
    if key and isinstance(built, StaticTopology) and _nnz(built) <= _BUILT_NNZ:
        _BUILT[key] = built
        while len(_BUILT) > _BUILT_MAX or sum(map(_nnz, _BUILT.values())) > _BUILT_NNZ:
            del _BUILT[next(iter(_BUILT))]  # the least recently used goes
    return built  # type: ignore[no-any-return]


def build_schedule(lr: Any, rounds: int) -> Any:
    """Turn a number or a schedule section into what an algorithm takes as ``lr``."""
    from decent.algorithms import SCHEDULES

    if isinstance(lr, (int, float)):
        return float(lr)
    fields = _fields(lr)
    if lr.kind == "cosine" and lr.total is None:
        fields["total"] = rounds
    if lr.kind == "warmup":
        fields["then"] = build_schedule(lr.then, rounds)
    return SCHEDULES[lr.kind](**fields)


def build_algorithm(cfg: Any, rounds: int) -> Any:
    """Build the algorithm of an algorithm section with its ``transforms`` in front
    (:func:`~decent.algorithms.transforms.with_transforms`); ``rounds`` completes schedules."""
    from decent.algorithms import ALGORITHMS
    from decent.algorithms.transforms import TRANSFORMS, with_transforms

    kwargs = _fields(cfg, "transforms")
    kwargs["lr"] = build_schedule(cfg.lr, rounds)
    algorithm = _guard("algorithm", cfg, lambda: ALGORITHMS[cfg.kind](**kwargs))
    return _guard(
        "algorithm.transforms",
        cfg.transforms,
        lambda: with_transforms(
            algorithm, [TRANSFORMS[t.kind](**_fields(t)) for t in cfg.transforms]
        ),
    )


def _torch_dtype(name: str) -> torch.dtype:
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[name]


def build_dataset(cfg: Any, dtype: torch.dtype) -> Any:
    """Load the dataset of a dataset section as a ``DatasetSplit``."""
    from decent import tasks
    from decent.tasks import nets

    split = {k: v for k, v in _fields(cfg).items() if k in ("test_fraction", "standardize")}
    loaded = {k: v for k, v in _fields(cfg).items() if k not in split}
    if cfg.kind in ("digits", "breast_cancer"):
        return getattr(tasks, cfg.kind)(**_fields(cfg), dtype=dtype)
    if cfg.kind == "mnist1d":
        return nets.mnist1d(**_fields(cfg), dtype=dtype)
    if cfg.kind == "libsvm":
        seed = loaded.pop("seed")
        data = tasks.load_libsvm(**loaded, dtype=dtype)
    else:
        data = tasks.random_classification(**loaded, dtype=dtype)
        seed = cfg.seed
    return data.train_test_split(seed=seed, **split)


def _partition_kwargs(cfg: Any) -> dict[str, Any]:
    return {"partition": cfg.kind, **_fields(cfg)}


def build_task(cfg: Any, num_nodes: int, dtype: str = "float64") -> Task:
    """Build the task of a task section for ``num_nodes`` nodes."""
    from decent import tasks
    from decent.tasks import nets

    tdtype = _torch_dtype(dtype)

    def make() -> Any:
        streaming = m.STREAMING_TASKS.get(cfg.kind)
        if streaming is not None:
            return streaming(num_nodes=num_nodes, **_fields(cfg), dtype=tdtype)
        if cfg.kind == "char_lm":  # reads its own text: no dataset or partition table
            return nets.char_lm(num_nodes, **_fields(cfg), dtype=tdtype)
        data = build_dataset(cfg.dataset, tdtype)
        kwargs = _fields(cfg, "dataset", "partition") | _partition_kwargs(cfg.partition)
        return getattr(nets if cfg.kind == "cnn1d" else tasks, cfg.kind)(data, num_nodes, **kwargs)

    return _guard("task", cfg, make)  # type: ignore[no-any-return]


def build_privacy(config: m.ExperimentConfig, task: Task | None = None) -> Any:
    """The :class:`~decent.engine.privacy.Privacy` of the ``[privacy]`` section, or ``None``.

    With ``task``, also check that the task's per-node sampling rate is known (a dataset
    task must sample without replacement).

    Raises:
        ConfigError: naming ``task.sampling`` or the ``privacy`` field at fault.
    """
    section = config.privacy
    if section is None:
        return None
    from decent.engine.privacy import Privacy, sampling_rates

    privacy = _guard("privacy", section, lambda: Privacy(**_fields(section)))
    if task is not None:
        sampling = getattr(config.task, "sampling", None)
        where = "task.sampling" if sampling is not None else "task.kind"
        value = sampling if sampling is not None else config.task.kind
        try:
            sampling_rates(task)
        except ValueError as err:
            why = str(err)
            if sampling is not None:
                why += '; set sampling = "without_replacement" in [task]'
            raise ConfigError([Issue(where, value, why)]) from None
    return privacy


def warn_odd(config: m.ExperimentConfig) -> None:
    """Warn about values that validate but probably were not meant."""
    if config.eval_every is not None and config.eval_every > config.rounds:
        warnings.warn(
            f"eval_every = {config.eval_every} is larger than rounds = {config.rounds}: only "
            f"rounds 0 and {config.rounds} are evaluated",
            ConfigWarning,
            stacklevel=3,
        )
    faults: Any = config.network.faults if config.network is not None else None
    for node, joined in (faults.joins if faults is not None else {}).items():
        left = faults.leaves.get(node)
        if left is not None and left > joined:
            warnings.warn(
                f"network.faults.leaves: node {node} joins at round {joined} and leaves at "
                f"round {left}: it is absent until round {joined} and gone for good from "
                f"round {left} (to leave and come back, set leaves < joins)",
                ConfigWarning,
                stacklevel=3,
            )
    lr = config.algorithm.lr
    first = lr if isinstance(lr, (int, float)) else getattr(lr, "lr", None)
    if first == 0 and not isinstance(lr, m.WarmupLR):
        warnings.warn(
            "algorithm.lr = 0: no step is ever taken, every node stays at its start point; "
            "set a positive step size",
            ConfigWarning,
            stacklevel=3,
        )


def check_mixing(algorithm: Any, topology: Topology, config: m.ExperimentConfig) -> None:
    """Refuse (or, with ``mixing_check = "warn"``, warn about) a W outside the method's theory.

    Raises:
        ConfigError: a line ``topology: ... -> <method> assumes ...`` naming the fix.
    """
    from decent.algorithms import MixingAssumptionWarning, mixing_violations

    found = mixing_violations(algorithm, topology, config.rounds)
    if not found:
        return
    what = f"{algorithm.name} assumes {algorithm.assumes.describe()}, but {topology.name}: "
    what += "; ".join(found)
    if config.mixing_check == "warn":
        message = f"{what}; running it anyway, outside its analysis (mixing_check = 'warn')"
        warnings.warn(message, MixingAssumptionWarning, stacklevel=3)
        return
    rule = (
        f"{what}. Use an undirected topology with metropolis_hastings weights (ring, torus, "
        'exponential, random_matching, ...), or set mixing_check = "warn" to run it outside '
        "its analysis"
    )
    raise ConfigError([Issue("topology", config.topology, rule)])


def build(config: m.ExperimentConfig, comm_factory: CommFactory | None = None) -> Experiment:
    """Build (topology, algorithm, task, comm) from a validated config.

    Args:
        config: the experiment.
        comm_factory: makes the communicator from the topology; default
            :class:`~decent.comm.SimCommunicator` for ``backend = "sim"``. The distributed
            launcher passes its own (``backend = "dist"`` needs one).

    Raises:
        ConfigError: for ``backend = "dist"`` without a ``comm_factory``, and for any rule a
            builder checks (``TopologyError``, ``TaskError``, ``AlgorithmError``), each as one
            ``section: value -> message`` line.
    """
    if comm_factory is None and config.backend == "dist":
        raise ConfigError(
            [
                Issue(
                    "backend",
                    "dist",
                    "torch.distributed runs are started with `decent launch CONFIG` (one "
                    'process per rank); to simulate in one process set backend = "sim"',
                )
            ]
        )
    topology = build_topology(config.topology)
    task = build_task(config.task, topology.num_nodes, config.dtype)
    algorithm = build_algorithm(config.algorithm, config.rounds)
    check_static(algorithm, topology, config)
    check_mixing(algorithm, topology, config)
    build_privacy(config, task)
    warn_odd(config)
    if comm_factory is None:
        from decent.comm import SimCommunicator

        comm_factory = SimCommunicator
    comm = _guard("backend", config.backend, lambda: comm_factory(topology))
    if config.network is not None:
        comm = build_network(config, comm)
    elif getattr(algorithm, "needs_clock", False):
        why = (
            f"{config.algorithm.kind} runs asynchronously on a simulated network's clock: add "
            "a [network] section (its compute models decide who finishes when)"
        )
        raise ConfigError([Issue("algorithm.kind", config.algorithm.kind, why)])
    if config.chebyshev_steps > 1:  # K gossip rounds per mix, on the network's clock too
        from decent.comm import accelerate

        if getattr(algorithm, "needs_clock", False):
            why = f"{config.algorithm.kind} averages pairs, it never mixes with W_t; use 1"
            raise ConfigError([Issue("chebyshev_steps", config.chebyshev_steps, why)])
        inner = comm
        comm = _guard(
            "chebyshev_steps",
            config.chebyshev_steps,
            lambda: accelerate(inner, config.chebyshev_steps),
        )
    if getattr(algorithm, "compressed", False):
        check_compressed(config, comm)
    if getattr(algorithm, "needs_clock", False) and config.network is not None:
        if config.network.delays.max_delay > 0:
            why = "its staleness comes from the clock: remove [network.delays] or set 0"
            raise ConfigError(
                [Issue("network.delays.max_delay", config.network.delays.max_delay, why)]
            )
    if config.byzantine is not None:
        comm = build_byzantine(config, comm)
    return Experiment(config, topology, algorithm, task, comm)


def build_byzantine(config: m.ExperimentConfig, comm: Any) -> Any:
    """Wrap the communicator in the ``[byzantine]`` section's attack and robust rule.

    Raises:
        ConfigError: a node out of range, a combination that does not run (a simulated
            network, accelerated gossip, compressed gossip, an asynchronous transport), or
            more Byzantine in-neighbours at some honest node than the rule tolerates.
    """
    from decent.comm.robust import RobustCommunicator, choose_byzantine, tolerance_error

    byz = config.byzantine
    assert byz is not None
    clash = {  # field: (refused, value, why)
        "network": (
            config.network is not None,
            "set",
            "robust rules take this round's value of every in-neighbour; a simulated network's "
            "lost and late messages are outside their tolerance bounds (not modelled)",
        ),
        "chebyshev_steps": (
            config.chebyshev_steps > 1,
            config.chebyshev_steps,
            "P_K(W) is a polynomial in the linear step W_t, and a robust rule is not linear",
        ),
        "algorithm.kind": (
            "compressor_kind" in type(config.algorithm).model_fields,
            config.algorithm.kind,
            "the rules would screen compressed corrections q, not values: another method",
        ),
    }
    for field, (bad, value, why) in clash.items():
        if bad:
            why = f"drop [byzantine] or {field}: {why}"
            raise ConfigError([Issue(field, value, why)])
    w = comm.weights(1)
    n = w.n
    for node in byz.nodes or []:
        if node >= n:
            why = f"the network has nodes 0..{n - 1} only"
            raise ConfigError([Issue("byzantine.nodes", node, why)])
    placement = {k: getattr(byz, k) for k in ("nodes", "fraction", "seed", "placement")}
    ids = choose_byzantine(w, **placement)
    bound = tolerance_error(w, ids, byz.aggregation, byz.trim)
    if bound is not None:
        field = "byzantine.trim" if "trim b=" in bound else "byzantine.aggregation"
        raise ConfigError([Issue(field, getattr(byz, field.split(".")[1]), bound)])
    rule = _fields(byz, "nodes", "fraction", "placement")
    return _guard(
        "byzantine", "the byzantine section", lambda: RobustCommunicator(comm, ids, **rule)
    )


def check_static(algorithm: Any, topology: Topology, config: m.ExperimentConfig) -> None:
    """Refuse a time-varying topology for a method whose state needs a fixed ``W``.

    Raises:
        ConfigError: ``topology: ... -> <method> needs a static topology ...``.
    """
    from decent.algorithms import static_violation

    why = static_violation(algorithm, topology)
    if why is not None:
        raise ConfigError([Issue("topology", config.topology, why)])


def check_compressed(config: m.ExperimentConfig, comm: Any) -> None:
    """Compressed gossip needs an exact exchange of ``W_t`` every round."""
    from decent.comm.compress import compressed_refusal
    from decent.comm.network import FaultModel

    kind, net = config.algorithm.kind, config.network
    why = compressed_refusal(comm, kind)
    if why is None and net is not None and FaultModel(**_fields(net.faults)).any:
        why = (
            f"{kind} needs the same W every round (s = sum_t W q_t = W hat), but lost messages "
            "and absent nodes change the effective W'_t from round to round; remove the faults"
        )
        raise ConfigError([Issue("network.faults", "set", why)])
    if why is not None:
        raise ConfigError([Issue("algorithm.kind", kind, why)])


def build_network(config: m.ExperimentConfig, comm: Any) -> Any:
    """Wrap the simulator's communicator in the config's simulated network."""
    from decent.comm import SimCommunicator
    from decent.comm.network import (
        ComputeModel,
        DelayModel,
        FaultModel,
        LinkModel,
        NetworkCommunicator,
    )

    net = config.network
    assert net is not None
    if config.backend != "sim" or not isinstance(comm, SimCommunicator):
        why = (
            "a simulated network (clock, drops, crashes) runs in the simulator; set backend = "
            '"sim", or drop the network section to run on real ranks'
        )
        raise ConfigError([Issue("network", "set", why)])
    c, f = net.compute, net.faults
    n = comm.num_nodes
    named = {"compute.slow_nodes": c.slow_nodes, "faults.crashes": f.crashes}
    named.update({"faults.leaves": f.leaves, "faults.joins": f.joins})
    for field, nodes in named.items():
        for node in nodes:
            if node >= n:
                raise ConfigError(
                    [Issue(f"network.{field}", node, f"the network has nodes 0..{n - 1} only")]
                )
    return _guard(
        "network",
        "the network section",
        lambda: NetworkCommunicator(
            comm,
            compute=ComputeModel(kind=c.kind, **_fields(c)),
            link=LinkModel(**_fields(net, "compute", "faults", "delays")),
            faults=FaultModel(**_fields(f)),
            delays=DelayModel(kind=net.delays.kind, **_fields(net.delays)),
            seed=config.seed,
        ),
    )
