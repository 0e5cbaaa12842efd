"""Build any topology by kind name: ``make("torus", 64)``."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Annotated, Any, Literal, TypeVar

import annotated_types as at

from decent._params import SEED, Doc
from decent.topology._dynamic import EdgeDropout, OnePeerExponential, RandomMatching
from decent.topology._matrix import Topology, TopologyError
from decent.topology._static import (
    StaticTopology,
    complete,
    erdos_renyi,
    exponential,
    grid,
    hypercube,
    random_regular,
    ring,
    star,
    torus,
    watts_strogatz,
)


def _base(n: int, base: str | StaticTopology, base_kwargs: Mapping[str, Any]) -> Any:
    if isinstance(base, str):
        topo = make(base, n, **(base_kwargs or {}))
        if not isinstance(topo, StaticTopology):
            raise TopologyError(f"base={base!r} must be a static topology kind")
        return topo
    return base


StaticKind = Literal[
    "ring",
    "torus",
    "grid",
    "hypercube",
    "exponential",
    "complete",
    "star",
    "erdos_renyi",
    "random_regular",
    "watts_strogatz",
]
Base = Annotated[StaticKind | StaticTopology, Doc("Kind of the static base graph.")]
BaseKwargs = Annotated[
    Mapping[str, bool | int | float | str],
    Doc("Arguments of the base graph, e.g. {rows = 4}."),
]
_NO_KWARGS: Mapping[str, Any] = MappingProxyType({})


def _random_matching(
    n: int,
    *,
    seed: Annotated[int, SEED, Doc("Seed of the matchings.")],
    base: Base = "complete",
    base_kwargs: BaseKwargs = _NO_KWARGS,
) -> RandomMatching:
    """Time-varying: a random matching of a static base graph each round (seeded by t)."""
    return RandomMatching(_base(n, base, base_kwargs), seed=seed)


def _edge_dropout(
    n: int,
    p: Annotated[float, at.Interval(ge=0.0, lt=1.0), Doc("Probability that an edge is dropped.")],
    *,
    seed: Annotated[int, SEED, Doc("Seed of the failures.")],
    base: Base = "complete",
    base_kwargs: BaseKwargs = _NO_KWARGS,
) -> EdgeDropout:
    """Time-varying: each edge of a static base graph fails with probability p each round."""
    return EdgeDropout(_base(n, base, base_kwargs), p, seed=seed)


TOPOLOGY_KINDS: dict[str, Callable[..., Any]] = {
    "ring": ring,
    "torus": torus,
    "grid": grid,
    "hypercube": hypercube,
    "exponential": exponential,
    "one_peer_exponential": OnePeerExponential,
    "complete": complete,
    "star": star,
    "erdos_renyi": erdos_renyi,
    "random_regular": random_regular,
    "watts_strogatz": watts_strogatz,
    "random_matching": _random_matching,
    "edge_dropout": _edge_dropout,
}
"""Generator for each kind name accepted by :func:`make`."""

F = TypeVar("F", bound=Callable[..., Any])


def register(kind: str) -> Callable[[F], F]:
    """Register a topology generator ``fn(n, **params) -> Topology`` under ``kind``.

    Its ``[topology]`` config table is derived from its annotated arguments (``n`` is the
    config's ``num_nodes``), e.g. ``p: Annotated[float, PROBABILITY, Doc("...")]``. A
    package can also register generators through an entry point in the group
    ``decent.topologies`` (see ``docs/own_algorithm.md``).

    Raises:
        TopologyError: ``kind`` not a snake_case name, or taken by another generator.

    Example:
        >>> @register("ring_example")
        ... def ring_example(n: int) -> Topology:
        ...     return ring(n)
        >>> make("ring_example", 5).name
        'ring(5)'
        >>> del TOPOLOGY_KINDS["ring_example"]
    """

    def add(fn: F) -> F:
        if not isinstance(kind, str) or not kind.isidentifier():
            raise TopologyError(f"a topology kind must be a snake_case name, got {kind!r}")
        if TOPOLOGY_KINDS.get(kind, fn) is not fn:
            raise TopologyError(f"topology kind {kind!r} is taken; pick another name")
        TOPOLOGY_KINDS[kind] = fn
        return fn

    return add


def make(kind: str, n: int, **kwargs: Any) -> Topology:
    """Build a topology of the named kind on ``n`` nodes.

    Keyword arguments go to the generator (``seed=``, ``p=``, ``k=``, ``rows=``,
    ``weights=``, ``lazy=``, ...). ``random_matching`` and ``edge_dropout`` take
    ``base=`` (a kind name, default ``"complete"``, or a :class:`StaticTopology`) and
    ``base_kwargs=`` for the base generator.

    Raises:
        TopologyError: an unknown kind (the message lists the allowed kinds and the closest
            match), a missing or unknown argument, or any rule the generator checks.

    Example:
        >>> make("torus", 16).name
        'torus(4x4)'
        >>> make("edge_dropout", 8, p=0.5, seed=0, base="ring").num_nodes
        8
    """
    factory = TOPOLOGY_KINDS.get(kind) if isinstance(kind, str) else None
    if factory is None:
        allowed = ", ".join(TOPOLOGY_KINDS)
        close = difflib.get_close_matches(str(kind), list(TOPOLOGY_KINDS), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise TopologyError(f"unknown topology kind {kind!r}; allowed kinds: {allowed}{hint}")
    sig = inspect.signature(factory)
    try:
        sig.bind(n, **kwargs)
    except TypeError as err:
        params = [p for p in sig.parameters if p not in ("n", "self")]
        raise TopologyError(
            f"make({kind!r}, {n}): {err}; {kind} accepts: {', '.join(params)}"
        ) from err
    return factory(n, **kwargs)  # type: ignore[no-any-return]
