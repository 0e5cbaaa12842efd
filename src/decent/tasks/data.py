"""Offline datasets: a small :class:`Dataset` record, loaders and a seeded train/test split.

Bundled loaders (:func:`digits`, :func:`breast_cancer`) read scikit-learn's packaged copies
(no download) and return a :class:`DatasetSplit` standardized with *training* statistics.
The other builders return a single :class:`Dataset`; split it with
:meth:`Dataset.train_test_split`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import annotated_types as at
import numpy as np
import torch

from decent._params import SEED, SIZE, SIZE_MAX, Doc, check_value, checked_args
from decent.tasks._checks import SplitSeed, TestFraction
from decent.tasks.base import TaskError


class DatasetNotFoundError(TaskError, FileNotFoundError):
    """A dataset file does not exist (both a ``TaskError`` and a ``FileNotFoundError``)."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Features and integer labels of a classification dataset.

    Attributes:
        features: ``(N, f)`` floating tensor, all finite.
        labels: ``(N,)`` int64 tensor with values in ``[0, num_classes)``, or ``(N, L)``
            sequence targets (one class per position: the next token of a window of text,
            :func:`decent.tasks.nets.char_windows`).
        num_classes: number of classes ``C >= 1``.
        name: short identifier used in task names.

    Raises:
        TaskError: on construction, for mismatched shapes, non-finite features or labels
            out of range.
    """

    features: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    name: str = "dataset"

    def __post_init__(self) -> None:
        x, y = self.features, self.labels
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or not x.dtype.is_floating_point:
            raise TaskError(
                f"features must be a 2-D floating tensor (N, f), got "
                f"{getattr(x, 'shape', type(x).__name__)} of dtype {getattr(x, 'dtype', None)}"
            )
        if not isinstance(y, torch.Tensor) or y.ndim not in (1, 2) or y.dtype != torch.int64:
            raise TaskError(
                f"labels must be an int64 tensor (N,) or (N, L) (sequence targets), got "
                f"{getattr(y, 'shape', type(y).__name__)} of dtype {getattr(y, 'dtype', None)}"
            )
        if x.shape[0] != y.shape[0]:
            raise TaskError(
                f"features and labels must have the same length, got {x.shape[0]} features "
                f"and {y.shape[0]} labels; pass matching arrays"
            )
        if x.shape[0] == 0:
            raise TaskError(f"dataset {self.name!r} is empty; it needs at least one sample")
        check_value("Dataset", "num_classes", int, (SIZE,), self.num_classes, TaskError)
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).any(dim=1).sum())
            raise TaskError(
                f"features of {self.name!r} must be finite, found NaN/inf in {bad} row(s); "
                "impute or drop those rows first"
            )
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= self.num_classes:
            raise TaskError(
                f"labels of {self.name!r} must lie in [0, {self.num_classes}), got range "
                f"[{low}, {high}]; remap labels to 0..C-1 or raise num_classes"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_features(self) -> int:
        """The feature dimension ``f``."""
        return int(self.features.shape[1])

    def subset(self, indices: torch.Tensor | np.ndarray | Iterable[int]) -> Dataset:
        """Return the rows ``indices`` as a new dataset with the same classes and name."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
        return Dataset(self.features[idx], self.labels[idx], self.num_classes, self.name)

    def to(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> Dataset:
        """Return a copy with features cast to ``dtype`` and both tensors on ``device``."""
        return Dataset(
            self.features.to(dtype=dtype or self.features.dtype, device=device),
            self.labels.to(device=device),
            self.num_classes,
            self.name,
        )

    def standardize(
        self, mean: torch.Tensor | None = None, std: torch.Tensor | None = None
    ) -> Dataset:
        """Return ``(x - mean) / std`` per feature (defaults: this dataset's statistics).

        Features with zero spread keep ``std = 1`` so they map to zero instead of NaN.
        """
        if mean is None:
            mean = self.features.mean(dim=0)
        if std is None:
            std = self.features.std(dim=0, unbiased=False)
        std = torch.where(std > 0, std, torch.ones_like(std))
        return Dataset((self.features - mean) / std, self.labels, self.num_classes, self.name)

    def binarize(self, positive: int | Iterable[int]) -> Dataset:
        """Return a two-class dataset: label 1 for classes in ``positive``, 0 otherwise."""
        pos = [positive] if isinstance(positive, int) else list(positive)
        for p in pos:
            if not 0 <= int(p) < self.num_classes:
                raise TaskError(
                    f"positive class {p} is not a class of {self.name!r} "
                    f"(classes 0..{self.num_classes - 1})"
                )
        mask = torch.isin(self.labels, torch.as_tensor(pos, dtype=torch.int64))
        return Dataset(self.features, mask.to(torch.int64), 2, f"{self.name}_binary")

    @checked_args("train_test_split", TaskError)
    def train_test_split(
        self, test_fraction: TestFraction = 0.2, *, seed: SplitSeed = 0, standardize: bool = False
    ) -> DatasetSplit:
        """Split rows by a seeded random permutation.

        Args:
            test_fraction: share of rows in the test set, in ``[0, 1)``; ``0`` gives
                ``test=None``.
            seed: seed of the permutation.
            standardize: standardize both parts with the *training* mean and std.

        Returns:
            ``DatasetSplit(train, test)``.

        Raises:
            TaskError: when the fraction leaves an empty train or test part.
        """
        frac = float(test_fraction)
        n = len(self)
        n_test = round(frac * n)
        if frac > 0 and (n_test == 0 or n_test == n):
            raise TaskError(
                f"test_fraction={test_fraction} of {n} samples leaves an empty train or test "
                "part; use a fraction between 1/N and 1 - 1/N, or 0 for no test set"
            )
        perm = torch.as_tensor(np.random.default_rng(seed).permutation(n), dtype=torch.int64)
        train = self.subset(perm[n_test:].sort().values)
        test = self.subset(perm[:n_test].sort().values) if n_test > 0 else None
        if standardize:
            mean = train.features.mean(dim=0)
            std = train.features.std(dim=0, unbiased=False)
            train = train.standardize(mean, std)
            test = test.standardize(mean, std) if test is not None else None
        return DatasetSplit(train, test)


class DatasetSplit(NamedTuple):
    """A training set and an optional held-out test set."""

    train: Dataset
    test: Dataset | None


def _as_dtype(dtype: Any) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TaskError(f"dtype must be a floating torch dtype, got {dtype!r}; use torch.float64")
    return dtype


def from_numpy(
    features: Any,
    labels: Any,
    *,
    name: str = "custom",
    num_classes: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> Dataset:
    """Build a :class:`Dataset` from array-likes ``X (N, f)`` and integer labels ``y (N,)``.

    Args:
        features: ``(N, f)`` real values (a 1-D array is read as one feature).
        labels: ``(N,)`` non-negative integers (floats that are whole numbers are accepted).
        name: dataset name.
        num_classes: number of classes; default ``max(y) + 1``.
        dtype: floating dtype of the features.

    Raises:
        TaskError: for mismatched lengths, non-finite features or non-integer labels.
    """
    dtype = _as_dtype(dtype)
    x = np.asarray(features)
    y = np.asarray(labels)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise TaskError(f"features must be 2-D (N, f), got shape {x.shape}")
    if y.ndim != 1:
        raise TaskError(f"labels must be 1-D (N,), got shape {y.shape}; flatten them")
    try:
        x = x.astype(np.float64)
    except (TypeError, ValueError):
        raise TaskError(f"features must be numeric, got dtype {x.dtype}") from None
    if not np.issubdtype(y.dtype, np.number) or not np.all(np.isfinite(y)):
        raise TaskError(f"labels must be finite numbers, got dtype {y.dtype}")
    if not np.all(y == np.round(y)) or (y.size and y.min() < 0):
        raise TaskError(
            f"labels must be non-negative integers 0..C-1, got values like {np.unique(y)[:5]}; "
            "remap them first (e.g. np.unique(y, return_inverse=True))"
        )
    y_int = y.astype(np.int64)
    if num_classes is None:
        num_classes = int(y_int.max()) + 1 if y_int.size else 1
    return Dataset(torch.as_tensor(x, dtype=dtype), torch.as_tensor(y_int), int(num_classes), name)


@functools.lru_cache(maxsize=4)
def _load_bundled(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    x, y = np.asarray(bunch.data), np.asarray(bunch.target)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def _bundled(name: str, test_fraction: float, seed: int, dtype: torch.dtype) -> DatasetSplit:
    x, y = _load_bundled(name)
    data = from_numpy(x, y, name=name, dtype=_as_dtype(dtype))
    return data.train_test_split(test_fraction, seed=seed, standardize=True)


def digits(
    *,
    test_fraction: TestFraction = 0.2,
    seed: SplitSeed = 0,
    dtype: torch.dtype = torch.float64,
) -> DatasetSplit:
    """Load scikit-learn's 8x8 handwritten digits (1797 samples, 64 features, 10 classes).

    Features are standardized with the training split's statistics (no download).

    Args:
        test_fraction: held-out share (``0`` for no test set).
        seed: seed of the split.
        dtype: floating dtype of the features.
    """
    return _bundled("digits", test_fraction, seed, dtype)


def breast_cancer(
    *,
    test_fraction: TestFraction = 0.2,
    seed: SplitSeed = 0,
    dtype: torch.dtype = torch.float64,
) -> DatasetSplit:
    """Load scikit-learn's Wisconsin breast cancer data (569 samples, 30 features, 2 classes).

    Standardized and split as :func:`digits`."""
    return _bundled("breast_cancer", test_fraction, seed, dtype)


_DENSE_MAX = 2**31
"""Most values a LIBSVM file may have once densified (16 GiB in float64)."""


def _shown(text: str) -> str:
    """A token of a user's file, quoted and cut short, without control characters."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _as_index(token: str) -> int:
    try:
        return int(token)
    except ValueError:
        return -1


def _data_line(file: Path, sample: int) -> tuple[int, str]:
    """The 1-based line number and text of data row ``sample`` (comments and blank lines
    skipped, as scikit-learn's reader does), decompressing ``.gz``/``.bz2``."""
    import bz2
    import gzip

    opener: Any = {".gz": gzip.open, ".bz2": bz2.open}.get(file.suffix, open)
    seen = -1
    with opener(file, "rt", encoding="utf-8", errors="replace") as fh:
        for number, raw in enumerate(fh, start=1):
            text = raw.split("#", 1)[0].strip()
            if text:
                seen += 1
                if seen == sample:
                    return number, text
    return 0, "?"


@checked_args("libsvm", TaskError)
def load_libsvm(
    path: Annotated[
        str | os.PathLike[str],
        at.MinLen(1),
        Doc("The file (relative to the working directory)."),
    ],
    *,
    num_features: Annotated[int | None, SIZE, Doc("Feature count (None: inferred).")] = None,
    name: str | None = None,
    dtype: torch.dtype = torch.float64,
) -> Dataset:
    """Read a LIBSVM/svmlight text file into a dense :class:`Dataset`.

    Labels are remapped to ``0..C-1`` in sorted order, so ``{-1, +1}`` becomes ``{0, 1}``.

    Args:
        path: the file (``.bz2``/``.gz`` are decompressed by scikit-learn).
        num_features: feature count; default inferred from the largest index in the file.
        name: dataset name; default the file's stem.
        dtype: floating dtype of the features.

    Raises:
        DatasetNotFoundError: when ``path`` does not exist.
        TaskError: when the file cannot be parsed, a label is not finite or not a whole
            number, or a feature index makes the data too large to hold densely (more
            than ``SIZE_MAX`` features or ``2**31`` values); the message names the file,
            the line and the value.
    """
    from sklearn.datasets import load_svmlight_file

    file = Path(path)
    if not file.is_file():
        raise DatasetNotFoundError(
            f"LIBSVM file not found: {str(file)!r}; check the path (relative paths are "
            f"resolved from {os.getcwd()!r})"
        )
    try:
        x_sparse, y = load_svmlight_file(str(file), n_features=num_features)
    except ValueError as err:
        raise TaskError(f"cannot parse LIBSVM file {str(file)!r}: {err}") from err
    y = np.asarray(y)
    bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
    if bad.size:
        line, text = _data_line(file, int(bad[0]))
        kind = "not finite" if not np.isfinite(y[bad[0]]) else "not a whole number"
        raise TaskError(
            f"{str(file)!r} line {line}: the label {_shown(text.split()[0])} is {kind}; "
            "decent's classification tasks need class labels that are whole numbers "
            "(regression data?)"
        )
    rows, features = x_sparse.shape
    if features > SIZE_MAX or rows * features > _DENSE_MAX:
        row = int(np.searchsorted(x_sparse.indptr, int(np.argmax(x_sparse.indices)), "right")) - 1
        line, text = _data_line(file, row)
        index = max((t.split(":")[0] for t in text.split()[1:] if ":" in t), key=_as_index)
        raise TaskError(
            f"{str(file)!r} line {line}: feature index {_shown(index)} makes {features} "
            f"features; {rows} samples x {features} features are too many to hold densely "
            f"(at most {SIZE_MAX} features and {_DENSE_MAX:.3g} values); fix the index, or "
            "pass num_features to refuse larger indices"
        )
    _, y_index = np.unique(y, return_inverse=True)
    return from_numpy(
        x_sparse.toarray(),
        y_index.astype(np.int64),
        name=name or file.stem.split(".")[0],
        dtype=_as_dtype(dtype),
    )


@checked_args("random_classification", TaskError)
def random_classification(
    num_samples: Annotated[int, at.Interval(ge=2, le=SIZE_MAX), Doc("Samples N.")],
    num_features: Annotated[int, SIZE, Doc("Features f.")],
    num_classes: Annotated[int, SIZE, Doc("Classes C.")] = 2,
    seed: Annotated[int, SEED, Doc("Seed of the data and the split.")] = 0,
    *,
    separation: Annotated[
        float, at.Interval(ge=0.0, le=1e3), Doc("Typical distance between class centres.")
    ] = 2.0,
    name: str | None = None,
    dtype: torch.dtype = torch.float64,
) -> Dataset:
    r"""Generate a Gaussian-mixture classification dataset.

    Class ``c`` has centre ``m_c ~ N(0, separation^2 / (2f) I)`` and samples
    ``x = m_c + N(0, I)``; two centres are about ``separation`` apart, so the difficulty is
    independent of ``num_features``. Classes are balanced (sizes differ by at most one).
    E.g. ``random_classification(60000, 784, 10)`` stands in for MNIST in a 784-128-10
    benchmark.

    Args:
        name: dataset name; default ``"random_<f>x<C>"``.
        dtype: floating dtype of the features.
    """
    n, f, c = num_samples, num_features, num_classes
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=float(separation) / np.sqrt(2.0 * f), size=(c, f))
    labels = rng.permutation(np.arange(n) % c)
    x = centres[labels] + rng.standard_normal((n, f))
    return from_numpy(x, labels, name=name or f"random_{f}x{c}", num_classes=c, dtype=dtype)


__all__ = [
    "Dataset",
    "DatasetNotFoundError",
    "DatasetSplit",
    "breast_cancer",
    "digits",
    "from_numpy",
    "load_libsvm",
    "random_classification",
]
