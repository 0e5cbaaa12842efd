"""decent: decentralized, distributed and asynchronous training.

DAT-SGD (Decentralized Anytime SGD) and its peers on a vectorized single-process simulator
and on torch.distributed, with the same algorithm code on both.

Example:
    >>> import decent
    >>> task = decent.tasks.LeastSquares(num_nodes=16, dim=5, seed=0)
    >>> comm = decent.SimCommunicator(decent.topology.ring(16))
    >>> result = decent.train(decent.DATSGD(lr=0.001), task, comm, rounds=200)
    >>> result.status
    'finished'
"""

from decent import algorithms, comm, engine, metrics, parallel, tasks, topology
from decent.algorithms import (
    ADPSGD,
    DATSGD,
    DSGD,
    AnytimeSGD,
    ChocoSGD,
    CompressedDATSGD,
    CompressedGradientTracking,
    GradientTracking,
    LocalSGD,
    MinibatchSGD,
)
from decent.algorithms.transforms import (
    adam,
    adamw,
    momentum,
    quasi_global_momentum,
    weight_decay,
    with_transforms,
)
from decent.comm import CommStats, Communicator, SimCommunicator
from decent.engine import Callback, ProgressBar, RunResult, train
from decent.parallel import DecentralizedDataParallel

__version__ = "0.1.0"

__all__ = [
    "ADPSGD",
    "DATSGD",
    "DSGD",
    "AnytimeSGD",
    "Callback",
    "ChocoSGD",
    "CommStats",
    "Communicator",
    "CompressedDATSGD",
    "CompressedGradientTracking",
    "DecentralizedDataParallel",
    "GradientTracking",
    "LocalSGD",
    "MinibatchSGD",
    "ProgressBar",
    "RunResult",
    "SimCommunicator",
    "__version__",
    "adam",
    "adamw",
    "algorithms",
    "comm",
    "engine",
    "metrics",
    "momentum",
    "parallel",
    "quasi_global_momentum",
    "tasks",
    "topology",
    "train",
    "weight_decay",
    "with_transforms",
]

_LAZY = ("results", "config", "run", "report", "studies")
"""Subpackages imported on first use (``decent.results.load(...)`` after ``import decent``)
rather than at ``import decent``, which stays light."""


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"decent.{name}")
    raise AttributeError(f"module 'decent' has no attribute {name!r}")
