"""Topologies: who talks to whom at round ``t``, and with what weight.

Graph, weights and placement are kept apart: a generator (``ring``, ``torus``, ...) says who
is connected, a weight rule (``metropolis_hastings``, ...) turns the graph into a mixing
matrix ``W`` (``W[i, j]`` = weight node ``i`` gives node ``j``), and time-varying schedules
(``OnePeerExponential``, ``RandomMatching``, ``EdgeDropout``) are pure functions of
``(seed, t)``.
"""

from decent.topology._dynamic import EdgeDropout, OnePeerExponential, RandomMatching
from decent.topology._matrix import MixingMatrix, Topology, TopologyError
from decent.topology._registry import TOPOLOGY_KINDS, make, register
from decent.topology._rules import (
    WEIGHT_RULES,
    WeightRule,
    lazy,
    max_degree,
    metropolis_hastings,
    uniform,
)
from decent.topology._spectral import spectral_gap
from decent.topology._static import (
    StaticTopology,
    complete,
    erdos_renyi,
    exponential,
    from_edges,
    from_matrix,
    from_networkx,
    grid,
    hypercube,
    random_regular,
    ring,
    star,
    torus,
    watts_strogatz,
)

__all__ = [
    "TOPOLOGY_KINDS",
    "WEIGHT_RULES",
    "EdgeDropout",
    "MixingMatrix",
    "OnePeerExponential",
    "RandomMatching",
    "StaticTopology",
    "Topology",
    "TopologyError",
    "WeightRule",
    "complete",
    "erdos_renyi",
    "exponential",
    "from_edges",
    "from_matrix",
    "from_networkx",
    "grid",
    "hypercube",
    "lazy",
    "make",
    "max_degree",
    "metropolis_hastings",
    "random_regular",
    "register",
    "ring",
    "spectral_gap",
    "star",
    "torus",
    "uniform",
    "watts_strogatz",
]
