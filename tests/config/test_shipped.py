"""Every config shipped in configs/ loads, builds, and runs a few rounds from the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from decent.cli import app
from decent.config import build_algorithm, build_topology, expand, load_config
from decent.config._models import LogisticStreamTask
from decent.results import Store

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.toml"))


def test_configs_are_shipped():
    names = {p.stem for p in CONFIGS}
    assert {
        "compare",
        "dat_sgd",
        "dsgd",
        "gradient_tracking",
        "local_updates",
        "digits_dirichlet",
        "time_varying",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_loads_builds_and_runs(path, tmp_path):
    cfg = load_config(path)
    for point in expand(cfg):  # every sweep point's topology and algorithm build
        build_topology(point.config.topology)
        build_algorithm(point.config.algorithm, point.config.rounds)
    res = CliRunner().invoke(
        app,
        [
            "run",
            str(path),
            "--set",
            "rounds=5",
            "--set",
            "eval_every=5",
            "--out",
            str(tmp_path),
            "--no-progress",
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    runs = Store(tmp_path).runs()
    assert list(runs["status"]) == ["finished"]


def test_compare_config_expresses_the_compare_grid():
    """configs/compare.toml is the study `decent compare` runs (minus the tuning)."""
    from decent.studies.compare import CompareSpec as FlagshipSpec

    spec = FlagshipSpec()
    cfg = load_config(CONFIGS[[p.stem for p in CONFIGS].index("compare")])
    points = expand(cfg)
    assert len(points) == len(spec.methods) * len(spec.topologies) * len(spec.seeds)
    combos = {(p.config.algorithm.kind, p.config.topology.kind, p.config.seed) for p in points}
    assert {a for a, _, _ in combos} == set(spec.methods)
    assert {t for _, t, _ in combos} == set(spec.topologies)
    assert {s for _, _, s in combos} == set(spec.seeds)
    assert {p.config.topology.num_nodes for p in points} == {spec.num_nodes}
    for point in points:  # every step size is one of the flagship's tuning grid
        algo = point.config.algorithm
        assert isinstance(algo.lr, float), algo  # a constant step size, not a schedule
        assert any(abs(algo.lr - g) < 1e-15 for g in spec.grid(algo.kind)), algo
    task = points[0].config.task
    assert isinstance(task, LogisticStreamTask), task
    assert (task.kind, task.dim, task.heterogeneity, task.batch_size, task.l2) == (  # type: ignore[attr-defined]
        "logistic_stream",
        spec.dim,
        spec.heterogeneity,
        spec.batch_size,
        spec.l2,
    )
    assert task.eval_samples == spec.eval_samples  # type: ignore[attr-defined]
    assert (cfg.rounds, cfg.eval_every) == (spec.rounds, spec.eval_every)
