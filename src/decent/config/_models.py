"""The experiment schema: pydantic models, frozen, ``extra="forbid"``, discriminated by ``kind``.

Keys in a TOML file are the field names below. Every field carries a description; the
reference ``docs/config.md`` is generated from these models (``decent config-docs``).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    create_model,
    field_validator,
    model_validator,
)

from decent._names import is_safe_name
from decent._params import ROUNDS_MAX, SIZE_MAX, declared, number_problem
from decent.algorithms import ALGORITHMS, Constant, Cosine, InverseSqrt, Warmup
from decent.algorithms.transforms import TRANSFORMS
from decent.comm.network.models import ComputeModel, DelayModel, FaultModel, LinkModel
from decent.comm.robust import RobustCommunicator, choose_byzantine
from decent.config._errors import ConfigWarning, Issue
from decent.engine.loop import EVALUATIONS
from decent.engine.privacy import Privacy
from decent.tasks import (
    LeastSquares,
    LogisticPopulation,
    LogisticRegressionStream,
    data,
    models,
    nets,
    partition,
)
from decent.topology._registry import TOPOLOGY_KINDS

# --------------------------------------------------------------------------- base


def _number_problem(value: Any) -> str | None:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return next((p for p in map(_number_problem, value) if p is not None), None)
    return number_problem(value)


class Section(BaseModel):
    """Base of every config model: frozen, strict types, no unknown keys, finite floats.

    Every number in every field, nested lists and tables included, also obeys the one rule
    set of :func:`decent._params.number_problem` (int64 integers; floats finite, ``0`` or
    between ``1e-12`` and ``1e12`` in magnitude).
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        validate_default=False,
    )

    @field_validator("*", mode="after")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        problem = _number_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


