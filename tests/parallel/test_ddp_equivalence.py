"""DecentralizedDataParallel on 4 gloo ranks equals the simulator (ModuleTask and the engine,
same model, data order and init) to 1e-10 in float64, for each method and with transforms;
the one-step-stale overlap mode equals the simulator's delay-1 recursion."""

from __future__ import annotations

import numpy as np
import pytest
from ddp_cases import METHODS, TOPOLOGIES, TRANSFORMED, N, equivalence_worker, simulate
from dist_harness import run_group

from decent.comm import SimCommunicator
from decent.comm.delay import DelayedCommunicator

pytestmark = pytest.mark.dist


def _compare(names: list[str], overlap: bool, topology: str = "ring") -> None:
    ranks = run_group(equivalence_worker, N, names, overlap, topology, timeout=240.0)
    table = {**METHODS, **TRANSFORMED}
    for name in names:
        graph = TOPOLOGIES[topology]()
        comm = DelayedCommunicator(graph, delay=1) if overlap else SimCommunicator(graph)
        algo = table[name]()
        expected = simulate(algo, comm)
        got = np.stack([r[name] for r in ranks])
        assert np.abs(expected - got).max() <= 1e-10, name
        if not algo.centralized:  # the nodes differ, so the test sees the mixing
            assert np.abs(expected - expected[0]).max() > 1e-6, name


def test_every_method_equals_the_simulator():
    _compare([*METHODS, *TRANSFORMED], overlap=False)


def test_overlap_equals_the_delay_one_recursion():
    _compare(["dsgd", "dat_sgd", "dat_sgd+momentum+wd"], overlap=True)


@pytest.mark.parametrize("topology", ["one_peer_exponential", "random_matching"])
def test_time_varying_topologies_equal_the_simulator(topology: str) -> None:
    """Each round's pairs change; every rank posts only its round-t exchanges."""
    _compare(["dsgd", "dat_sgd", "dsgd+qgm"], overlap=False, topology=topology)
