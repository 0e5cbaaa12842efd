"""The scaling study: how many machines before it hurts, and does DAT-SGD raise that?

At a fixed sample budget ``N = M * T * B`` (``M`` machines, ``T`` rounds, ``B`` samples per
machine and round) every method runs on every topology for ``M`` in powers of two, on one
global problem split over the machines (:class:`~decent.tasks.LeastSquares` with
``components``: the same objective for every ``M``), measuring ``f(x) - f*`` in closed form.
:mod:`decent.studies.thresholds` then gives per (method, topology, N) the critical ``M*``
against the best single machine (and the method's own ``M = 1``), the penalty
``err(graph, M) / err(complete, M)`` and the exponent of ``M*`` in ``N`` beside the theory's.

Protocol (what makes the comparison fair):

* **Step sizes** per cell, by the mean error over the tuning seeds (one seed picks steps at
  the edge of stability by luck): a factor-2 grid extended while its best sits on an edge
  (a diverged edge bounds it), then refined by sqrt(2) (:data:`POLICY`); the anytime methods
  in ``gamma = lr * T^p`` (their step on ``w`` grows like ``lr * t^p``).
* **Output averaging** (last iterate, uniform tail, t-weighted; no extra communication) is
  chosen with the step size on the tuning seeds.
* **Evaluation** on separate seeds at the chosen pair; 95% Student-t intervals.
* ``M = 1``: the references (single-machine SGD and Anytime SGD) run there; a method equal
  to a reference at ``M = 1`` (D-SGD is SGD, DAT-SGD Anytime SGD, bit for bit; gradient
  tracking SGD up to rounding) borrows its runs, and gradient tracking borrows D-SGD's
  complete-graph runs (with exact averaging both are minibatch SGD).

Every stage is one resumable :func:`~decent.run.run_points` call.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field, field_validator, model_validator

from decent.config import ExperimentConfig
from decent.results import run_id_for
from decent.studies import _kit as kit
from decent.studies import figures as figs
from decent.studies import thresholds
from decent.studies._kit import Choice, GridPolicy

AVERAGING = {
    "last": "eval/subopt@mean",
    "tail": "eval/subopt@tail",
    "weighted": "eval/subopt@weighted",
}
"""Output averaging -> the metric that measures it."""

_MIN_NODES = {"ring": 3, "torus": 9, "exponential": 2, "complete": 1}


class MethodSpec(kit.Spec):
    """One method of the study: an algorithm with fixed hyperparameters (not the step)."""

    name: str
    """Name in tables and figures (unique in the study)."""
    kind: str
    """The algorithm kind (decent.algorithms.ALGORITHMS)."""
    label: str | None = None
    """Human label (default: the algorithm's)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Other hyperparameters."""
    same_at_one: str | None = None
    """A reference method this one equals exactly at M = 1 (its M = 1 runs are reused)."""
    same_on_complete: str | None = None
    """A method this one equals exactly on the complete graph (gradient tracking with exact
    averaging is D-SGD there); its complete-graph runs are reused."""
    chebyshev_steps: int = Field(default=1, ge=1)
    """Accelerated gossip: K mixing steps per round (and batch K)."""
    experimental: bool = False
    """Labelled experimental in tables/figures."""
    topologies: list[str] | None = None
    """Only these of the study's topologies (None: all)."""
    budgets: list[int] | None = None
    """Only these of the study's budgets N (None: all)."""


def _default_methods() -> list[MethodSpec]:
    return [
        MethodSpec(name="dsgd", kind="dsgd", same_at_one="minibatch_sgd"),
        MethodSpec(name="gradient_tracking", kind="gradient_tracking", same_at_one="minibatch_sgd"),
        MethodSpec(name="dat_sgd", kind="dat_sgd", same_at_one="anytime_sgd"),
    ]


def _default_references() -> list[MethodSpec]:
    return [
        MethodSpec(name="minibatch_sgd", kind="minibatch_sgd", label="SGD (one machine)"),
        MethodSpec(name="anytime_sgd", kind="anytime_sgd", label="Anytime SGD (one machine)"),
    ]


class ScalingSpec(kit.Spec):
    """What a scaling study runs; the defaults are the study of ``docs/results/scaling.md``."""

    study: str = "scaling"
    """Study name in the store (tuning: <study>-tune)."""
    budgets: list[int] = Field(default_factory=lambda: [2**10, 2**12, 2**14, 2**16])
    """Sample budgets N = M * T * B."""
    max_machines: int = Field(default=4096, ge=2)
    """Largest M (a power of two)."""
    min_machines: int = Field(default=2, ge=2)
    """Smallest M > 1 (a power of two; M = 1 always runs)."""
    min_rounds: int = Field(default=4, ge=1)
    """Smallest T = N / (M B) a cell may have."""
    topologies: list[str] = Field(
        default_factory=lambda: ["ring", "torus", "random_regular", "exponential", "complete"]
    )
    """ring, torus, random_regular (an expander), exponential, complete."""
    expander_degree: int = Field(default=4, ge=2)
    """Degree of the random regular graph."""
    methods: list[MethodSpec] = Field(default_factory=_default_methods)
    references: list[MethodSpec] = Field(default_factory=_default_references)
    task: dict[str, Any] = Field(
        default_factory=lambda: {
            "kind": "least_squares",
            "dim": 100,
            "noise": 0.5,
            "heterogeneity": 1.0,
            "hessian_heterogeneity": 0.8,
            "spectrum": "power",
            "power": 1.0,
            "seed": 0,
        }
    )
    """The least-squares task (num_nodes, components, batch_size are set)."""
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=1)
    tune_seeds: list[int] = Field(default_factory=lambda: [1000, 1001], min_length=1)
    """Seeds the step size and averaging are chosen on (mean error over them)."""
    lr_grid: list[float] = Field(default_factory=lambda: [2.0**k for k in range(-9, 2)])
    """First step sizes tried (factor 2 apart)."""
    gamma_grid: list[float] = Field(default_factory=lambda: [2.0**k for k in range(-4, 7)])
    """First gamma = lr * T tried for the anytime methods."""
    max_extensions: int = Field(default=8, ge=0)
    """Grid extensions at most per cell."""
    evals_per_run: int = Field(default=4, ge=1)
    """Evaluations per run (the last is used)."""
    delta: float = Field(default=1.0, gt=0.0)
    """Tolerance: within (1 + delta) of the reference."""
    workers: int | None = Field(default=None, ge=1)

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, value: list[int]) -> list[int]:
        if not value or any(n < 1 or n & (n - 1) for n in value):
            raise ValueError("budgets must be powers of two, e.g. [1024, 4096]")
        return sorted(set(value))

    @field_validator("topologies")
    @classmethod
    def _topologies(cls, value: list[str]) -> list[str]:
        known = ("ring", "torus", "random_regular", "exponential", "complete")
        bad = [t for t in value if t not in known]
        if bad or not value:
            raise ValueError(f"topologies may be {list(known)}, got {bad or value}")
        return value

    @model_validator(mode="after")
    def _check(self) -> ScalingSpec:
        from decent.algorithms import ALGORITHMS

        for name in ("max_machines", "min_machines"):
            value = getattr(self, name)
            if value & (value - 1):
                raise ValueError(f"{name}: must be a power of two")
        names = [m.name for m in [*self.methods, *self.references]]
        if len(set(names)) != len(names):
            raise ValueError(f"methods: names must be unique, got {names}")
        refs = [r.name for r in self.references]
        for group, m in [(g, m) for g in ("methods", "references") for m in getattr(self, g)]:
            if m.kind not in ALGORITHMS:
                raise ValueError(f"{group}: kind {m.kind!r} is not one of {sorted(ALGORITHMS)}")
            if m.same_at_one is not None and m.same_at_one not in refs:
                raise ValueError(
                    f"{group}: {m.name}.same_at_one = {m.same_at_one!r} is not a reference"
                )
            if m.budgets is not None and not set(m.budgets) <= set(self.budgets):
                raise ValueError(
                    f"{group}: {m.name}.budgets = {m.budgets} must be among the study's "
                    f"budgets {self.budgets}"
                )
            if m.same_on_complete is not None and m.same_on_complete not in names:
                raise ValueError(
                    f"{group}: {m.name}.same_on_complete = {m.same_on_complete!r} is not a method"
                )
        return self

    # ------------------------------------------------------------------ the grid

    def machines(self, budget: int, method: MethodSpec) -> list[int]:
        """The M of one budget: powers of two with T >= min_rounds (min .. max_machines)."""
        batch = method.chebyshev_steps
        out, m = [], self.min_machines
        while m <= self.max_machines and budget // (m * batch) >= self.min_rounds:
            out.append(m)
            m *= 2
        return out

    def exists(self, topology: str, m: int) -> bool:
        """Whether the topology has an M-node member (a torus needs 3 x 3, ...)."""
        if topology == "random_regular":
            return m > self.expander_degree and (m * self.expander_degree) % 2 == 0
        return m >= _MIN_NODES[topology]

    def labels(self) -> dict[str, str]:
        out = {}
        for m in [*self.methods, *self.references]:
            label = m.label or kit.label(m.kind)
            out[m.name] = label + (" (experimental)" if m.experimental else "")
        return out


