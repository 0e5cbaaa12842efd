"""Declared parameters: a user-settable value's type, rules, default and doc, in one place.

A class or function that a config section builds declares its parameters once, either as
dataclass fields made by :func:`hparam` (the algorithms, the schedules) or as annotated
arguments ``dim: Annotated[int, SIZE, Doc("Dimension d.")] = 20`` (topologies, tasks,
datasets, partitions). The config schema, its generated reference and the checks of the
Python API are all read from that declaration (:func:`declared`, :func:`check_value`).

Every number also obeys one rule set, whatever its field (:func:`number_problem`): an
integer fits in int64, a float is finite with ``|x| <= 1e12`` and is ``0`` or
``|x| >= 1e-12``; sizes (samples, features, units, nodes) are at most ``10**6``
(:data:`SIZE`). Fields whose meaning calls for a tighter range declare it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import annotated_types as at

INT_MAX = 2**63 - 1
"""The largest integer any field takes (int64)."""
FLOAT_MAX = 1e12
"""The largest magnitude any float field takes."""
FLOAT_TINY = 1e-12
"""The smallest nonzero magnitude any float field takes (below it: use 0)."""
SIZE_MAX = 10**6
"""The largest size: samples, features, hidden units, nodes, components."""

SIZE = at.Interval(ge=1, le=SIZE_MAX)
"""A count of things held in memory: samples, features, units, nodes (1 .. 10**6)."""
SEED = at.Ge(0)
"""A seed: an integer >= 0."""
PROBABILITY = at.Interval(ge=0.0, le=1.0)
"""A probability in [0, 1]."""
ROUNDS_MAX = 10**8
"""The largest round number: a run, a crash round, a schedule length."""


@dataclass(frozen=True)
class Doc:
    """The one-line meaning of a parameter: ``Annotated[int, Doc("Dimension d.")]``."""

    text: str


class Param(NamedTuple):
    """One declared parameter: name, type (without rules), rules, doc and default."""

    name: str
    hint: Any
    rules: tuple[Any, ...]
    doc: str
    default: Any  # dataclasses.MISSING when required


def hparam(
    default: Any = dataclasses.MISSING,
    *rules: at.BaseMetadata | at.GroupedMetadata,
    doc: str,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """Declare a dataclass field as a parameter: its default, its rules and its one-line doc.

    The dataclass is the single source of truth: ``Method`` checks the rules when an
    instance is made, and the config schema, its generated reference and the CLI docs are
    derived from the same declaration.

    Args:
        default: the default value (none: the field is required).
        *rules: ``annotated_types`` constraints, e.g. ``Ge(0.0)``, ``Interval(ge=0, lt=1)``.
        doc: what the field means, for the config reference.
        factory: makes the default instead (a mutable one: ``factory=dict``).
    """
    metadata = {"doc": doc, "rules": tuple(rules)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def declared_as(owner: type, name: str) -> Any:
    """A keyword-only dataclass field declared as ``owner``'s field ``name`` (default, rules, doc).

    For a class that takes another's settings as its own fields without declaring them
    again, e.g. a compressed method's ``ratio`` is the compressor's ``ratio``.
    """
    f = owner.__dataclass_fields__[name]  # type: ignore[attr-defined]
    return dataclasses.field(default=f.default, metadata=f.metadata, kw_only=True)


def _split(hint: Any) -> tuple[Any, tuple[Any, ...], str]:
    if typing.get_origin(hint) is typing.Annotated:
        base, *meta = typing.get_args(hint)
        doc = next((m.text for m in meta if isinstance(m, Doc)), "")
        return base, tuple(m for m in meta if not isinstance(m, Doc)), doc
    return hint, (), ""


def declared(target: Any, skip: Sequence[str] = ()) -> list[Param]:
    """The declared parameters of a dataclass (its :func:`hparam` fields) or a callable.

    For a callable (a function, or a class through its ``__init__``) every keyword-capable
    argument not in ``skip`` is a parameter; its annotation ``Annotated[T, *rules, Doc()]``
    gives the type, the rules and the doc.
    """
    if dataclasses.is_dataclass(target) and isinstance(target, type):
        hints = typing.get_type_hints(target, include_extras=True)
        out = []
        for f in dataclasses.fields(target):
            if f.init and f.name not in skip:
                base, rules, doc = _split(hints[f.name])
                rules = (*rules, *f.metadata.get("rules", ()))
                default = f.default
                if f.default_factory is not dataclasses.MISSING:
                    default = f.default_factory()
                out.append(Param(f.name, base, rules, f.metadata.get("doc", doc), default))
        return out
    fn = target.__init__ if isinstance(target, type) else target  # type: ignore[misc]
    hints = typing.get_type_hints(fn, include_extras=True)
    out = []
    for p in inspect.signature(fn).parameters.values():
        if p.name in ("self", *skip) or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        base, rules, doc = _split(hints.get(p.name, Any))
        default = dataclasses.MISSING if p.default is p.empty else p.default
        out.append(Param(p.name, base, rules, doc, default))
    return out


def flat_rules(rules: Sequence[Any]) -> list[Any]:
    """``Interval(ge=0, lt=1)`` as ``[Ge(0), Lt(1)]``; other rules unchanged."""
    out: list[Any] = []
    for rule in rules:
        out.extend(rule if isinstance(rule, at.GroupedMetadata) else [rule])
    return out


_RULES: tuple[tuple[type, str, str, Callable[[Any, Any], bool]], ...] = (
    (at.Ge, "ge", ">=", lambda v, b: v >= b),
    (at.Gt, "gt", ">", lambda v, b: v > b),
    (at.Le, "le", "<=", lambda v, b: v <= b),
    (at.Lt, "lt", "<", lambda v, b: v < b),
)


def rule_text(rules: Sequence[Any]) -> str:
    """``">= 0, < 1"`` for ``Ge(0), Lt(1)``."""
    parts = []
    for rule in flat_rules(rules):
        for cls, attr, op, _ in _RULES:
            if isinstance(rule, cls):
                parts.append(f"{op} {getattr(rule, attr)}")
    return ", ".join(parts)


def number_problem(value: Any) -> str | None:
    """What ``value`` breaks of the rule set every number obeys, or ``None``.

    Integers fit in int64; floats are finite, at most ``1e12`` in magnitude, and ``0`` or
    at least ``1e-12`` in magnitude. Booleans and non-numbers pass.

    Example:
        >>> number_problem(1e308)
        'a number must be finite with magnitude <= 1e+12'
        >>> number_problem(0.5) is None
        True
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if -INT_MAX - 1 <= value <= INT_MAX else "an integer must fit in int64"
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) > FLOAT_MAX:
            return f"a number must be finite with magnitude <= {FLOAT_MAX:g}"
        if value != 0 and abs(value) < FLOAT_TINY:
            return f"a nonzero number must have magnitude >= {FLOAT_TINY:g}; use 0"
    return None


