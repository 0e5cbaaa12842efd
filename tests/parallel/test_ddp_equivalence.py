"""DecentralizedDataParallel on 4 gloo ranks equals the simulator (ModuleTask and the engine,
same model, data order and init) to 1e-10 in float64, for each method and with transforms;
the one-step-stale overlap mode equals the simulator's delay-1 recursion."""

from __future__ import annotations

import numpy as np
import pytest
from ddp_cases import METHODS, TRANSFORMED, N, equivalence_worker, simulate
from dist_harness import run_group

from decent.comm import SimCommunicator
from decent.comm.delay import DelayedCommunicator
from decent.topology import ring

pytestmark = pytest.mark.dist


def _compare(names: list[str], overlap: bool) -> None:
    ranks = run_group(equivalence_worker, N, names, overlap, timeout=240.0)
    table = {**METHODS, **TRANSFORMED}
    for name in names:
        comm = DelayedCommunicator(ring(N), delay=1) if overlap else SimCommunicator(ring(N))
        algo = table[name]()
        expected = simulate(algo, comm)
        got = np.stack([r[name] for r in ranks])
        assert np.abs(expected - got).max() <= 1e-10, name
        if not algo.centralized:  # the nodes differ, so the test sees the mixing
            assert np.abs(expected[0] - expected[1]).max() > 1e-6, name


def test_every_method_equals_the_simulator():
    _compare([*METHODS, *TRANSFORMED], overlap=False)


def test_overlap_equals_the_delay_one_recursion():
    _compare(["dsgd", "dat_sgd", "dat_sgd+momentum+wd"], overlap=True)