def _is_data(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return _is_data(typing.get_args(hint)[0])
    if hint in (int, float, bool, str, type(None)) or origin in (typing.Literal, list, dict):
        return True
    if origin in (Union, types.UnionType, Mapping, Sequence, tuple):
        return all(_is_data(a) for a in typing.get_args(hint) if a is not Ellipsis)
    return isinstance(hint, type) and issubclass(hint, BaseModel)


def _data_hint(hint: Any, rules: tuple[Any, ...] = ()) -> Any:
    """The part of a declared type a config can hold, with the rules on its non-None part.

    Union members a file cannot express (callables, objects) are dropped: they stay open to
    the Python API only. ``Mapping``/``Sequence``/``tuple[T, ...]`` become ``dict``/``list``.
    """
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Mapping:
        hint = dict[args]  # type: ignore[valid-type,misc]
    elif origin in (Sequence, tuple):
        hint = list[args[0]]  # type: ignore[misc,valid-type]
    elif origin in (Union, types.UnionType):
        kept = [_data_hint(a) for a in args if _is_data(a) and a is not type(None)]
        inner = Union[tuple(kept)] if len(kept) > 1 else kept[0]  # noqa: UP007
        inner = Annotated[(inner, *rules)] if rules else inner
        return inner | None if type(None) in args else inner
    return Annotated[(hint, *rules)] if rules else hint


def derive(
    target: Any,
    kind: str | None,
    *,
    skip: tuple[str, ...] = (),
    base: type[Section] | None = None,
    name: str | None = None,
    defaults: Mapping[str, Any] | None = None,
    narrow: Mapping[str, Any] | None = None,
    doc_line: str | None = None,
) -> type[Section]:
    """The config table of ``target``, derived from its declared parameters.

    Every parameter ``target`` declares (:func:`decent._params.declared`: an
    :func:`~decent.algorithms.hparam` field of a dataclass, or an annotated argument of a
    function or class) becomes a field with the same name, default, rules and description;
    ``kind`` is the discriminator. The model's docstring is the first line of the target's.

    Args:
        target: the class or function the table builds.
        kind: the table's ``kind`` (``None``: a table of no family, without ``kind``).
        skip: arguments the config supplies otherwise (``n``, ``dtype``, ...).
        base: the model to extend (default :class:`Section`).
        name: the model's class name (default from ``target``).
        defaults: defaults a config gives where the Python API has none (``seed = 0``).
        narrow: types (with their rules) a config gives instead of the declared ones: fewer
            choices (some only the Python API can use), or a table for a callable.
        doc_line: the model's docstring (default: the first line of the target's).
    """
    fields: dict[str, Any] = {} if kind is None else {"kind": (Literal[kind], ...)}
    base = base or Section
    narrow = narrow or {}
    inherited = [k for k in base.model_fields if k not in narrow]
    for p in declared(target, skip=(*skip, *inherited)):
        hint = narrow[p.name] if p.name in narrow else _data_hint(p.hint, p.rules)
        if p.default is dataclasses.MISSING and p.name in (defaults or {}):
            info = Field((defaults or {})[p.name], description=p.doc)
        elif p.default is dataclasses.MISSING:
            info = Field(description=p.doc)
        elif isinstance(p.default, (Mapping, tuple)):
            factory = type(p.default) if isinstance(p.default, tuple) else dict
            copy = dict(p.default) if factory is dict else list(p.default)
            info = Field(default_factory=lambda c=copy: c.copy(), description=p.doc)
        else:
            info = Field(p.default, description=p.doc)
        fields[p.name] = (hint, info)
    doc = (target.__doc__ or target.__name__).strip().splitlines()[0]
    title = name or "".join(w.title() for w in str(kind).split("_")) + "Config"
    return create_model(title, __base__=base, __doc__=doc_line or doc, **fields)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- topologies


class _TopologyBase(Section):
    num_nodes: int = Field(
        ge=1, le=SIZE_MAX, description="Number of nodes n (also the task's node count)."
    )


@functools.cache
def topology_model(kind: str, fn: Any) -> type[Section]:
    """The ``[topology]`` table of generator ``fn`` registered as ``kind``."""
    return derive(fn, kind, skip=("n",), base=_TopologyBase, defaults={"seed": 0})


TOPOLOGY_MODELS: tuple[type[Section], ...] = tuple(
    topology_model(kind, fn) for kind, fn in TOPOLOGY_KINDS.items()
)
if typing.TYPE_CHECKING:
    TopologyConfig = Any
else:
    TopologyConfig = Annotated[Union[TOPOLOGY_MODELS], Field(discriminator="kind")]  # noqa: UP007

# --------------------------------------------------------------------------- schedules


class _CosineBase(Section):
    total: int | None = Field(
        None, ge=1, le=ROUNDS_MAX, description="Decay length (None: the run's rounds)."
    )


class _WarmupBase(Section):
    then: LearningRateConfig = Field(description="Step size or schedule after the warm-up.")


ConstantLR = derive(Constant, "constant", name="ConstantLR")
InverseSqrtLR = derive(InverseSqrt, "inverse_sqrt", name="InverseSqrtLR")
CosineLR = derive(Cosine, "cosine", base=_CosineBase, name="CosineLR")
WarmupLR = derive(Warmup, "warmup", base=_WarmupBase, name="WarmupLR")


def kind_of(model: type[BaseModel]) -> str:
    """Return the ``kind`` literal of a model of a discriminated family."""
    ann = model.model_fields["kind"].annotation
    return str(ann.__args__[0])  # type: ignore[union-attr]


def _lr_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("kind")
        return kind if isinstance(kind, str) else None
    if isinstance(value, BaseModel):
        return getattr(value, "kind", None)
    return "number"


SCHEDULE_MODELS: tuple[type[Section], ...] = (ConstantLR, InverseSqrtLR, CosineLR, WarmupLR)
if typing.TYPE_CHECKING:
    LearningRateConfig = Any
else:
    LearningRateConfig = Annotated[
        Union[
            (
                Annotated[float, Field(ge=0.0, le=1e6), Tag("number")],
                *(Annotated[x, Tag(kind_of(x))] for x in SCHEDULE_MODELS),
            )
        ],
        Discriminator(_lr_tag),
    ]
"""A number (constant step size) or a schedule table ``{kind = "cosine", lr = 0.1}``."""

_WarmupBase.model_rebuild()
WarmupLR.model_rebuild()

# --------------------------------------------------------------------------- algorithms


TRANSFORM_MODELS: tuple[type[Section], ...] = tuple(
    derive(cls, kind, name=f"{cls.__name__}Transform") for kind, cls in TRANSFORMS.items()
)
if typing.TYPE_CHECKING:
    TransformConfig = Any
else:
    TransformConfig = Annotated[Union[TRANSFORM_MODELS], Field(discriminator="kind")]  # noqa: UP007


class AlgorithmSection(Section):
    """What every ``[algorithm]`` table has: ``kind``, the step size ``lr``, ``transforms``."""

    kind: str
    lr: LearningRateConfig
    transforms: list[TransformConfig] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "Gradient transforms in front of the algorithm's step, applied in order (optax's "
            "chain): momentum (nesterov = true: Nesterov), weight_decay, adam, "
            "quasi_global_momentum. The step size stays lr."
        ),
    )

    @property
    def method(self) -> str:
        """``kind`` and the transforms' kinds, as the built algorithm's name: ``dsgd+momentum``."""
        return "+".join([self.kind, *(t.kind for t in self.transforms)])


