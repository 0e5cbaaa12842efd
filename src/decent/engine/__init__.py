"""The round loop, the gradient oracle and callbacks."""

from decent.engine.callbacks import Callback, History, ProgressBar, RunInfo
from decent.engine.loop import DivergenceWarning, RunResult, train
from decent.engine.oracle import GradientOracle
from decent.engine.recording import StoreRecorder

__all__ = [
    "Callback",
    "DivergenceWarning",
    "GradientOracle",
    "History",
    "ProgressBar",
    "RunInfo",
    "RunResult",
    "StoreRecorder",
    "train",
]
