"""Gradient transforms from a TOML config: the same run as the Python API, to the last bit.

``[[algorithm.transforms]]`` puts :mod:`decent.algorithms.transforms` in front of the
algorithm's step, in list order, exactly as :func:`~decent.algorithms.transforms.with_transforms`
does from Python; the tables are derived from the transform classes' declared parameters.
"""

from __future__ import annotations

import pytest
import torch

import decent
from decent.algorithms.transforms import (
    adam,
    momentum,
    quasi_global_momentum,
    weight_decay,
    with_transforms,
)
from decent.cli.run import describe
from decent.config import ConfigError, build, build_algorithm, loads_config, validate
from decent.results import Store
from decent.run import run_label, run_sweep, train_experiment
from decent.run.single import replica_key

BASE = """
rounds = 12
seed = 3
eval_every = 4
[topology]
kind = "ring"
num_nodes = 6
[task]
kind = "least_squares"
dim = 5
heterogeneity = 1.0
"""

CASES = [
    (
        '[algorithm]\nkind = "dsgd"\nlr = 0.05\n[[algorithm.transforms]]\nkind = "weight_decay"\n'
        'decay = 0.01\n[[algorithm.transforms]]\nkind = "momentum"\nbeta = 0.9\nnesterov = true',
        lambda: with_transforms(
            decent.DSGD(lr=0.05), [weight_decay(0.01), momentum(0.9, nesterov=True)]
        ),
    ),
    (
        '[algorithm]\nkind = "dat_sgd"\nlr = 0.01\n[[algorithm.transforms]]\nkind = "momentum"\n'
        'nesterov = true\n[[algorithm.transforms]]\nkind = "weight_decay"\ndecay = 5e-4',
        lambda: with_transforms(
            decent.DATSGD(lr=0.01), [momentum(0.9, nesterov=True), weight_decay(5e-4)]
        ),
    ),
    (
        '[algorithm]\nkind = "dat_sgd"\nlr = 0.01\n[[algorithm.transforms]]\nkind = "adam"\n'
        'b2 = 0.99\n[[algorithm.transforms]]\nkind = "weight_decay"\ndecay = 0.001',
        lambda: with_transforms(decent.DATSGD(lr=0.01), [adam(b2=0.99), weight_decay(0.001)]),
    ),
    (
        '[algorithm]\nkind = "dsgd"\nlr = 0.05\n[[algorithm.transforms]]\n'
        'kind = "quasi_global_momentum"\nbeta = 0.8',
        lambda: with_transforms(decent.DSGD(lr=0.05), [quasi_global_momentum(0.8)]),
    ),
]


def _timeless(records):  # wall-clock seconds differ between any two runs
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]


@pytest.mark.parametrize(("toml", "make"), CASES)
def test_a_config_with_transforms_equals_the_python_api_run(toml, make) -> None:
    cfg = loads_config(BASE + toml, study="transforms")
    from_config = train_experiment(build(cfg))
    task = decent.tasks.LeastSquares(num_nodes=6, dim=5, heterogeneity=1.0, dtype=torch.float64)
    comm = decent.SimCommunicator(decent.topology.ring(6))
    from_api = decent.train(make(), task, comm, rounds=12, seed=3, eval_every=4)
    assert from_config.status == from_api.status == "finished"
    assert len(from_config.records) == 4
    assert _timeless(from_config.records) == _timeless(from_api.records)
    plain = cfg.algorithm.model_copy(update={"transforms": []})
    without = train_experiment(build(cfg.model_copy(update={"algorithm": plain})))
    assert without.final["eval/loss@mean"] != from_config.final["eval/loss@mean"]


def test_transforms_keep_old_run_ids_and_name_the_method() -> None:
    plain = loads_config(BASE + '[algorithm]\nkind = "dsgd"\nlr = 0.05', study="t")
    assert "transforms" not in plain.run_dict()["algorithm"]
    cfg = loads_config(BASE + CASES[0][0], study="t")
    stored = cfg.run_dict()["algorithm"]["transforms"]
    assert stored == [
        {"kind": "weight_decay", "decay": 0.01},
        {"kind": "momentum", "beta": 0.9, "nesterov": True},
    ]
    assert run_label(cfg).startswith("dsgd+weight_decay+momentum lr=0.05")
    assert "dsgd+weight_decay+momentum (lr=0.05)" in describe(cfg)  # decent run's first line
    assert build_algorithm(cfg.algorithm, cfg.rounds).name == "dsgd+weight_decay+momentum"
    assert replica_key(cfg) != replica_key(cfg.model_copy(update={"seed": 4}))  # run alone