_ALGORITHM_TABLES: dict[type, type[AlgorithmSection]] = {}


def algorithm_model(cls: type) -> type[AlgorithmSection]:
    """The ``[algorithm]`` table of one algorithm, derived from its dataclass (:func:`derive`).

    ``lr`` takes a number or a schedule table.
    """
    if cls not in _ALGORITHM_TABLES:
        _ALGORITHM_TABLES[cls] = derive(  # type: ignore[assignment]
            cls,
            cls.name,  # type: ignore[attr-defined]
            base=AlgorithmSection,
            name=f"{cls.__name__}Config",
            narrow={"lr": LearningRateConfig},
        )
    return _ALGORITHM_TABLES[cls]


ALGORITHM_MODELS: tuple[type[AlgorithmSection], ...] = tuple(
    algorithm_model(cls) for cls in ALGORITHMS.values()
)
if typing.TYPE_CHECKING:  # the union is built at import time; type checkers see the base
    AlgorithmConfig = AlgorithmSection
else:
    AlgorithmConfig = Annotated[Union[ALGORITHM_MODELS], Field(discriminator="kind")]  # noqa: UP007
"""The ``[algorithm]`` table: one model per entry of :data:`decent.algorithms.ALGORITHMS`."""


# --------------------------------------------------------------------------- data


_SHARD = ("labels", "num_nodes", "seed", "min_size")
IIDPartition = derive(partition.iid, "iid", skip=_SHARD, name="IIDPartition")
DirichletPartition = derive(
    partition.dirichlet, "dirichlet", skip=_SHARD, name="DirichletPartition"
)
ShardsPartition = derive(partition.shards, "shards", skip=_SHARD, name="ShardsPartition")
PARTITION_MODELS: tuple[type[Section], ...] = (IIDPartition, DirichletPartition, ShardsPartition)
if typing.TYPE_CHECKING:
    PartitionConfig = Any
    DatasetConfig = Any
else:
    PartitionConfig = Annotated[Union[PARTITION_MODELS], Field(discriminator="kind")]  # noqa: UP007


class _Split(Section):
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="Held-out share.")


class _StandardizedSplit(_Split):
    seed: int = Field(0, ge=0, description="Seed of the train/test split.")
    standardize: bool = Field(True, description="Standardize with the training statistics.")


_LOADER = ("name", "dtype")
DigitsData = derive(data.digits, "digits", skip=_LOADER, name="DigitsData")
BreastCancerData = derive(
    data.breast_cancer, "breast_cancer", skip=_LOADER, name="BreastCancerData"
)
LibsvmData = derive(
    data.load_libsvm, "libsvm", skip=_LOADER, base=_StandardizedSplit, name="LibsvmData"
)
RandomData = derive(
    data.random_classification, "random", skip=_LOADER, base=_Split, name="RandomData"
)
MNIST1dData = derive(nets.mnist1d, "mnist1d", skip=("dtype",), name="MNIST1dData")
DATASET_MODELS: tuple[type[Section], ...] = (
    DigitsData,
    BreastCancerData,
    LibsvmData,
    RandomData,
    MNIST1dData,
)
if not typing.TYPE_CHECKING:
    DatasetConfig = Annotated[Union[DATASET_MODELS], Field(discriminator="kind")]  # noqa: UP007

# --------------------------------------------------------------------------- tasks


STREAMING_TASKS: dict[str, type] = {
    "least_squares": LeastSquares,
    "logistic_stream": LogisticRegressionStream,
    "logistic_population": LogisticPopulation,
}
"""The tasks built from ``num_nodes`` and their own fields alone, by ``kind``."""
LeastSquaresTask, LogisticStreamTask, LogisticPopulationTask = (
    derive(cls, kind, skip=("num_nodes", "dtype"), name=f"{cls.__name__}Task")
    for kind, cls in STREAMING_TASKS.items()
)


