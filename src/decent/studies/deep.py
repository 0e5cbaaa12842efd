"""The deep-learning study (issue 29): does DAT-SGD's topology robustness carry over to
neural networks?

Cells are (task, method, graph, M nodes, Dirichlet alpha). Every cell trains on the same
number of samples, ``samples[task]``, so a run has ``samples // (M * batch_size)`` rounds
and accuracy against M is read at a fixed sample budget. Each cell's step size (in
``gamma = lr * T`` for the anytime methods) is tuned on ``tune_seed`` by the final training
loss of the network average (:func:`decent.studies._kit.tune`, the grid extended at its
edges), then the cell runs with every evaluation seed. The all-reduce methods do not see the
graph: they run once per (task, M, alpha), on the complete graph.

Tasks: ``digits_mlp`` (scikit-learn's digits, an MLP), ``mnist1d_cnn`` (MNIST-1D, the
``cnn1d`` task of :mod:`decent.tasks.nets`) and ``stdlib_charlm`` (a byte-level causal
transformer on the standard library's source files, the ``char_lm`` task, whose "accuracy"
is the share of next bytes predicted right and whose loss is in nats per byte; its
Dirichlet alpha spreads each *file's* windows over the nodes, so alpha = 0.1 is close to
every node holding its own files); all run from ordinary configs through the sweep runner
(workers, replica batches, resume). Methods with Adam preconditioning (``dsgd+adamw``)
take their steps from their own grids (``adaptive_lr_grid``, ``adaptive_gamma_grid``):
Adam's step is in parameter units, not gradient units. A method whose algorithm has a
``beta`` (schedule-free D-SGD's interpolation) tunes it with the step (``beta_grid``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import pandas as pd
from pydantic import Field, model_validator

from decent.algorithms.base import hparams
from decent.config import validate
from decent.results import load, run_id_for
from decent.run import run_points
from decent.studies import _kit as kit

STUDY, TUNING_STUDY = "deep", "deep-tuning"
Task = Literal["digits_mlp", "mnist1d_cnn", "stdlib_charlm"]
TASKS: tuple[Task, ...] = get_args(Task)
Cell = tuple[str, str, str, int, float]
"""(task, method, topology, num_nodes, alpha)."""
CELL_KEYS = ("task", "method", "graph", "M", "alpha")
"""A :data:`Cell`'s columns in the records and tables."""


