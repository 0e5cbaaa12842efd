"""Decentralized first-order methods and their centralized references.

Each algorithm is a frozen dataclass of hyperparameters with pure ``init / query / update /
output`` methods over a ``NamedTuple`` state (see :mod:`decent.algorithms.base`). Its
dataclass is the single source of its hyperparameters, defaults, rules and docs
(:func:`~decent.algorithms.base.hparam`); the config schema is derived from it. Adding an
algorithm is one module here and one line in :data:`ALGORITHMS`.
"""

from dataclasses import is_dataclass
from typing import TypeVar

from decent.algorithms.accelerated import AcceleratedDATSGD, AcceleratedState
from decent.algorithms.ad_psgd import ADPSGD, ADPSGDState
from decent.algorithms.base import (
    SCHEDULES,
    Algorithm,
    AlgorithmError,
    Constant,
    Cosine,
    InverseSqrt,
    LearningRate,
    Method,
    MixingAssumptions,
    MixingAssumptionWarning,
    Schedule,
    Warmup,
    hparam,
    hparams,
    mixing_violations,
    static_violation,
)
from decent.algorithms.centralized import AnytimeSGD, LocalSGD, MinibatchSGD
from decent.algorithms.compressed import (
    ChocoSGD,
    ChocoState,
    CompressedDATSGD,
    CompressedDATSGDState,
    CompressedGradientTracking,
    CompressedGradientTrackingState,
)
from decent.algorithms.dat_sgd import DATSGD, DATSGDState
from decent.algorithms.dsgd import DSGD, DSGDState
from decent.algorithms.gradient_tracking import GradientTracking, GradientTrackingState
from decent.algorithms.schedule_free import ScheduleFreeDSGD, ScheduleFreeSGD, ScheduleFreeState
from decent.algorithms.transforms import (
    Adam,
    AdamW,
    GradientTransform,
    Momentum,
    QuasiGlobalMomentum,
    Transformed,
    TransformedState,
    WeightDecay,
    adam,
    adamw,
    momentum,
    quasi_global_momentum,
    weight_decay,
    with_transforms,
)

ALGORITHMS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (
        DATSGD,
        AcceleratedDATSGD,
        DSGD,
        GradientTracking,
        ADPSGD,
        ChocoSGD,
        CompressedDATSGD,
        CompressedGradientTracking,
        ScheduleFreeDSGD,
        MinibatchSGD,
        AnytimeSGD,
        ScheduleFreeSGD,
        LocalSGD,
    )
}
"""Algorithm classes by their config ``kind`` (their ``name``), in the order docs list them."""

M = TypeVar("M", bound=type[Method])


def register(cls: M) -> M:
    """Register an algorithm class under its ``name``, so a config's ``kind`` can name it.

    Use it as a class decorator on a frozen dataclass subclass of :class:`Method` whose
    hyperparameters are declared with :func:`hparam`; its ``[algorithm]`` config table is
    derived from them. A package can also register classes without being imported by
    hand, through an entry point in the group ``decent.algorithms`` (see
    ``docs/own_algorithm.md``).

    Raises:
        AlgorithmError: not a :class:`Method` dataclass with a ``name``, or the name taken
            by another class.

    Example:
        >>> from dataclasses import dataclass
        >>> from typing import ClassVar
        >>> @register
        ... @dataclass(frozen=True)
        ... class PlainDSGD(DSGD):
        ...     name: ClassVar[str] = "plain_dsgd_example"
        >>> ALGORITHMS["plain_dsgd_example"] is PlainDSGD
        True
        >>> del ALGORITHMS["plain_dsgd_example"]
    """
    name = getattr(cls, "name", None)
    if not (isinstance(cls, type) and issubclass(cls, Method) and is_dataclass(cls)):
        raise AlgorithmError(f"register takes a Method dataclass, got {cls!r}")
    if not isinstance(name, str) or not name.isidentifier():
        raise AlgorithmError(f"{cls.__name__}.name must be a snake_case kind, got {name!r}")
    if ALGORITHMS.get(name, cls) is not cls:
        raise AlgorithmError(
            f"algorithm kind {name!r} is taken by {ALGORITHMS[name].__qualname__}; pick "
            "another name"
        )
    ALGORITHMS[name] = cls
    return cls


__all__ = [
    "ADPSGD",
    "ALGORITHMS",
    "DATSGD",
    "DSGD",
    "SCHEDULES",
    "ADPSGDState",
    "AcceleratedDATSGD",
    "AcceleratedState",
    "Adam",
    "AdamW",
    "Algorithm",
    "AlgorithmError",
    "AnytimeSGD",
    "ChocoSGD",
    "ChocoState",
    "CompressedDATSGD",
    "CompressedDATSGDState",
    "CompressedGradientTracking",
    "CompressedGradientTrackingState",
    "Constant",
    "Cosine",
    "DATSGDState",
    "DSGDState",
    "GradientTracking",
    "GradientTrackingState",
    "GradientTransform",
    "InverseSqrt",
    "LearningRate",
    "LocalSGD",
    "Method",
    "MinibatchSGD",
    "MixingAssumptionWarning",
    "MixingAssumptions",
    "Momentum",
    "QuasiGlobalMomentum",
    "Schedule",
    "ScheduleFreeDSGD",
    "ScheduleFreeSGD",
    "ScheduleFreeState",
    "Transformed",
    "TransformedState",
    "Warmup",
    "WeightDecay",
    "adam",
    "adamw",
    "hparam",
    "hparams",
    "mixing_violations",
    "momentum",
    "quasi_global_momentum",
    "register",
    "static_violation",
    "weight_decay",
    "with_transforms",
]