class _DatasetTask(Section):
    dataset: DatasetConfig = Field(description="Where the samples come from.")
    partition: PartitionConfig = Field(
        default_factory=lambda: IIDPartition.model_validate({"kind": "iid"}),
        description="How samples are split across nodes.",
    )


_FROM_TABLES = (
    "dataset",
    "num_nodes",
    "partition",
    "alpha",
    "classes_per_node",
    "test",
    "compute_optimum",
)
LogisticRegressionTask = derive(
    models.logistic_regression,
    "logistic_regression",
    skip=_FROM_TABLES,
    base=_DatasetTask,
    name="LogisticRegressionTask",
)
SoftmaxRegressionTask = derive(
    models.softmax_regression,
    "softmax_regression",
    skip=_FROM_TABLES,
    base=_DatasetTask,
    name="SoftmaxRegressionTask",
)
MLPTask = derive(models.mlp, "mlp", skip=_FROM_TABLES, base=_DatasetTask, name="MLPTask")
CNN1dTask = derive(
    nets.cnn1d, "cnn1d", skip=("data", *_FROM_TABLES), base=_DatasetTask, name="CNN1dTask"
)
CharLMTask = derive(nets.char_lm, "char_lm", skip=("num_nodes", "dtype"), name="CharLMTask")

TASK_MODELS: tuple[type[Section], ...] = (
    LeastSquaresTask,
    LogisticStreamTask,
    LogisticPopulationTask,
    LogisticRegressionTask,
    SoftmaxRegressionTask,
    MLPTask,
    CNN1dTask,
    CharLMTask,
)
if typing.TYPE_CHECKING:
    TaskConfig = Any
else:
    TaskConfig = Annotated[Union[TASK_MODELS], Field(discriminator="kind")]  # noqa: UP007

# --------------------------------------------------------------------------- experiment

GridValues = Annotated[list[Any], Field(min_length=1)]


class SweepConfig(Section):
    """The grid of a sweep: fields and the values to cross, and the seeds.

    ``grid`` maps a dotted field path to a list of values; a value that is a table replaces
    the whole sub-table (so ``grid.algorithm = [{kind = "dsgd", lr = 0.1}, ...]`` varies the
    method together with its step size). Entries are applied in the order written.
    """

    grid: dict[str, GridValues] = Field(
        default_factory=dict,
        description=(
            'Dotted field path -> values, e.g. "algorithm.lr" = [0.1, 0.05]. A table value '
            'replaces the whole sub-table: algorithm = [{kind = "dsgd", lr = 0.1}, ...].'
        ),
    )
    seeds: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] | None = Field(
        None, description="Values of the top-level seed to cross with the grid (None: seed)."
    )

    @model_validator(mode="after")
    def _check(self) -> SweepConfig:
        for key in self.grid:
            if not key or any(not part for part in key.split(".")):
                raise ValueError(f"grid key {key!r} must be a dotted field path like algorithm.lr")
            if key.split(".")[0] == "sweep":
                raise ValueError(f"grid key {key!r}: a sweep cannot vary its own sweep section")
        if self.seeds is not None and "seed" in self.grid:
            raise ValueError("give the seeds either in sweep.seeds or in grid.seed, not both")
        return self


class _FaultsBase(Section):
    @field_validator("crashes", "leaves", "joins", mode="before", check_fields=False)
    @classmethod
    def _node_keys(cls, value: Any) -> Any:
        # TOML and JSON keys are strings: "5" names node 5
        if isinstance(value, dict):
            return {
                int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in value.items()
            }
        return value


ComputeSection = derive(ComputeModel, None, name="ComputeSection")
FaultsSection = derive(FaultModel, None, base=_FaultsBase, name="FaultsSection")
DelaysSection = derive(
    DelayModel,
    None,
    skip=("schedule",),
    narrow={"kind": Literal["clock", "uniform", "constant"]},  # "given": Python API only
    name="DelaysSection",
    doc_line="Bounded-delay gossip: neighbours' values up to max_delay rounds old.",
)


if typing.TYPE_CHECKING:  # derived models: type checkers see Any
    ComputeTable = Any
    FaultsTable = Any
    DelaysTable = Any
    NetworkTable = Any
    PrivacyTable = Any
    ByzantineTable = Any
else:
    ComputeTable, FaultsTable, DelaysTable = ComputeSection, FaultsSection, DelaysSection


