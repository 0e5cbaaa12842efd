"""The scaling study's pipeline on a tiny spec (the pipeline, not the science).

Tuning extends its grid until the best step is interior, refines it, evaluates on other
seeds; M = 1 runs are borrowed only where the identity holds exactly; the tables and
figures come out; a rerun trains nothing.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from decent.algorithms import DATSGD, DSGD, AnytimeSGD, GradientTracking, MinibatchSGD
from decent.comm import SimCommunicator
from decent.config import ConfigError
from decent.engine import train
from decent.results import Store
from decent.studies import _kit as kit
from decent.studies import scaling as sc
from decent.tasks import LeastSquares
from decent.topology import complete

TASK = {
    "kind": "least_squares",
    "dim": 3,
    "noise": 0.3,
    "heterogeneity": 1.0,
    "hessian_heterogeneity": 0.5,
    "seed": 0,
}


def _spec(**kw: Any) -> sc.ScalingSpec:
    base: dict[str, Any] = dict(
        budgets=[64, 256],
        max_machines=16,
        topologies=["ring", "complete"],
        methods=[
            sc.MethodSpec(name="dsgd", kind="dsgd", same_at_one="minibatch_sgd"),
            sc.MethodSpec(name="dat_sgd", kind="dat_sgd", same_at_one="anytime_sgd"),
        ],
        task=TASK,
        seeds=[0, 1],
        lr_grid=[2.0**-9],  # far too small: the grid must grow to find an interior best
        gamma_grid=[2.0**-3, 2.0**-2, 2.0**-1],
        evals_per_run=2,
        workers=1,
    )
    return sc.ScalingSpec.model_validate(base | kw)


def test_the_grid_pairs_every_m_with_its_rounds() -> None:
    spec = _spec()
    cells = sc.cells(spec)
    ring = sorted({c.machines for c in cells if c.topology == "ring" and c.budget == 64})
    assert ring == [4, 8, 16]  # a ring needs 3 nodes; T = 64 / 16 = 4 = min_rounds
    for c in cells:
        cfg = sc.config_of(spec, c, 0.5, 0, "s")
        assert cfg.topology.num_nodes * cfg.rounds * cfg.task.batch_size == c.budget
        assert getattr(cfg.task, "components", None) == spec.max_machines
    # the anytime methods are tuned in gamma = lr * T
    c = next(c for c in cells if c.method == "dat_sgd" and c.machines == 4)
    assert sc.config_of(spec, c, 0.5, 0, "s").algorithm.lr == 0.5 / (c.budget // 4)

    # a method may run on some budgets only (the references still run on all)
    methods = [spec.methods[0], spec.methods[1].model_copy(update={"budgets": [64]})]
    some = sc.cells(_spec(methods=methods))
    assert {c.budget for c in some if c.method == "dat_sgd"} == {64}
    assert {c.budget for c in some if c.method == "dsgd"} == {64, 256}
    assert {c.budget for c in some if c.method == "anytime_sgd"} == {64, 256}


def test_tiny_study_tunes_evaluates_and_reports(tmp_path) -> None:
    spec = _spec()
    result = sc.run(spec, tmp_path, progress=False)
    table = result.cells
    assert set(table["method"]) == {"dsgd", "dat_sgd", "minibatch_sgd", "anytime_sgd"}
    assert len(table) == len(sc.cells(spec)) * 2 + 2 * 2 * 2  # + borrowed M = 1 rows
    assert (table["status"] == "finished").all()
    assert all(math.isfinite(e) and e > 0 for e in table["error"])
    # the D-SGD grid started at 2^-9 and had to grow: every tuned step is above it
    assert (table[table["method"] == "dsgd"]["step"] > 2.0**-9).all()
    # the chosen averaging's error is the one reported
    for avg in sc.AVERAGING:
        rows = table[table["averaging"] == avg]
        assert (rows["error"] == rows[f"error_{avg}"]).all()
    # M = 1 of D-SGD is SGD's runs, reused
    one = table[(table["M"] == 1) & (table["method"].isin(["dsgd", "minibatch_sgd"]))]
    pivot = one.pivot_table(index=["N", "seed"], columns="method", values="error")
    assert (pivot["dsgd"] == pivot["minibatch_sgd"]).all()
    # the numbers are the thresholds module's on that table
    assert set(result.critical["method"]) >= {"dsgd", "dat_sgd"}
    assert (result.penalty[result.penalty["topology"] == "complete"]["penalty"] == 1.0).all()
    folder = tmp_path / spec.study
    for name in (
        "cells.csv",
        "critical.csv",
        "slopes.csv",
        "error_vs_m.png",
        "m_star_vs_n.png",
        "penalty_vs_m.png",
        "penalty_heatmap_dsgd.png",
        "spec.json",
    ):
        assert (folder / name).stat().st_size > 0, name
    headline = sc.headline(spec, result)
    assert set(headline["N"]) == {256}
    # the report opens with the answer: M* per (method, graph) as the thresholds found it
    sentence, compact = sc.answer(spec, result)
    assert sentence.startswith("At a budget of N = 256 samples")
    assert compact["f(x̄) − f* at largest M"].iloc[0] == result.reference.loc[256]
    crit = result.critical[(result.critical["N"] == 256) & (result.critical["m_max"] > 1)]
    for r in crit[crit["method"].isin(["dsgd", "dat_sgd"])].itertuples():
        row = compact[
            (compact["method"] == spec.labels()[r.method]) & (compact["graph"] == r.topology)
        ]
        shown = "none" if r.below_grid else f"{int(r.m_star)}" + ("+" if r.censored else "")
        assert row["M*"].tolist() == [shown]
    page = sc.write_report(spec, result, folder).read_text(encoding="utf-8")
    assert page.index("<p class='sentence'>") < page.index("Full table") < page.index("<h2>Figures")
    # a rerun trains nothing and gives the same table
    with Store(tmp_path) as store:
        before = len(store.runs())
    again = sc.run(spec, tmp_path, progress=False)
    with Store(tmp_path) as store:
        assert len(store.runs()) == before
    assert again.cells["error"].tolist() == table["error"].tolist()


@pytest.mark.parametrize(
    ("method", "reference"),
    [(DSGD, MinibatchSGD), (GradientTracking, MinibatchSGD), (DATSGD, AnytimeSGD)],
)
def test_what_the_study_borrows_at_one_machine_is_exact(method, reference) -> None:
    """With one node D-SGD is SGD and DAT-SGD Anytime SGD bit for bit; gradient tracking
    is SGD in exact arithmetic (its tracker y + g_t - g_{t-1} rounds: equal to 1e-12)."""
    task = LeastSquares(1, dim=4, heterogeneity=1.0, hessian_heterogeneity=0.5, components=8)
    runs = [
        train(
            cls(lr=0.05),
            task,
            SimCommunicator(complete(1)),
            rounds=50,
            seed=3,
            averages=("tail", "weighted"),
        )
        for cls in (method, reference)
    ]
    exact = method is not GradientTracking
    assert runs[0].output is not None and runs[1].output is not None
    if exact:
        assert torch.equal(runs[0].output, runs[1].output)
    torch.testing.assert_close(runs[0].output, runs[1].output, rtol=1e-12, atol=1e-14)
    for key in ("eval/subopt@mean", "eval/subopt@tail", "eval/subopt@weighted"):
        a, b = runs[0].records[-1][key], runs[1].records[-1][key]
        assert a == b if exact else a == pytest.approx(b, rel=1e-9)


def test_bad_specs_name_the_field(tmp_path) -> None:
    with pytest.raises(ValueError, match="budgets must be powers of two"):
        _spec(budgets=[100])
    with pytest.raises(ValueError, match="topologies may be"):
        _spec(topologies=["star"])
    with pytest.raises(ValueError, match="is not a reference"):
        _spec(methods=[sc.MethodSpec(name="x", kind="dsgd", same_at_one="sgd")])
    with pytest.raises(ValueError, match=r"x.budgets = \[128\] must be among"):
        _spec(methods=[sc.MethodSpec(name="x", kind="dsgd", budgets=[128])])
    path = tmp_path / "bad.toml"
    path.write_text("budgets = [1024]\ndelta = -1\n")
    with pytest.raises(ConfigError, match="delta"):
        kit.load_spec(sc.ScalingSpec, path)


def test_shipped_specs_load_and_the_flagship_file_is_the_built_in_spec() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "configs" / "studies"
    assert kit.load_spec(sc.ScalingSpec, root / "flagship.toml") == sc.flagship_spec()
    full = kit.load_spec(sc.ScalingSpec, root / "scaling.toml")
    # 2^10 .. 2^16 (64x, short of two decades: N = 2^17 did not fit a 2-core session)
    assert len(full.budgets) >= 4 and full.budgets[-1] / full.budgets[0] >= 64
    assert {"ring", "torus", "random_regular", "exponential", "complete"} <= set(full.topologies)
    wide = kit.load_spec(
        sc.ScalingSpec, root / "scaling_wide.toml"
    )  # the budgets span more than two decades
    assert wide.budgets[-1] / wide.budgets[0] >= 100 and wide.task == full.task
    logistic = kit.load_spec(sc.ScalingSpec, root / "scaling_logistic.toml")
    assert logistic.task["kind"] == "logistic_population"
    for spec in (wide, logistic):
        for cell in sc.cells(spec)[:: max(1, len(sc.cells(spec)) // 7)]:  # a few, validated
            sc.config_of(spec, cell, 0.25, 0, spec.study)


def test_a_method_named_otherwise_gets_its_algorithms_theory_exponent() -> None:
    """The slope table's theory column follows the method's kind, not its name."""
    import pandas as pd

    spec = _spec(
        methods=[sc.MethodSpec(name="acc", kind="accelerated_dat_sgd", chebyshev_steps=2)],
        references=[sc.MethodSpec(name="minibatch_sgd", kind="minibatch_sgd")],
    )
    rows = []
    for n in (64, 256):
        for seed in (0, 1):
            rows.append(("minibatch_sgd", "complete", n, 1, seed, 1.0 / n))
            rows.append(("acc", "complete", n, 1, seed, 1.0 / n))
            for m in (4, 8, 16):
                rows.append(("acc", "ring", n, m, seed, m / n**1.5 + 1.0 / n))
    table = pd.DataFrame(rows, columns=["method", "topology", "N", "M", "seed", "error"])
    slopes = sc.analyse(spec, table).slopes.set_index(["method", "topology"])
    assert slopes.loc[("acc", "ring"), "theory"] == pytest.approx(3 / 8)
