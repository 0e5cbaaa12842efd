"""Memory is estimated before anything is allocated, and a refusal names the field
(issue 28, item 5): the minibatch (``batch_size`` x features) and an MLP's hidden layers
count, at the schema's caps too."""

from __future__ import annotations

import tracemalloc
import warnings
from pathlib import Path

import pytest

from decent.algorithms import DSGD
from decent.comm import SimCommunicator
from decent.config import build, load_config
from decent.run import resources
from decent.tasks import LeastSquares
from decent.topology import ring

GIB = 2**30
STREAM = """
rounds = 4
[topology]
kind = "ring"
num_nodes = 8
[algorithm]
kind = "dsgd"
lr = 0.05
[task]
kind = "least_squares"
dim = 10
"""
MLP = """
rounds = 4
[topology]
kind = "ring"
num_nodes = 16
[algorithm]
kind = "dsgd"
lr = 0.1
[task]
kind = "mlp"
hidden = [32]
batch_size = 16
[task.dataset]
kind = "digits"
"""


def _config(tmp_path: Path, text: str, *sets: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_config(path, list(sets))


@pytest.mark.parametrize(
    ("text", "sets", "field"),
    [
        (STREAM, ("task.batch_size=1000000", "task.dim=10000"), "task.batch_size = 1000000"),
        (STREAM, ("task.dim=1000000", "topology.num_nodes=1000"), "(n, d) = (1000, 1000000)"),
        (MLP, ("task.hidden=[1000000]",), "task.hidden = [1000000]"),
        (MLP, ("task.hidden=[1000000, 1000000]",), "task.hidden = [1000000, 1000000]"),
        (MLP, ("task.batch_size=1000000",), "task.batch_size = 1000000"),
    ],
)
def test_the_config_check_names_the_largest_part(
    tmp_path: Path, text: str, sets: tuple[str, ...], field: str
) -> None:
    config = _config(tmp_path, text, *sets)
    with pytest.raises(resources.ResourceError) as err:
        resources.check_config(config, available=GIB)
    line = str(err.value)
    assert "\n" not in line and field in line and "is available" in line


@pytest.mark.parametrize("text", [STREAM, MLP])
def test_ordinary_configs_pass_and_their_estimate_is_not_below_the_built_one(
    tmp_path: Path, text: str
) -> None:
    config = _config(tmp_path, text, "task.batch_size=200")
    resources.check_config(config, available=GIB)
    with warnings.catch_warnings():  # small shards repeat samples: beside the point here
        warnings.simplefilter("ignore")
        built = build(config)
    est = resources.estimate(built.algorithm, built.task, built.comm)
    sample = built.task.sample(built.comm.node_ids, 1, 0)
    drawn = sum(t.numel() * t.element_size() for t in sample)
    assert est.batch >= drawn  # sized from the shape (batch_size > the probe) and not short


def test_a_huge_batch_is_refused_from_its_shape_without_drawing_it() -> None:
    n, d, b = 8, 10_000, 1_000_000
    task = LeastSquares(num_nodes=n, dim=d, batch_size=b)
    comm = SimCommunicator(ring(n))
    tracemalloc.start()
    try:
        with pytest.raises(resources.ResourceError, match=r"lower task\.batch_size"):
            resources.check(DSGD(lr=0.1), task, comm, available=GIB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20  # the 640 GB minibatch was never drawn
    est = resources.estimate(DSGD(lr=0.1), task, comm)
    assert est.batch == n * b * (d + 1) * 8


def test_a_small_batch_is_measured_by_drawing_it() -> None:
    task = LeastSquares(num_nodes=4, dim=3, batch_size=5)
    comm = SimCommunicator(ring(4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = resources.estimate(DSGD(lr=0.1), task, comm)
    one = task.sample(comm.node_ids[:1], 1, 0)
    assert est.batch == 4 * sum(t.numel() * t.element_size() for t in one)


@pytest.mark.parametrize(
    ("mode", "warned"),
    [("final", True), ("every", True), (True, True), ("none", False), (False, False)],
)
def test_a_per_node_evaluation_of_many_nodes_is_warned_of(mode: object, warned: bool) -> None:
    n = resources.MANY_NODES
    task = LeastSquares(num_nodes=n, dim=2)
    comm = SimCommunicator(ring(n))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resources.check(DSGD(lr=0.1), task, comm, per_node_eval=mode, available=64 * GIB)
    lines = [str(w.message) for w in caught if issubclass(w.category, resources.CostWarning)]
    assert len(lines) == int(warned)
    if warned:
        assert "\n" not in lines[0] and lines[0].startswith("per_node_eval = ")
        assert f"{n} nodes" in lines[0] and 'per_node_eval = "none"' in lines[0]


def test_fewer_nodes_are_not_warned_of() -> None:
    n = resources.MANY_NODES - 1
    task, comm = LeastSquares(num_nodes=n, dim=2), SimCommunicator(ring(n))
    with warnings.catch_warnings():
        warnings.simplefilter("error", resources.CostWarning)
        resources.check(DSGD(lr=0.1), task, comm, per_node_eval="every", available=64 * GIB)
