"""The studies kit: what every study shares, so that a study is a spec, a grid and figures.

* **Methods**: labels, capabilities and styles read from the algorithm classes of
  :data:`decent.algorithms.ALGORITHMS` (:func:`label`, :func:`horizon_scaled`,
  :func:`needs_clock`, :func:`centralized`, :func:`method_styles`), never a table per study.
* **Specs**: a study spec is a frozen pydantic model (:class:`Spec`); :func:`load_spec` reads
  a TOML file into one, every error one line naming the field
  (:class:`~decent.config.ConfigError`).
* **Finals**: :func:`final_rows` is the last record of each run (of one metric), from the
  long records table; :func:`store_finals` the final metrics the store keeps per run;
  :func:`curves` the records as one row per run and round.
* **Tuning**: :func:`tune` is the one step-size loop: a first grid per cell, extended at its
  edges while the best value sits there, optionally refined around the best, choosing among
  several outputs (e.g. output averaging) on separate tuning seeds. What differs between
  studies (the factor, which edges, how often, whether cells share a grid) is a
  :class:`GridPolicy`; what a point costs (running it) is the ``measure`` argument, or
  :func:`tune_runs` runs each point's configs.
* **Runs**: :func:`run_finals` runs configs as one sweep and reads their final metrics;
  :func:`run_and_score` runs a tuning round's points as one sweep and scores them;
  :func:`write_tables` writes a study's tables and spec; :func:`markdown_table` for
  ``tables.md``.
* **Figures**: band plots through :func:`decent.report._plots.band_plot`; the panels every
  study figure is made of in :mod:`decent.studies.figures`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, TypeVar

import pandas as pd
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

if TYPE_CHECKING:
    from decent.algorithms.base import Method

K = TypeVar("K", bound=Hashable)

# ---------------------------------------------------------------------- methods


def split_method(name: str) -> tuple[type[Method], list[type[Method]]]:
    """A method's algorithm class and its transform classes, in chain order: a method is a
    registered algorithm ``kind``, or ``kind+transform+...`` (``dsgd+momentum``,
    ``dsgd+quasi_global_momentum``) as a config's
    :attr:`~decent.config.AlgorithmSection.method` names a transformed algorithm.

    Raises:
        ValueError: ``kind`` is not a registered algorithm or a part after it not a
            transform (the message lists them).
    """
    from decent.algorithms import ALGORITHMS
    from decent.algorithms.transforms import TRANSFORMS

    kind, *parts = name.split("+")
    if kind not in ALGORITHMS:
        raise ValueError(f"method {kind!r} is not one of {sorted(ALGORITHMS)}")
    bad = [p for p in parts if p not in TRANSFORMS]
    if bad:
        raise ValueError(
            f"method {name!r}: {', '.join(map(repr, bad))} after '+' is not a gradient "
            f"transform; use one of {sorted(TRANSFORMS)}"
        )
    return ALGORITHMS[kind], [TRANSFORMS[p] for p in parts]


def method_class(kind: str) -> type[Any]:
    """The algorithm class of a method (the registered ``kind``, transforms or not).

    Raises:
        ValueError: ``kind`` is not a method (:func:`split_method`).
    """
    return split_method(kind)[0]


def label(kind: str, *, role: Literal["", "short", "centralized", "transport"] = "") -> str:
    """The name of a method in tables and figures, from its class's ``label``.

    ``role`` adds how it communicates: ``"centralized"`` appends `` (centralized)`` to the
    all-reduce references, ``"short"`` `` (C)``; ``"transport"`` appends ``(all-reduce)``,
    ``(async pairwise)`` (methods on a clock) or ``(gossip)``.

    A transformed method is the algorithm's label and its transforms': ``D-SGD + QGM``.

    >>> label("dsgd"), label("anytime_sgd", role="centralized"), label("ad_psgd", role="transport")
    ('D-SGD', 'Anytime SGD (centralized)', 'AD-PSGD (async pairwise)')
    >>> label("minibatch_sgd+momentum", role="centralized")
    'Minibatch SGD + momentum (centralized)'
    """
    cls, transforms = split_method(kind)
    text = " + ".join(str(c.label or c.name) for c in (cls, *transforms))
    central = bool(getattr(cls, "centralized", False))
    if role == "centralized" and central:
        return f"{text} (centralized)"
    if role == "short" and central:
        return f"{text} (C)"
    if role == "transport":
        if central:
            return f"{text} (all-reduce)"
        return f"{text} (async pairwise)" if needs_clock(kind) else f"{text} (gossip)"
    return text


def horizon_scaled(kind: str) -> bool:
    """Whether the method's largest step is ``lr * T`` (anytime weights): tune ``gamma``."""
    return bool(getattr(method_class(kind), "horizon_scaled", False))