class _NetworkBase(Section):
    compute: ComputeTable = Field(
        default_factory=lambda: ComputeSection.model_validate({}),
        description="Per-node compute time per round.",
    )
    faults: FaultsTable = Field(
        default_factory=lambda: FaultsSection.model_validate({}),
        description="Drops, link failures, crashes, leaves and joins.",
    )
    delays: DelaysTable = Field(
        default_factory=lambda: DelaysSection.model_validate({}),
        description="Bounded-delay gossip (asynchronous; max_delay = 0: synchronous).",
    )


NetworkSection = derive(
    LinkModel,
    None,
    base=_NetworkBase,
    name="NetworkSection",
    doc_line="A simulated network: virtual clock, message times and faults (simulator only).",
)


class _PrivacyBase(Section):
    @field_validator("noise_multiplier", check_fields=False)
    @classmethod
    def _meaningful_noise(cls, value: float) -> float:
        if 0.0 < value < 0.01:
            raise ValueError(
                "below 0.01 the reported epsilon exceeds 10^5 (no privacy); use 0 for "
                "clipping only, or at least 0.01"
            )
        return value


PrivacySection = derive(
    Privacy,
    None,
    base=_PrivacyBase,
    name="PrivacySection",
    doc_line=(
        "Differential privacy per node: DP-SGD (per-sample clipping, Gaussian noise), and "
        "every node's (epsilon, delta) from Opacus's accountant (see docs/privacy.md)."
    ),
)


class _ByzantineChecks(Section):
    @model_validator(mode="after")
    def _one_choice(self) -> Any:
        nodes, fraction = getattr(self, "nodes", None), getattr(self, "fraction", None)
        if (nodes is None) == (fraction is None):
            raise ValueError(
                "give either nodes = [ids] or fraction = f (with seed), not both; "
                "nodes = [] runs without Byzantine nodes"
            )
        if getattr(self, "placement", None) == "bottleneck" and nodes is not None:
            raise ValueError('placement = "bottleneck" chooses nodes from fraction; drop nodes')
        return self

    @field_validator("nodes", check_fields=False)
    @classmethod
    def _distinct(cls, nodes: list[int] | None) -> list[int] | None:
        if nodes is not None and len(set(nodes)) < len(nodes):
            twice = sorted({v for v in nodes if nodes.count(v) > 1})
            raise ValueError(f"lists node {twice[0]} more than once; list each node once")
        return nodes


ByzantineSection = derive(
    RobustCommunicator,
    None,
    skip=("inner", "byzantine"),
    base=derive(choose_byzantine, None, skip=("w",), base=_ByzantineChecks, name="_Placement"),
    name="ByzantineSection",
    doc_line="Byzantine nodes and the robust rule honest nodes aggregate with (sim and dist).",
)


if not typing.TYPE_CHECKING:
    NetworkTable, PrivacyTable, ByzantineTable = NetworkSection, PrivacySection, ByzantineSection


class DistSection(Section):
    """How ``decent launch`` runs the experiment on ranks (its flags override these)."""

    mode: Literal["sync", "overlap", "stale", "fault_tolerant"] = Field(
        "sync",
        description=(
            "sync: blocking neighbour exchange; overlap: one-step-stale mixing; stale: "
            "bounded staleness; fault_tolerant: a silent rank is dropped (docs/distributed.md)."
        ),
    )
    staleness: int = Field(2, ge=0, le=1000, description="Bound in rounds of mode = stale.")
    failure_timeout: float = Field(
        10.0,
        gt=0.0,
        le=3600.0,
        description="Seconds of heartbeat silence that declare a rank dead (fault_tolerant).",
    )
    world_size: int | None = Field(
        None,
        ge=1,
        le=SIZE_MAX,
        description="Ranks of a recorded run (written by decent launch from --nproc).",
    )