@dataclass(frozen=True)
class Cell:
    """One (method, topology, M, N) of the study."""

    method: str
    topology: str
    machines: int
    budget: int

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.method, self.topology, self.machines, self.budget)


def cells(spec: ScalingSpec) -> list[Cell]:
    """Every cell the study runs: references at M = 1, methods at M >= 2 on every graph."""
    out = [Cell(r.name, "complete", 1, n) for r in spec.references for n in spec.budgets]
    for method in spec.methods:
        for n in spec.budgets:
            if method.budgets is not None and n not in method.budgets:
                continue
            if method.same_at_one is None:
                out.append(Cell(method.name, "complete", 1, n))
            for topology in spec.topologies:
                if method.topologies is not None and topology not in method.topologies:
                    continue
                for m in spec.machines(n, method):
                    if spec.exists(topology, m):
                        out.append(Cell(method.name, topology, m, n))
    return out


def _method(spec: ScalingSpec, name: str) -> MethodSpec:
    return next(m for m in [*spec.methods, *spec.references] if m.name == name)


def _topology(spec: ScalingSpec, kind: str, m: int) -> dict[str, Any]:
    if kind == "random_regular":
        return {"kind": kind, "num_nodes": m, "k": spec.expander_degree, "seed": 0}
    return {"kind": kind, "num_nodes": m}