def needs_clock(kind: str) -> bool:
    """Whether the method runs only on a simulated network's clock (AD-PSGD)."""
    return bool(getattr(method_class(kind), "needs_clock", False))


def centralized(kind: str) -> bool:
    """Whether the method averages exactly (all-reduce) rather than gossiping."""
    return bool(getattr(method_class(kind), "centralized", False))


def order(kinds: Iterable[str]) -> dict[str, int]:
    """A method's place in tables: the registry's order, a transformed method right after
    its algorithm (sorted by name), unknown names last (sorted)."""
    from decent.algorithms import ALGORITHMS

    known = list(ALGORITHMS)

    def key(k: str) -> tuple[int, str]:
        base = k.split("+")[0]
        return (known.index(base) if base in ALGORITHMS else len(known), k)

    return {k: i for i, k in enumerate(sorted({*known, *kinds}, key=key))}


METHOD_COLORS: dict[str, str] = {
    "minibatch_sgd": "C9",
    "anytime_sgd": "C1",
    "dsgd": "C0",
    "gradient_tracking": "C2",
    "dat_sgd": "C3",
}
"""Fixed tab10 colours of the methods every study draws (others take the free colours)."""

_MARKERS = dict(zip(METHOD_COLORS, "sDoP*", strict=True))
_SPARE_COLORS = [f"C{i}" for i in range(10) if f"C{i}" not in METHOD_COLORS.values()]
_SPARE_MARKERS = ["X", "h", "p", "<", ">"]


