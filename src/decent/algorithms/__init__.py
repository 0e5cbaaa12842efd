"""Decentralized first-order methods and their centralized references.

Each algorithm is a frozen dataclass of hyperparameters with pure ``init / query / update /
output`` methods over a ``NamedTuple`` state (see :mod:`decent.algorithms.base`).
"""

from decent.algorithms._common import AlgorithmError
from decent.algorithms.base import (
    Algorithm,
    Constant,
    Cosine,
    InverseSqrt,
    LearningRate,
    Schedule,
    Warmup,
)
from decent.algorithms.centralized import AnytimeSGD, LocalSGD, MinibatchSGD
from decent.algorithms.dat_sgd import DATSGD, DATSGDState
from decent.algorithms.dsgd import DSGD, DSGDState
from decent.algorithms.gradient_tracking import GradientTracking, GradientTrackingState

ALGORITHMS: dict[str, type] = {
    "dat_sgd": DATSGD,
    "dsgd": DSGD,
    "gradient_tracking": GradientTracking,
    "minibatch_sgd": MinibatchSGD,
    "anytime_sgd": AnytimeSGD,
    "local_sgd": LocalSGD,
}
"""Algorithm classes by their config ``kind``."""

__all__ = [
    "ALGORITHMS",
    "DATSGD",
    "DSGD",
    "Algorithm",
    "AlgorithmError",
    "AnytimeSGD",
    "Constant",
    "Cosine",
    "DATSGDState",
    "DSGDState",
    "GradientTracking",
    "GradientTrackingState",
    "InverseSqrt",
    "LearningRate",
    "LocalSGD",
    "MinibatchSGD",
    "Schedule",
    "Warmup",
]