def check_value(
    owner: str, name: str, hint: Any, rules: Sequence[Any], value: Any, error: type[Exception]
) -> None:
    """Raise ``error("owner.name must be ..., got value")`` if ``value`` breaks its declaration.

    Checks ``Literal`` choices, booleans, integers and finite numbers with their rules and
    the rule set of :func:`number_problem` (``None`` where the hint allows it); other types
    are checked where they are used.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        base, extra, _ = _split(hint)
        return check_value(owner, name, base, (*rules, *extra), value, error)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        kept = [a for a in args if a is not type(None)]
        hint = kept[0] if len(kept) == 1 else hint
    if origin in (Mapping, dict) and isinstance(value, Mapping) and args:
        for key, item in value.items():
            check_value(owner, f"{name} key", args[0], (), key, error)
            check_value(owner, f"{name}[{key!r}]", args[1], (), item, error)
        return
    if origin in (Sequence, tuple, list) and isinstance(value, (list, tuple)) and args:
        for i, item in enumerate(value):
            check_value(owner, f"{name}[{i}]", args[0], (), item, error)
        return
    if typing.get_origin(hint) is typing.Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            options = " or ".join(repr(a) for a in allowed)
            raise error(f"{owner}.{name} must be {options}, got {value!r}")
        return
    if hint is bool:
        if not isinstance(value, bool):
            raise error(f"{owner}.{name} must be true or false, got {value!r}")
        return
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        what = "an integer"
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        what = "a finite number"
    else:
        return
    number = value
    if ok and hint is float and isinstance(value, int):
        number = float(value) if abs(value) <= FLOAT_MAX else math.inf
    problem = number_problem(number) if ok else None
    if problem is not None:
        raise error(f"{owner}.{name}: {problem}, got {value!r}")
    ok = ok and all(
        test(value, getattr(rule, attr))
        for rule in flat_rules(rules)
        for cls, attr, _, test in _RULES
        if isinstance(rule, cls)
    )
    if not ok:
        bounds = rule_text(rules)
        rule = what + (f" {bounds}" if bounds else "")
        raise error(f"{owner}.{name} must be {rule}, got {value!r}")


_F = typing.TypeVar("_F", bound=Callable[..., Any])


def checked_args(owner: str, error: type[Exception]) -> Callable[[_F], _F]:
    """Decorate a function or ``__init__`` to check its declared arguments on every call.

    Every argument given (defaults are trusted) is checked against its annotation by
    :func:`check_value`: ``error("owner.name must be ..., got value")``.
    """

    def wrap(fn: _F) -> _F:
        signature = inspect.signature(fn)
        params = functools.cache(lambda: declared(fn))

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                given = signature.bind(*args, **kwargs).arguments
            except TypeError:
                return fn(*args, **kwargs)  # the call's own TypeError
            for p in params():
                if p.name in given:
                    check_value(owner, p.name, p.hint, p.rules, given[p.name], error)
            return fn(*args, **kwargs)

        return typing.cast(_F, call)

    return wrap


def check_declared(obj: Any, owner: str, error: type[Exception]) -> None:
    """Check every :func:`hparam` field of dataclass instance ``obj`` (:func:`check_value`)."""
    for p in declared(type(obj)):
        check_value(owner, p.name, p.hint, p.rules, getattr(obj, p.name), error)


class Checked:
    """A dataclass whose :func:`hparam` fields are checked when an instance is made.

    A failing field raises ``error("<kind>.<field> must be ..., got ...")``.
    """

    kind: typing.ClassVar[str]
    error: typing.ClassVar[type[Exception]] = ValueError

    def __post_init__(self) -> None:
        check_declared(self, self.kind, self.error)
