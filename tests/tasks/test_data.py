"""Datasets: bundled loaders, LIBSVM files, generated data, splits and input errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from decent.tasks import (
    Dataset,
    DatasetNotFoundError,
    TaskError,
    breast_cancer,
    digits,
    from_numpy,
    load_libsvm,
    random_classification,
)


def test_digits_split_is_standardized_with_train_statistics() -> None:
    train, test = digits(test_fraction=0.25, seed=3)
    assert test is not None
    assert len(train) + len(test) == 1797 and train.num_features == 64 and train.num_classes == 10
    assert train.features.dtype == torch.float64 and train.labels.dtype == torch.int64
    std = train.features.std(0, unbiased=False)
    varying = std > 0
    torch.testing.assert_close(
        train.features.mean(0), torch.zeros(64, dtype=torch.float64), atol=1e-12, rtol=0
    )
    torch.testing.assert_close(std[varying], torch.ones(int(varying.sum()), dtype=torch.float64))
    assert float(test.features.mean(0).abs().max()) > 1e-3  # test is not re-centred on itself
    again = digits(test_fraction=0.25, seed=3)
    assert torch.equal(again.train.features, train.features)
    assert not torch.equal(digits(test_fraction=0.25, seed=4).train.labels, train.labels)


def test_breast_cancer_without_test_split() -> None:
    train, test = breast_cancer(test_fraction=0.0, dtype=torch.float32)
    assert test is None and len(train) == 569 and train.num_classes == 2
    assert train.features.dtype == torch.float32


def test_libsvm_binary_labels_are_remapped(tmp_path: Path) -> None:
    path = tmp_path / "tiny.svm"
    path.write_text("+1 1:0.5 3:2\n-1 2:1.5\n+1 1:-1 2:1 3:1\n-1 3:4\n")
    data = load_libsvm(path)
    assert data.name == "tiny" and data.num_classes == 2
    assert data.labels.tolist() == [1, 0, 1, 0]
    expected = torch.tensor([[0.5, 0, 2], [0, 1.5, 0], [-1, 1, 1], [0, 0, 4]], dtype=torch.float64)
    assert torch.equal(data.features, expected)
    wide = load_libsvm(path, num_features=5, name="wide")
    assert wide.num_features == 5 and wide.name == "wide"


def test_libsvm_multiclass_labels_map_to_sorted_range(tmp_path: Path) -> None:
    path = tmp_path / "multi.txt"
    path.write_text("5 1:1\n2 1:2\n9 1:3\n2 1:4\n")
    assert load_libsvm(path).labels.tolist() == [1, 0, 2, 0]


def test_libsvm_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="not found") as info:
        load_libsvm(tmp_path / "missing.svm")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    bad = tmp_path / "bad.svm"
    bad.write_text("1 a:b c\n")
    with pytest.raises(TaskError, match="cannot parse"):
        load_libsvm(bad)
    reg = tmp_path / "reg.svm"
    reg.write_text("0.5 1:1\n1.25 1:2\n")
    with pytest.raises(TaskError, match="whole numbers"):
        load_libsvm(reg)


def test_random_classification_is_balanced_and_reproducible() -> None:
    a = random_classification(103, 7, 4, seed=1)
    assert a.features.shape == (103, 7) and a.num_classes == 4
    counts = torch.bincount(a.labels, minlength=4)
    assert int(counts.max() - counts.min()) <= 1
    assert torch.equal(a.features, random_classification(103, 7, 4, seed=1).features)
    assert not torch.equal(a.features, random_classification(103, 7, 4, seed=2).features)
    with pytest.raises(TaskError, match="num_classes"):
        random_classification(10, 2, 0)


def test_from_numpy_and_dataset_helpers() -> None:
    x = np.arange(12.0).reshape(6, 2)
    data = from_numpy(x, np.array([0, 1, 2, 0, 1, 2]), name="toy")
    assert data.num_classes == 3 and len(data) == 6
    sub = data.subset([4, 1])
    assert sub.labels.tolist() == [1, 1] and sub.features[0, 0] == 8.0
    binary = data.binarize([2])
    assert binary.num_classes == 2 and binary.labels.tolist() == [0, 0, 1, 0, 0, 1]
    split = data.train_test_split(0.5, seed=0)
    assert split.test is not None and len(split.train) == len(split.test) == 3
    merged = torch.cat([split.train.features, split.test.features]).sort(0).values
    assert torch.equal(merged, data.features)


@pytest.mark.parametrize(
    ("x", "y", "needle"),
    [
        (np.zeros((3, 2)), np.zeros(4), "same length"),
        (np.array([[0.0, np.nan], [1.0, 1.0]]), np.array([0, 1]), "finite"),
        (np.zeros((2, 2)), np.array([0.5, 1.0]), "non-negative integers"),
        (np.zeros((2, 2)), np.array([-1, 1]), "non-negative integers"),
        (np.zeros((2, 2, 2)), np.array([0, 1]), "2-D"),
        (np.zeros((2, 2)), np.zeros((2, 1)), "1-D"),
    ],
)
def test_from_numpy_rejects_bad_input(x: np.ndarray, y: np.ndarray, needle: str) -> None:
    with pytest.raises(TaskError, match=needle):
        from_numpy(x, y)


def test_dataset_validation_and_split_errors() -> None:
    with pytest.raises(TaskError, match=r"\[0, 2\)"):
        Dataset(torch.zeros(2, 1), torch.tensor([0, 2]), 2)
    with pytest.raises(TaskError, match="int64"):
        Dataset(torch.zeros(2, 1), torch.tensor([0.0, 1.0]), 2)
    data = from_numpy(np.zeros((5, 1)), np.zeros(5))
    with pytest.raises(TaskError, match="test_fraction"):
        data.train_test_split(1.0)
    with pytest.raises(TaskError, match="empty train or test"):
        data.train_test_split(0.01)
    with pytest.raises(TaskError, match="positive class"):
        data.binarize(3)
