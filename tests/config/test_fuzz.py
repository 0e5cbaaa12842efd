"""Fuzz: malformed configs always give a readable ConfigError block, never a traceback."""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decent.config import ConfigError, loads_config
from decent.config._models import TOPOLOGY_MODELS, kind_of

VALID: dict[str, Any] = {
    "rounds": 10,
    "eval_every": 5,
    "topology": {"kind": "torus", "num_nodes": 16, "rows": 4},
    "algorithm": {"kind": "dsgd", "lr": {"kind": "cosine", "lr": 0.1}, "local_steps": 2},
    "task": {
        "kind": "mlp",
        "hidden": [4, 4],
        "dataset": {"kind": "random", "num_samples": 50, "num_features": 3},
        "partition": {"kind": "dirichlet", "alpha": 0.5},
    },
    "sweep": {"grid": {"algorithm.lr": [0.1, 0.2]}, "seeds": [0, 1]},
}
LINE = re.compile(r"^  \S.*: .+ -> \S.*$")


def to_toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(to_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {to_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def to_toml(d: dict[str, Any]) -> str:
    return "\n".join(f"{json.dumps(k)} = {to_toml_value(v)}" for k, v in d.items()) + "\n"


def paths(d: Any, prefix: tuple = ()) -> list[tuple]:
    out = []
    if isinstance(d, dict):
        for k, v in d.items():
            out.append((*prefix, k))
            out += paths(v, (*prefix, k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out.append((*prefix, i))
            out += paths(v, (*prefix, i))
    return out


ALL_PATHS = paths(VALID)
scalars = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.booleans(),
)
junk = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(min_size=1, max_size=6), scalars, max_size=3),
)


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    cfg = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(ALL_PATHS))
        parent: Any = cfg
        try:
            for p in path[:-1]:
                parent = parent[p]
            key = path[-1]
            parent[key]
        except (KeyError, IndexError, TypeError):
            continue
        if not isinstance(parent, (dict, list)):  # an earlier mutation made it a scalar
            continue
        op = draw(st.sampled_from(["replace", "delete", "extra"]))
        if op == "replace":
            parent[key] = draw(junk)
        elif op == "delete" and isinstance(parent, dict):
            del parent[key]
        elif op == "extra" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(scalars)
    return cfg


def check_block(err: ConfigError) -> None:
    text = str(err)
    head, *body = text.splitlines()
    assert head.startswith("invalid config"), text
    assert body, text
    for line in body:
        assert LINE.match(line), f"bad line {line!r} in\n{text}"
    assert "Traceback" not in text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_configs_validate_or_give_a_block(cfg):
    try:
        loads_config(to_toml(cfg))
    except ConfigError as err:
        check_block(err)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=60))
def test_arbitrary_text_gives_a_block(text):
    try:
        loads_config(text)
    except ConfigError as err:
        check_block(err)
    else:  # pragma: no cover - random text is never a complete config
        raise AssertionError(f"accepted {text!r}")


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from([kind_of(m) for m in TOPOLOGY_MODELS]),
    st.integers(min_value=-2, max_value=20),
    st.dictionaries(
        st.sampled_from(["p", "k", "rows", "cols", "seed", "lazy", "weights", "directed", "base"]),
        st.one_of(
            st.integers(-2, 6),
            st.floats(-0.5, 1.5),
            st.sampled_from(["ring", "uniform", "x"]),
            st.booleans(),
        ),
        max_size=3,
    ),
)
def test_topology_sections_build_or_give_a_block(kind, n, extra):
    section = {"kind": kind, "num_nodes": n, **extra}
    text = to_toml(
        {
            "rounds": 1,
            "topology": section,
            "algorithm": {"kind": "dsgd", "lr": 0.1},
            "task": {"kind": "least_squares", "dim": 2},
        }
    )
    try:
        from decent.config import build_topology

        build_topology(loads_config(text).topology)
    except ConfigError as err:
        check_block(err)