def _rounds(cell: Cell, method: MethodSpec) -> int:
    return cell.budget // (cell.machines * method.chebyshev_steps)


def lr_of(spec: ScalingSpec, cell: Cell, step: float) -> float:
    """The step size of a grid value: ``step`` itself, or ``gamma / T^p`` for the anytime
    methods, whose largest step on ``w`` is ``lr * T^p`` (weights ``alpha_t = t^p``)."""
    method = _method(spec, cell.method)
    if not kit.horizon_scaled(method.kind):
        return step
    power = float(method.params.get("weight_power", 1.0))
    return step / _rounds(cell, method) ** power


def config_of(
    spec: ScalingSpec, cell: Cell, step: float, seed: int, study: str
) -> ExperimentConfig:
    """The validated config of one run of ``cell`` at grid value ``step``."""
    method = _method(spec, cell.method)
    rounds = _rounds(cell, method)
    raw: dict[str, Any] = {
        "study": study,
        "name": f"{cell.method} {cell.topology} M={cell.machines} N={cell.budget} step={step:.6g}",
        "seed": seed,
        "rounds": rounds,
        "eval_every": max(1, rounds // spec.evals_per_run),
        "per_node_eval": "final" if study == spec.study else "none",
        "averages": ["tail", "weighted"],
        "topology": _topology(spec, cell.topology, cell.machines),
        "algorithm": {"kind": method.kind, "lr": lr_of(spec, cell, step), **method.params},
        "task": {
            **spec.task,
            "batch_size": method.chebyshev_steps,
            "components": spec.max_machines,
        },
    }
    if method.chebyshev_steps > 1:
        raw["chebyshev_steps"] = method.chebyshev_steps
    return ExperimentConfig.model_validate(raw)


# ---------------------------------------------------------------------- tuning


POLICY = GridPolicy(factor=2.0, edges="both", lower_if_diverged=True, refine=math.sqrt(2))
"""Factor-2 extension at both edges (and below a grid that diverged), then a factor-sqrt(2)
refinement around the best (``max_extensions`` comes from the spec)."""


def tune(spec: ScalingSpec, out: Path, *, progress: bool = True) -> dict[Cell, Choice]:
    """Tune every cell's step size and averaging on the tuning seeds (see the module doc)."""
    study = f"{spec.study}-tune"

    def first_grid(c: Cell) -> list[float]:
        return spec.gamma_grid if kit.horizon_scaled(_method(spec, c.method).kind) else spec.lr_grid

    choices = kit.tune_runs(
        out,
        cells(spec),
        first_grid,
        lambda c, step: [config_of(spec, c, step, seed, study) for seed in spec.tune_seeds],
        AVERAGING,
        dataclasses.replace(POLICY, max_extensions=spec.max_extensions),
        workers=spec.workers,
        progress=progress,
        desc=f"{spec.study} tuning",
        longest_first=True,
    )
    kit.chosen(choices, lambda c: f"{c.method} on {c.topology} (M={c.machines}, N={c.budget})")
    return choices


def evaluate_choices(
    spec: ScalingSpec, out: Path, choices: dict[Cell, Choice], *, progress: bool = True
) -> pd.DataFrame:
    """Run every cell at its tuned step with the evaluation seeds; return the cells table.

    One row per (cell, seed): ``method, topology, N, M, seed, error`` (the chosen
    averaging's final ``f(x) - f*``; inf when diverged), plus ``averaging``, ``step``,
    ``lr``, ``error_last``, ``error_tail``, ``error_weighted``, ``worst_node`` (the last
    iterate's worst node), ``consensus`` and ``bytes_per_node``.
    """
    keys = [(c, seed) for c in choices for seed in spec.seeds]
    configs = [config_of(spec, c, choices[c].step, seed, spec.study) for c, seed in keys]
    finals = kit.run_finals(
        out,
        configs,
        workers=spec.workers,
        progress=progress,
        longest_first=True,
        desc=f"{spec.study} evaluation",
    )
    rows = []
    for (c, seed), cfg, (status, final) in zip(keys, configs, finals, strict=True):
        score = kit.scores(AVERAGING, status, final)
        choice = choices[c]
        rows.append(
            {
                "method": c.method,
                "topology": c.topology,
                "N": c.budget,
                "M": c.machines,
                "seed": seed,
                "error": score[choice.averaging],
                "averaging": choice.averaging,
                "step": choice.step,
                "lr": cfg.algorithm.lr,
                "edge": choice.edge,
                **{f"error_{a}": v for a, v in score.items()},
                "worst_node": final.get("eval/subopt@node_max", math.nan),
                "consensus": final.get("consensus/dist2", math.nan),
                "bytes_per_node": final.get("comm/bytes_per_node_mean", math.nan),
                "status": status,
            }
        )
    table = pd.DataFrame(rows)
    borrowed = []
    for method in spec.methods:  # M = 1 of a method that is a reference there
        if method.same_at_one is not None:
            same = table[(table["method"] == method.same_at_one) & (table["M"] == 1)].copy()
            same["method"] = method.name
            borrowed.append(same)
        if method.same_on_complete is not None:
            same = table[
                (table["method"] == method.same_on_complete)
                & (table["topology"] == "complete")
                & (table["M"] > 1)
            ].copy()
            same["method"] = method.name
            borrowed.append(same)
    return pd.concat([table, *borrowed], ignore_index=True)


# ---------------------------------------------------------------------- outputs


@dataclass
class ScalingResult:
    """Tables of a finished study (all also written as CSV)."""

    cells: pd.DataFrame
    summary: pd.DataFrame
    reference: pd.Series
    critical: pd.DataFrame
    critical_own: pd.DataFrame
    curve: pd.DataFrame
    penalty: pd.DataFrame
    slopes: pd.DataFrame
    wall_s: float
    store: Path | None = None


def analyse(
    spec: ScalingSpec, table: pd.DataFrame, wall_s: float = math.nan, store: Path | None = None
) -> ScalingResult:
    """The study's numbers from its cells table (no training)."""
    summary = thresholds.summarize(table[list(thresholds.CELL_COLUMNS)])
    refs = [r.name for r in spec.references]
    ref = thresholds.reference(summary, refs)
    critical = thresholds.critical_m(summary, ref, spec.delta)
    own = thresholds.critical_m(summary, None, spec.delta)
    curve = thresholds.critical_m_curve(summary, ref, [0.1, 0.25, 0.5, 1.0, 2.0, 4.0])
    pen = thresholds.penalty(summary)
    slopes = thresholds.fit_slopes(
        table[list(thresholds.CELL_COLUMNS)], refs, delta=spec.delta, n_boot=1000
    )
    # a method named otherwise (e.g. "accelerated_cheb4") gets its algorithm's exponents
    kinds = {m.name: m.kind for m in spec.methods}
    slopes["theory"] = [
        theory if theory == theory else thresholds.THEORY_SLOPES.get((kinds.get(m, m), t), math.nan)
        for m, t, theory in zip(slopes["method"], slopes["topology"], slopes["theory"], strict=True)
    ]
    return ScalingResult(table, summary, ref, critical, own, curve, pen, slopes, wall_s, store)


def write_outputs(spec: ScalingSpec, result: ScalingResult, folder: Path) -> list[Path]:
    """CSV tables and the figures of ``docs/results/scaling.md`` into ``folder``."""
    labels = spec.labels()
    names = ("cells", "summary", "critical", "critical_own", "curve", "penalty", "slopes")
    paths = kit.write_tables(folder, spec, {name: getattr(result, name) for name in names})
    methods = [m.name for m in spec.methods]
    summary = result.summary
    paths.append(
        figs.error_vs_m(
            summary, result.reference, folder / "error_vs_m.png", labels, delta=spec.delta
        )
    )
    pen = result.penalty[result.penalty["method"].isin(methods)]
    graphs = tuple(t for t in ("ring", "torus") if t in spec.topologies) or (spec.topologies[0],)
    budgets = [spec.budgets[0], spec.budgets[-1]] if len(spec.budgets) > 1 else spec.budgets
    paths.append(figs.penalty_vs_m(pen, folder / "penalty_vs_m.png", graphs, budgets, labels))
    crit = result.critical[result.critical["method"].isin(methods)]
    crit = crit[crit["m_max"] > 1]  # a method that does not run on a graph has only M = 1
    slopes = result.slopes[result.slopes["method"].isin(methods)]
    paths.append(figs.m_star_vs_n(crit, slopes, folder / "m_star_vs_n.png", labels))
    for method in sorted(set(pen[pen["topology"] != "complete"]["method"])):
        path = folder / f"penalty_heatmap_{method}.png"
        largest = max(_method(spec, method).budgets or spec.budgets)
        paths.append(figs.penalty_heatmap(pen, path, method, largest, labels))
    if result.store is not None:
        paths.append(error_vs_round(spec, result, folder / "error_vs_round.png"))
    paths.append(m_star_vs_delta(spec, result, folder / "m_star_vs_delta.png"))
    paths.append(write_markdown(spec, result, folder / "tables.md"))
    return paths


def _md(header: list[str], rows: list[list[str]]) -> str:
    return kit.markdown_table(pd.DataFrame(rows, columns=header, dtype=object))


def write_markdown(spec: ScalingSpec, result: ScalingResult, path: Path) -> Path:
    """The study's tables as Markdown (regenerated with the figures): M* per budget, the
    fitted exponents beside the theory's, and the penalties at the largest budget."""
    labels = spec.labels()
    methods = [m.name for m in spec.methods]
    out = [f"<!-- written by decent.studies.scaling for study {spec.study!r}; do not edit -->"]
    out.append(
        f"Reference (best single-machine error, mean over {len(spec.seeds)} seeds): "
        + ", ".join(f"N = {n}: {v:.3e}" for n, v in result.reference.items())
    )
    for name, crit in (("reference", result.critical), ("own M = 1", result.critical_own)):
        out.append(
            f"\n**M\\* against the {name}** (largest M with every M' <= M within "
            f"(1 + {spec.delta:g}) x it; `+`: the whole grid passes; `-`: M = 2 fails)\n"
        )
        out.append(kit.markdown_table(m_star_table(spec, crit)))
    out.append(
        "\n**Exponent of M\\* in N** (least squares on log-log over uncensored budgets, "
        "95% seed-bootstrap interval; theory: Eisen et al. 2025, and the Kluger-Attia-Koren "
        "abstract for the accelerated method)\n"
    )
    rows = []
    ran = result.critical[result.critical["m_max"] > 1][["method", "topology"]].drop_duplicates()
    slopes = result.slopes.merge(ran, on=["method", "topology"])
    for r in slopes[slopes["method"].isin(methods)].to_dict("records"):
        fit, theory = _fit_text(r)
        rows.append(
            [
                labels.get(r["method"], r["method"]),
                r["topology"],
                fit,
                str(int(r["points"])),
                str(int(r["censored_points"])),
                theory,
            ]
        )
    out.append(_md(["method", "graph", "slope", "budgets used", "censored", "theory"], rows))
    n = spec.budgets[-1]
    pen = result.penalty[(result.penalty["N"] == n) & result.penalty["method"].isin(methods)]
    graphs = [t for t in spec.topologies if t != "complete"]
    ms = sorted(pen["M"].unique())
    out.append(f"\n**Penalty err(graph, M) / err(complete, M) at N = {n}**\n")
    rows = []
    for method in methods:
        for graph in graphs:
            g = pen[(pen["method"] == method) & (pen["topology"] == graph)].set_index("M")
            if g.empty:
                continue
            rows.append(
                [
                    labels.get(method, method),
                    graph,
                    *[f"{g.loc[m, 'penalty']:.2f}" if m in g.index else "" for m in ms],
                ]
            )
    out.append(_md(["method", "graph", *[f"M = {m}" for m in ms]], rows))
    if math.isfinite(result.wall_s):
        out.append(
            f"\nWall time of the pass that wrote this: {result.wall_s:.0f} s (a pass resumed "
            "from the store skips the finished runs; see docs/results/scaling.md for the "
            "measured cost of the whole grid)."
        )
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def _fit_text(r: Any) -> tuple[str, str]:
    """A row of :func:`~decent.studies.thresholds.fit_slopes` (or ``None``) as text: the
    exponent with its interval (``n/a`` unfitted), and the theory's (``""`` if none)."""
    good = r is not None and r["slope"] == r["slope"]
    fit = f"{r['slope']:.2f} [{r['slope_low']:.2f}, {r['slope_high']:.2f}]" if good else "n/a"
    theory = r["theory"] if r is not None else math.nan
    return fit, f"{theory:.3f}" if theory == theory else ""


def m_star_text(row: Any, below: str = "-") -> str:
    """A row of :func:`~decent.studies.thresholds.critical_m` as text: ``M*``, ``+`` when the
    whole grid passes (censored), ``below`` when even the smallest M fails."""
    if row["below_grid"]:
        return below
    return f"{int(row['m_star'])}" + ("+" if row["censored"] else "")


def m_star_table(
    spec: ScalingSpec, critical: pd.DataFrame, slopes: pd.DataFrame | None = None, below: str = "-"
) -> pd.DataFrame:
    """M* per (method, graph) and budget (columns ``N = <n>``) as text (:func:`m_star_text`),
    for the study's methods on the graphs they run on; with ``slopes``
    (:func:`~decent.studies.thresholds.fit_slopes`) also the fitted exponent with its
    interval and the theory's."""
    labels = spec.labels()
    budgets = sorted(critical["N"].unique())
    mine = critical[critical["method"].isin([m.name for m in spec.methods])]
    rows = []
    for (method, topology), g in mine.groupby(["method", "topology"], sort=False):
        if (g["m_max"] <= 1).all():
            continue  # only the borrowed M = 1 cell: the method does not run on this graph
        row = {"method": labels.get(method, method), "graph": topology}
        for n in budgets:
            h = g[g["N"] == n]
            row[f"N = {n}"] = "" if h.empty else m_star_text(h.iloc[0], below)
        if slopes is not None:
            fit = slopes[(slopes["method"] == method) & (slopes["topology"] == topology)]
            row["slope [95% CI]"], row["theory"] = _fit_text(fit.iloc[0] if len(fit) else None)
        rows.append(row)
    columns = ["method", "graph", *[f"N = {n}" for n in budgets]]
    return pd.DataFrame(
        rows, columns=columns + (["slope [95% CI]", "theory"] if slopes is not None else [])
    )


def round_cell(spec: ScalingSpec, result: ScalingResult) -> tuple[str, int, int]:
    """The cell whose curves against rounds are drawn: the sparsest graph, the largest
    budget, and the largest M where every method ran at least 64 rounds."""
    n = spec.budgets[-1]
    topology = next(t for t in ("ring", "torus", *spec.topologies) if t in spec.topologies)
    t = result.cells[(result.cells["N"] == n) & (result.cells["topology"] == topology)]
    methods = [m.name for m in spec.methods if m.name in set(t["method"])]
    common = set.intersection(*(set(t[t["method"] == m]["M"]) for m in methods))
    long_enough = [m for m in common if n // m >= 64] or sorted(common)[:1]
    return topology, max(long_enough), n


def m_star_vs_delta(spec: ScalingSpec, result: ScalingResult, path: Path) -> Path:
    """A scaling study's M* against the tolerance delta at its largest budget, one panel
    per graph (hollow carets: censored at the grid's edge)."""
    n = spec.budgets[-1]
    methods = [m.name for m in spec.methods]
    curve = result.curve[(result.curve["N"] == n) & result.curve["method"].isin(methods)]
    styles, labels = kit.method_styles(methods), spec.labels()
    fig, axes = figs.figure(1, len(spec.topologies), 3.2, 2.9, sharey=True)
    for ax, graph in zip(axes[0], spec.topologies, strict=True):
        for method in methods:
            g = curve[(curve["method"] == method) & (curve["topology"] == graph)]
            if g.empty:
                continue
            style = {"marker": "o"} | styles[method]
            ax.plot(g["delta"], g["m_star"], **style, label=labels.get(method, method))
            cens = g[g["censored"]]
            ax.scatter(
                cens["delta"],
                cens["m_star"],
                marker="^",
                s=60,
                facecolors="none",
                edgecolors=styles[method].get("color", "k"),
            )
        ax.set_yscale("log", base=2)
        figs.panel(ax, graph, "tolerance δ", logy=False)
    axes[0][0].set_ylabel(f"M* at N = {n}")
    title = "M*: largest M within (1 + δ) x the best single-machine error (^: grid edge)"
    return figs.save(fig, axes, path, title)


def error_vs_round(spec: ScalingSpec, result: ScalingResult, path: Path) -> Path:
    """A scaling study's error against the samples used for one cell
    (:func:`round_cell`), every method at its tuned step with its
    chosen averaging, mean over seeds: the anytime behaviour in time."""
    from decent.results import Store

    assert result.store is not None
    topology, machines, budget = round_cell(spec, result)
    labels = spec.labels()
    cells = result.cells
    here = (cells["topology"] == topology) & (cells["M"] == machines)
    rows = cells[(cells["N"] == budget) & (here | (cells["M"] == 1))]
    with Store(result.store, readonly=True) as store:
        records = store.records(spec.study)
    styles = kit.method_styles(sorted(set(rows["method"])))
    fig, axes = figs.figure(1, 1, 7.5, 3.9)
    ax = axes[0][0]
    for method, g in rows.groupby("method", sort=False):
        m = int(g["M"].iloc[0])
        cell = Cell(str(method), topology if m > 1 else "complete", m, budget)
        if m == 1 and method not in [r.name for r in spec.references]:
            continue  # a borrowed M = 1 row: drawn as its reference
        avg, step = str(g["averaging"].iloc[0]), float(g["step"].iloc[0])
        ids = {
            run_id_for(spec.study, config_of(spec, cell, step, int(s), spec.study).run_dict())
            for s in g["seed"]
        }
        rec = records[records["run_id"].isin(ids) & (records["metric"] == AVERAGING[avg])]
        if rec.empty:
            continue
        curve = rec.groupby("round")["value"].mean()
        curve = curve[curve.index > 0]
        where = f"M = {m}" + (f", {topology}" if m > 1 else "")
        ax.plot(
            curve.index * m,
            curve.values,
            **({"marker": "o"} | styles[str(method)]),
            label=f"{labels.get(str(method), method)} ({where}, {avg} iterate)",
        )
    title = (
        f"N = {budget}: error as the samples are used (M = {machines}: {budget // machines} rounds)"
    )
    figs.panel(
        ax,
        title,
        "samples used so far, t M (every curve ends at N)",
        "f(x) − f*  (mean over seeds)",
    )
    return figs.save(fig, axes, path)


def write_report(spec: ScalingSpec, result: ScalingResult, folder: Path) -> Path:
    """The study's HTML report: its answer (M* per method and graph) first, the full table
    folded under it, its figures, then every run."""
    from decent.report import write_report as write

    assert result.store is not None
    figures = [
        (
            "Error against M, per budget and graph; the reference (best single machine) and "
            f"the (1 + {spec.delta:g}) line",
            folder / "error_vs_m.png",
        ),
        (
            "Decentralization penalty: error on the graph / error on the complete graph, same M",
            folder / "penalty_vs_m.png",
        ),
        ("M* against N, fitted and theoretical slopes", folder / "m_star_vs_n.png"),
        ("M* against the tolerance delta", folder / "m_star_vs_delta.png"),
        ("Error against rounds for one cell", folder / "error_vs_round.png"),
    ]
    if len(spec.budgets) < 3:  # M* against N: fewer than three points per line
        figures = [f for f in figures if f[1].name != "m_star_vs_n.png"]
    labels = spec.labels()
    table = headline(spec, result).rename(columns=_HEADLINE_NAMES)
    table["method"] = table["method"].map(lambda m: labels.get(m) or m)
    sentence, compact = answer(spec, result)
    return write(
        result.store,
        spec.study,
        folder,
        answer=sentence,
        lead_table=compact,
        lead_caption=(
            f"M*: the largest M whose error stays within (1 + {spec.delta:g}) x the best single "
            "machine's at the same budget N (+: every M of the grid passes; none: even the "
            "smallest fails). The last columns are at the largest M of the grid. The full "
            "table holds every (N, M, graph, method)."
        ),
        full_table=table,
        lead=[(c, p) for c, p in figures if p.exists()],
        title=f"decent scaling study: {spec.study}",
        figures=False,  # its own figures, above; thousands of tuning runs draw no story
    )


def answer(
    spec: ScalingSpec, result: ScalingResult, budget: int | None = None
) -> tuple[str, pd.DataFrame]:
    """The study's answer at one budget (default: the largest): a sentence, and a table of
    M* per (method, graph) with the error, its ratio to the reference and the penalty
    against the complete graph at the largest M, after the reference's own row."""
    n = budget or spec.budgets[-1]
    labels = spec.labels()
    ref = float(result.reference.loc[n])
    methods = [m.name for m in spec.methods]
    crit = result.critical[(result.critical["N"] == n) & result.critical["method"].isin(methods)]
    s = result.summary[result.summary["N"] == n]
    head = headline(spec, result, n).set_index(["method", "topology", "M"])
    refs = s[(s["M"] == 1) & s["method"].isin([r.name for r in spec.references])]
    best = refs.loc[refs["mean"].idxmin()] if len(refs) else None
    rows: list[dict[str, Any]] = [
        {
            "method": "reference: "
            + (labels.get(str(best["method"]), str(best["method"])) if best is not None else "")
            + (" (one machine)" if best is None or best["method"] not in labels else ""),
            "graph": "—",
            "M*": "—",
            "largest M": 1,
            "f(x̄) − f* at largest M": ref,
            "× reference": 1.0,
            "× complete graph": math.nan,
            "bytes / node": math.nan,
        }
    ]
    said: dict[str, list[str]] = {}
    for r in crit.itertuples():
        if r.m_max <= 1:
            continue  # the method does not run on this graph (only its M = 1 cell)
        m_star = m_star_text(r._asdict(), "none")
        h = head.reindex([(r.method, r.topology, r.m_max)]).iloc[0]  # NaN: the cell never ran
        rows.append(
            {
                "method": labels.get(str(r.method), str(r.method)),
                "graph": r.topology,
                "M*": m_star,
                "largest M": int(r.m_max),
                "f(x̄) − f* at largest M": float(h["error"]),
                "× reference": float(h["vs_reference"]),
                "× complete graph": math.nan
                if r.topology == "complete"
                else float(h["penalty_vs_complete"]),
                "bytes / node": float(h["bytes_per_node"]),
            }
        )
        said.setdefault(labels.get(str(r.method), str(r.method)), []).append(
            f"{m_star} on the {r.topology} graph"
        )
    scales = "; ".join(
        f"{m} {'scales' if i == 0 else ''} to M* = {' and '.join(parts)}".replace("  ", " ")
        for i, (m, parts) in enumerate(said.items())
    )
    edge = " (+: every M tried passes)" if "+" in scales else ""
    sentence = (
        f"At a budget of N = {n:,} samples the best single machine reaches "
        f"f(x̄) − f* = {ref:.3g}. Staying within {1 + spec.delta:g}× of it (δ = {spec.delta:g}), "
        f"{scales}{edge}."
    )
    return sentence, pd.DataFrame(rows)


_HEADLINE_NAMES = {
    "topology": "graph",
    "error": "f(x̄) − f* (mean over seeds)",
    "ci": "± 95% CI",
    "vs_reference": "× best single machine",
    "penalty_vs_complete": "× complete graph, same M",
    "worst_node": "worst node f(xᵢ) − f*",
    "bytes_per_node": "bytes / node",
}


def headline(spec: ScalingSpec, result: ScalingResult, budget: int | None = None) -> pd.DataFrame:
    """The printed table: per (topology, method) at the largest M of one budget."""
    n = budget or spec.budgets[-1]
    keys = ["method", "topology", "M"]
    s = result.summary[result.summary["N"] == n]
    s = s[(s["M"] > 1) | s["method"].isin([x.name for x in spec.references])]
    at = pd.MultiIndex.from_frame(s[keys])
    pen = result.penalty[result.penalty["N"] == n].set_index(keys)["penalty"]
    cells_n = result.cells[result.cells["N"] == n]
    extra = cells_n.groupby(keys)[["worst_node", "bytes_per_node"]].mean().reindex(at)
    ref = float(result.reference.loc[n])
    return pd.DataFrame(
        {
            "N": n,
            "M": s["M"].to_numpy(),
            "topology": s["topology"].to_numpy(),
            "method": s["method"].to_numpy(),
            "error": s["mean"].to_numpy(),
            "ci": ((s["ci_high"] - s["ci_low"]) / 2).to_numpy(),
            "vs_reference": (s["mean"] / ref).to_numpy(),
            "penalty_vs_complete": pen.reindex(at).to_numpy(),
            "worst_node": extra["worst_node"].to_numpy(),
            "bytes_per_node": extra["bytes_per_node"].to_numpy(),
        }
    )


def run(
    spec: ScalingSpec | None = None,
    out_dir: str | Path = "results",
    *,
    folder: str | Path | None = None,
    progress: bool = True,
) -> ScalingResult:
    """Tune, evaluate, analyse and write the study; return its tables.

    Writes ``<out_dir>/decent.sqlite`` (every run), and the CSV tables and figures into
    ``folder`` (default ``<out_dir>/<study>``).
    """
    spec = spec or ScalingSpec()
    out = Path(out_dir)
    start = time.perf_counter()
    choices = tune(spec, out, progress=progress)
    table = evaluate_choices(spec, out, choices, progress=progress)
    result = analyse(spec, table, time.perf_counter() - start, out)
    write_outputs(spec, result, Path(folder) if folder else out / spec.study)
    return result


def flagship_spec() -> ScalingSpec:
    """The README's flagship: the study reduced to one budget, the torus and the complete
    graph, M = 16 .. 4096.

    The same spec as ``configs/studies/flagship.toml`` (a test keeps them equal); a few
    minutes on 2 cores.
    """
    return ScalingSpec(
        study="flagship",
        budgets=[FLAGSHIP_BUDGET],
        min_machines=16,
        topologies=["torus", "complete"],
        methods=[
            MethodSpec(name="dsgd", kind="dsgd", same_at_one="minibatch_sgd"),
            MethodSpec(name="dat_sgd", kind="dat_sgd", same_at_one="anytime_sgd"),
        ],
        seeds=[0, 1, 2],
    )


FLAGSHIP_BUDGET = 2**16
"""The flagship's sample budget N."""


__all__ = [
    "AVERAGING",
    "Cell",
    "Choice",
    "MethodSpec",
    "ScalingResult",
    "ScalingSpec",
    "analyse",
    "answer",
    "cells",
    "config_of",
    "evaluate_choices",
    "flagship_spec",
    "headline",
    "run",
    "tune",
    "write_outputs",
    "write_report",
]
