"""The studies kit: tuning policies on closed-form errors, spec loading, labels from classes."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import pandas as pd
import pytest
from pydantic import Field, model_validator

from decent.algorithms import ALGORITHMS
from decent.config import ConfigError
from decent.report._plots import ReportError, band_plot
from decent.studies import _kit as kit


def _bowl(best: dict[str, float], diverge_above: float = math.inf):
    """A measure whose error is (log2 x - log2 best)^2 + 1, inf above ``diverge_above``;
    it records every point it was asked for."""
    asked: list[tuple[str, float]] = []

    def measure(points):
        asked.extend(points)
        return {
            (c, x): {
                "last": math.inf
                if x > diverge_above
                else (math.log2(x) - math.log2(best[c])) ** 2 + 1.0
            }
            for c, x in points
        }

    return measure, asked


def test_the_grid_extends_towards_an_optimum_outside_it_and_refines() -> None:
    measure, asked = _bowl({"a": 32.0, "b": 1 / 8, "c": 2.0})
    policy = kit.GridPolicy(refine=math.sqrt(2))
    choices = kit.tune(["a", "b", "c"], lambda c: [1.0, 2.0, 4.0], measure, policy)
    # up by factors of 2 to 32 (and one beyond, to see it rise), down to 1/8 (and 1/16)
    assert choices["a"].step == 32.0 and max(choices["a"].tried) == 64.0
    assert choices["b"].step == 1 / 8 and min(choices["b"].tried) == 1 / 16
    # an interior optimum never extends; refinement adds best * sqrt 2 and best / sqrt 2
    assert choices["c"].tried == pytest.approx([1.0, math.sqrt(2), 2.0, 2 * math.sqrt(2), 4.0])
    assert not any(ch.edge for ch in choices.values())
    assert len(asked) == len(set(asked))  # no point is measured twice


def test_a_diverging_grid_goes_lower_and_a_capped_grid_reports_its_edge() -> None:
    measure, _ = _bowl({"a": 2.0}, diverge_above=0.3)
    choice = kit.tune(["a"], lambda c: [1.0, 2.0], measure)["a"]
    assert choice.step == 0.25  # every value diverged: halve until one runs, then the edge
    measure, _ = _bowl({"a": 1024.0})
    capped = kit.tune(["a"], lambda c: [1.0], measure, kit.GridPolicy(max_extensions=2))["a"]
    assert capped.step == 4.0 and capped.edge
    measure, _ = _bowl({"a": 1.0}, diverge_above=0.0)
    hopeless = kit.GridPolicy(lower_if_diverged=False)
    assert kit.tune(["a"], lambda c: [1.0], measure, hopeless)["a"].error == math.inf


def test_a_shared_grid_extends_once_per_round_and_low_only_policies() -> None:
    # cells a and b share a grid; a wants up, b wants down: one edge per round, a's first
    measure, asked = _bowl({"a": 8.0, "b": 0.5})
    policy = kit.GridPolicy(once_per_round=True, max_extensions=1, extend_after_last=True)
    choices = kit.tune(["a", "b"], lambda c: [1.0, 2.0], measure, policy, group=lambda c: "g")
    assert sorted({x for _, x in asked}) == [1.0, 2.0, 4.0]
    assert choices["b"].tried == [1.0, 2.0, 4.0, 8.0]  # extended after the last round
    assert choices["a"].step == 4.0 and not choices["a"].edge  # 8 added but never measured
    low = kit.GridPolicy(edges="low", factor=2.5, digits=6)
    measure, _ = _bowl({"a": 100.0, "b": 0.01})
    choices = kit.tune(["a", "b"], lambda c: [0.4, 1.0], measure, low)
    assert choices["a"].tried == [0.4, 1.0]  # never above the grid
    assert choices["b"].tried[0] == 0.004096 and choices["b"].step == 0.01024


def test_ties_go_to_the_smaller_value_and_outputs_compete() -> None:
    def measure(points):
        return {(c, x): {"last": 1.0, "tail": 0.5 if x == 2.0 else 1.0} for c, x in points}

    choice = kit.tune(["a"], lambda c: [1.0, 2.0, 3.0], measure, kit.GridPolicy(max_extensions=0))
    assert (choice["a"].step, choice["a"].averaging) == (2.0, "tail")

    def flat(points):
        return {(c, x): {"last": 1.0} for c, x in points}

    fixed = kit.GridPolicy(max_extensions=0)
    assert kit.tune(["a"], lambda c: [3.0, 1.0], flat, fixed)["a"].step == 1.0


def test_labels_and_capabilities_come_from_the_classes() -> None:
    for kind, cls in ALGORITHMS.items():
        assert kit.label(kind) == cls.label
        assert kit.horizon_scaled(kind) == cls.horizon_scaled
    # the hard-coded tuples this replaced missed these two anytime methods
    assert kit.horizon_scaled("accelerated_dat_sgd") and kit.horizon_scaled("choco_dat_sgd")
    assert kit.label("minibatch_sgd", role="transport") == "Minibatch SGD (all-reduce)"
    assert kit.label("dsgd", role="transport") == "D-SGD (gossip)"
    assert kit.label("anytime_sgd", role="short") == "Anytime SGD (C)"
    assert kit.method_styles(["anytime_sgd", "dat_sgd"])["anytime_sgd"]["linestyle"] == ":"
    with pytest.raises(ValueError, match="'adam' is not one of"):
        kit.label("adam")


class _Spec(kit.Spec):
    rounds: int = Field(default=10, ge=1)
    grid: tuple[float, ...] = (0.1,)
    last: int = 0

    @model_validator(mode="after")
    def _across_fields(self) -> _Spec:
        if self.last > self.rounds:
            raise ValueError(f"last: must be <= rounds = {self.rounds}")
        return self


def test_one_loader_names_the_field_in_one_line(tmp_path) -> None:
    path = tmp_path / "spec.toml"
    path.write_text("rounds = 5\ngrid = [0.1, 0.2]\n")
    assert kit.load_spec(_Spec, path) == _Spec(rounds=5, grid=(0.1, 0.2))
    for text, line in [
        ("rounds = 5\nrunds = 3\n", "runds: 3 -> unknown field; did you mean 'rounds'?"),
        ("rounds = 0\n", "rounds: 0 -> must be >= 1"),
        ('rounds = "x"\n', 'rounds: "x" -> must be an integer'),
        ("last = 20\n", "last: 20 -> must be <= rounds = 10"),  # a check across fields
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError) as err:
            kit.load_spec(_Spec, path)
        assert len(err.value.issues) == 1 and err.value.issues[0].line().startswith(line)


def test_final_rows_are_the_last_record_of_each_run() -> None:
    df = pd.DataFrame(
        {
            "run_id": ["a", "a", "b", "b", "a"],
            "round": [10, 0, 5, 7, 10],
            "metric": ["m", "m", "m", "m", "n"],
            "value": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    last = kit.final_rows(df, "m").set_index("run_id")["value"]
    assert last.to_dict() == {"a": 1.0, "b": 4.0}


def test_band_plot_draws_mean_and_band_and_refuses_nothing(tmp_path) -> None:
    rows = pd.DataFrame(
        {
            "round": [1, 1, 2, 2],
            "value": [1.0, 3.0, 0.5, 1.5],
            "metric": "m",
            "algorithm.kind": "dsgd",
            "topology.kind": "ring",
        }
    )
    path = band_plot(
        [("m", "error", rows)], tmp_path / "f.png", column="topology.kind",
        hue="algorithm.kind", hues=["dsgd"],
    )  # fmt: skip
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ReportError, match="empty"):
        band_plot(
            [("m", "error", rows.iloc[:0])], tmp_path / "g.png", column="topology.kind",
            hue="algorithm.kind", hues=["dsgd"],
        )  # fmt: skip


@pytest.mark.parametrize(
    ("band", "low", "high"), [("range", [1.0, 0.5], [3.0, 1.5]), ("std", None, None)]
)
def test_band_plot_range_band_spans_the_measured_runs(
    tmp_path, monkeypatch, band, low, high
) -> None:
    from matplotlib.axes import Axes

    seen: list[tuple[list[float], list[float]]] = []
    real = Axes.fill_between

    def spy(self, x, y1, y2, **kw):  # records the band's edges, then draws it for real
        seen.append((list(y1), list(y2)))
        return real(self, x, y1, y2, **kw)

    monkeypatch.setattr(Axes, "fill_between", spy)
    rows = pd.DataFrame(
        {"round": [1, 1, 2, 2], "value": [1.0, 3.0, 0.5, 1.5], "metric": "m",
         "algorithm.kind": "dsgd", "topology.kind": "ring"}
    )  # fmt: skip
    band_plot(
        [("m", "error", rows)], tmp_path / "f.png", column="topology.kind",
        hue="algorithm.kind", hues=["dsgd"], band=band,
    )  # fmt: skip
    std = [2**0.5, 0.5**0.5]  # sample std of (1, 3) and (0.5, 1.5)
    expected = (
        (low, high) if band == "range" else ([2 - std[0], 1 - std[1]], [2 + std[0], 1 + std[1]])
    )
    assert len(seen) == 1
    assert seen[0][0] == pytest.approx(expected[0]) and seen[0][1] == pytest.approx(expected[1])


def test_a_failed_run_stops_the_study_with_its_error_not_as_a_divergence(tmp_path) -> None:
    """A run that raises is not a step size that diverged: tuning on it would call every
    step size diverged. The study stops with one line naming the run and its error, and
    the CLI turns that into exit 1."""
    import typer

    from decent.algorithms import DSGD, register
    from decent.cli._common import user_errors
    from decent.config import loads_config
    from decent.run import SweepFailedError

    @dataclasses.dataclass(frozen=True)
    class Breaks(DSGD):
        name: ClassVar[str] = "breaks_at_round_3"

        def update(self, state, grads, comm, t):  # type: ignore[no-untyped-def]
            if t == 3:
                raise RuntimeError("boom at round 3")
            return super().update(state, grads, comm, t)

    register(Breaks)
    try:

        def configs(cell: str, lr: float) -> list:
            text = f"""
            study = "breaks"
            rounds = 8
            [topology]
            kind = "ring"
            num_nodes = 4
            [algorithm]
            kind = "{cell}"
            lr = {lr}
            [task]
            kind = "least_squares"
            dim = 3
            """
            return [loads_config(text)]

        points = [("dsgd", 0.01), ("breaks_at_round_3", 0.01)]
        with pytest.raises(SweepFailedError, match=r"1 of 2 runs .* failed: .*boom at round 3"):
            kit.run_and_score(
                tmp_path, points, configs, {"err": "eval/subopt@mean"}, workers=1, progress=False
            )
        # the finished run is kept: rerunning scores it from the store
        scored = kit.run_and_score(
            tmp_path, points[:1], configs, {"err": "eval/subopt@mean"}, workers=1, progress=False
        )
        assert math.isfinite(scored[points[0]]["err"])
        with pytest.raises(typer.Exit) as exit_, user_errors():
            kit.run_and_score(
                tmp_path, points, configs, {"err": "eval/subopt@mean"}, workers=1, progress=False
            )
        assert exit_.value.exit_code == 1
    finally:
        del ALGORITHMS["breaks_at_round_3"]
