"""The round loop, the gradient oracle, callbacks and the run result."""

from decent.engine.callbacks import Callback, History, ProgressBar
from decent.engine.loop import train, train_replicas
from decent.engine.oracle import GradientOracle
from decent.engine.result import DivergenceWarning, RunInfo, RunResult

__all__ = [
    "Callback",
    "DivergenceWarning",
    "GradientOracle",
    "History",
    "ProgressBar",
    "RunInfo",
    "RunResult",
    "train",
    "train_replicas",
]