class DeepSpec(kit.Spec):
    """What the study runs (``configs/studies/deep.toml`` is the issue's full study,
    ``deep_quick.toml`` the reduced one the results page shows)."""

    tasks: tuple[Task, ...] = Field(default=TASKS, min_length=1)
    methods: tuple[kit.MethodName, ...] = Field(
        default=("minibatch_sgd", "dsgd", "dat_sgd", "schedule_free_dsgd"), min_length=1
    )
    """Algorithm kinds, or a kind with gradient transforms in front as a config names the
    method (``dsgd+momentum``, ``dsgd+quasi_global_momentum``; :meth:`transforms`)."""
    topologies: tuple[str, ...] = ("ring", "torus", "exponential", "one_peer_exponential")
    num_nodes: tuple[Annotated[int, Field(ge=1)], ...] = Field(default=(4, 16, 64), min_length=1)
    alphas: tuple[Annotated[float, Field(gt=0.0)], ...] = Field(
        default=(0.1, 1.0, 10.0), min_length=1
    )
    samples: dict[str, int] = Field(
        default_factory=lambda: {
            "digits_mlp": 409_600,
            "mnist1d_cnn": 2_048_000,
            "stdlib_charlm": 409_600,
        }
    )
    """Training samples per run (all nodes together), per task."""
    batch_size: int = Field(default=16, ge=1)
    evals: int = Field(default=20, ge=1)
    """Evaluations per run (``eval_every = rounds // evals``)."""
    seeds: tuple[int, ...] = Field(default=(0, 1, 2), min_length=1)
    tune_seed: int = 100
    lr_grid: tuple[float, ...] = Field(default=(0.03, 0.1, 0.3), min_length=1)
    gamma_grid: tuple[float, ...] = Field(default=(0.3, 1.0, 3.0), min_length=1)
    """Anytime methods' grid in gamma = lr * T."""
    adaptive_lr_grid: tuple[float, ...] = Field(default=(0.001, 0.003, 0.01), min_length=1)
    """The grid of methods with an ``adam`` or ``adamw`` transform."""
    adaptive_gamma_grid: tuple[float, ...] = Field(default=(0.003, 0.01, 0.03), min_length=1)
    """The grid in gamma = lr * T of the anytime methods with ``adam`` or ``adamw``."""
    extensions: int = Field(default=3, ge=0)
    """Times a grid may grow (by 3x) at the edge where its best value sits."""
    beta: float = 0.9
    """Schedule-free D-SGD's interpolation and the momentum coefficient of every transform
    with a ``beta`` (``dsgd+momentum``, ``dsgd+quasi_global_momentum``)."""
    beta_grid: tuple[Annotated[float, Field(ge=0.0, le=1.0)], ...] | None = Field(
        default=None, min_length=1
    )
    """The ``beta`` values tuned with the step of a method whose algorithm has one
    (schedule-free D-SGD, ``schedule_free_dsgd``): each beta's step grid is tuned (and
    extended) as a cell's alone, and the cell takes the (step, beta) of least tuning loss
    (ties: the smaller beta). None: the spec's :attr:`beta` alone. Transforms keep
    :attr:`beta`."""
    hidden: tuple[Annotated[int, Field(ge=1)], ...] = (32,)
    channels: int = Field(default=16, ge=1)
    mnist1d_samples: int = Field(default=40_000, ge=1)
    text_files: int | None = Field(default=60, ge=1)
    """``stdlib_charlm``: files of the standard library used (evenly spaced; every fifth
    held out as the test text; None: all)."""
    text_chars: int | None = Field(default=4096, ge=1)
    """``stdlib_charlm``: bytes read from the start of each file (None: all)."""
    context: int = Field(default=32, ge=1)
    """``stdlib_charlm``: window length in bytes."""
    width: int = Field(default=32, ge=1)
    """``stdlib_charlm``: transformer width (2 blocks of 2 heads)."""
    targets: dict[str, float] = Field(
        default_factory=lambda: {"digits_mlp": 0.95, "mnist1d_cnn": 0.9, "stdlib_charlm": 0.5}
    )
    """Test accuracy of the network average that counts as reached (time to target)."""
    straggler_p: float = Field(default=0.05, ge=0.0, le=1.0)
    """Time to target's clock, as the network study's: a gradient takes one time unit, ten
    (``slowdown``) with probability ``straggler_p`` per node and round; a message takes
    ``latency``. All-reduce waits for the slowest node, gossip for the neighbours."""
    slowdown: float = Field(default=10.0, ge=1.0)
    latency: float = Field(default=0.01, ge=0.0)
    dtype: Literal["float32", "float64"] = "float64"
    """Every run's floating dtype (``"float32"``: the CNN trains 1.5x and evaluates ~10x
    faster on a CPU than in float64)."""
    autograd: bool = False
    """``mnist1d_cnn``: gradients by ``vmap(grad(loss))`` instead of the batched closed form
    (equal to rounding; the CNN tables committed before the closed form were made so)."""
    workers: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _across_fields(self) -> DeepSpec:
        least = max(self.num_nodes) * self.batch_size * self.evals
        for task in self.tasks:
            if task not in self.samples:
                raise ValueError(f"samples: give the sample budget of task {task!r}")
            if self.samples[task] < least:
                raise ValueError(
                    f"samples: {task}'s budget gives fewer than `evals` rounds at M = "
                    f"{max(self.num_nodes)}; raise it to at least {least}"
                )
            if not 0.0 < self.targets.get(task, -1.0) <= 1.0:
                raise ValueError(f"targets: give task {task!r} a test accuracy in (0, 1]")
        for m in self.methods:
            self.transforms(m)
        return self

    def transforms(self, method: str) -> list[dict[str, Any]]:
        """The ``[[algorithm.transforms]]`` tables of a method named ``kind+transform+...``
        (:func:`decent.studies._kit.split_method`): a transform's ``beta`` is the spec's
        :attr:`beta`, its other hyperparameters their defaults; a transform with one that
        has none (``weight_decay``'s ``decay``) is refused."""
        tables = []
        for cls in kit.split_method(method)[1]:
            table = self._beta(cls)
            try:
                cls(**table)
            except TypeError as err:
                raise ValueError(
                    f"methods: {method!r}: a deep spec sets only a transform's beta, and "
                    f"{cls.name} needs more ({err})"
                ) from None
            except ValueError as err:
                raise ValueError(f"beta: {method!r} takes the spec's beta, and {err}") from None
            tables.append({"kind": cls.name, **table})
        return tables

    def _beta(self, cls: type, beta: float | None = None) -> dict[str, float]:
        """``{"beta": beta}`` (default the spec's) for a class with a ``beta``
        hyperparameter, else ``{}``."""
        value = self.beta if beta is None else beta
        return {"beta": value} if "beta" in {f.name for f in hparams(cls)} else {}

    def betas(self, cell: Cell) -> tuple[float | None, ...]:
        """The algorithm betas a cell tunes: :attr:`beta_grid` (else the spec's ``beta``)
        for a method whose algorithm class has a ``beta``; ``(None,)`` for the others."""
        if not self._beta(kit.method_class(cell[1])):
            return (None,)
        return self.beta_grid or (self.beta,)

    def rounds(self, task: str, m: int) -> int:
        return self.samples[task] // (m * self.batch_size)

    def cells(self) -> list[Cell]:
        graphs, unbuilt = dict.fromkeys((*self.topologies, "complete")), self.unbuilt()
        return [
            (task, method, graph, m, alpha)
            for task in self.tasks
            for m in self.num_nodes
            for alpha in self.alphas
            for method in self.methods
            for graph in (("complete",) if kit.centralized(method) else graphs)
            if (graph, m) not in unbuilt
        ]

    def outside(self) -> dict[tuple[str, str, int], str]:
        """``(method, graph, M)`` whose mixing matrices the method's analysis does not cover
        (DAT-SGD assumes a symmetric ``W``; one-peer exponential's ``W_t`` is not), with the
        reason: run anyway with ``mixing_check = "warn"`` and named in ``tables.md``."""
        cells = {(c[1], c[2], c[3]): self.rounds(c[0], c[3]) for c in self.cells()}
        found = {k: _violations(*k, rounds) for k, rounds in cells.items()}
        return {k: why for k, why in found.items() if why}

    def unbuilt(self) -> dict[tuple[str, int], str]:
        """``(graph, M)`` pairs that cannot be built (a 2-D torus needs rows, cols >= 3),
        with the reason: left out of :meth:`cells` and named in ``tables.md``."""
        from decent.topology import TopologyError, make

        out = {}
        for graph in self.topologies:
            for m in self.num_nodes:
                try:
                    make(graph, m)
                except TopologyError as err:
                    out[(graph, m)] = str(err)
        return out

    def grid(self, cell: Cell) -> tuple[float, ...]:
        adaptive = any(cls.name in ("adam", "adamw") for cls in kit.split_method(cell[1])[1])
        if kit.horizon_scaled(cell[1]):
            return self.adaptive_gamma_grid if adaptive else self.gamma_grid
        return self.adaptive_lr_grid if adaptive else self.lr_grid

    def config(
        self, cell: Cell, step: float, seed: int, study: str, beta: float | None = None
    ) -> Any:
        """The validated config of one run (``beta``: the algorithm's, default the spec's)."""
        task, method, graph, m, alpha = cell
        rounds = self.rounds(task, m)
        cls = kit.method_class(method)
        algorithm: dict[str, Any] = {"kind": cls.name, "lr": step, **self._beta(cls, beta)}
        if kit.horizon_scaled(method):
            algorithm["lr"] = step / rounds
        if transforms := self.transforms(method):
            algorithm["transforms"] = transforms
        data: dict[str, Any] = {"kind": "digits", "test_fraction": 0.2}
        model: dict[str, Any] = {"kind": "mlp", "hidden": list(self.hidden)}
        if task == "mnist1d_cnn":
            data = {"kind": "mnist1d", "num_samples": self.mnist1d_samples}
            model = {"kind": "cnn1d", "channels": self.channels}
            if self.autograd:
                model["autograd"] = True
        split = {"dataset": data, "partition": {"kind": "dirichlet", "alpha": alpha}}
        if task == "stdlib_charlm":  # reads its own text; alpha spreads each file's windows
            split = {}
            model = {
                "kind": "char_lm",
                "max_files": self.text_files,
                "max_chars": self.text_chars,
                "context": self.context,
                "width": self.width,
                "test_every": 5,
                "partition": "dirichlet",
                "alpha": alpha,
            }
        raw = {
            "study": study,
            "seed": seed,
            "dtype": self.dtype,
            "rounds": rounds,
            **({"mixing_check": "warn"} if _violations(method, graph, m, rounds) else {}),
            "eval_every": max(1, rounds // (self.evals if study == STUDY else 2)),
            "per_node_eval": "final" if study == STUDY else "none",
            "topology": {"kind": graph, "num_nodes": m},
            "algorithm": algorithm,
            "task": {**model, "batch_size": self.batch_size, **split},
        }
        return validate(raw, f"deep {cell}")


@functools.cache
def _violations(method: str, graph: str, m: int, rounds: int) -> str:
    """What ``graph`` at ``m`` nodes breaks of ``method``'s mixing assumptions ('' if none)."""
    from decent.algorithms import mixing_violations
    from decent.topology import make

    found = mixing_violations(kit.method_class(method)(lr=0.1), make(graph, m), rounds)
    return "; ".join(found)


_Unit = tuple[Cell, float | None]
"""One beta of a cell, its step tuned as a cell's alone."""


@dataclass
class Choice(kit.Choice):
    """A cell's tuned step and, for a method with one, its algorithm's ``beta``;
    ``by_beta`` holds every beta's own tuning (the step, its loss, its grid)."""

    beta: float | None = None
    by_beta: dict[float | None, kit.Choice] | None = None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the warnings the study expects: a graph outside a method's analysis (named
    in ``tables.md``) and small shards at alpha = 0.1 (the point of the study)."""
    from decent.algorithms import MixingAssumptionWarning
    from decent.tasks.models import TaskWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MixingAssumptionWarning)
        warnings.simplefilter("ignore", TaskWarning)
        yield


def tune(spec: DeepSpec, out: Path, progress: bool = True) -> dict[Cell, Choice]:
    """Each cell's step (gamma for the anytime methods), and beta where its algorithm has
    one (:meth:`DeepSpec.betas`), by the final training loss of the network average on
    ``tune_seed``; a cell every step of which diverged is left out."""

    with _quiet():
        units: list[_Unit] = [(c, b) for c in spec.cells() for b in spec.betas(c)]
        found = kit.tune_runs(
            out,
            units,
            lambda u: spec.grid(u[0]),
            lambda u, s: [spec.config(u[0], s, spec.tune_seed, TUNING_STUDY, u[1])],
            {"loss": "eval/loss@mean"},
            kit.GridPolicy(factor=3.0, max_extensions=spec.extensions),
            workers=spec.workers,
            progress=progress,
            desc="deep tuning",
        )
    best = {}
    for c in spec.cells():
        by_beta = {b: found[(c, b)] for b in spec.betas(c)}
        b = min(by_beta, key=lambda b: (by_beta[b].error, b or 0.0))
        best[c] = Choice(**vars(by_beta[b]), beta=b, by_beta=by_beta)
    return {c: ch for c, ch in best.items() if math.isfinite(ch.error)}


def run(
    spec: DeepSpec,
    out: str | Path = "results",
    *,
    folder: str | Path | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Tune, run every cell with every seed, write ``final.csv``, ``tuning.csv`` (every
    tuning run: :func:`tuning`), ``spec.json``, the tables and the figures to ``folder``
    (default ``<out>/deep``); return the final table (:func:`summarize`)."""
    out = Path(out)
    best = tune(spec, out, progress)
    made = {
        (c, seed): spec.config(c, ch.step, seed, STUDY, ch.beta)
        for c, ch in best.items()
        for seed in spec.seeds
    }
    with _quiet():
        run_points(
            list(made.values()), out, workers=spec.workers, progress=progress, desc="deep"
        ).raise_if_not_ok(out)
    cells = {run_id_for(STUDY, cfg.run_dict()): c for (c, _), cfg in made.items()}
    records = load(out, study=STUDY)
    records = records[records["run_id"].isin(list(cells))].copy()
    for i, name in enumerate(CELL_KEYS):
        records[name] = records["run_id"].map(lambda rid, i=i: cells[rid][i])
    table = summarize(records, best)
    ttt = time_to_target(spec, records)
    folder = Path(folder) if folder is not None else out / STUDY
    text = [
        f"## {t}\n\n{kit.markdown_table(_shown(table[table['task'] == t], t))}\n\n"
        f"### Time to test accuracy {spec.targets[t]:g} under stragglers\n\n"
        f"{kit.markdown_table(ttt[ttt['task'] == t].drop(columns='task'))}\n"
        for t in spec.tasks
    ]
    tables = {"final": table, "time_to_target": ttt, "tuning": tuning(spec, out, best)}
    if spec.beta_grid is not None and len(spec.beta_grid) > 1:
        tables["beta_tuning"] = beta_tuning(best)
        text += [
            f"### Each beta's tuning on seed {spec.tune_seed} (tune_loss: final training "
            f"loss of the network average)\n\n{kit.markdown_table(tables['beta_tuning'])}\n"
        ]
    text += [f"Not run: {g} at M = {m} ({why})\n" for (g, m), why in spec.unbuilt().items()]
    text += [
        f"Run outside its analysis (mixing_check = 'warn'): {kit.label(method)} on {g}, "
        f"M = {m} ({why})\n"
        for (method, g, m), why in spec.outside().items()
    ]
    kit.write_tables(folder, spec, tables, "\n".join(text))
    for task in spec.tasks:
        if task in set(table["task"]):
            plot_accuracy(table[table["task"] == task], folder / f"accuracy_vs_m_{task}.png")
            plot_training(records[records["task"] == task], folder / f"training_{task}.png")
    return table


