"""Input validation shared by the topology generators; every failure is a :class:`TopologyError`."""

from __future__ import annotations

import numbers
from typing import Annotated

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from decent._params import SIZE, Doc
from decent.topology._matrix import TopologyError

Nodes = Annotated[int, SIZE, Doc("Number of nodes n.")]
"""A generator's node count ``n``."""

_SHOW_MEMBERS = 8


def check_min_nodes(n: int, minimum: int, *, who: str, fix: str) -> None:
    """Raise unless ``n >= minimum``, suggesting ``fix`` (its declared range is checked
    where it is declared: :data:`Nodes`)."""
    if n < minimum:
        raise TopologyError(f"{who} needs num_nodes >= {minimum}, got {n}; {fix}")


def check_round(t: object, *, who: str) -> int:
    """Return the round ``t`` as an ``int`` after checking ``t >= 1``."""
    if isinstance(t, bool) or not isinstance(t, numbers.Integral):
        raise TopologyError(f"{who}.weights: round t must be an integer >= 1, got {t!r}")
    if int(t) < 1:
        raise TopologyError(
            f"{who}.weights: round t must be >= 1 (rounds are counted from 1), got {int(t)}"
        )
    return int(t)


def check_power_of_two(n: int, *, who: str) -> int:
    """Raise unless ``n`` is a power of two; the message suggests the nearest powers."""
    if n < 1 or n & (n - 1):
        lower = 1 << (n.bit_length() - 1)
        upper = lower << 1
        raise TopologyError(
            f"{who} needs num_nodes to be a power of 2, got {n}; "
            f"use {lower} or {upper} nodes, or exponential({n}) which takes any n"
        )
    return n


def require_connected(adjacency: sp.csr_array, *, who: str, directed: bool) -> None:
    """Raise a :class:`TopologyError` naming the components unless the graph is connected.

    ``adjacency[u, v] != 0`` means an edge ``u -> v``; a directed graph must be strongly
    connected so that every node's value reaches every other node.
    """
    if adjacency.shape[0] <= 1:
        return
    count, labels = csgraph.connected_components(adjacency, directed=directed, connection="strong")
    if count == 1:
        return
    # Say how it falls apart: the sizes, largest first (ties: smallest node id first), and
    # the members of the second component.
    sizes = np.bincount(labels, minlength=count)
    first_member = np.full(count, labels.size, dtype=np.int64)
    np.minimum.at(first_member, labels, np.arange(labels.size))
    order = np.lexsort((first_member, -sizes))
    sizes_text = ", ".join(str(int(sizes[c])) for c in order[:10]) + (", ..." if count > 10 else "")
    second = np.flatnonzero(labels == order[1])
    members = ", ".join(str(int(v)) for v in second[:_SHOW_MEMBERS])
    if second.size > _SHOW_MEMBERS:
        members += ", ..."
    kind = "not strongly connected" if directed else "disconnected"
    raise TopologyError(
        f"{who}: graph is {kind}: {count} components, sizes [{sizes_text}]; "
        f"component 2 = [{members}]; add edges that join the components "
        f"(or use a connected generator such as ring or complete)"
    )
