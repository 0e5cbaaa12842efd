"""Config errors as one readable block: ``field.path: bad value -> rule`` per line."""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

MISSING = object()


@dataclass(frozen=True)
class Issue:
    """One problem: where (dotted path), the offending value, and the rule it breaks."""

    path: str
    value: Any
    rule: str

    def line(self) -> str:
        """Format as ``path: value -> rule``."""
        value = "(missing)" if self.value is MISSING else short_repr(self.value)
        where = self.path or "(config)"
        return f"{_one_line(where)}: {value} -> {_one_line(self.rule)}"


class ConfigError(ValueError):
    """An invalid experiment config; ``str()`` is the whole readable block.

    Attributes:
        issues: the problems, one per offending field.
        source: the file (or ``"--set"``) the config came from, if known.
    """

    def __init__(self, issues: Sequence[Issue], source: str | None = None) -> None:
        unique: dict[str, Issue] = {}
        for issue in issues:
            unique.setdefault(issue.line(), issue)
        self.issues = list(unique.values())
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        """Return the block: a header line, then one indented line per issue."""
        n = len(self.issues)
        where = f" in {self.source}" if self.source else ""
        head = f"invalid config{where} ({n} problem{'s' if n != 1 else ''}):"
        return "\n".join([head, *("  " + i.line() for i in self.issues)])


def short_repr(value: Any, limit: int = 120) -> str:
    """A compact TOML-like rendering of ``value`` for an error line."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_defaults=True)
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict):
        if "kind" in value:
            value = {"kind": value["kind"], **value}
        text = (
            "{" + ", ".join(f"{_key(k)} = {short_repr(v, limit)}" for k, v in value.items()) + "}"
        )
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(short_repr(v, limit) for v in value) + "]"
    elif isinstance(value, str):
        text = quote(value)
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(text: str) -> str:
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text)
    )


def quote(text: str) -> str:
    """A double-quoted string with quotes, backslashes and unprintable characters escaped."""
    body = "".join(
        c
        if c.isprintable() and c not in '"\\'
        else ("\\" + c if c in '"\\' else c.encode("unicode_escape").decode("ascii"))
        for c in text
    )
    return f'"{body}"'


def _key(key: Any) -> str:
    text = str(key)
    bare = text and all(c.isalnum() or c in "_-" for c in text) and text.isascii()
    return text if bare else quote(text)


def closest(word: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _kind_choices(ctx: dict[str, Any] | None) -> list[str]:
    tags = re.findall(r"'([^']*)'", str((ctx or {}).get("expected_tags", "")))
    return [t for t in tags if t != "number"]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Every BaseModel class reachable in ``annotation`` (through Union/Annotated/Optional)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    origin = typing.get_origin(annotation)
    if origin in (list, dict, tuple):
        return out
    for arg in typing.get_args(annotation):
        out += _models_in(arg)
    return out


def _model_for(annotation: Any, value: Any) -> type[BaseModel] | None:
    models = _models_in(annotation)
    if len(models) == 1:
        return models[0]
    if isinstance(value, dict):
        for m in models:
            kind = m.model_fields.get("kind")
            if kind is not None and value.get("kind") in typing.get_args(kind.annotation):
                return m
    return None


def _walk(
    root: type[BaseModel], data: Any, loc: Sequence[str | int]
) -> tuple[list[str | int], Any, type[BaseModel] | None]:
    """Follow ``loc`` through ``data``, dropping union tags; return (path, value, model).

    ``model`` is the model whose field set applies at the end of the path (for unknown-key
    suggestions), when it can be resolved.
    """
    path: list[str | int] = []
    current: Any = data
    model: type[BaseModel] | None = root
    field: Any = None
    for part in loc:
        if isinstance(current, dict) and part in current:
            field = model.model_fields.get(str(part)) if model is not None else None
            current = current[part]
            path.append(part)
            model = _model_for(field.annotation, current) if field is not None else None
        elif isinstance(current, (list, tuple)) and isinstance(part, int) and part < len(current):
            current = current[part]
            path.append(part)
            item = typing.get_args(field.annotation) if field is not None else ()
            model = _model_for(item[0], current) if item else None
        elif isinstance(current, dict) and model is not None and part in model.model_fields:
            # a missing field: the path names it, the value is missing
            path.append(part)
            current = MISSING
            model = None
        else:
            continue  # a union tag ('ring', 'number', 'float', ...): not part of the path
    return path, current, model


def dotted(path: Sequence[str | int]) -> str:
    """Join a path: ``("a", "b", 0)`` -> ``a.b[0]``; keys with dots are quoted."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + _key(part)
    return out


