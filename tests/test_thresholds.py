"""Scaling-study analysis: summaries, critical M, penalties, slopes, figures, the store."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from decent.studies import _kit as kit
from decent.studies import figures as sf
from decent.studies import thresholds as th
from decent.studies._kit import method_styles

REF = "minibatch_sgd"
GRID = [1, 2, 4, 8, 16, 32, 64, 128]


def table(rows: list[tuple]) -> pd.DataFrame:
    """Cells from (method, topology, N, M, seed, error) tuples."""
    return pd.DataFrame(rows, columns=list(th.CELL_COLUMNS))


def curve(errors: dict[int, float], method="dsgd", topology="ring", n=4096, seeds=(0,)):
    """One (method, topology, N) grid: {M: error}, the same error for every seed."""
    return [(method, topology, n, m, s, e) for m, e in errors.items() for s in seeds]


def ref_cells(n=4096, error=1.0, seeds=(0,)):
    return [(REF, "complete", n, 1, s, error) for s in seeds]


def one(df: pd.DataFrame, **keys) -> pd.Series:
    rows = df
    for k, v in keys.items():
        rows = rows[rows[k] == v]
    assert len(rows) == 1, rows
    return rows.iloc[0]


# --------------------------------------------------------------------------- summarize


def test_summarize_one_seed_interval_is_the_mean():
    s = th.summarize(table(curve({1: 2.0, 4: 3.0})))
    assert list(s.columns) == [
        "method", "topology", "N", "M", "mean", "ci_low", "ci_high", "seeds", "diverged"
    ]  # fmt: skip
    assert (s["ci_low"] == s["mean"]).all() and (s["ci_high"] == s["mean"]).all()
    assert s["mean"].tolist() == [2.0, 3.0] and s["seeds"].tolist() == [1, 1]


def test_summarize_interval_matches_scipy_t():
    rng = np.random.default_rng(3)
    errors = rng.lognormal(size=5)
    s = th.summarize(table([("dsgd", "ring", 64, 4, i, e) for i, e in enumerate(errors)]))
    low, high = stats.t.interval(0.95, df=4, loc=errors.mean(), scale=stats.sem(errors))
    row = s.iloc[0]
    assert row["mean"] == pytest.approx(errors.mean(), rel=1e-14)
    assert row["ci_low"] == pytest.approx(low, rel=1e-12)
    assert row["ci_high"] == pytest.approx(high, rel=1e-12)
    lo90, hi90 = stats.t.interval(0.9, df=4, loc=errors.mean(), scale=stats.sem(errors))
    s90 = th.summarize(table([("dsgd", "ring", 64, 4, i, e) for i, e in enumerate(errors)]), 0.9)
    assert (s90["ci_low"].iloc[0], s90["ci_high"].iloc[0]) == pytest.approx((lo90, hi90))


def test_diverged_runs_count_as_inf():
    cells = table([
        ("dsgd", "ring", 64, 4, 0, 1.0),
        ("dsgd", "ring", 64, 4, 1, math.nan),
        ("dsgd", "ring", 64, 4, 2, math.inf),
        ("dsgd", "ring", 64, 8, 0, 1.0),
        ("dsgd", "ring", 64, 8, 1, 3.0),
    ])  # fmt: skip
    s = th.summarize(cells)
    bad, good = one(s, M=4), one(s, M=8)
    assert bad["mean"] == bad["ci_low"] == bad["ci_high"] == math.inf
    assert (bad["seeds"], bad["diverged"]) == (1, 2)
    assert (good["mean"], good["seeds"], good["diverged"]) == (2.0, 2, 0)


def test_summarize_rejects_bad_tables():
    with pytest.raises(ValueError, match=r"missing column\(s\) \['error'\]"):
        th.summarize(table(curve({1: 1.0})).drop(columns="error"))
    with pytest.raises(ValueError, match="sharing"):
        th.summarize(table(curve({1: 1.0}) + curve({1: 2.0})))
    with pytest.raises(ValueError, match="M >= 1"):
        th.summarize(table(curve({0: 1.0})))
    with pytest.raises(ValueError, match="confidence"):
        th.summarize(table(curve({1: 1.0})), confidence=95)


# --------------------------------------------------------------------------- reference


def test_reference_is_the_best_single_machine_mean_per_n():
    cells = table(
        ref_cells(64, 2.0)
        + ref_cells(256, 1.0)
        + [("anytime_sgd", "complete", 64, 1, 0, 1.5), ("anytime_sgd", "ring", 256, 1, 0, 0.5)]
        + [(REF, "complete", 64, 4, 0, 0.1)]  # M > 1: not a reference
    )
    ref = th.reference(th.summarize(cells), [REF, "anytime_sgd"])
    assert ref.to_dict() == {64: 1.5, 256: 0.5} and ref.index.name == "N"


def test_reference_names_what_is_missing():
    cells = table(ref_cells(64) + curve({1: 1.0, 4: 1.0}, n=256))
    s = th.summarize(cells)
    with pytest.raises(ValueError, match=r"N = \[256\]"):
        th.reference(s, [REF])
    with pytest.raises(ValueError, match=r"\['sgd_typo'\]"):
        th.reference(s, [REF, "sgd_typo"])
    with pytest.raises(ValueError, match="non-empty"):
        th.reference(s, [])
    diverged = th.summarize(table([(REF, "complete", 64, 1, 0, math.nan)]))
    with pytest.raises(ValueError, match="diverged at N = \\[64\\]"):
        th.reference(diverged, [REF])


# --------------------------------------------------------------------------- critical M


def smooth(m: int, m0: float = 10.0, k: float = 2.0, c: float = 1.0) -> float:
    """err = c (1 + (M / M0)^k): within (1 + delta) c iff M <= M0 delta^(1/k)."""
    return c * (1.0 + (m / m0) ** k)


def test_critical_m_against_a_reference_by_hand():
    cells = table(ref_cells() + curve({m: smooth(m) for m in GRID}))
    s = th.summarize(cells)
    ref = th.reference(s, [REF])
    c = one(th.critical_m(s, ref, delta=1.0), method="dsgd")  # M <= 10
    assert (c["m_star"], c["m_fail"], c["m_max"], c["baseline"]) == (8, 16, 128, 1.0)
    assert not c["censored"] and not c["below_grid"]
    curve_ = th.critical_m_curve(s, ref, [0.5, 1.0, 3.0])  # M <= 7.07, 10, 17.3
    got = curve_[curve_["method"] == "dsgd"].set_index("delta")["m_star"].to_dict()
    assert got == {0.5: 4.0, 1.0: 8.0, 3.0: 16.0}
    assert list(curve_.columns[:4]) == ["delta", "method", "topology", "N"]


def test_critical_m_own_baseline_by_hand():
    # baseline = err(1) = 1.01, pass iff 1 + (M/10)^2 <= 2.02, M <= 10.1
    cells = table(curve({m: smooth(m) for m in GRID}))
    c = th.critical_m(th.summarize(cells), None, delta=1.0).iloc[0]
    assert c["baseline"] == pytest.approx(1.01) and c["m_star"] == 8


def test_censored_when_every_m_passes():
    cells = table(ref_cells() + curve({m: 1.5 for m in GRID}))
    s = th.summarize(cells)
    c = one(th.critical_m(s, th.reference(s, [REF])), method="dsgd")
    assert c["m_star"] == c["m_max"] == 128 and c["censored"] and math.isnan(c["m_fail"])
    assert not c["below_grid"]


def test_below_grid_when_even_the_smallest_m_fails():
    cells = table(ref_cells() + curve({m: 3.0 for m in GRID}))
    s = th.summarize(cells)
    c = one(th.critical_m(s, th.reference(s, [REF])), method="dsgd")
    assert math.isnan(c["m_star"]) and c["below_grid"] and not c["censored"]
    assert c["m_fail"] == 1


def test_a_dip_after_a_failure_does_not_extend_m_star():
    cells = table(curve({1: 1.0, 4: 1.5, 16: 3.0, 64: 1.2, 256: 1.0}))
    c = th.critical_m(th.summarize(cells), None).iloc[0]
    assert (c["m_star"], c["m_fail"], c["censored"]) == (4, 16, False)


def test_a_diverged_cell_fails_and_a_diverged_single_machine_is_below_grid():
    cells = table(
        curve({1: 1.0, 4: 1.0, 8: math.nan, 16: 1.0})
        + curve({1: math.inf, 4: 1.0}, method="dat_sgd")
    )
    c = th.critical_m(th.summarize(cells), None).set_index("method")
    assert (c.loc["dsgd", "m_star"], c.loc["dsgd", "m_fail"]) == (4, 8)
    assert c.loc["dat_sgd", "below_grid"] and math.isnan(c.loc["dat_sgd", "m_star"])


def test_a_topology_without_m1_borrows_it_from_complete_then_any():
    cells = table(
        curve({1: 1.0, 4: 1.0}, topology="complete")
        + curve({1: 9.0}, topology="torus")  # never used: complete is preferred
        + curve({4: 1.5, 8: 1.9, 16: 2.5}, topology="ring")
        + curve({1: 2.0}, method="dat_sgd", topology="ring")
        + curve({4: 3.0, 8: 5.0}, method="dat_sgd", topology="torus")
    )
    c = th.critical_m(th.summarize(cells), None).set_index(["method", "topology"])
    ring = c.loc[("dsgd", "ring")]
    assert (ring["baseline"], ring["m_star"], ring["m_fail"], ring["m_max"]) == (1.0, 8, 16, 16)
    torus = c.loc[("dat_sgd", "torus")]  # borrows the ring's M = 1 (no complete cell)
    assert (torus["baseline"], torus["m_star"], torus["m_fail"]) == (2.0, 4, 8)


def test_critical_m_validates_its_arguments():
    s = th.summarize(table(ref_cells() + curve({1: 1.0, 4: 1.0})))
    for bad in (0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="delta must be > 0"):
            th.critical_m(s, None, delta=bad)
    with pytest.raises(ValueError, match=r"ref has no baseline for N = \[4096\]"):
        th.critical_m(s, pd.Series({64: 1.0}))
    with pytest.raises(ValueError, match="no M == 1 cell at N = 4096"):
        th.critical_m(th.summarize(table(curve({4: 1.0}))), None)
    with pytest.raises(ValueError, match="at least one"):
        th.critical_m_curve(s, None, [])


# --------------------------------------------------------------------------- penalty


def test_penalty_against_the_complete_graph():
    cells = table(
        [
            *curve({1: 1.0, 4: 2.0, 8: 4.0}, topology="complete", seeds=(0, 1)),
            ("dsgd", "ring", 4096, 4, 0, 5.0),
            ("dsgd", "ring", 4096, 4, 1, 7.0),
            *curve({8: math.nan}, topology="ring"),
            *curve({16: 3.0}, topology="ring"),  # no complete cell at M = 16: dropped
        ]
    )
    s = th.summarize(cells)
    pen = th.penalty(s)
    assert set(zip(pen["topology"], pen["M"], strict=True)) == {
        ("complete", 1), ("complete", 4), ("complete", 8), ("ring", 4), ("ring", 8)
    }  # fmt: skip
    own = pen[pen["topology"] == "complete"]
    assert (own[["penalty", "penalty_low", "penalty_high"]] == 1.0).all().all()
    ring4 = one(pen, topology="ring", M=4)
    row = one(s, topology="ring", M=4)
    assert ring4["penalty"] == 6.0 / 2.0 and ring4["mean_against"] == 2.0
    assert ring4["penalty_low"] == pytest.approx(row["ci_low"] / 2.0)
    assert ring4["penalty_high"] == pytest.approx(row["ci_high"] / 2.0)
    assert one(pen, topology="ring", M=8)["penalty"] == math.inf
    with pytest.raises(ValueError, match="no cell on topology 'star'"):
        th.penalty(s, against="star")


# --------------------------------------------------------------------------- slopes


def step_study(budgets, seeds=(0, 1, 2), noise=0.0, rng=None):
    """M*(N) = N^(1/4) exactly: error 1 up to it, 5 beyond (reference error 1)."""
    rows = []
    for n in budgets:
        star = round(n**0.25)
        for s in seeds:
            jitter = 1.0 if rng is None else float(np.exp(noise * rng.standard_normal()))
            rows.append((REF, "complete", n, 1, s, jitter))
        for m in GRID:
            for s in seeds:
                jitter = 1.0 if rng is None else float(np.exp(noise * rng.standard_normal()))
                rows.append(("dsgd", "torus", n, m, s, (1.0 if m <= star else 5.0) * jitter))
    return table(rows)


def test_fit_slopes_recovers_an_exact_slope_with_a_zero_width_interval():
    budgets = [2**8, 2**12, 2**16, 2**20, 2**32]  # M* = 4, 8, 16, 32, 256 (censored: > 128)
    out = th.fit_slopes(step_study(budgets), [REF], n_boot=50, seed=1)
    row = one(out, method="dsgd")
    assert row["slope"] == 0.25 and row["intercept"] == 0.0
    assert (row["points"], row["censored_points"], row["below_grid_points"]) == (4, 1, 0)
    assert row["slope_low"] == row["slope_high"] == 0.25 and row["boot_used"] == 50
    assert row["theory"] == th.THEORY_SLOPES[("dsgd", "torus")] == 1 / 6
    ref_row = one(out, method=REF)  # a single censored point per N: nothing to fit
    assert math.isnan(ref_row["slope"]) and ref_row["points"] == 0
    assert math.isnan(ref_row["slope_low"]) and ref_row["boot_used"] == 0
    own = one(th.fit_slopes(step_study(budgets), [], against="own", n_boot=0), method="dsgd")
    assert own["slope"] == 0.25 and math.isnan(own["slope_low"])


def test_fit_slopes_interval_covers_the_slope_under_noise_and_is_seeded():
    grid = sorted({round(2 ** (j / 4)) for j in range(45)})  # 1 .. 2048, ratio ~2^(1/4)
    rng = np.random.default_rng(7)
    rows = []
    for n in [2**12, 2**16, 2**20, 2**24, 2**28]:
        m0 = n**0.25
        for s in range(5):
            rows.append((REF, "complete", n, 1, s, float(np.exp(0.05 * rng.standard_normal()))))
            for m in grid:
                noise = float(np.exp(0.3 * rng.standard_normal()))
                rows.append(("dat_sgd", "ring", n, m, s, smooth(m, m0) * noise))
    cells = table(rows)
    a = one(th.fit_slopes(cells, [REF], n_boot=300, seed=5), method="dat_sgd")
    assert a["points"] == 5 and a["slope"] == pytest.approx(0.25, abs=0.05)
    assert a["slope_low"] <= 0.25 <= a["slope_high"] and a["slope_low"] < a["slope_high"]
    assert a["slope_high"] - a["slope_low"] < 0.25
    b = one(th.fit_slopes(cells, [REF], n_boot=300, seed=5), method="dat_sgd")
    assert (a["slope_low"], a["slope_high"]) == (b["slope_low"], b["slope_high"])


def test_fit_slopes_validates_its_arguments():
    cells = step_study([2**8, 2**12])
    with pytest.raises(ValueError, match="delta must be > 0"):
        th.fit_slopes(cells, [REF], delta=0.0)
    with pytest.raises(ValueError, match="against must be"):
        th.fit_slopes(cells, [REF], against="complete")
    with pytest.raises(ValueError, match="n_boot"):
        th.fit_slopes(cells, [REF], n_boot=-1)


def test_theory_slopes_follow_the_fixed_point_derivation():
    # D-SGD: M = sqrt(rho(M)) N^(1/4); DAT-SGD: M = rho(M) N^(1/2); rho ~ M^-p
    for topology, p in (("complete", 0), ("random_regular", 0), ("torus", 1), ("ring", 2)):
        assert th.THEORY_SLOPES[("dsgd", topology)] == pytest.approx(0.25 / (1 + p / 2))
        assert th.THEORY_SLOPES[("dat_sgd", topology)] == pytest.approx(0.5 / (1 + p))
    assert th.THEORY_SLOPES[("dat_sgd", "exponential")] == 0.5


# --------------------------------------------------------------------------- figures


def figure_tables():
    rows = []
    for n in (2**10, 2**14):
        rows += ref_cells(n, 1.0, seeds=(0, 1))
        for method in ("dsgd", "dat_sgd", "my_method"):
            for topology, scale in (("complete", 1.0), ("ring", 3.0), ("torus", 2.0)):
                for m in GRID:
                    if m == 1 and topology != "complete":
                        continue
                    for s in (0, 1):
                        err = smooth(m, n**0.25 / scale) * (1 + 0.1 * s)
                        rows.append((method, topology, n, m, s, err))
    rows.append(("dsgd", "torus", 2**14, 256, 0, math.nan))  # diverged cell
    cells = table(rows)
    s = th.summarize(cells)
    ref = th.reference(s, [REF])
    return cells, s, ref


def read_png(path):
    from matplotlib.image import imread

    assert path.stat().st_size > 0
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    return image


def test_figures_write_png_files(tmp_path):
    cells, s, ref = figure_tables()
    pen = th.penalty(s)
    crit = th.critical_m(s, ref)
    slopes = th.fit_slopes(cells, [REF], n_boot=20)
    paths = [
        sf.error_vs_m(s, ref, tmp_path / "a" / "error.png", labels={"my_method": "Mine"}),
        sf.penalty_vs_m(pen, tmp_path / "penalty.png"),
        sf.m_star_vs_n(crit, slopes, tmp_path / "mstar.png"),
        sf.penalty_heatmap(pen, tmp_path / "heat.png", "dsgd", 2**14),
    ]
    for path in paths:
        read_png(path)
    assert paths[0] == tmp_path / "a" / "error.png"
    with pytest.raises(ValueError, match="no row of method 'nope'"):
        sf.penalty_heatmap(pen, tmp_path / "x.png", "nope", 2**14)
    with pytest.raises(ValueError, match="topologies"):
        sf.penalty_vs_m(pen, tmp_path / "x.png", topologies=("star",))
    curve_ = th.critical_m_curve(s, ref, [0.5, 1.0])
    with pytest.raises(ValueError, match="mixes tolerances"):
        sf.m_star_vs_n(curve_, slopes, tmp_path / "x.png")


def test_method_styles_are_fixed_and_deterministic():
    a = method_styles(["dsgd", "zeta", "alpha", "dat_sgd"])
    b = method_styles(["alpha", "zeta", "minibatch_sgd"])
    assert (
        a["dsgd"]["color"] == kit.METHOD_COLORS["dsgd"] == method_styles(["dsgd"])["dsgd"]["color"]
    )
    assert a["alpha"] == b["alpha"] and a["zeta"] == b["zeta"]
    assert a["alpha"]["color"] != a["zeta"]["color"]
    assert not {a["alpha"]["color"], a["zeta"]["color"]} & set(kit.METHOD_COLORS.values())


# --------------------------------------------------------------------------- the store


def test_from_store_reads_final_errors_n_and_m(tmp_path):
    import warnings

    from decent.config import validate
    from decent.results import Store
    from decent.run import run_sweep

    raw = {
        "study": "scale",
        "rounds": 6,
        "eval_every": 3,
        "per_node_eval": False,
        "seed": 0,
        "topology": {"kind": "ring", "num_nodes": 4},
        "algorithm": {"kind": "dsgd", "lr": 0.05},
        "task": {"kind": "least_squares", "dim": 3, "batch_size": 2},
        "sweep": {
            "seeds": [0, 1],
            "grid": {
                "topology": [
                    {"kind": "complete", "num_nodes": 1},
                    {"kind": "ring", "num_nodes": 4},
                ],
                "algorithm": [
                    {"kind": "dsgd", "lr": 0.05},
                    {"kind": "minibatch_sgd", "lr": 0.05},
                    {"kind": "dsgd", "lr": 50.0},  # diverges
                ],
            },
        },
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_sweep(validate(raw, "t"), tmp_path, workers=1, progress=False)

    def key(row: pd.Series) -> str:
        return f"{row['algorithm.kind']}@{row['algorithm.lr']:g}"

    cells = th.from_store(tmp_path, "scale", method_key=key)
    assert len(cells) == 12
    assert set(cells["method"]) == {"dsgd@0.05", "minibatch_sgd@0.05", "dsgd@50"}
    assert (cells["N"] == cells["M"] * 6 * 2).all()
    assert set(zip(cells["topology"], cells["M"], strict=True)) == {("complete", 1), ("ring", 4)}
    with Store(tmp_path, readonly=True) as store:
        final = store.final("scale")
    final = final[final["metric"] == "eval/subopt@mean"].set_index("run_id")["value"]
    done = cells[cells["status"] == "finished"]
    assert len(done) >= 8
    assert done["error"].tolist() == final.loc[done["run_id"]].tolist()
    diverged = cells[cells["status"] == "diverged"]
    assert len(diverged) >= 1 and (diverged["error"] == math.inf).all()
    assert (diverged["method"] == "dsgd@50").all()

    plain = th.from_store(tmp_path, "scale")  # method = algorithm.kind
    assert set(plain["method"]) == {"dsgd", "minibatch_sgd"}
    s = th.summarize(cells)
    assert (s["seeds"] + s["diverged"] == 2).all()
    with pytest.raises(ValueError, match="no runs of study 'other'"):
        th.from_store(tmp_path, "other")
    with pytest.raises(ValueError, match="never recorded 'eval/nothing'"):
        th.from_store(tmp_path, "scale", metric="eval/nothing")
