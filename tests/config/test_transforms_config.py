"""Gradient transforms from a TOML config: the same run as the Python API, to the last bit.

``transforms = [...]`` (top level) puts :mod:`decent.algorithms.transforms` in front of the
algorithm's step, in list order, exactly as :func:`~decent.algorithms.transforms.with_transforms`
does from Python.
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
from decent.config import ConfigError, build, loads_config
from decent.run import run_label, train_experiment
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
        '[algorithm]\nkind = "dsgd"\nlr = 0.05\n[[transforms]]\nkind = "weight_decay"\n'
        'decay = 0.01\n[[transforms]]\nkind = "momentum"\nbeta = 0.9\nnesterov = true',
        lambda: with_transforms(
            decent.DSGD(lr=0.05), [weight_decay(0.01), momentum(0.9, nesterov=True)]
        ),
    ),
    (
        '[algorithm]\nkind = "dat_sgd"\nlr = 0.01\n[[transforms]]\nkind = "adam"\nb2 = 0.99\n'
        '[[transforms]]\nkind = "weight_decay"\ndecay = 0.001',
        lambda: with_transforms(decent.DATSGD(lr=0.01), [adam(b2=0.99), weight_decay(0.001)]),
    ),
    (
        '[algorithm]\nkind = "dsgd"\nlr = 0.05\n[[transforms]]\nkind = "quasi_global_momentum"\n'
        "beta = 0.8",
        lambda: with_transforms(decent.DSGD(lr=0.05), [quasi_global_momentum(0.8)]),
    ),
]


@pytest.mark.parametrize(("toml", "make"), CASES)
def test_a_config_with_transforms_equals_the_python_api_run(toml, make) -> None:
    cfg = loads_config(BASE + toml, study="transforms")
    from_config = train_experiment(build(cfg))
    task = decent.tasks.LeastSquares(num_nodes=6, dim=5, heterogeneity=1.0, dtype=torch.float64)
    comm = decent.SimCommunicator(decent.topology.ring(6))
    from_api = decent.train(make(), task, comm, rounds=12, seed=3, eval_every=4)
    assert from_config.status == from_api.status == "finished"

    def timeless(records):  # wall-clock seconds differ between any two runs
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]

    assert len(from_config.records) == 4
    assert timeless(from_config.records) == timeless(from_api.records)
    plain = train_experiment(build(cfg.model_copy(update={"transforms": []})))
    assert plain.final["eval/loss@mean"] != from_config.final["eval/loss@mean"]


def test_transforms_keep_old_run_ids_and_name_the_method() -> None:
    plain = loads_config(BASE + '[algorithm]\nkind = "dsgd"\nlr = 0.05', study="t")
    assert "transforms" not in plain.run_dict()
    cfg = loads_config(BASE + CASES[0][0], study="t")
    assert [t["kind"] for t in cfg.run_dict()["transforms"]] == ["weight_decay", "momentum"]
    assert run_label(cfg).startswith("dsgd+weight_decay+momentum lr=0.05")
    assert replica_key(cfg) != replica_key(cfg.model_copy(update={"seed": 4}))  # run alone


@pytest.mark.parametrize(
    ("toml", "line"),
    [
        (
            '[[transforms]]\nkind = "momentum"\nbeta = 1.0',
            "transforms[0].beta: 1.0 -> must be < 1.0",
        ),
        (
            '[[transforms]]\nkind = "momentm"',
            'transforms[0].kind: "momentm" -> unknown kind; allowed: momentum, weight_decay, '
            "adam, quasi_global_momentum; did you mean 'momentum'?",
        ),
        ('[[transforms]]\nkind = "weight_decay"', "transforms[0].decay: (missing) -> required"),
    ],
)
def test_a_bad_transform_is_one_line_naming_the_field(toml, line) -> None:
    with pytest.raises(ConfigError) as err:
        loads_config(BASE + '[algorithm]\nkind = "dsgd"\nlr = 0.05\n' + toml, study="t")
    (issue,) = err.value.issues
    assert issue.line().startswith(line)
