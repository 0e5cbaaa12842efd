"""One number rule set at the config edge: every absurd value is one ConfigError naming its field.

The rule set (``decent._params``): integers fit in int64; floats are finite, ``0`` or between
``1e-12`` and ``1e12`` in magnitude; sizes are at most ``10**6``; fields whose meaning calls
for a tighter range declare it. Rules between sections (a crash after the last round, every
node Byzantine) are checked on the validated config.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from decent._params import number_problem
from decent.config import ConfigError, ConfigWarning, build, expand, load_config, loads_config

BASE = """
rounds = 4
[topology]
kind = "ring"
num_nodes = 8
[algorithm]
kind = "dsgd"
lr = 0.1
[task]
kind = "least_squares"
"""
DIGITS = ['task.kind="mlp"', 'task.dataset={kind="digits"}']
ROOT = Path(__file__).resolve().parents[2]

CASES = [
    # issue 28 item 5: finite but absurd
    (["task.batch_size=1000000000"], "task.batch_size"),
    (["task.batch_size=9223372036854775807"], "task.batch_size"),
    (["task.batch_size=9223372036854775808"], "task.batch_size"),
    (["task.noise=1e308"], "task.noise"),
    (["task.noise=1e-320"], "task.noise"),
    (['algorithm.kind="dat_sgd"', "algorithm.weight_power=1e308"], "algorithm.weight_power"),
    (['algorithm.kind="dat_sgd"', "algorithm.weight_power=11.0"], "algorithm.weight_power"),
    (["network.delays.max_delay=1000000000"], "network.delays.max_delay"),
    (['network.compute.kind="lognormal"', "network.compute.sigma=1e308"], "network.compute.sigma"),
    ([*DIGITS, "task.hidden=[1000000000]"], "task.hidden[0]"),
    (['task.kind="logistic_stream"', "task.heterogeneity=1e308"], "task.heterogeneity"),
    (['task.kind="logistic_population"', "task.theta_norm=1e308"], "task.theta_norm"),
    (['topology.kind="erdos_renyi"', "topology.p=1e-320"], "topology.p"),
    (["privacy.clip=1.0", "privacy.noise_multiplier=1e-320"], "privacy.noise_multiplier"),
    (["privacy.clip=1.0", "privacy.noise_multiplier=0.001"], "privacy.noise_multiplier"),
    (["privacy.clip=1.0", "privacy.noise_multiplier=1e308"], "privacy.noise_multiplier"),
    (["chebyshev_steps=9223372036854775807"], "chebyshev_steps"),
    (["rounds=1000000000000"], "rounds"),
    (["topology.num_nodes=1000000000"], "topology.num_nodes"),
    (["algorithm.lr=1e308"], "algorithm.lr"),
    (['algorithm.lr={kind="cosine", lr=0.1, total=1000000000000}'], "algorithm.lr.total"),
    (['task.kind="logistic_stream"', "task.eval_samples=1000000000000"], "task.eval_samples"),
    (
        [*DIGITS, 'task.partition={kind="shards", classes_per_node=1000000000}'],
        "task.partition.classes_per_node",
    ),
    # issue 28 item 6: schema-level silent accepts
    (["network.bandwidth=1e-300"], "network.bandwidth"),
    (["network.latency=1e308"], "network.latency"),
    (['network.faults.crashes={"1"=5}'], "network.faults.crashes"),
    (["byzantine.nodes=[0, 0]"], "byzantine.nodes"),
    (["byzantine.nodes=[0, 1, 2, 3, 4, 5, 6, 7]"], "byzantine.nodes"),
    (["byzantine.fraction=0.99"], "byzantine.fraction"),
    ([*DIGITS, 'task.partition={kind="dirichlet", alpha=1e308}'], "task.partition.alpha"),
    ([*DIGITS, 'task.partition={kind="dirichlet", alpha=1001.0}'], "task.partition.alpha"),
    # the reliab fuzz's values on a plain number
    (["task.dim=nan"], "task.dim"),
    (["task.noise=nan"], "task.noise"),
    (["task.noise=inf"], "task.noise"),
    (["task.noise=-inf"], "task.noise"),
    (["task.noise=-1.0"], "task.noise"),
    (["task.heterogeneity=1e12"], "task.heterogeneity"),
]


@pytest.mark.parametrize(
    ("sets", "field"), CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else v
)
def test_absurd_value_is_one_line_naming_the_field(sets, field):
    with pytest.raises(ConfigError) as info:
        loads_config(BASE, sets)
    lines = str(info.value).splitlines()
    assert len(lines) == 2, lines  # the header and one issue
    assert lines[1].strip().startswith(f"{field}:"), lines[1]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (0, True),
        (2**63 - 1, True),
        (2**63, False),
        (-(2**63), True),
        (0.0, True),
        (1e-12, True),
        (-1e-12, True),
        (9.9e-13, False),
        (1e12, True),
        (1.0000001e12, False),
        (float("nan"), False),
        (float("inf"), False),
        (True, True),
        ("text", True),
    ],
)
def test_one_number_rule(value, ok):
    assert (number_problem(value) is None) == ok


def test_leaving_after_a_late_join_is_warned():
    cfg = loads_config(BASE, ['network.faults.joins={"1"=2}', 'network.faults.leaves={"1"=3}'])
    with pytest.warns(ConfigWarning, match=r"network.faults.leaves: node 1 joins at round 2"):
        build(cfg)


def test_values_at_the_bounds_still_build():
    cfg = loads_config(
        BASE,
        [
            "task.heterogeneity=1000.0",
            "network.bandwidth=1.0",
            "network.latency=1e6",
            "network.delays.max_delay=3",
            'network.faults.crashes={"1"=4}',
            "byzantine.nodes=[0, 1, 2, 3, 4, 5, 6]",
            'byzantine.aggregation="mean"',
        ],
    )
    assert cfg.network is not None and cfg.network.faults.crashes == {1: 4}


EXPERIMENTS = sorted(
    p for p in (ROOT / "configs").rglob("*.toml") if "[topology]" in p.read_text(encoding="utf-8")
)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_shipped_config_builds(path):
    """Every experiment in configs/ builds every sweep point: topology, task, algorithm, comm."""
    cfg = load_config(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for point in expand(cfg)[:4]:
            exp = build(point.config)
            assert exp.topology.num_nodes == point.config.topology.num_nodes


def test_eval_every_has_one_default():
    """A config without eval_every evaluates every max(1, rounds // 20) rounds, as documented."""
    from decent.config import reference_markdown
    from decent.run import train_experiment

    cfg = loads_config(BASE, ["rounds=60"])
    rounds = [int(r["round"]) for r in train_experiment(build(cfg)).records]
    assert rounds == list(range(0, 61, 3))
    assert "(None: max(1, rounds // 20))" in reference_markdown()