class ExperimentConfig(Section):
    """One experiment: topology x algorithm x task, trained for ``rounds`` rounds."""

    study: str = Field(
        min_length=1,
        description=(
            "Study name grouping runs in the store (default: the config file's name); "
            "letters, digits and . _ + = , @ - (it names report folders and export files)."
        ),
    )
    name: str | None = Field(None, description="Optional human-readable run name.")
    seed: int = Field(0, ge=0, description="Training seed: start point and every minibatch.")
    rounds: int = Field(
        ge=1, le=ROUNDS_MAX, description="Rounds T (one stochastic gradient per node each)."
    )
    eval_every: int | None = Field(
        None,
        ge=1,
        le=ROUNDS_MAX,
        description=f"Evaluation period in rounds (None: max(1, rounds // {EVALUATIONS})).",
    )
    per_node_eval: bool | Literal["every", "final", "none"] = Field(
        "final",
        description=(
            "When to also evaluate every node's own model (worst node, node spread): at "
            "every evaluation, the final one, or none (true = every, false = none)."
        ),
    )
    averages: list[Literal["tail", "weighted"]] = Field(
        default_factory=list,
        description=(
            "Output averages evaluated besides the last iterate, free of communication: tail "
            "(uniform over the second half of the rounds), weighted (weights alpha_t = t); "
            "metrics eval/<metric>@tail, eval/<metric>@weighted."
        ),
    )
    chebyshev_steps: int = Field(
        1,
        ge=1,
        le=1000,
        description=(
            "K: accelerated gossip, each mixing is the degree-K Chebyshev polynomial of W (K "
            "exchanges, counted as such; needs a symmetric W). 1: plain gossip."
        ),
    )
    divergence_factor: float | None = Field(
        1e4,
        gt=1.0,
        description=(
            "Stop as diverged when a loss exceeds this many times the initial loss "
            "(max(|f(x_0)|, 1)); None: only at NaN or inf."
        ),
    )
    backend: Literal["sim", "dist"] = Field(
        "sim", description="sim: one-process simulator; dist: torch.distributed (decent launch)."
    )
    dtype: Literal["float32", "float64"] = Field("float64", description="Floating dtype.")
    mixing_check: Literal["error", "warn"] = Field(
        "error",
        description=(
            "What to do when the topology's W breaks what the algorithm's analysis assumes "
            "(e.g. DAT-SGD needs a symmetric doubly stochastic W): error, or warn and run."
        ),
    )
    topology: TopologyConfig = Field(description="Who talks to whom (and num_nodes).")
    algorithm: AlgorithmConfig = Field(description="The training method.")
    task: TaskConfig = Field(description="The learning problem.")
    network: NetworkTable | None = Field(
        None,
        description=(
            "Simulate time and faults: compute times, message latency and bandwidth, drops, "
            "link failures, crashes; records gain time/sim (simulator only)."
        ),
    )
    privacy: PrivacyTable | None = Field(
        None,
        description=(
            "Differential privacy per node: DP-SGD gradients; records gain privacy/epsilon "
            "(worst node) and privacy/epsilon_mean."
        ),
    )
    byzantine: ByzantineTable | None = Field(
        None,
        description=(
            "Byzantine nodes that forge what they send, and the robust rule honest nodes "
            "aggregate with; evaluation covers honest nodes only."
        ),
    )
    dist: DistSection | None = Field(
        None,
        description=(
            "Distributed settings of decent launch (mode, staleness, failure_timeout); "
            "--mode, --staleness and --failure-timeout override them."
        ),
    )
    sweep: SweepConfig | None = Field(None, description="Grid of a sweep (decent sweep).")

    SECTIONS: ClassVar[tuple[str, ...]] = (
        "topology",
        "algorithm",
        "task",
        "network",
        "privacy",
        "byzantine",
        "dist",
        "sweep",
    )

    @field_validator("study")
    @classmethod
    def _safe_study(cls, value: str) -> str:
        if not is_safe_name(value):
            raise ValueError(
                "a study name may hold letters, digits and . _ + = , @ - only (no / or .., "
                "not starting with .), at most 100 characters; it names report folders and "
                "export files"
            )
        return value

    def cross_issues(self) -> list[Issue]:
        """What one section breaks of another's range (rounds, nodes), one issue per field."""
        out: list[Issue] = []
        n, last = self.topology.num_nodes, self.rounds
        if self.network is not None:
            faults = self.network.faults
            for name in ("crashes", "leaves", "joins"):
                for node, at in getattr(faults, name).items():
                    if at > last:
                        why = (
                            f"round {at} is after the last round {last}, so it never happens; "
                            f"use a round in 1..{last} or drop the entry"
                        )
                        out.append(Issue(f"network.faults.{name}", {str(node): at}, why))
        byz = self.byzantine
        if byz is not None:
            count = len(byz.nodes) if byz.nodes is not None else round((byz.fraction or 0) * n)
            if count >= n:
                field = "byzantine.nodes" if byz.nodes is not None else "byzantine.fraction"
                why = (
                    f"{count} of the {n} nodes would be Byzantine; at least one node must be "
                    "honest (nothing would be trained)"
                )
                out.append(Issue(field, byz.nodes if byz.nodes is not None else byz.fraction, why))
        return out

    def run_dict(self) -> dict[str, Any]:
        """Return the resolved config of one run as plain JSON data (without ``sweep``).

        ``averages``, ``algorithm.transforms``, ``chebyshev_steps``, ``network`` and
        ``privacy`` appear only when they are not their defaults, so runs recorded before the
        fields existed keep their ids; ``task.autograd`` only when false, for the same
        reason: runs recorded before it existed took ``vmap(grad(loss))`` (true), so theirs
        keep their ids and a closed-form run, which rounds otherwise, gets its own.
        """
        data = self.model_dump(mode="json", exclude={"sweep"})
        for table, key in ((data, "averages"), (data["algorithm"], "transforms")):
            if not table[key]:
                del table[key]
        if data["chebyshev_steps"] == 1:
            del data["chebyshev_steps"]
        if data["network"] is None:
            del data["network"]
        if data.get("byzantine", 0) is None:
            del data["byzantine"]
        if data["privacy"] is None:
            del data["privacy"]
        if data["task"].get("autograd") is True:
            del data["task"]["autograd"]
        if data["dist"] is None or self.backend == "sim":  # a simulated run has no ranks
            del data["dist"]
        return data


