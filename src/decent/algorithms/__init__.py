"""Decentralized first-order methods and their centralized references.

Each algorithm is a frozen dataclass of hyperparameters with pure ``init / query / update /
output`` methods over a ``NamedTuple`` state (see :mod:`decent.algorithms.base`). Its
dataclass is the single source of its hyperparameters, defaults, rules and docs
(:func:`~decent.algorithms.base.hparam`); the config schema is derived from it. Adding an
algorithm is one module here and one line in :data:`ALGORITHMS`.
"""

from decent.algorithms.accelerated import AcceleratedDATSGD, AcceleratedState
from decent.algorithms.ad_psgd import ADPSGD, ADPSGDState
from decent.algorithms.base import (
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
from decent.algorithms.transforms import (
    Adam,
    GradientTransform,
    Momentum,
    QuasiGlobalMomentum,
    Transformed,
    TransformedState,
    WeightDecay,
    adam,
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
        MinibatchSGD,
        AnytimeSGD,
        LocalSGD,
    )
}
"""Algorithm classes by their config ``kind`` (their ``name``), in the order docs list them."""

__all__ = [
    "ADPSGD",
    "ALGORITHMS",
    "DATSGD",
    "DSGD",
    "ADPSGDState",
    "AcceleratedDATSGD",
    "AcceleratedState",
    "Adam",
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
    "Transformed",
    "TransformedState",
    "Warmup",
    "WeightDecay",
    "adam",
    "hparam",
    "hparams",
    "mixing_violations",
    "momentum",
    "quasi_global_momentum",
    "weight_decay",
    "with_transforms",
]
