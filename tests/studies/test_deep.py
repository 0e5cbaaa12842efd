"""The deep-learning study (issue 29) on tiny specs: seconds, real runs, no mocks."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
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
    # tuning.csv: every tuning run, the chosen one the least tuning loss of its cell
    tuned = pd.read_csv(tmp_path / "deep" / "tuning.csv")
    assert len(tuned) == 6 and set(tuned["status"]) == {"finished"}
    by_id = {rid: final["eval/loss@mean"] for rid, (_, final) in tuning.items()}
    assert sorted(tuned["tune_loss"]) == pytest.approx(sorted(by_id.values()), rel=1e-12)
    for (method, graph), runs in tuned.groupby(["method", "graph"]):
        assert runs["chosen"].sum() == 1
        best = runs.loc[runs["tune_loss"].idxmin()]
        assert best["chosen"] and best["step"] == rows.loc[(method, graph), "step"]
    for name in (
        "final.csv",
        "tables.md",
        "spec.json",
        "tuning.csv",
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
        ('methods = ["dsgd+qgm"]\n', "methods[0]: \"dsgd+qgm\" -> method 'dsgd+qgm'"),
        ('methods = ["dsgd+weight_decay"]\n', "weight_decay needs more"),
        ('methods = ["dsgd+momentum"]\nbeta = 1.0\n', "beta: 1.0 -> 'dsgd+momentum' takes"),
        ("beta_grid = [0.5, 1.5]\n", "beta_grid[1]: 1.5 -> must be <= 1.0"),
        ("beta_grid = []\n", "beta_grid"),
    ],
)
def test_bad_specs_name_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(field)):
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
    momentum = kit.load_spec(deep.DeepSpec, root / "deep_momentum.toml")
    assert len(momentum.cells()) == 2 + 5 * 3  # all-reduce on complete; gossip on 3 graphs
    cnn = kit.load_spec(deep.DeepSpec, root / "deep_cnn.toml")
    assert len(cnn.cells()) == 20 and cnn.rounds("mnist1d_cnn", 16) == 800
    assert cnn.config(cnn.cells()[0], 0.1, 0, deep.STUDY).dtype == "float32"


def test_the_cnn_follow_up_specs_match_the_rounds_they_compare_with() -> None:
    """``deep_cnn_rounds`` gives M = 32 as many rounds as ``deep_cnn``'s M = 16 (twice
    ``deep_cnn_wide``'s), and ``deep_cnn_alpha`` runs ``deep_cnn``'s M = 16 cell at alpha 1
    and 10: their tables compare only if these hold."""
    root = Path(__file__).resolve().parents[2] / "configs" / "studies"
    cnn, wide, rounds, alpha = (
        kit.load_spec(deep.DeepSpec, root / f"deep_cnn{s}.toml")
        for s in ("", "_wide", "_rounds", "_alpha")
    )
    assert rounds.rounds("mnist1d_cnn", 32) == cnn.rounds("mnist1d_cnn", 16) == 800
    assert wide.rounds("mnist1d_cnn", 32) == 400
    assert rounds.replace(num_nodes=(32, 64), samples=wide.samples) == wide
    assert alpha.replace(num_nodes=(8, 16), topologies=cnn.topologies, alphas=(0.1,)) == cnn
    # per alpha: all-reduce on complete, three gossip methods on ring and complete
    assert len(rounds.cells()) == 7 and len(alpha.cells()) == 2 * 7
    graphs = kit.load_spec(deep.DeepSpec, root / "deep_cnn_graphs.toml")
    same = graphs.replace(num_nodes=(8, 16), topologies=cnn.topologies, autograd=True)
    assert same == cnn and not graphs.autograd  # the closed form, its own references
    assert len(graphs.cells()) == 1 + 3 * 3  # all-reduce; gossip on torus, one-peer, complete
    rounds64 = kit.load_spec(deep.DeepSpec, root / "deep_cnn_rounds64.toml")
    assert rounds64.rounds("mnist1d_cnn", 64) == 800 == 4 * wide.rounds("mnist1d_cnn", 64)
    same = rounds64.replace(num_nodes=(32, 64), samples=wide.samples, autograd=True, workers=1)
    assert same == wide and not rounds64.autograd
    long = kit.load_spec(deep.DeepSpec, root / "deep_cnn_rounds64_long.toml")
    assert long.rounds("mnist1d_cnn", 64) == 1600
    assert long.replace(samples=rounds64.samples) == rounds64
    graphs32 = kit.load_spec(deep.DeepSpec, root / "deep_cnn_graphs32.toml")
    assert graphs32.rounds("mnist1d_cnn", 32) == 800 and not graphs32.autograd
    same = graphs32.replace(topologies=("ring",), autograd=True)
    assert same == rounds  # deep_cnn_rounds' cell, on four graphs, by the closed form
    assert len(graphs32.cells()) == 1 + 3 * 5  # all-reduce; gossip on four graphs and complete
    graphs64 = kit.load_spec(deep.DeepSpec, root / "deep_cnn_graphs64.toml")
    same = graphs64.replace(topologies=("ring",), workers=2)
    assert same == rounds64  # its complete-graph runs are deep_cnn_rounds64's, found by id


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


def test_the_committed_cnn_specs_keep_the_vmapped_path_and_its_run_ids() -> None:
    """The CNN tables were made with vmap(grad(loss)): their specs ask for it
    (``autograd = true``) and their runs keep the ids they had before the switch existed;
    a closed-form run (the default), which rounds otherwise, gets an id of its own."""
    from decent.config import build, loads_config

    root = Path(__file__).resolve().parents[2] / "configs" / "studies"
    for name in (
        "deep_cnn.toml",
        "deep_cnn_wide.toml",
        "deep_cnn_rounds.toml",
        "deep_cnn_alpha.toml",
    ):
        spec = kit.load_spec(deep.DeepSpec, root / name)
        cfg = spec.config(spec.cells()[0], 0.1, 0, deep.STUDY)
        assert spec.autograd and "autograd" not in cfg.run_dict()["task"]
        fast = spec.model_copy(update={"autograd": False})
        task = fast.config(spec.cells()[0], 0.1, 0, deep.STUDY).run_dict()["task"]
        assert task["autograd"] is False
    slow = loads_config(CNN_TOML.replace("batch_size = 4", "batch_size = 4\nautograd = true"))
    vmapped, closed = build(slow).task, build(loads_config(CNN_TOML)).task
    assert isinstance(vmapped, ModuleTask) and isinstance(closed, ModuleTask)
    assert vmapped.grad_and_loss is None and closed.grad_and_loss is not None
    before = loads_config(CNN_TOML).run_dict()  # as recorded before the field existed
    before["task"].pop("autograd")
    assert slow.run_dict() == before
    assert loads_config(CNN_TOML).run_dict()["task"]["autograd"] is False


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


def test_time_to_target_is_the_clock_at_the_first_evaluation_on_target() -> None:
    """Without stragglers a gossip round takes one gradient plus one latency and an
    all-reduce round one gradient plus 2 (M - 1) latencies, so the times are closed forms;
    a seed that never reaches the target counts as infinitely slow (median of the seeds)."""
    import pandas as pd

    spec = deep.DeepSpec(
        tasks=("digits_mlp",), targets={"digits_mlp": 0.9}, straggler_p=0.0, latency=0.01
    )
    curves = {  # (method, graph, seed): accuracy at rounds 0, 2, 4, 6
        ("dsgd", "ring", 0): [0.1, 0.5, 0.92, 0.95],
        ("dsgd", "ring", 1): [0.1, 0.91, 0.93, 0.95],
        ("dsgd", "ring", 2): [0.1, 0.5, 0.6, 0.7],
        ("minibatch_sgd", "complete", 0): [0.1, 0.8, 0.85, 0.9],
        ("dat_sgd", "ring", 0): [0.1, 0.2, 0.3, 0.4],
    }
    rows = [
        {"run_id": f"{m}-{g}-{s}", "round": r, "metric": "eval/test_accuracy@mean", "value": v}
        | {"task": "digits_mlp", "method": m, "graph": g, "M": 4, "alpha": 1.0, "seed": s}
        for (m, g, s), values in curves.items()
        for r, v in zip((0, 2, 4, 6), values, strict=True)
    ]
    table = deep.time_to_target(spec, pd.DataFrame(rows)).set_index(["method", "graph"])
    ring = table.loc[("dsgd", "ring")]
    assert ring["reached"] == "2/3" and ring["rounds"] == 3.0  # median of rounds 4 and 2
    assert ring["time"] == pytest.approx(4 * 1.01)  # median of 4.04, 2.02 and inf
    allreduce = table.loc[("minibatch_sgd", "complete")]
    assert allreduce["time"] == pytest.approx(6 * (1 + 2 * 3 * 0.01))
    assert table.loc[("dat_sgd", "ring")]["reached"] == "0/1"
    assert math.isinf(table.loc[("dat_sgd", "ring")]["time"])
    with pytest.raises(ValueError, match="targets: give task 'digits_mlp'"):
        deep.DeepSpec(tasks=("digits_mlp",), targets={})


def test_a_graph_that_cannot_be_built_at_some_m_is_left_out_and_named() -> None:
    spec = deep.DeepSpec(tasks=("digits_mlp",), topologies=("torus",), num_nodes=(4, 9))
    graphs = {(c[2], c[3]) for c in spec.cells()}
    assert ("torus", 9) in graphs and ("torus", 4) not in graphs and ("complete", 4) in graphs
    assert list(spec.unbuilt()) == [("torus", 4)]
    assert "no factorization" in spec.unbuilt()[("torus", 4)]


def test_a_method_outside_its_analysis_on_a_graph_runs_with_a_warning_and_is_named() -> None:
    """DAT-SGD assumes a symmetric W; one-peer exponential's W_t is not: that cell runs with
    mixing_check = "warn" (D-SGD's does not need it) and tables.md names it."""
    spec = deep.DeepSpec(
        tasks=("digits_mlp",),
        methods=("dsgd", "dat_sgd"),
        topologies=("one_peer_exponential",),
        num_nodes=(8,),
        alphas=(1.0,),
        samples={"digits_mlp": 8 * 16 * 20},
    )
    assert list(spec.outside()) == [("dat_sgd", "one_peer_exponential", 8)]
    assert "not symmetric" in spec.outside()[("dat_sgd", "one_peer_exponential", 8)]
    cell = ("digits_mlp", "dat_sgd", "one_peer_exponential", 8, 1.0)
    assert spec.config(cell, 1.0, 0, deep.STUDY).mixing_check == "warn"
    plain = ("digits_mlp", "dsgd", "one_peer_exponential", 8, 1.0)
    assert spec.config(plain, 0.1, 0, deep.STUDY).mixing_check == "error"


def test_a_momentum_cell_with_beta_zero_is_the_plain_dsgd_cell_record_for_record(
    tmp_path: Path,
) -> None:
    """Heavy-ball momentum with beta = 0 steps along the gradient itself, so the variant's
    tuning and runs must repeat plain D-SGD's to the last bit, while the store records the
    transform the variant ran with."""
    spec = TINY.replace(methods=("dsgd", "dsgd+momentum"), beta=0.0)
    table = deep.run(spec, tmp_path, progress=False).set_index(["method", "graph"])
    assert len(table) == 4
    records = load(tmp_path, study=deep.STUDY)
    records = records[~records["metric"].str.startswith("time/")]  # wall clock: not a result
    chains = records.groupby("run_id")["algorithm.transforms"].first()
    assert chains.isna().sum() == 4  # plain D-SGD: ring and complete, two seeds
    assert [json.loads(c) for c in chains.dropna()] == [
        [{"kind": "momentum", "beta": 0.0, "nesterov": False}]
    ] * 4
    keys = ["topology.kind", "seed", "round", "metric"]
    plain = records["algorithm.transforms"].isna()
    ours = records[~plain].set_index(keys)["value"].sort_index()
    theirs = records[plain].set_index(keys)["value"].sort_index()
    assert len(ours) > 0 and ours.index.equals(theirs.index)
    assert ours.to_numpy().tobytes() == theirs.to_numpy().tobytes()
    for graph in ("ring", "complete"):
        assert table.loc[("dsgd+momentum", graph), "step"] == table.loc[("dsgd", graph), "step"]


def test_transformed_methods_run_from_a_spec_file_with_their_labels_and_stored_chain(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spec.toml"
    path.write_text(
        'tasks = ["digits_mlp"]\nmethods = ["minibatch_sgd+momentum", '
        '"dsgd+quasi_global_momentum"]\ntopologies = ["ring"]\nnum_nodes = [4]\n'
        "alphas = [1.0]\nevals = 2\nseeds = [0]\nextensions = 0\nlr_grid = [0.03]\n"
        "beta = 0.5\n[samples]\ndigits_mlp = 1280\n"
    )
    res = CliRunner().invoke(
        app, ["deep", str(path), "--out", str(tmp_path), "--no-progress", "--workers", "1"]
    )
    assert res.exit_code == 0, res.output
    assert "Minibatch SGD + momentum (centralized), D-SGD + QGM on digits_mlp" in res.output
    assert kit.label("dat_sgd+momentum") == "DAT-SGD + momentum"
    final = pd.read_csv(tmp_path / "spec" / "final.csv")  # OUT/<the spec file's name>
    assert list(zip(final["method"], final["graph"], strict=True)) == [
        ("dsgd+quasi_global_momentum", "complete"),
        ("dsgd+quasi_global_momentum", "ring"),
        ("minibatch_sgd+momentum", "complete"),
    ]
    stored = load(tmp_path, study=deep.STUDY).groupby("run_id").first()
    chains = zip(stored["algorithm.kind"], stored["algorithm.transforms"], strict=True)
    assert {kind: json.loads(chain) for kind, chain in chains} == {
        "minibatch_sgd": [{"kind": "momentum", "beta": 0.5, "nesterov": False}],
        "dsgd": [{"kind": "quasi_global_momentum", "beta": 0.5}],
    }
    assert {s for s, _ in kit.store_finals(tmp_path, deep.STUDY).values()} == {"finished"}


def test_charlm_cells_run_with_adamw_from_the_adaptive_grid_and_show_bits_per_byte(
    tmp_path: Path,
) -> None:
    spec = deep.DeepSpec(
        tasks=("stdlib_charlm",),
        methods=("dsgd", "dat_sgd+adamw"),
        topologies=(),
        num_nodes=(2,),
        alphas=(0.5,),
        samples={"stdlib_charlm": 2 * 4 * 4},
        evals=2,
        seeds=(0,),
        extensions=0,
        lr_grid=(0.3,),
        adaptive_gamma_grid=(0.02,),
        text_files=12,
        text_chars=300,
        context=8,
        width=8,
        batch_size=4,
        dtype="float32",
        workers=1,
    )
    assert spec.grid(("stdlib_charlm", "dsgd+adamw", "ring", 4, 1.0)) == spec.adaptive_lr_grid
    assert spec.grid(("stdlib_charlm", "dat_sgd", "ring", 4, 1.0)) == spec.gamma_grid
    table = deep.run(spec, tmp_path, progress=False)
    assert dict(zip(table["method"], table["step"], strict=True)) == {
        "dat_sgd+adamw": 0.02,
        "dsgd": 0.3,
    }
    stored = load(tmp_path, study=deep.STUDY).groupby("run_id").first()
    assert set(stored["task.kind"]) == {"char_lm"} and set(stored["task.alpha"]) == {0.5}
    assert set(stored["task.partition"]) == {"dirichlet"}
    shown = (tmp_path / "deep" / "tables.md").read_text()
    assert "| test_bpc |" in shown and "| test_loss |" not in shown
    final = pd.read_csv(tmp_path / "deep" / "final.csv")
    bpc = final["test_loss"] / math.log(2)
    assert all(f"| {v:.3g} |" in shown for v in bpc)
    assert (final["test_loss"] > 0).all() and ((final["acc"] >= 0) & (final["acc"] <= 1)).all()


def test_the_charlm_spec_loads_with_its_cells() -> None:
    root = Path(__file__).resolve().parents[2] / "configs" / "studies"
    spec = kit.load_spec(deep.DeepSpec, root / "deep_charlm.toml")
    # per M: all-reduce plain and with AdamW on complete, four gossip methods on ring and complete
    assert len(spec.cells()) == 2 * (2 + 4 * 2)
    assert spec.rounds("stdlib_charlm", 4) == 512 and spec.rounds("stdlib_charlm", 16) == 128
    cfg = spec.config(("stdlib_charlm", "dsgd+adamw", "ring", 16, 0.1), 0.03, 0, deep.STUDY)
    assert cfg.task.kind == "char_lm" and cfg.algorithm.transforms[0].kind == "adamw"


def test_beta_is_tuned_with_the_step_and_each_cell_takes_its_best_tuning_run(
    tmp_path: Path,
) -> None:
    """Schedule-free D-SGD tunes (gamma, beta) jointly on the tuning seed: the chosen pair
    must be the least final training loss over the stored tuning runs of the cell (ties to
    the smaller beta, then the smaller step), recomputed here from the store; D-SGD has no
    beta and tunes its step alone."""
    spec = TINY.replace(
        methods=("dsgd", "schedule_free_dsgd"),
        beta_grid=(0.0, 0.5, 1.0),
        gamma_grid=(0.3, 1.0),
        extensions=1,
        seeds=(0,),
    )
    table = deep.run(spec, tmp_path, progress=False).set_index(["method", "graph"])
    rounds = spec.rounds("digits_mlp", 4)
    runs = load(tmp_path, study=deep.TUNING_STUDY)
    runs = runs[runs["metric"] == "eval/loss@mean"].sort_values("round").groupby("run_id").last()
    assert set(runs["algorithm.beta"].dropna()) == {0.0, 0.5, 1.0}
    folder = tmp_path / "deep"
    per_beta = pd.read_csv(folder / "beta_tuning.csv")
    assert len(per_beta) == 2 * 3 and per_beta.groupby("graph")["chosen"].sum().eq(1).all()
    for graph in ("ring", "complete"):
        mine = runs[(runs["algorithm.kind"] == "schedule_free_dsgd")]
        mine = mine[mine["topology.kind"] == graph]
        assert len(mine) >= 3 * 2  # every beta its own grid
        points = zip(mine["value"], mine["algorithm.beta"], mine["algorithm.lr"], strict=True)
        _, beta, lr = min(points)  # least loss; ties: smaller beta, then smaller step
        row = table.loc[("schedule_free_dsgd", graph)]
        assert row["beta"] == beta and row["step"] == pytest.approx(lr * rounds)
        for b, g in mine.groupby("algorithm.beta"):  # each beta's own best, as tables show it
            shown = per_beta[(per_beta["graph"] == graph) & (per_beta["beta"] == b)].iloc[0]
            assert shown["tune_loss"] == pytest.approx(g["value"].min(), rel=1e-12)
            assert bool(shown["chosen"]) == (b == beta)
    assert math.isnan(table.loc[("dsgd", "ring"), "beta"])
    # the evaluation runs ran with the chosen beta
    stored = load(tmp_path, study=deep.STUDY).groupby("run_id").first()
    sf = stored[stored["algorithm.kind"] == "schedule_free_dsgd"].set_index("topology.kind")
    for graph in ("ring", "complete"):
        assert sf.loc[graph, "algorithm.beta"] == table.loc[("schedule_free_dsgd", graph), "beta"]
    assert "Each beta's tuning" in (folder / "tables.md").read_text()


def test_a_one_value_beta_grid_is_the_spec_without_one(tmp_path: Path) -> None:
    """``beta_grid = [beta]`` must generate today's configs (the shipped specs set none), so
    a second run of the study finds every run in the store and writes the same table; a
    transform's beta stays the spec's ``beta`` whatever the grid."""
    plain = TINY.replace(methods=("schedule_free_dsgd", "dsgd+momentum"), beta=0.7, seeds=(0,))
    one = plain.replace(beta_grid=(0.7,))
    for cell in plain.cells():
        beta = one.betas(cell)[0]
        assert plain.betas(cell) == one.betas(cell)
        for study in (deep.STUDY, deep.TUNING_STUDY):
            assert one.config(cell, 0.3, 0, study, beta) == plain.config(cell, 0.3, 0, study)
    first = deep.run(plain, tmp_path, folder=tmp_path / "plain", progress=False)
    with Store(tmp_path) as store:
        stored = store.configs()
    second = deep.run(one, tmp_path, folder=tmp_path / "one", progress=False)
    with Store(tmp_path) as store:
        assert store.configs() == stored  # nothing new ran
    pd.testing.assert_frame_equal(first, second)
    assert not (tmp_path / "one" / "beta_tuning.csv").exists()
    other = one.replace(beta_grid=(0.3,)).config(
        ("digits_mlp", "dsgd+momentum", "ring", 4, 1.0), 0.3, 0, deep.STUDY
    )
    assert other.algorithm.transforms[0].beta == 0.7
    sf = one.replace(beta_grid=(0.3,)).config(
        ("digits_mlp", "schedule_free_dsgd", "ring", 4, 1.0), 0.3, 0, deep.STUDY, 0.3
    )
    assert sf.algorithm.beta == 0.3


def test_the_schedule_free_charlm_spec_shares_deep_charlms_reference_runs() -> None:
    """``deep_charlm_sf.toml`` keeps ``deep_charlm.toml``'s task settings, so the cells
    both run are the same runs (same configs, so the same store rows and numbers)."""
    root = Path(__file__).resolve().parents[2] / "configs" / "studies"
    base = kit.load_spec(deep.DeepSpec, root / "deep_charlm.toml")
    sf = kit.load_spec(deep.DeepSpec, root / "deep_charlm_sf.toml")
    shared = [c for c in sf.cells() if c in base.cells()]
    assert {c[1] for c in shared} == {"minibatch_sgd+adamw", "dat_sgd+adamw"}
    for cell in shared:
        assert sf.betas(cell) == (None,)
        for seed, study in ((0, deep.STUDY), (100, deep.TUNING_STUDY)):
            assert sf.config(cell, 0.02, seed, study) == base.config(cell, 0.02, seed, study)
    cell = ("stdlib_charlm", "schedule_free_dsgd+adamw", "ring", 16, 0.1)
    assert sf.betas(cell) == (0.2, 0.5, 0.9, 0.98) and len(sf.cells()) == 7
    cfg = sf.config(cell, 0.06, 0, deep.STUDY, 0.5)
    assert cfg.algorithm.beta == 0.5 and cfg.algorithm.transforms[0].kind == "adamw"
