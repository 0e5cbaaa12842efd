"""Canonical JSON, content hashes and dotted flattening of configs.

A run's identity is a pure function of its study and its resolved config, so two sweep
workers (or a resumed sweep) that see the same config agree on the run id without talking.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from decent.results._errors import ResultsError


def to_plain(value: Any, *, where: str = "config", allow_nan: bool = False) -> Any:
    """Convert ``value`` to plain JSON data (dict/list/str/int/float/bool/None).

    Pydantic models (anything with ``model_dump``) are dumped in JSON mode; tuples become
    lists, numpy and torch scalars become Python numbers, paths become strings.

    Args:
        value: The object to convert.
        where: Dotted location, used in error messages.
        allow_nan: Whether non-finite floats are accepted.

    Returns:
        The plain JSON-compatible value.

    Raises:
        ResultsError: If some leaf is not JSON-representable.
    """
    if hasattr(value, "model_dump") and callable(value.model_dump):
        return to_plain(value.model_dump(mode="json"), where=where, allow_nan=allow_nan)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not allow_nan and not math.isfinite(value):
            raise ResultsError(
                f"{where} = {value!r} is not a finite number; configs must be finite so that "
                "their JSON (and the run id) is well defined; use null or a large finite value"
            )
        return float(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ResultsError(
                    f"{where} has a non-string key {key!r} ({type(key).__name__}); config keys "
                    "must be strings; convert it with str(key)"
                )
            out[key] = to_plain(item, where=f"{where}.{key}", allow_nan=allow_nan)
        return out
    if isinstance(value, (list, tuple)):
        return [
            to_plain(item, where=f"{where}[{i}]", allow_nan=allow_nan)
            for i, item in enumerate(value)
        ]
    if isinstance(value, PurePath):
        return str(value)
    # numpy / torch scalars and 0-d arrays expose .item(); avoid importing either library.
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 0) == 0:
        return to_plain(item(), where=where, allow_nan=allow_nan)
    raise ResultsError(
        f"{where} = {value!r} has type {type(value).__name__}, which is not JSON data; "
        "store configs as dicts of str/int/float/bool/None/lists (e.g. model.model_dump())"
    )


def canonical_json(data: Any, *, allow_nan: bool = False) -> str:
    """Return the canonical JSON text of plain data: sorted keys, no whitespace."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=allow_nan)


def content_hash(text: str, length: int = 16) -> str:
    """Return the first ``length`` hex digits of the SHA-256 of ``text``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def run_id_for(study: str, config: Any) -> str:
    """Return the deterministic run id of ``(study, config)``.

    The id is the first 16 hex digits of ``sha256(study + "\\0" + canonical_json(config))``,
    so key order, tuples versus lists and numpy versus Python scalars do not change it.

    Args:
        study: Study name.
        config: Resolved experiment config (dict or pydantic model).

    Returns:
        A 16-character lowercase hex string.

    Example:
        >>> run_id_for("s", {"a": 1, "b": 2}) == run_id_for("s", {"b": 2, "a": 1})
        True
    """
    return content_hash(f"{study}\0{canonical_json(to_plain(config))}")


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts into dotted keys; lists become their JSON text.

    Example:
        >>> flatten({"algorithm": {"kind": "dsgd", "lr": 0.1}, "seed": 0})
        {'algorithm.kind': 'dsgd', 'algorithm.lr': 0.1, 'seed': 0}
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, prefix=f"{name}."))
        elif isinstance(value, Mapping):
            out[name] = "{}"
        elif isinstance(value, list):
            # Lists are unhashable in pandas group-bys; their JSON text is hashable and exact.
            out[name] = json.dumps(value, sort_keys=True)
        else:
            out[name] = value
    return out