UNIONS: dict[str, tuple[type[Section], ...]] = {
    "topology": TOPOLOGY_MODELS,
    "algorithm": ALGORITHM_MODELS,
    "task": TASK_MODELS,
    "partition": PARTITION_MODELS,
    "dataset": DATASET_MODELS,
    "schedule": SCHEDULE_MODELS,
    "transform": TRANSFORM_MODELS,
}
"""The kind-discriminated families, for error messages and the generated reference."""


_SKIPPED: set[tuple[str, str, str]] = set()


def load_plugins() -> None:
    """Register the algorithms and topologies installed packages declare as entry points.

    Group ``decent.algorithms``: ``kind = "package.module:Class"`` (a :class:`Method`
    dataclass named ``kind``); group ``decent.topologies``: ``kind = "package.module:fn"``
    (a generator ``fn(n, **params)``). One that does not load or register is skipped
    with a :class:`ConfigWarning` naming it.
    """
    from importlib.metadata import entry_points

    from decent.algorithms import register as register_algorithm
    from decent.topology import register as register_topology

    for group, registry in (
        ("decent.algorithms", ALGORITHMS),
        ("decent.topologies", TOPOLOGY_KINDS),
    ):
        for ep in entry_points(group=group):
            if ep.name in registry or (group, ep.name, ep.value) in _SKIPPED:
                continue
            try:
                obj = ep.load()
                if group == "decent.algorithms":
                    register_algorithm(obj)
                else:
                    register_topology(ep.name)(obj)
            except Exception as err:
                why = f"{type(err).__name__}: {err}".splitlines()[0]
                _SKIPPED.add((group, ep.name, ep.value))
                message = f"entry point {ep.name} = {ep.value!r} ({group}) is skipped: {why}"
                warnings.warn(message, ConfigWarning, stacklevel=2)


def sync() -> None:
    """Make the schema match the registries: load plugins, derive tables for new kinds.

    Called at the config edge (:func:`decent.config.validate`) and by the generated
    reference, so a kind registered with ``@register`` or an entry point after import is
    a valid ``kind`` in a TOML file.
    """
    global ALGORITHM_MODELS, TOPOLOGY_MODELS
    load_plugins()
    if [kind_of(x) for x in ALGORITHM_MODELS] == list(ALGORITHMS) and [
        kind_of(x) for x in TOPOLOGY_MODELS
    ] == list(TOPOLOGY_KINDS):
        return
    ALGORITHM_MODELS = tuple(algorithm_model(cls) for cls in ALGORITHMS.values())
    TOPOLOGY_MODELS = tuple(topology_model(k, fn) for k, fn in TOPOLOGY_KINDS.items())
    UNIONS.update(topology=TOPOLOGY_MODELS, algorithm=ALGORITHM_MODELS)
    for name, family in (("topology", TOPOLOGY_MODELS), ("algorithm", ALGORITHM_MODELS)):
        field = ExperimentConfig.model_fields[name]
        field.annotation = Union[family]  # type: ignore[assignment]  # noqa: UP007
        field.discriminator = "kind"
    ExperimentConfig.model_rebuild(force=True)