def tuning(spec: DeepSpec, out: Path, best: dict[Cell, Choice]) -> pd.DataFrame:
    """Every tuning run of the chosen cells, as ``tuning.csv`` keeps them: the cell, its
    beta (where its method has one), the step, the run's status, the final training loss
    of the network average (what the tuning minimizes) and its test accuracy, and whether
    the cell took that step and beta."""
    finals = kit.store_finals(out, TUNING_STUDY)
    rows = []
    for cell, choice in best.items():
        for beta, own in (choice.by_beta or {choice.beta: choice}).items():
            for step in sorted(own.tried):
                cfg = spec.config(cell, step, spec.tune_seed, TUNING_STUDY, beta)
                status, final = finals.get(run_id_for(TUNING_STUDY, cfg.run_dict()), ("", {}))
                rows.append(
                    {
                        **dict(zip(CELL_KEYS, cell, strict=True)),
                        "beta": beta,
                        "step": step,
                        "status": status or "missing",
                        "tune_loss": final.get("eval/loss@mean", math.nan),
                        "test_acc": final.get("eval/test_accuracy@mean", math.nan),
                        "chosen": step == choice.step and beta == choice.beta,
                    }
                )
    return pd.DataFrame(
        rows, columns=[*CELL_KEYS, "beta", "step", "status", "tune_loss", "test_acc", "chosen"]
    )


