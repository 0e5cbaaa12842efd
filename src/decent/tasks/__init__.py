"""Learning problems for decentralized training: streaming convex problems, datasets,
partitioners and ``torch.nn.Module`` adapters, all behind the :class:`Task` protocol."""

from decent.tasks.base import Objective, Task, TaskError, objective_of
from decent.tasks.data import (
    Dataset,
    DatasetNotFoundError,
    DatasetSplit,
    breast_cancer,
    digits,
    from_numpy,
    load_libsvm,
    random_classification,
)
from decent.tasks.models import (
    ModuleTask,
    TaskWarning,
    logistic_regression,
    mlp,
    softmax_regression,
)
from decent.tasks.partition import PARTITIONERS, dirichlet, iid, shards
from decent.tasks.population import LogisticPopulation
from decent.tasks.streaming import LeastSquares, LogisticRegressionStream

__all__ = [
    "PARTITIONERS",
    "Dataset",
    "DatasetNotFoundError",
    "DatasetSplit",
    "LeastSquares",
    "LogisticPopulation",
    "LogisticRegressionStream",
    "ModuleTask",
    "Objective",
    "Task",
    "TaskError",
    "TaskWarning",
    "breast_cancer",
    "digits",
    "dirichlet",
    "from_numpy",
    "iid",
    "load_libsvm",
    "logistic_regression",
    "mlp",
    "objective_of",
    "random_classification",
    "shards",
    "softmax_regression",
]