def method_styles(methods: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``{method: {"color", "marker", "linestyle"}}``: the methods of :data:`METHOD_COLORS`
    keep their colour; other names (transformed methods too) take the tab10 colours left
    free, in their sorted order (cycling); centralized methods (the class says so) are dotted.

    >>> method_styles(["dsgd", "zeta", "alpha"])["alpha"]["color"]
    'C4'
    """
    from decent.algorithms import ALGORITHMS

    names = sorted({str(m) for m in methods})
    unknown = [m for m in names if m not in METHOD_COLORS]
    out: dict[str, dict[str, Any]] = {}
    for m in names:
        if m in METHOD_COLORS:
            color, marker = METHOD_COLORS[m], _MARKERS[m]
        else:
            i = unknown.index(m)
            color = _SPARE_COLORS[i % len(_SPARE_COLORS)]
            marker = _SPARE_MARKERS[i % len(_SPARE_MARKERS)]
        out[m] = {
            "color": color,
            "marker": marker,
            "linestyle": ":" if m.split("+")[0] in ALGORITHMS and centralized(m) else "-",
        }
    return out


# ---------------------------------------------------------------------- specs


class Spec(BaseModel):
    """Base of the study specs: frozen, no unknown fields, each field's docstring its
    description.

    Ranges are field constraints and ``Literal`` types; a check across fields is a
    ``model_validator`` raising ``ValueError("<field>: <rule>")``, which :func:`load_spec`
    reports on that field.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, validated as the spec was (``model_copy`` is not)."""
        return self.model_validate(self.model_dump() | changes)


S = TypeVar("S", bound=Spec)


def _method_name(name: str) -> str:
    split_method(name)  # an unknown algorithm or transform: the ValueError lists them
    return name


MethodName = Annotated[str, AfterValidator(_method_name)]
"""A spec's method: a registered algorithm ``kind``, transforms after ``+`` allowed
(:func:`split_method`)."""


def load_spec(cls: type[S], path: str | Path) -> S:
    """Read a study spec from TOML into ``cls``; every problem is one line naming its field.

    Raises:
        ConfigError: the file does not fit ``cls``; one issue per offending field.
    """
    import tomllib

    from decent.config import ConfigError, Issue
    from decent.config._errors import issues_from_validation

    with open(path, "rb") as f:
        raw = tomllib.load(f)
    try:
        return cls.model_validate(raw)
    except ValidationError as err:
        issues = []
        for issue in issues_from_validation(err, cls, raw):
            name, colon, rule = issue.rule.partition(": ")
            if not issue.path and colon and name in cls.model_fields:  # a check across fields
                value = raw.get(name, cls.model_fields[name].get_default(call_default_factory=True))
                issue = Issue(name, value, rule)
            issues.append(issue)
        # a list whose every item is refused is also "too short" (counted after its items)
        refused = {i.path.partition("[")[0] for i in issues if "[" in i.path}
        issues = [i for i in issues if i.path not in refused or "[" in i.path]
        raise ConfigError(issues, source=str(path)) from None


# ---------------------------------------------------------------------- finals


def final_rows(records: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """The last record of each run (of ``metric``, if given), from the long records table
    (``run_id``, ``round``, ``metric``, ``value``, ... as :func:`decent.results.load` gives)."""
    rows = records if metric is None else records[records["metric"] == metric]
    return rows.sort_values("round").groupby("run_id").tail(1)


def curves(records: pd.DataFrame, metrics: Iterable[str], runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, evaluation round) of the long ``records``: the ``metrics`` as
    columns, beside the columns ``runs`` holds for each ``run_id``."""
    wanted = records[records["metric"].isin(list(metrics))]
    wide = wanted.pivot_table(index=["run_id", "round"], columns="metric", values="value")
    return wide.reset_index().merge(runs, on="run_id")


def store_finals(out: str | Path, study: str) -> dict[str, tuple[str, dict[str, float]]]:
    """run id -> (status, final metrics) of a study's runs, as the store keeps them."""
    from decent.results import Store

    if not (Path(out) / "decent.sqlite").exists() and not Path(out).is_file():
        return {}
    with Store(out) as store:
        runs = store.runs(study)
    result: dict[str, tuple[str, dict[str, float]]] = {}
    for row in runs.to_dict("records"):
        final = {
            k[len("final.") :]: float(v)
            for k, v in row.items()
            if k.startswith("final.") and isinstance(v, (int, float)) and not pd.isna(v)
        }
        result[str(row["run_id"])] = (str(row["status"]), final)
    return result


def write_tables(
    folder: Path, spec: Spec, tables: Mapping[str, pd.DataFrame], markdown: str | None = None
) -> list[Path]:
    """Write each table as ``<folder>/<name>.csv``, the spec as ``spec.json`` and
    ``markdown``, if given, as ``tables.md``."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, table in tables.items():
        table.to_csv(folder / f"{name}.csv", index=False)
        paths.append(folder / f"{name}.csv")
    (folder / "spec.json").write_text(json.dumps(spec.model_dump(), indent=2))
    if markdown is not None:
        (folder / "tables.md").write_text(markdown)
    return paths


def markdown_table(
    frame: pd.DataFrame,
    formats: Mapping[str, str] | None = None,
    *,
    default: str = ".3g",
    missing: str | None = "—",
) -> str:
    """A DataFrame as a Markdown table: floats by ``formats[column]`` (else ``default``),
    non-finite floats as ``missing`` (``None``: formatted like the others), the rest as
    ``str``.

    >>> print(markdown_table(pd.DataFrame({"a": ["x"], "b": [0.12345]})))
    | a | b |
    |---|---|
    | x | 0.123 |
    """
    cols = list(frame.columns)
    out = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, float):
                fine = missing is None or math.isfinite(v)
                cells.append(format(v, (formats or {}).get(c, default)) if fine else str(missing))
            else:
                cells.append(str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


# ---------------------------------------------------------------------- tuning


@dataclass(frozen=True)
class GridPolicy:
    """How a tuning grid grows (the policies the studies differ in).

    Attributes:
        factor: A new value beyond an edge is ``edge * factor`` (or ``edge / factor``).
        edges: Which edges extend: ``"both"``, or ``"low"`` only (a consensus step that is
            best at its largest value is the plain method).
        max_extensions: Measuring rounds after the first, at most.
        lower_if_diverged: When every value of a cell diverged, add one below its grid.
        once_per_round: A shared grid extends at one edge per round (the first cell of the
            group at an edge decides); otherwise each cell's own edge extends.
        refine: After the extensions, also measure ``best * refine`` and ``best / refine``.
        digits: Round new values to this many decimals (``None``: exact).
        extend_after_last: Also extend after the last measuring round (the values added
            then are never measured; they only move the grid's edges, which
            :attr:`Choice.edge` reports).
    """

    factor: float = 2.0
    edges: Literal["both", "low"] = "both"
    max_extensions: int = 8
    lower_if_diverged: bool = True
    once_per_round: bool = False
    refine: float | None = None
    digits: int | None = None
    extend_after_last: bool = False


@dataclass
class Choice:
    """A cell's tuned value, the output it chose, and how its grid went."""

    step: float
    averaging: str
    error: float
    tried: list[float]
    edge: bool  # the best stayed on an edge of the grid after every extension


def chosen(
    choices: Mapping[K, Choice], name: Callable[[K], str]
) -> tuple[dict[K, float], list[str]]:
    """Each cell's tuned step, and a note per cell whose step stayed at an edge of its grid.

    Raises:
        RuntimeError: every step of a cell diverged (``name(cell)`` names the cell).
    """
    for cell, c in choices.items():
        if not math.isfinite(c.error):
            raise RuntimeError(
                f"every step size diverged for {name(cell)} (tried {c.tried}); widen lr_grid / "
                "gamma_grid"
            )
    notes = [
        f"{name(k)}: step size {c.step:g} is at the edge of its grid"
        for k, c in choices.items()
        if c.edge
    ]
    return {cell: c.step for cell, c in choices.items()}, notes


Measure = Callable[[list[tuple[K, float]]], Mapping[tuple[K, float], Mapping[str, float]]]
"""Run the given (cell, value) points and return each one's error per output (``inf`` for
a diverged or missing run; means over the tuning seeds)."""


def mean_scores(per_seed: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The mean error per output over tuning seeds (``inf`` if any seed diverged)."""
    runs = list(per_seed)
    keys = list(runs[0]) if runs else []
    return {k: sum(r[k] for r in runs) / len(runs) for k in keys}


def tune(
    cells: Sequence[K],
    first_grid: Callable[[K], Iterable[float]],
    measure: Measure[K],
    policy: GridPolicy = GridPolicy(),
    *,
    group: Callable[[K], Hashable] | None = None,
    on_round: Callable[[int], None] | None = None,
) -> dict[K, Choice]:
    """Tune every cell's value (a step size, a consensus step, ...) on its grid.

    Each round measures the grid values not measured yet, takes each cell's best (least
    error over its values and outputs; ties go to the smaller value), and extends a grid
    whose best sits on an edge (or whose every value diverged) by ``policy.factor``; after
    ``policy.max_extensions`` rounds or when no grid grew it refines (``policy.refine``).

    Args:
        cells: What is tuned separately.
        first_grid: A cell's first grid (cells of one ``group`` share the first cell's).
        measure: Runs points and returns their errors per output (see :data:`Measure`).
        policy: How the grid grows.
        group: Cells that share one grid (default: each cell its own).
        on_round: Called with the round number before each measuring round.

    Returns:
        ``{cell: Choice}``; a cell every value of which diverged has ``error = inf``.
    """
    key = group or (lambda c: c)
    grids: dict[Hashable, set[float]] = {}
    for c in cells:
        grids.setdefault(key(c), set(first_grid(c)))
    scores: dict[tuple[K, float], dict[str, float]] = {}

    def run_missing() -> None:
        todo = [(c, x) for c in cells for x in sorted(grids[key(c)]) if (c, x) not in scores]
        for point, score in measure(todo).items():
            scores[point] = dict(score)

    def best(c: K) -> tuple[float, str, float] | None:
        options = [
            (err, x, avg)
            for x in grids[key(c)]
            if (c, x) in scores
            for avg, err in scores[(c, x)].items()
        ]
        if not options:
            return None
        err, x, avg = min(options, key=lambda o: (o[0], o[1]))
        return x, avg, err

    def new(value: float) -> float:
        return round(value, policy.digits) if policy.digits is not None else value

    def extend() -> bool:
        grown: set[Hashable] = set()
        for c in cells:
            g = key(c)
            if policy.once_per_round and g in grown:
                continue
            found = best(c)
            grid = grids[g]
            if found is None or not math.isfinite(found[2]):
                if policy.lower_if_diverged:
                    grid.add(new(min(grid) / policy.factor))
                    grown.add(g)
                continue
            x = found[0]
            if x == max(grid) and policy.edges == "both":
                grid.add(new(x * policy.factor))
                grown.add(g)
            elif x == min(grid):
                grid.add(new(x / policy.factor))
                grown.add(g)
        return bool(grown)

    for extension in range(policy.max_extensions + 1):
        if on_round is not None:
            on_round(extension)
        run_missing()
        if extension == policy.max_extensions:
            if policy.extend_after_last:
                extend()
            break
        if not extend():
            break
    edges = {}
    for c in cells:
        found = best(c)
        grid = grids[key(c)]
        if policy.extend_after_last:
            span = grid
        else:
            span = {x for x in grid if (c, x) in scores}
        edges[c] = found is not None and found[0] in (min(span), max(span))
    if policy.refine is not None:
        for c in cells:
            found = best(c)
            if found is not None:
                grids[key(c)] |= {found[0] * policy.refine, found[0] / policy.refine}
        if on_round is not None:
            on_round(-1)
        run_missing()
    choices: dict[K, Choice] = {}
    for c in cells:
        x, avg, err = best(c) or (math.nan, "", math.inf)
        tried = sorted(grids[key(c)])
        choices[c] = Choice(x, avg, err, tried, edges[c])
    return choices


def tune_runs(
    out: str | Path,
    cells: Sequence[K],
    first_grid: Callable[[K], Iterable[float]],
    configs: Callable[[K, float], list[Any]],
    metrics: Mapping[str, str] | Callable[[K], Mapping[str, str]],
    policy: GridPolicy = GridPolicy(),
    *,
    group: Callable[[K], Hashable] | None = None,
    desc: str = "tuning",
    **sweep: Any,
) -> dict[K, Choice]:
    """:func:`tune` measuring by runs (:func:`run_and_score`): ``configs(cell, value)`` are
    a point's runs (one per tuning seed), ``metrics`` the final metric of each output. Each
    measuring round is one sweep (``sweep``: keywords of :func:`decent.run.run_points`), its
    progress bar labelled ``desc``, then ``desc, extension <i>`` and ``desc, refinement``."""
    stage = [desc]

    def measure(points: list[tuple[K, float]]) -> dict[tuple[K, float], dict[str, float]]:
        return run_and_score(out, points, configs, metrics, desc=stage[0], **sweep)

    def on_round(i: int) -> None:
        stage[0] = {0: desc, -1: f"{desc}, refinement"}.get(i, f"{desc}, extension {i}")

    return tune(cells, first_grid, measure, policy, group=group, on_round=on_round)


def run_finals(
    out: str | Path, configs: Sequence[Any], **sweep: Any
) -> list[tuple[str, dict[str, float]]]:
    """Run ``configs`` as one sweep (:func:`decent.run.run_points` with the keywords
    ``sweep``: workers, replica batches, resume) and return each one's ``(status, final
    metrics)`` as the store keeps them (``("missing", {})`` for a run it lacks)."""
    from decent.results import run_id_for
    from decent.run import run_points

    if configs:
        run_points(list(configs), out, **sweep).raise_if_not_ok(out)
    finals: dict[str, dict[str, tuple[str, dict[str, float]]]] = {}
    for cfg in configs:
        if cfg.study not in finals:
            finals[cfg.study] = store_finals(out, cfg.study)
    missing: tuple[str, dict[str, float]] = ("missing", {})
    return [finals[c.study].get(run_id_for(c.study, c.run_dict()), missing) for c in configs]


def run_and_score(
    out: str | Path,
    points: Sequence[tuple[K, float]],
    configs: Callable[[K, float], list[Any]],
    metrics: Mapping[str, str] | Callable[[K], Mapping[str, str]],
    **sweep: Any,
) -> dict[tuple[K, float], dict[str, float]]:
    """A :data:`Measure` of runs: each point's configs (one per tuning seed) run as one
    sweep (:func:`run_finals`), then each run's error per output, ``{output: final
    metric}`` by ``metrics`` (or ``metrics(cell)``) through :func:`finite_or_inf`, averaged
    over its seeds (:func:`mean_scores`)."""
    made = [(p, c) for p in points for c in configs(*p)]
    finals = run_finals(out, [c for _, c in made], **sweep)
    per: dict[tuple[K, float], list[dict[str, float]]] = {}
    for (point, _), (status, final) in zip(made, finals, strict=True):
        names = metrics(point[0]) if callable(metrics) else metrics
        per.setdefault(point, []).append(scores(names, status, final))
    return {point: mean_scores(runs) for point, runs in per.items()}


def scores(metrics: Mapping[str, str], status: str, final: Mapping[str, float]) -> dict[str, float]:
    """A run's error per output: ``{output: finite_or_inf(status, final[metric])}``."""
    return {out: finite_or_inf(status, final.get(metric)) for out, metric in metrics.items()}


def finite_or_inf(status: str, value: float | None) -> float:
    """A run's error for tuning: ``inf`` unless it finished with a finite value."""
    if status != "finished" or value is None or not math.isfinite(value):
        return math.inf
    return float(value)


__all__ = [
    "METHOD_COLORS",
    "Choice",
    "GridPolicy",
    "MethodName",
    "Spec",
    "centralized",
    "chosen",
    "curves",
    "final_rows",
    "finite_or_inf",
    "horizon_scaled",
    "label",
    "load_spec",
    "markdown_table",
    "mean_scores",
    "method_class",
    "method_styles",
    "needs_clock",
    "order",
    "run_and_score",
    "run_finals",
    "scores",
    "split_method",
    "store_finals",
    "tune",
    "tune_runs",
    "write_tables",
]