SWEEP = """
[sweep]
seeds = [0, 1]
[sweep.grid]
algorithm = [
  { kind = "dsgd", lr = 0.05 },
  { kind = "dat_sgd", lr = 0.01, transforms = [
      { kind = "momentum", beta = 0.9, nesterov = true },
      { kind = "weight_decay", decay = 5e-4 } ] },
]
"""


def test_a_sweep_stores_the_transforms_and_its_configs_rebuild_the_same_run(tmp_path) -> None:
    """The sweep path runs the transforms, and a stored config rebuilds the same algorithm
    and, trained again, the same records."""
    cfg = loads_config(BASE + '[algorithm]\nkind = "dsgd"\nlr = 0.05\n' + SWEEP, study="sw")
    summary = run_sweep(cfg, tmp_path, workers=1, progress=False)
    assert summary.ok and summary.count("finished") == 4
    store = Store(tmp_path)
    api = with_transforms(
        decent.DATSGD(lr=0.01), [momentum(0.9, nesterov=True), weight_decay(5e-4)]
    )
    transformed = 0
    for run_id, stored in store.configs("sw").items():
        again = validate(stored)
        assert again.run_dict() == stored  # the same run id
        algorithm = build_algorithm(again.algorithm, again.rounds)
        if stored["algorithm"]["kind"] == "dsgd":
            assert "transforms" not in stored["algorithm"] and algorithm == decent.DSGD(lr=0.05)
            continue
        transformed += 1
        assert algorithm == api
        stored_loss = store.records(run_ids=[run_id], metrics=["eval/loss@mean"])
        rerun = train_experiment(build(again)).records
        assert len(rerun) == 4
        assert stored_loss.sort_values("round")["value"].tolist() == [
            r["eval/loss@mean"] for r in rerun
        ]
    assert transformed == 2


def _error(toml: str) -> str:
    with pytest.raises(ConfigError) as err:
        loads_config(BASE + '[algorithm]\nkind = "dsgd"\nlr = 0.05\n' + toml, study="t")
    (issue,) = err.value.issues
    return issue.line()


@pytest.mark.parametrize(
    ("toml", "line"),
    [
        (  # out of range
            '[[algorithm.transforms]]\nkind = "momentum"\nbeta = 1.0',
            "algorithm.transforms[0].beta: 1.0 -> must be < 1.0",
        ),
        (  # out of range, the second entry named
            '[[algorithm.transforms]]\nkind = "momentum"\n'
            '[[algorithm.transforms]]\nkind = "weight_decay"\ndecay = -0.1',
            "algorithm.transforms[1].decay: -0.1 -> must be >= 0.0",
        ),
        (  # unknown kind
            '[[algorithm.transforms]]\nkind = "momentm"',
            'algorithm.transforms[0].kind: "momentm" -> unknown kind; allowed: momentum, '
            "weight_decay, adam, adamw, quasi_global_momentum; did you mean 'momentum'?",
        ),
        (  # no kind
            "[[algorithm.transforms]]\nbeta = 0.9",
            "algorithm.transforms[0].kind: (missing) -> needs a kind",
        ),
        (  # missing required parameter
            '[[algorithm.transforms]]\nkind = "weight_decay"',
            "algorithm.transforms[0].decay: (missing) -> required",
        ),
        (  # wrong type: a string for a number
            '[[algorithm.transforms]]\nkind = "adam"\nb1 = "high"',
            'algorithm.transforms[0].b1: "high" -> must be a number',
        ),
        (  # wrong type: an integer for a boolean
            '[[algorithm.transforms]]\nkind = "momentum"\nnesterov = 1',
            "algorithm.transforms[0].nesterov: 1 -> must be true or false",
        ),
        (  # a parameter of another transform
            '[[algorithm.transforms]]\nkind = "momentum"\ndecay = 0.1',
            "algorithm.transforms[0].decay: 0.1 -> unknown field",
        ),
        (  # a table, not a list of tables
            '[algorithm.transforms]\nkind = "momentum"',
            'algorithm.transforms: {kind = "momentum"} -> must be a list [...]',
        ),
        (  # a number, not a table (a key of the [algorithm] table above)
            "transforms = [0.9]",
            "algorithm.transforms[0]: 0.9 -> must be a table {...}",
        ),
    ],
)
def test_a_bad_transform_is_one_line_naming_the_field(toml, line) -> None:
    assert _error(toml).startswith(line)


def test_top_level_transforms_are_an_unknown_field() -> None:
    """The list lives in the algorithm table: a top-level one is named, not ignored."""
    with pytest.raises(ConfigError) as err:
        loads_config(BASE + CASES[0][0] + '\n[[transforms]]\nkind = "momentum"', study="t")
    (issue,) = err.value.issues
    assert issue.line().startswith('transforms: [{kind = "momentum"}] -> unknown field')
