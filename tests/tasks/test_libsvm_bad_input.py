"""A LIBSVM file with a label that is not a class or a feature index too large to hold is
refused in one line naming the file, the line and the value (issue 28, items 6 and 7)."""

from __future__ import annotations

import bz2
import gzip
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from decent.tasks import TaskError
from decent.tasks.data import load_libsvm

GOOD = "1 1:0.5 2:1\n-1 1:0.2\n"


@pytest.mark.parametrize(
    ("body", "line", "value", "why"),
    [
        (GOOD + "# a comment\ninf 2:3\n", 4, "'inf'", "not finite"),
        (GOOD + "-inf 2:3\n", 3, "'-inf'", "not finite"),
        ("nan 1:1\n" + GOOD, 1, "'nan'", "not finite"),
        (GOOD + "\n1.5 2:1\n", 4, "'1.5'", "not a whole number"),
    ],
)
def test_a_label_that_is_not_a_class_is_refused_at_its_line(
    tmp_path: Path, body: str, line: int, value: str, why: str
) -> None:
    path = tmp_path / "labels.svm"
    path.write_text(body)
    with pytest.raises(TaskError) as err:
        load_libsvm(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{str(path)!r} line {line}: the label {value}")
    assert why in msg


@pytest.mark.parametrize("suffix", ["", ".gz", ".bz2"])
@pytest.mark.parametrize("index", [10**9, 2 * 10**6])
def test_a_huge_feature_index_is_refused_at_its_line_before_densifying(
    tmp_path: Path, suffix: str, index: int
) -> None:
    body = f"1 1:0.5 2:1\n\n-1 1:0.2 3:2 {index}:1\n1 2:1\n".encode()
    path = tmp_path / f"wide.svm{suffix}"
    pack: dict[str, Callable[[bytes], bytes]] = {
        "": bytes,
        ".gz": gzip.compress,
        ".bz2": bz2.compress,
    }
    path.write_bytes(pack[suffix](body))
    tracemalloc.start()
    try:
        with pytest.raises(TaskError) as err:
            load_libsvm(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{str(path)!r} line 3: feature index '{index}'")
    assert "num_features" in msg
    assert peak < 64 * 2**20  # 3 x 10^9 values were never allocated


def test_a_clean_file_still_loads_with_its_classes_in_sorted_order(tmp_path: Path) -> None:
    path = tmp_path / "ok.svm"
    path.write_text(GOOD + "# trailing comment\n1 3:2\n")
    data = load_libsvm(path)
    assert tuple(data.features.shape) == (3, 3)
    assert data.labels.tolist() == [1, 0, 1] and data.num_classes == 2