def _shown(table: pd.DataFrame, task: str) -> pd.DataFrame:
    """A task's rows as ``tables.md`` shows them: the text task's test loss in bits per
    byte (``test_bpc``), the others without it."""
    shown = table.drop(columns=["task", "seeds", "consensus"])
    test_loss = shown.pop("test_loss")
    if task == "stdlib_charlm":
        shown.insert(shown.columns.get_loc("train_loss") + 1, "test_bpc", test_loss / math.log(2))
    return shown


def summarize(records: pd.DataFrame, best: dict[Cell, Choice]) -> pd.DataFrame:
    """One row per cell: tuned step, test accuracy of the network average and of the worst
    node (mean and 95% half-width over seeds), training loss, final consensus distance, the
    test loss of the network average, and
    the penalties against the complete graph (the same method's accuracy there minus here,
    in accuracy points; its training loss here over there, as the convex studies' ratio);
    ``edge`` marks a step still on an edge of its grid."""
    from scipy import stats

    metrics = {
        "eval/test_accuracy@mean": "acc",
        "eval/test_accuracy@node_min": "worst_node_acc",
        "eval/loss@mean": "train_loss",
        "consensus/dist2": "consensus",
        "eval/test_loss@mean": "test_loss",
    }
    keys = list(CELL_KEYS)
    final = pd.concat([kit.final_rows(records, metric) for metric in metrics])
    rows = []
    for cell, g in final.groupby(keys):
        row: dict[str, Any] = dict(zip(keys, cell, strict=True))
        row["step"] = best[cell].step  # type: ignore[index]
        row["beta"] = best[cell].beta  # type: ignore[index]
        row["edge"] = best[cell].edge  # type: ignore[index]
        row["seeds"] = g["run_id"].nunique()
        for metric, name in metrics.items():
            values = g[g["metric"] == metric]["value"]
            row[name] = float(values.mean()) if len(values) else math.nan
            if name.endswith("acc"):  # half-width of the 95% Student-t interval
                n = len(values)  # one seed has no interval (NaN), never a zero-width one
                half = stats.t.ppf(0.975, n - 1) * stats.sem(values) if n > 1 else math.nan
                row[f"{name}_ci95"] = float(half)
        rows.append(row)
    table = pd.DataFrame(rows)
    complete = table[table["graph"] == "complete"].set_index(["task", "method", "M", "alpha"])
    for name in ("acc", "train_loss"):
        table[f"complete_{name}"] = table.apply(
            lambda r, c=name: complete[c].get((r["task"], r["method"], r["M"], r["alpha"])),
            axis=1,
        )
    table["penalty_pts"] = 100 * (table.pop("complete_acc") - table["acc"])
    table["loss_ratio"] = table["train_loss"] / table.pop("complete_train_loss")
    if table["beta"].isna().all():  # no method has a beta
        table = table.drop(columns="beta")
    return _in_order(table)


