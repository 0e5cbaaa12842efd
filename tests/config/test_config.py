"""Config schema, overrides, sweeps, building and error messages."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from decent.algorithms import DATSGD, DSGD, Cosine, Warmup
from decent.comm import SimCommunicator
from decent.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    build,
    expand,
    load_config,
    loads_config,
    parse_override,
)
from decent.run import train_experiment

BASE = """
rounds = 20
eval_every = 5

[topology]
kind = "ring"
num_nodes = 8

[algorithm]
kind = "dat_sgd"
lr = 0.001

[task]
kind = "least_squares"
dim = 4
"""


def lines(err: ConfigError) -> list[str]:
    return str(err).splitlines()[1:]


def test_load_defaults_study_to_file_stem(tmp_path):
    path = tmp_path / "my_study.toml"
    path.write_text(BASE)
    cfg = load_config(path)
    assert cfg.study == "my_study"
    assert cfg.topology.kind == "ring" and cfg.topology.num_nodes == 8
    assert load_config(path, study="other").study == "other"


def test_models_are_frozen_and_forbid_extra():
    cfg = loads_config(BASE)
    with pytest.raises(ValidationError):
        cfg.rounds = 3  # type: ignore[misc]
    with pytest.raises(ConfigError) as err:
        loads_config("unknown_key = 1\n" + BASE)
    assert lines(err.value)[0].startswith("  unknown_key: 1 -> unknown field (allowed: study, name")


def test_overrides_parse_toml_values_and_bare_strings():
    assert parse_override("algorithm.lr=0.05") == (["algorithm", "lr"], 0.05)
    assert parse_override("topology.kind=torus") == (["topology", "kind"], "torus")
    assert parse_override('sweep.grid."algorithm.lr"=[1, 2]') == (
        ["sweep", "grid", "algorithm.lr"],
        [1, 2],
    )
    assert parse_override("task.hidden=[8, 8]") == (["task", "hidden"], [8, 8])
    cfg = loads_config(BASE, ["algorithm.lr=0.05", "topology.num_nodes=64", "rounds=7"])
    assert (cfg.algorithm.lr, cfg.topology.num_nodes, cfg.rounds) == (0.05, 64, 7)


def test_changing_kind_drops_fields_the_new_kind_lacks():
    raw = {"topology": {"kind": "torus", "num_nodes": 16, "rows": 4}}
    out = apply_overrides(raw, ["topology.kind=ring"])
    assert out["topology"] == {"kind": "ring", "num_nodes": 16}
    out = apply_overrides(raw, ["topology.kind=grid"])  # grid also has rows
    assert out["topology"] == {"kind": "grid", "num_nodes": 16, "rows": 4}


def test_schedule_tables_build_to_schedule_objects():
    cfg = loads_config(
        BASE,
        ['algorithm.lr={kind = "warmup", steps = 5, then = {kind = "cosine", lr = 0.1}}'],
    )
    exp = build(cfg)
    assert isinstance(exp.algorithm, DATSGD)
    sched = exp.algorithm.lr
    assert isinstance(sched, Warmup) and isinstance(sched.then, Cosine)
    assert sched.then.total == cfg.rounds  # cosine's total defaults to the run length
    assert math.isclose(sched(1), 0.1 / 5)


def test_build_gives_runtime_objects_and_trains():
    cfg = loads_config(BASE, ["algorithm.kind=dsgd", "algorithm.lr=0.05"])
    exp = build(cfg)
    assert isinstance(exp.algorithm, DSGD) and isinstance(exp.comm, SimCommunicator)
    assert exp.task.num_nodes == exp.topology.num_nodes == 8
    result = train_experiment(exp)
    assert result.status == "finished"
    assert result.records[-1]["round"] == 20.0


def test_build_dataset_task_float32():
    cfg = loads_config(
        BASE,
        [
            'task={kind = "mlp", dataset = {kind = "random", num_samples = 80, num_features = 3},'
            ' hidden = [4], partition = {kind = "dirichlet", alpha = 0.5}}',
            "dtype=float32",
        ],
    )
    exp = build(cfg)
    assert exp.task.dtype.is_floating_point and str(exp.task.dtype) == "torch.float32"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("algorithm.lr=-1", "algorithm.lr: -1 -> must be >= 0.0"),
        ("topology.kind=rng", 'topology.kind: "rng" -> unknown kind; allowed: ring, torus'),
        ("algorithm.lrr=3", "algorithm.lrr: 3 -> unknown field; did you mean 'lr'?"),
        ("task.dim=abc", 'task.dim: "abc" -> must be an integer'),
        ("topology.num_nodes=true", "topology.num_nodes: true -> must be an integer"),
        ("dtype=float16", "dtype: \"float16\" -> must be one of 'float32' or 'float64'"),
        ("algorithm.lr=nan", "algorithm.lr: nan -> must be a finite number"),
        ("rounds.x=1", "rounds: 20 -> is not a table; cannot set rounds.x"),
        ("algorithm.lr={kind='cosin', lr=1}", 'algorithm.lr.kind: "cosin" -> unknown kind'),
        ("task={kind='mlp'}", "task.dataset: (missing) -> required field is missing"),
        ("nonsense", '--set: "nonsense" -> expected KEY=VALUE'),
    ],
)
def test_error_lines_name_path_value_and_rule(override, expected):
    with pytest.raises(ConfigError) as err:
        loads_config(BASE, [override])
    assert any(line.strip().startswith(expected) for line in lines(err.value)), str(err.value)


def test_unknown_kind_suggests_closest():
    with pytest.raises(ConfigError) as err:
        loads_config(BASE, ["algorithm.kind=dsdg"])
    assert "did you mean 'dsgd'?" in str(err.value)


def test_several_problems_give_one_line_each():
    with pytest.raises(ConfigError) as err:
        loads_config(BASE, ["algorithm.lr=-1", "rounds=0", "task.noise=-2"])
    body = lines(err.value)
    assert len(body) == 3
    assert str(err.value).startswith("invalid config in <string> (3 problems):")


def test_missing_section_and_syntax_error():
    with pytest.raises(ConfigError) as err:
        loads_config("rounds = 5\n[topology]\nkind = 'ring'\nnum_nodes = 4\n")
    assert {ln.split(":")[0].strip() for ln in lines(err.value)} == {"algorithm", "task"}
    with pytest.raises(ConfigError) as err:
        loads_config("rounds = = 5")
    assert "not valid TOML" in str(err.value)


def test_build_errors_become_config_errors():
    with pytest.raises(ConfigError) as err:
        build(loads_config(BASE, ["topology.num_nodes=2"]))
    assert lines(err.value)[0].startswith('  topology: {kind = "ring", num_nodes = 2} -> ring')
    with pytest.raises(ConfigError) as err:
        build(loads_config(BASE, ["backend=dist"]))
    assert "decent launch" in str(err.value)
    with pytest.raises(ConfigError) as err:
        build(
            loads_config(
                BASE, ['task={kind="softmax_regression", dataset={kind="libsvm", path="nope.svm"}}']
            )
        )
    assert "task:" in str(err.value) and "not found" in str(err.value)


def test_sweep_expands_grid_in_order_times_seeds():
    cfg = loads_config(
        BASE,
        [
            'sweep.grid."topology.num_nodes"=[8, 16]',
            'sweep.grid.algorithm=[{kind="dsgd", lr=0.1}, {kind="gradient_tracking", lr=0.05}]',
            "sweep.seeds=[0, 1]",
        ],
    )
    points = expand(cfg)
    assert len(points) == 8
    combos = [(p.config.topology.num_nodes, p.config.algorithm.kind, p.config.seed) for p in points]
    assert combos[:4] == [
        (8, "dsgd", 0),
        (8, "dsgd", 1),
        (8, "gradient_tracking", 0),
        (8, "gradient_tracking", 1),
    ]
    assert all(p.config.sweep is None for p in points)
    # a table replaces the whole sub-table: dsgd has no weight_power left over from dat_sgd
    assert points[0].config.algorithm.model_dump() == {
        "kind": "dsgd",
        "lr": 0.1,
        "transforms": [],
        "variant": "atc",
        "local_steps": 1,
    }


def test_sweep_errors_point_at_the_grid_entry():
    with pytest.raises(ConfigError) as err:
        loads_config(BASE, ['sweep.grid.algorithm=[{kind="dsgd", lr=0.1}, {kind="dsgd"}]'])
    assert lines(err.value) == [
        "  sweep.grid.algorithm[1].lr: (missing) -> required field is missing"
    ]
    with pytest.raises(ConfigError) as err:
        loads_config(BASE, ['sweep.grid."algorithm.lr"=[0.1, -1]'])
    assert lines(err.value) == ['  sweep.grid."algorithm.lr"[1]: -1 -> must be >= 0.0']
    with pytest.raises(ConfigError) as err:
        loads_config(BASE, ['sweep.grid."algorithm.lr"=[]'])
    assert lines(err.value) == ['  sweep.grid."algorithm.lr": [] -> must not be empty']
    with pytest.raises(ConfigError) as err:
        loads_config(BASE, ["sweep.seeds=[]"])
    assert lines(err.value) == ["  sweep.seeds: [] -> must not be empty"]


def test_run_dict_round_trips_and_excludes_sweep():
    cfg = loads_config(BASE, ["sweep.seeds=[1, 2]"])
    data = cfg.run_dict()
    assert "sweep" not in data
    again = ExperimentConfig.model_validate(data)
    assert again.run_dict() == data


def test_new_run_options_keep_old_run_ids_and_build_what_they_say():
    from decent.comm import ChebyshevCommunicator
    from decent.config import build, validate

    raw = {
        "study": "s",
        "rounds": 4,
        "topology": {"kind": "ring", "num_nodes": 8},
        "algorithm": {"kind": "dsgd", "lr": 0.1},
        "task": {"kind": "least_squares", "dim": 3},
    }
    plain = validate(raw, "t").run_dict()
    assert "averages" not in plain and "chebyshev_steps" not in plain  # ids unchanged
    fast = validate(raw | {"chebyshev_steps": 3, "averages": ["tail"]}, "t")
    assert fast.run_dict()["chebyshev_steps"] == 3 and fast.run_dict()["averages"] == ["tail"]
    comm = build(fast).comm
    assert isinstance(comm, ChebyshevCommunicator) and comm.steps == 3
    result = train_experiment(build(fast))
    assert "eval/subopt@tail" in result.final
    assert result.final["comm/messages"] == 3 * 4 * 16  # 3 exchanges per round, 16 per mix
    with pytest.raises(ConfigError, match="chebyshev_steps"):
        validate(raw | {"chebyshev_steps": 0}, "t")
