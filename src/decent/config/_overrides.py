"""``--set a.b=c`` overrides and sweep-grid assignments on the raw (unvalidated) config dict."""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from decent.config._errors import MISSING, ConfigError, Issue, _model_for, dotted
from decent.config._models import ExperimentConfig

MAX_DEPTH = 32
"""How deeply tables, arrays and dotted keys may nest in a config (real configs use < 6)."""

TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels; flatten it (configs need fewer than 6)"


def check_depth(value: Any, where: str, base: int = 0) -> None:
    """Refuse ``value`` when its tables/arrays nest deeper than :data:`MAX_DEPTH` (iterative).

    Raises:
        ConfigError: one line naming ``where`` and the limit.
    """
    stack: list[tuple[Any, int]] = [(value, base)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError([Issue(where, MISSING, TOO_DEEP)])
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, (dict, list)):
            stack.extend((child, depth + 1) for child in children)


if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse one ``--set`` item ``a.b=VALUE`` into ``(["a", "b"], value)``.

    ``VALUE`` is read as a TOML value (``0.05``, ``true``, ``[1, 2]``, ``{kind = "ring"}``,
    ``"text"``); anything that is not valid TOML is taken as a bare string, so
    ``--set topology.kind=torus`` needs no quotes. Keys may be quoted like TOML keys:
    ``sweep.grid."algorithm.lr"=[0.1, 0.2]``.

    Raises:
        ConfigError: when the item has no ``=`` or the key is not a valid dotted key.
    """
    if "=" not in item:
        raise ConfigError(
            [Issue("--set", item, "expected KEY=VALUE, e.g. --set algorithm.lr=0.05")]
        )
    key, _, text = item.partition("=")
    key, text = key.strip(), text.strip()
    if key.count(".") >= MAX_DEPTH:
        raise ConfigError([Issue("--set", _head(item), f"the key is {TOO_DEEP}")])
    try:
        nested: Any = tomllib.loads(f"{key} = 0")
    except (tomllib.TOMLDecodeError, RecursionError):
        raise ConfigError(
            [Issue("--set", item, "the key must be a dotted field path like algorithm.lr")]
        ) from None
    parts: list[str] = []
    while isinstance(nested, dict):
        ((name, nested),) = nested.items()
        parts.append(name)
    for candidate in (text, json.dumps(text)):
        try:
            value = tomllib.loads(f"v = {candidate}")["v"]
        except tomllib.TOMLDecodeError:
            continue
        except RecursionError:
            raise ConfigError([Issue("--set", _head(item), f"the value is {TOO_DEEP}")]) from None
        check_depth(value, f"--set {dotted(parts)}", len(parts))
        return parts, value
    raise AssertionError("unreachable: a JSON string is a TOML string")  # pragma: no cover


def _head(item: str, limit: int = 60) -> str:
    return item if len(item) <= limit else item[: limit - 3] + "..."


def _merge(
    base: dict[str, Any], over: Mapping[str, Any], model: type[BaseModel] | None
) -> dict[str, Any]:
    """Deep-merge ``over`` into ``base``; a changed ``kind`` drops keys the new kind lacks."""
    for key, value in over.items():
        field = model.model_fields.get(key) if model is not None else None
        old = base.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            sub = _model_for(field.annotation, {**old, **value}) if field is not None else None
            if "kind" in value and value["kind"] != old.get("kind") and sub is not None:
                old = {k: v for k, v in old.items() if k in sub.model_fields}
            base[key] = _merge(dict(old), value, sub)
        else:
            base[key] = copy.deepcopy(value)
    return base


def assign(
    raw: dict[str, Any], parts: Sequence[str], value: Any, *, merge: bool = True
) -> dict[str, Any]:
    """Set the field at path ``parts`` of ``raw`` (in place) and return ``raw``.

    Missing intermediate tables are created. With ``merge`` (``--set``) a table value is
    merged key by key into an existing table; without it (sweep grid) it replaces the
    whole sub-table. Setting ``kind`` to a different value also drops the keys the new
    kind does not have (``--set topology.kind=ring`` on a torus drops ``rows``/``cols``).

    Raises:
        ConfigError: when the path goes through a value that is not a table.
    """
    node = raw
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part, MISSING)
        if nxt is MISSING:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            where = dotted(parts[: i + 1])
            raise ConfigError([Issue(where, nxt, f"is not a table; cannot set {dotted(parts)}")])
        node = nxt
    if not merge and isinstance(value, dict):
        node[parts[-1]] = copy.deepcopy(value)
        return raw
    over: Any = value
    for part in reversed(parts):
        over = {part: over}
    return _merge(raw, over, ExperimentConfig)


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with every ``--set`` item applied in order (see :func:`assign`).

    Raises:
        ConfigError: for a malformed item, or a path through a value that is not a table.
    """
    out = copy.deepcopy(dict(raw))
    for item in overrides:
        parts, value = parse_override(item)
        out = assign(out, parts, value, merge=True)
    return out


def set_path(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """Apply the sweep grid entry ``key = value`` (a dotted path; tables replace)."""
    return assign(raw, key.split("."), value, merge=False)