def beta_tuning(best: dict[Cell, Choice]) -> pd.DataFrame:
    """Each beta's own tuning per cell whose method has one: the step it chose, whether
    that stayed on its grid's edge, its tuning loss, and whether the cell took it."""
    rows = [
        dict(zip(CELL_KEYS, cell, strict=True))
        | {"beta": b, "step": ch.step, "edge": ch.edge, "tune_loss": ch.error}
        | {"chosen": b == best[cell].beta}
        for cell, choice in best.items()
        for b, ch in (choice.by_beta or {}).items()
        if b is not None
    ]
    columns = [*CELL_KEYS, "beta", "step", "edge", "tune_loss", "chosen"]
    return _in_order(pd.DataFrame(rows, columns=columns))


def _in_order(table: pd.DataFrame) -> pd.DataFrame:
    """A per-cell table sorted by task, alpha, M, method (the registry's order) and graph."""
    table["_order"] = table["method"].map(kit.order(table["method"]))
    table = table.sort_values(["task", "alpha", "M", "_order", "graph"])
    return table.drop(columns="_order").reset_index(drop=True)


def time_to_target(spec: DeepSpec, records: pd.DataFrame) -> pd.DataFrame:
    """Per cell, the simulated time at which the network average first reaches a test
    accuracy of ``targets[task]`` (median over seeds; ``inf`` when half the seeds or more
    never do), and the rounds that took.

    A fault-free clock does not depend on the values exchanged, so a run's time is the
    clock alone (:func:`decent.comm.network.simulate_clock`, the run's seed, the
    spec's stragglers and latency) at the round of its first evaluation on target:
    all-reduce waits for the slowest node every round, gossip only for the neighbours."""
    import numpy as np

    from decent.comm.network import ComputeModel, LinkModel, simulate_clock
    from decent.topology import make

    compute = ComputeModel("straggler", p=spec.straggler_p, slowdown=spec.slowdown)
    link = LinkModel(latency=spec.latency)
    acc = records[(records["metric"] == "eval/test_accuracy@mean") & (records["round"] > 0)]
    rows = []
    for cell, g in acc.groupby(list(CELL_KEYS)):
        task, method, graph, m, _ = cell
        topology = make(graph, int(m))
        times, needed = [], []
        for _, run in g.sort_values("round").groupby("run_id"):
            hit = run[run["value"] >= spec.targets[task]]
            if hit.empty:
                times.append(math.inf)
                continue
            t = int(hit["round"].iloc[0])
            clock = simulate_clock(
                topology,
                t,
                0,  # links of unlimited bandwidth: a message costs its latency
                pattern="all_reduce" if kit.centralized(method) else "gossip",
                compute=compute,
                link=link,
                seed=int(run["seed"].iloc[0]),
            )
            times.append(float(clock[-1]))
            needed.append(t)
        rows.append(
            dict(zip(CELL_KEYS, cell, strict=True))
            | {
                "reached": f"{len(needed)}/{len(times)}",
                "rounds": float(np.median(needed)) if needed else math.inf,
                "time": float(np.median(times)),
            }
        )
    table = pd.DataFrame(rows)
    return _in_order(table)


