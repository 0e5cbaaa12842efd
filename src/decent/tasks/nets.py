"""Networks of the deep-learning study (issue 29): MNIST-1D and a 1-D CNN with GroupNorm.

MNIST-1D (Greydanus 2020) is generated here with the ``mnist1d`` package's
``make_dataset`` (never its ``get_dataset``, which downloads): 40-sample sequences of ten
digit templates, padded, shifted, sheared, scaled and noised. GroupNorm replaces BatchNorm
because BatchNorm fails under heterogeneous data (Hsieh et al. 2020), so the model is
stateless and every node's gradient depends on its own minibatch only.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
import torch
from torch import nn

from decent._params import SIZE, Doc
from decent.tasks._checks import BatchSize, PartitionSeed, TaskError, check_int
from decent.tasks.data import Dataset, DatasetSplit, from_numpy
from decent.tasks.models import ModuleTask, _task


@functools.lru_cache(maxsize=2)
def _mnist1d_arrays(num_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    args.train_split = 1.0  # decent splits below, so test and train follow its seed
    data = make_dataset(args)
    x = np.concatenate([data["x"], data["x_test"]]) if len(data["x_test"]) else data["x"]
    y = np.concatenate([data["y"], data["y_test"]]) if len(data["y_test"]) else data["y"]
    return x, y


def mnist1d(
    *,
    num_samples: Annotated[int, Doc("Samples generated (train and test together).")] = 40_000,
    test_fraction: float = 0.2,
    seed: Annotated[int, Doc("Seed of the generator and of the split.")] = 0,
    dtype: torch.dtype = torch.float64,
) -> DatasetSplit:
    """Generate MNIST-1D: ``num_samples`` sequences of 40 values, 10 classes.

    Features are standardized with the training split's statistics (one mean and scale per
    position, as for every other dataset of :mod:`decent.tasks`).

    Raises:
        TaskError: ``num_samples`` below 10 or a bad ``test_fraction``.
    """
    n = check_int("num_samples", num_samples, minimum=10)
    x, y = _mnist1d_arrays(n, check_int("seed", seed, minimum=0))
    data = from_numpy(x, y, name="mnist1d", num_classes=10, dtype=dtype)
    return data.train_test_split(test_fraction, seed=seed, standardize=True)


class ConvNet1d(nn.Module):
    """Three ``Conv1d(k=5, padding=2) -> GroupNorm -> ReLU`` blocks (the last two with
    stride 2), global average pooling and a linear head.

    Input ``(B, length)`` (datasets are ``(N, f)``; one channel is added here), output
    ``(B, classes)`` logits.
    """

    def __init__(self, channels: int, groups: int, classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for stride in (1, 2, 2):
            layers += [
                nn.Conv1d(c_in, channels, 5, stride=stride, padding=2),
                nn.GroupNorm(groups, channels),
                nn.ReLU(),
            ]
            c_in = channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.unsqueeze(-2)).mean(-1))


def cnn1d(
    data: DatasetSplit,
    num_nodes: int,
    *,
    partition: str | Sequence[Any] = "dirichlet",
    alpha: float = 0.5,
    classes_per_node: int = 1,
    channels: Annotated[int, SIZE, Doc("Channels of every convolution.")] = 16,
    groups: Annotated[int, SIZE, Doc("GroupNorm groups (must divide channels).")] = 4,
    batch_size: BatchSize = 32,
    seed: PartitionSeed = 0,
) -> ModuleTask:
    """A 1-D CNN (:class:`ConvNet1d`) with cross-entropy, GroupNorm, no buffers.

    ``data`` is split over ``num_nodes`` nodes as :func:`~decent.tasks.mlp` splits it
    (``"iid"``, ``"dirichlet"`` with concentration ``alpha``, ``"shards"`` with
    ``classes_per_node``, or one index array per node); each training seed starts from its
    own initialisation (``init="reset"``).

    Raises:
        TaskError: ``groups`` does not divide ``channels``, an unknown partition, or a bad
            size.
    """
    c = check_int("channels", channels, minimum=1)
    if c % check_int("groups", groups, minimum=1):
        raise TaskError(f"groups must divide channels, got groups={groups}, channels={c}")

    def build(train: Dataset) -> tuple[nn.Module, str, str]:
        return ConvNet1d(c, groups, train.num_classes), "cross_entropy", f"cnn{c}"

    args = (num_nodes, partition, alpha, classes_per_node, batch_size, 0.0, seed)
    return _task(data, None, (*args, "with_replacement"), build)


__all__ = ["ConvNet1d", "cnn1d", "mnist1d"]
