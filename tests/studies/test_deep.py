"""The deep-learning study (issue 29) on tiny specs: seconds, real runs, no mocks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from decent.cli import app
from decent.config import ConfigError
from decent.results import Store, load
from decent.studies import _kit as kit
from decent.studies import deep
from decent.tasks import ModuleTask, TaskError
from decent.tasks.nets import ConvNet1d, cnn1d, mnist1d
from decent.tasks.partition import PARTITIONERS

TINY = deep.DeepSpec(
    tasks=("digits_mlp",),
    methods=("minibatch_sgd", "dsgd"),
    topologies=("ring",),
    num_nodes=(4,),
    alphas=(1.0,),
    samples={"digits_mlp": 4 * 16 * 20},
    evals=2,
    seeds=(0, 1),
    extensions=0,
    lr_grid=(0.1, 0.3),
    workers=1,
)


def test_tiny_study_tables_agree_with_the_store_and_complete_dsgd_is_minibatch_sgd(
    tmp_path: Path,
) -> None:
    table = deep.run(TINY, tmp_path, progress=False)
    assert len(table) == 3  # D-SGD on ring and complete, minibatch SGD on complete
    assert set(table["seeds"]) == {2}
    # 3 cells x 2 steps tuned on their own seed; no grid extension allowed here
    tuning = kit.store_finals(tmp_path, deep.TUNING_STUDY)
    assert len(tuning) == 6 and {s for s, _ in tuning.values()} == {"finished"}
    assert set(table["step"]) <= {0.1, 0.3}
    # D-SGD's exact average on the complete graph is minibatch SGD, draw for draw
    rows = table.set_index(["method", "graph"])
    dsgd, sgd = rows.loc[("dsgd", "complete")], rows.loc[("minibatch_sgd", "complete")]
    assert dsgd["step"] == sgd["step"]
    assert dsgd["train_loss"] == pytest.approx(sgd["train_loss"], rel=1e-9)
    assert dsgd["acc"] == sgd["acc"]
    # penalty and interval, recomputed from the store's final values
    finals = kit.store_finals(tmp_path, deep.STUDY)
    acc: dict[str, list[float]] = {}
    for run in (
        load(tmp_path, study=deep.STUDY)[["run_id", "topology.kind"]].drop_duplicates().itertuples()
    ):
        acc.setdefault(run[2], []).append(finals[run[1]][1]["eval/test_accuracy@mean"])
    ring = acc["ring"]
    mean = sum(ring) / 2
    half = 12.7062047 * math.sqrt(sum((a - mean) ** 2 for a in ring)) / math.sqrt(2)
    assert rows.loc[("dsgd", "ring"), "acc"] == pytest.approx(mean)
    assert rows.loc[("dsgd", "ring"), "acc_ci95"] == pytest.approx(half, rel=1e-6)
    assert rows.loc[("dsgd", "ring"), "penalty_pts"] == pytest.approx(100 * (dsgd["acc"] - mean))
    assert rows.loc[("dsgd", "complete"), "penalty_pts"] == 0.0
    assert rows.loc[("dsgd", "complete"), "loss_ratio"] == 1.0
    ring_loss = rows.loc[("dsgd", "ring"), "train_loss"]
    assert rows.loc[("dsgd", "ring"), "loss_ratio"] == pytest.approx(ring_loss / dsgd["train_loss"])
    for name in (
        "final.csv",
        "tables.md",
        "spec.json",
        "accuracy_vs_m_digits_mlp.png",
        "training_digits_mlp.png",
    ):
        assert (tmp_path / "deep" / name).stat().st_size > 0
    # resumable: a rerun runs nothing and gives the same table
    with Store(tmp_path) as store:
        before = len(store.runs())
    again = deep.run(TINY, tmp_path, progress=False)
    with Store(tmp_path) as store:
        assert len(store.runs()) == before
    assert again.equals(table)


def test_cnn_cells_run_and_are_stored_as_the_cnn(tmp_path: Path) -> None:
    spec = deep.DeepSpec(
        tasks=("mnist1d_cnn",),
        methods=("dsgd",),
        topologies=(),
        num_nodes=(2,),
        alphas=(10.0,),
        samples={"mnist1d_cnn": 2 * 16 * 4},
        evals=2,
        seeds=(0,),
        extensions=0,
        lr_grid=(0.1,),
        channels=4,
        mnist1d_samples=200,
        dtype="float32",
    )
    table = deep.run(spec, tmp_path, progress=False)
    assert len(table) == 1 and 0.0 <= table["acc"].iloc[0] <= 1.0
    for study in (deep.STUDY, deep.TUNING_STUDY):
        stored = load(tmp_path, study=study)
        assert set(stored["task.kind"]) == {"cnn1d"}
        assert set(stored["task.dataset.kind"]) == {"mnist1d"}
        assert set(stored["dtype"]) == {"float32"}  # the spec's dtype is what ran


def test_mnist1d_and_the_cnn() -> None:
    data = mnist1d(num_samples=100, test_fraction=0.2, seed=3)
    assert data.train.features.shape == (80, 40) and data.test is not None
    assert len(data.test) == 20 and data.train.num_classes == 10
    again = mnist1d(num_samples=100, test_fraction=0.2, seed=3)
    assert torch.equal(data.train.features, again.train.features)
    net = ConvNet1d(8, 4, 10)
    assert net(torch.zeros(5, 40)).shape == (5, 10)
    task = cnn1d(data, 4, alpha=1.0, channels=8, groups=2, batch_size=4)
    assert task.buffer_dim == 0  # GroupNorm keeps no running statistics
    with pytest.raises(ValueError, match="groups must divide channels"):
        cnn1d(data, 4, channels=6, groups=4)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('tasks = ["cifar"]\n', "tasks"),
        ('tasks = ["digits_mlp"]\n[samples]\ndigits_mlp = 10\n', "samples"),
        ("lr_grids = [0.1]\n", "lr_grids"),
        ('methods = ["sgd"]\n', "sgd"),
    ],
)
def test_bad_specs_name_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=field):
        kit.load_spec(deep.DeepSpec, path)
    res = CliRunner().invoke(app, ["deep", str(path), "--out", str(tmp_path), "--no-progress"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert field in res.output


def test_a_missing_spec_is_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["deep", str(tmp_path / "nope.toml"), "--no-progress"])
    assert res.exit_code == 2
    assert len(res.output.strip().splitlines()) == 1


def test_the_committed_specs_load_and_the_full_one_is_the_default() -> None:
    root = Path(__file__).resolve().parents[2] / "configs" / "studies"
    assert kit.load_spec(deep.DeepSpec, root / "deep.toml") == deep.DeepSpec()
    quick = kit.load_spec(deep.DeepSpec, root / "deep_quick.toml")
    assert len(quick.cells()) == 40 and quick.rounds("digits_mlp", 32) == 300
    cnn = kit.load_spec(deep.DeepSpec, root / "deep_cnn.toml")
    assert len(cnn.cells()) == 20 and cnn.rounds("mnist1d_cnn", 16) == 800
    assert cnn.config(cnn.cells()[0], 0.1, 0, deep.STUDY).dtype == "float32"


CNN_TOML = """
study = "cnn"
rounds = 4
eval_every = 2
[topology]
kind = "ring"
num_nodes = 3
[algorithm]
kind = "dsgd"
lr = 0.1
[task]
kind = "cnn1d"
channels = 4
groups = 2
batch_size = 4
[task.dataset]
kind = "mnist1d"
num_samples = 120
[task.partition]
kind = "dirichlet"
alpha = 0.5
"""


def test_the_cnn_is_a_config_task_that_round_trips_and_runs_from_toml(tmp_path: Path) -> None:
    from decent.config import build, loads_config, validate
    from decent.run import run_points

    config = loads_config(CNN_TOML)
    again = validate(config.run_dict(), "round trip")
    assert again.run_dict() == config.run_dict()
    task = build(config).task
    direct = cnn1d(mnist1d(num_samples=120), 3, alpha=0.5, channels=4, groups=2, batch_size=4)
    assert task.name == direct.name == "mnist1d_cnn4" and task.dim == direct.dim
    run_points([config], tmp_path, workers=1, progress=False)
    stored = load(tmp_path, study="cnn")
    assert set(stored["task.kind"]) == {"cnn1d"} and set(stored["task.groups"]) == {2}
    finals = kit.store_finals(tmp_path, "cnn")
    assert [s for s, _ in finals.values()] == ["finished"]


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        ("channels = 4", "channels = 0"),
        ("groups = 2", "groups = 3"),
        ("channels = 4", "chanels = 4"),
    ],
)
def test_a_bad_cnn_field_is_one_line_naming_it(edit: str, field: str) -> None:
    from decent.config import build, loads_config

    with pytest.raises(ConfigError) as err:
        build(loads_config(CNN_TOML.replace(edit, field)))
    assert field.split()[0] in str(err.value) and "Traceback" not in str(err.value)


def test_the_cnn_takes_every_partition_the_mlp_takes() -> None:
    from decent.config import build, loads_config

    shards = 'kind = "shards"\nclasses_per_node = 2'
    task = build(loads_config(CNN_TOML.replace('kind = "dirichlet"\nalpha = 0.5', shards))).task
    assert isinstance(task, ModuleTask)
    expected = PARTITIONERS["shards"](task.train.labels, 3, 2, seed=0)
    assert [p.tolist() for p in task.partition] == [list(e) for e in expected]
    with pytest.raises(TaskError, match="partition must be one of"):
        cnn1d(mnist1d(num_samples=120), 3, partition="bogus")