def plot_accuracy(table: pd.DataFrame, path: Path) -> Path:
    """Test accuracy of the network average against M (mean and 95% interval), one row per
    alpha and one column per graph; the all-reduce methods are drawn in every column, each
    method a little to the side of M so that the intervals stay apart."""
    from decent.studies import figures as figs

    alphas = sorted(set(table["alpha"]))
    graphs = [g for g in dict.fromkeys(table["graph"]) if g != "complete"] + ["complete"]
    rank = kit.order(table["method"])
    methods = sorted(set(table["method"]), key=lambda k: rank[k])
    styles = kit.method_styles(methods)
    ms = sorted(set(table["M"]))
    fig, axes = figs.figure(len(alphas), len(graphs), 3.2, 2.8, sharex=True, sharey=True)
    for (i, alpha), (j, graph) in ((a, g) for a in enumerate(alphas) for g in enumerate(graphs)):
        ax = axes[i][j]
        for k, method in enumerate(methods):
            shown = "complete" if kit.centralized(method) else graph
            rows = table[(table["alpha"] == alpha) & (table["graph"] == shown)]
            rows = rows[rows["method"] == method].sort_values("M")
            if len(rows):
                ax.errorbar(
                    rows["M"] * 2 ** (0.03 * (k - (len(methods) - 1) / 2)),  # dodged
                    rows["acc"],
                    yerr=rows["acc_ci95"],
                    capsize=3,
                    label=kit.label(method, role="centralized"),
                    **styles[method],
                )
        figs.panel(
            ax,
            f"{graph}, alpha = {alpha:g}",
            "nodes M (same samples in all)" if i == len(alphas) - 1 else None,
            "test accuracy of the average" if j == 0 else None,
            logy=False,
            base=2,
        )
        ax.set_xlim(ms[0] / 1.4, ms[-1] * 1.4)  # one M is a range too
        ax.set_xticks(ms, [str(m) for m in ms])
    title = "accuracy against M at a fixed sample budget, mean ± 95% CI"
    return figs.save(fig, axes, path, f"{table['task'].iloc[0]}: {title}")