_SIMPLE = {
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "int_parsing": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string (in quotes)",
    "list_type": "must be a list [...]",
    "dict_type": "must be a table {...}",
    "model_type": "must be a table {...}",
    "model_attributes_type": "must be a table {...}",
    "finite_number": "must be a finite number (not nan or inf)",
    "missing": "required field is missing",
    "frozen_instance": "cannot be changed",
}


def issues_from_validation(
    err: ValidationError, root: type[BaseModel], data: Any, prefix: Sequence[str | int] = ()
) -> list[Issue]:
    """Translate a pydantic ``ValidationError`` into :class:`Issue` lines."""
    issues: list[Issue] = []
    for e in err.errors(include_url=False):
        kind = e["type"]
        ctx = e.get("ctx") or {}
        path, value, _ = _walk(root, data, e["loc"])
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            choices = _kind_choices(ctx)
            allowed = ", ".join(choices)
            if kind == "union_tag_not_found" or not isinstance(value, dict):
                rule = f"needs kind = one of: {allowed}" if choices else "needs a kind"
                if isinstance(value, dict) and "kind" not in value:
                    issues.append(Issue(dotted([*prefix, *path, "kind"]), MISSING, rule))
                    continue
                if not isinstance(value, dict) and choices and "number" not in str(ctx):
                    rule = f"must be a table {{kind = ...}} with kind one of: {allowed}"
            else:
                tag = value.get("kind")
                rule = f"unknown kind; allowed: {allowed}{closest(str(tag), choices)}"
                issues.append(Issue(dotted([*prefix, *path, "kind"]), tag, rule))
                continue
            if kind == "union_tag_invalid" and "number" in str(ctx.get("expected_tags", "")):
                rule = "must be a number >= 0 or a schedule table {kind = ...}"
            issues.append(Issue(dotted([*prefix, *path]), value, rule))
            continue
        if kind == "extra_forbidden":
            key = str(path[-1]) if path else ""
            parent_model = _walk(root, data, e["loc"][:-1])[2]
            allowed_fields = list(parent_model.model_fields) if parent_model is not None else []
            rule = "unknown field"
            if allowed_fields:
                rule += f"{closest(key, allowed_fields)} (allowed: {', '.join(allowed_fields)})"
            issues.append(Issue(dotted([*prefix, *path]), value, rule))
            continue
        if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
            op = {
                "greater_than_equal": ">=",
                "greater_than": ">",
                "less_than_equal": "<=",
                "less_than": "<",
            }[kind]
            bound = next(iter(ctx.values()), "?")
            rule = f"must be {op} {bound}"
        elif kind == "literal_error":
            rule = f"must be one of {ctx.get('expected', '?')}"
            if isinstance(value, str):
                rule += closest(value, re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
        elif kind in ("too_short", "string_too_short"):
            rule = "must not be empty"
        elif kind == "value_error":
            rule = str(ctx.get("error", e["msg"]))
        else:
            rule = _SIMPLE.get(kind, e["msg"][:1].lower() + e["msg"][1:])
        issues.append(Issue(dotted([*prefix, *path]), value, rule))
    return issues


class ConfigWarning(UserWarning):
    """A config that is valid but probably not what was meant (the message says why)."""
