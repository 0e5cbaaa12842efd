"""Generate the config reference (``docs/config.md``) from the pydantic models."""

from __future__ import annotations

import json
import types
import typing
from typing import Any

import annotated_types as at
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from decent._params import flat_rules
from decent.config import _models as m

_NAMES: dict[Any, str] = {
    m.TopologyConfig: "topology table",
    m.AlgorithmConfig: "algorithm table",
    m.TaskConfig: "task table",
    m.PartitionConfig: "partition table",
    m.DatasetConfig: "dataset table",
    m.LearningRateConfig: "number or schedule table",
}


def _type(annotation: Any) -> str:
    for known, name in _NAMES.items():
        if annotation is known or annotation is typing.get_args(known)[0]:
            return name
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    members = {a for a in args if isinstance(a, type)}
    for family, models in m.UNIONS.items():
        if family != "schedule" and members and members <= set(models):
            return f"{family} table"
    if origin is typing.Annotated:
        return _type(args[0])
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join("none" if a is type(None) else _type(a) for a in args)
    if origin is list:
        return f"list of {_type(args[0])}" if args else "list"
    if origin is dict:
        return "table"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table"
    return {int: "integer", float: "number", bool: "boolean", str: "string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _rules(metadata: list[Any]) -> str:
    out = []
    for c in metadata:
        for cls, attr, op in (
            (at.Ge, "ge", ">="),
            (at.Gt, "gt", ">"),
            (at.Le, "le", "<="),
            (at.Lt, "lt", "<"),
        ):
            if isinstance(c, cls):
                out.append(f"{op} {getattr(c, attr)}")
        if isinstance(c, at.MinLen) and c.min_length:
            out.append("not empty")
    return ", ".join(out)


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
    elif field.default is PydanticUndefined:
        return "**required**"
    else:
        value = field.default
    if value is None:
        return "none"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + "}"
    return f"`{json.dumps(value)}`"


def _metadata(field: Any) -> list[Any]:
    """The field's rules, with those on the non-None part of an optional field and on the
    entries of a list."""
    out = flat_rules(field.metadata)
    if typing.get_origin(field.annotation) in (typing.Union, types.UnionType, list):
        for arg in typing.get_args(field.annotation):
            if typing.get_origin(arg) is typing.Annotated:
                out.extend(flat_rules(arg.__metadata__))
    return out


def _table(model: type[BaseModel], skip: tuple[str, ...] = ("kind",)) -> list[str]:
    rows = ["| field | type | default | rule | meaning |", "|---|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        desc = (field.description or "").replace("|", "\\|")
        rows.append(
            f"| `{name}` | {_type(field.annotation)} | {_default(field)} | "
            f"{_rules(_metadata(field))} | {desc} |"
        )
    return rows


def _doc(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").split("\n\n")[0].split())


def _section(heading: str, model: type[BaseModel], intro: str = "", *example: str) -> list[str]:
    """A fixed section: its heading, what it does, a TOML example, and its fields."""
    lines = [heading, ""]
    if intro:
        lines += [intro, ""]
    if example:
        lines += ["```toml", *example, "```", ""]
    return [*lines, *_table(model, skip=()), ""]


def _family(title: str, models: tuple[type[m.Section], ...], intro: str) -> list[str]:
    kinds = ", ".join(f"`{m.kind_of(x)}`" for x in models)
    lines = [f"## {title}", "", intro, "", f"Kinds: {kinds}.", ""]
    shared = ("kind", "transforms")  # every algorithm table's transforms: their own section
    for model in models:
        lines += [f'### `kind = "{m.kind_of(model)}"`', "", _doc(model), ""]
        if len(model.model_fields) > 1:
            lines += [*_table(model, skip=shared), ""]
        else:
            lines += ["No other fields.", ""]
    return lines


def reference_markdown(plugins: bool = False) -> str:
    """Return the Markdown config reference generated from the models.

    Args:
        plugins: also document the algorithms and topologies registered from outside the
            package (``@register``, entry points); the committed ``docs/config.md`` has
            the built-in ones only.
    """
    m.sync()

    def ours(models: tuple[type[m.Section], ...], registry: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(
            x
            for x in models
            if plugins or getattr(registry[m.kind_of(x)], "__module__", "").startswith("decent.")
        )

    lines = [
        "# Config reference",
        "",
        "<!-- Generated from the declarations (src/decent/config/_models.py) by `decent config-docs`; "
        "do not edit by hand. -->",
        "",
        "An experiment is one TOML file. Keys are the field names below; unknown keys are "
        "errors. Sections with several variants (topology, algorithm, task, partition, "
        "dataset, learning-rate schedule) pick one with `kind`. Override any field from the "
        "command line with `--set field.path=value` (the value is read as TOML: "
        "`--set algorithm.lr=0.05`, `--set topology.kind=torus`, `--set 'task.hidden=[32, 32]'`).",
        "",
        "```toml",
        "rounds = 500",
        "",
        "[topology]",
        'kind = "ring"',
        "num_nodes = 16",
        "",
        "[algorithm]",
        'kind = "dat_sgd"',
        "lr = 0.0005",
        "",
        "[task]",
        'kind = "least_squares"',
        "dim = 10",
        "```",
        "",
        "## Top level",
        "",
        _doc(m.ExperimentConfig),
        "",
        *_table(m.ExperimentConfig, skip=()),
        "",
    ]
    lines += _section(
        "## `[sweep]`",
        m.SweepConfig,
        "Used by `decent sweep` (ignored by `decent run`). Every combination of the `grid` "
        "values is crossed with every seed of `seeds`; each combination is one run. A grid "
        "value that is a table replaces the whole sub-table, so a method and its step size "
        "vary together; a scalar value is set like `--set`. Entries apply in the order "
        "written. The rest of the file is the base every run starts from, and must be valid "
        "on its own.",
        "[sweep]",
        "seeds = [0, 1, 2]",
        "[sweep.grid]",
        '"topology.num_nodes" = [16, 64]',
        "algorithm = [",
        '  { kind = "dat_sgd", lr = 0.0005 },',
        '  { kind = "dsgd", lr = 0.05 },',
        "]",
    )
    lines += _section(
        "## `[network]`",
        m.NetworkSection,
        "A simulated network for the simulator (see `docs/network.md`): a virtual clock "
        "(records gain `time/sim`, simulated seconds) from per-node compute times and "
        "per-message latency and bandwidth, and faults drawn from the run's seed. Training "
        "stays in synchronous rounds; a lost message's weight stays with its receiver.",
        "[network]",
        "latency = 0.01",
        "bandwidth = 1e6",
        "[network.compute]",
        'kind = "straggler"',
        "p = 0.1",
        "slowdown = 10.0",
        "[network.faults]",
        "drop = 0.1",
        'crashes = { "5" = 200 }',
        'leaves = { "7" = 100 }',
        'joins = { "7" = 300 }',
    )
    subsections = {
        "compute": m.ComputeSection,
        "faults": m.FaultsSection,
        "delays": m.DelaysSection,
    }
    for name, model in subsections.items():
        lines += _section(f"### `[network.{name}]`", model)
    lines += _section(
        "## `[privacy]`",
        m.PrivacySection,
        "Differential privacy per node (see `docs/privacy.md`): every gradient is DP-SGD's "
        "(each per-sample gradient clipped to norm `clip`, Gaussian noise of standard "
        "deviation `noise_multiplier * clip` on their sum, divided by the batch size), and "
        "every evaluation records `privacy/epsilon` (the worst node's epsilon at `delta`, "
        "from Opacus's accountant) and `privacy/epsilon_mean`. A dataset task must set "
        '`sampling = "without_replacement"`.',
        "[privacy]",
        "clip = 1.0",
        "noise_multiplier = 1.1",
        "delta = 1e-5",
        'accountant = "rdp"',
    )
    lines += _section(
        "## `[byzantine]`",
        m.ByzantineSection,
        "Byzantine nodes and robust aggregation (see `docs/concepts.md`), in the simulator "
        "and on ranks (`decent launch`, synchronous mode): the chosen nodes forge what they "
        "send, honest nodes combine their values with `aggregation`. A rule's bound on "
        "Byzantine in-neighbours is checked before training; metrics cover honest nodes "
        "only and records gain `byzantine/count`.",
        "[byzantine]",
        "fraction = 0.125",
        "seed = 0",
        'attack = "alie"',
        'aggregation = "trimmed_mean"',
        "trim = 1",
    )
    lines += _section(
        "## `[dist]`",
        m.DistSection,
        "How `decent launch` runs the experiment on ranks (see `docs/distributed.md`); "
        "`--mode`, `--staleness` and `--failure-timeout` override these fields. A simulator "
        "run ignores the section (and its run id does not depend on it).",
        "[dist]",
        'mode = "stale"',
        "staleness = 3",
    )
    lines += _family(
        "`[topology]`",
        ours(m.TOPOLOGY_MODELS, m.TOPOLOGY_KINDS),
        "Who talks to whom. `num_nodes` lives here and is also the task's number of nodes. "
        "Static graphs take a weight rule (`weights`) and optional laziness (`lazy`); the "
        "time-varying ones (`one_peer_exponential`, `random_matching`, `edge_dropout`) are "
        "pure functions of `(seed, t)`.",
    )
    lines += _family(
        "`[algorithm]`",
        ours(m.ALGORITHM_MODELS, m.ALGORITHMS),
        "The training method. `lr` is a number or a schedule table (below); every kind also "
        "takes `transforms`, a list of gradient transforms (below).",
    )
    lines += _family(
        "`[[algorithm.transforms]]`",
        m.TRANSFORM_MODELS,
        "Gradient transforms that turn each node's stochastic gradient into the direction its "
        "algorithm steps along, one table per transform in list order (optax's chain; "
        "`docs/concepts.md` has a whole config): weight decay before momentum is SGD with L2 "
        "inside the momentum (`torch.optim.SGD`), after it SGDW, and `adam` then "
        "`weight_decay` is AdamW, as is `adamw` alone (decay 0.01 by default). The step size "
        "stays `algorithm.lr`; the method is named "
        "`dat_sgd+momentum+weight_decay`.",
    )
    lines += _family(
        "Learning-rate schedules (`algorithm.lr`)",
        m.SCHEDULE_MODELS,
        "`lr = 0.05` is a constant step size; a table picks a schedule of the round `t`: "
        '`lr = { kind = "cosine", lr = 0.1 }`, '
        '`lr = { kind = "warmup", steps = 50, then = { kind = "inverse_sqrt", lr = 0.1 } }`.',
    )
    lines += _family(
        "`[task]`",
        m.TASK_MODELS,
        "The learning problem. The streaming tasks draw fresh samples every round; the "
        "dataset tasks split a dataset across nodes with `partition` and take a `dataset` "
        "table.",
    )
    lines += _family(
        "`[task.dataset]`",
        m.DATASET_MODELS,
        "Data for `logistic_regression`, `softmax_regression` and `mlp`. Features are "
        "standardized with the training split's statistics (bundled datasets always).",
    )
    lines += _family(
        "`[task.partition]`",
        m.PARTITION_MODELS,
        "How the training samples are split across nodes (default iid).",
    )
    return "\n".join(lines).rstrip() + "\n"