def plot_training(records: pd.DataFrame, path: Path) -> Path:
    """Test accuracy and consensus distance over training at the largest M and smallest
    alpha, one column per sparse graph (else the complete one), the all-reduce methods
    drawn in each (mean over seeds, band from the lowest to the highest seed,
    :func:`decent.report._plots.band_plot`)."""
    from decent.report._plots import band_plot

    m, alpha = records["M"].max(), records["alpha"].min()
    rows = records[(records["M"] == m) & (records["alpha"] == alpha) & (records["round"] > 0)]
    graphs = sorted(set(rows["graph"]) - {"complete"})
    if graphs:  # the complete graph only when no sparse one was run
        central = rows[rows["method"].map(kit.centralized)]
        sparse = rows[rows["graph"] != "complete"]
        rows = pd.concat([sparse, *(central.assign(graph=g) for g in graphs)])
    rank = kit.order(rows["method"])
    methods = sorted(set(rows["method"]), key=lambda k: rank[k])
    accuracy = rows[rows["metric"] == "eval/test_accuracy@mean"]
    consensus = rows[(rows["metric"] == "consensus/dist2") & ~rows["method"].map(kit.centralized)]
    return band_plot(
        [
            ("eval/test_accuracy@mean", "test accuracy of the average", accuracy),
            ("consensus/dist2", r"$\frac{1}{M}\sum_i\|x_i-\bar x\|^2$", consensus),
        ],
        path,
        column="graph",
        hue="method",
        hues=methods,
        labels={k: kit.label(k, role="centralized") for k in methods},
        styles=kit.method_styles(methods),
        suptitle=f"{records['task'].iloc[0]}, M = {m}, alpha = {alpha:g}: mean over seeds, band = range of seeds",
        logx=False,
        band="range",
    )
