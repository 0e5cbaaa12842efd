"""The distributed bounded-staleness mode and its simulator twin: the same delay pattern
gives the same iterates.

Real gloo ranks run ``GossipCommunicator(staleness=2)`` with one rank made slow, and record
which version of each neighbour's value every mix used. The simulator replays that pattern
(``DelayModel(kind="given")``). Whatever pattern the machine's timing produced, the replay
must give the ranks' iterates: the verdict does not depend on the timing.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from dist_harness import run_group

import decent
from decent.comm.network import DelayModel, NetworkCommunicator
from decent.tasks import LeastSquares
from decent.topology import ring

pytestmark = pytest.mark.dist

N, ROUNDS, S = 4, 40, 2
METHODS: dict[str, Any] = {
    "dsgd": lambda: decent.DSGD(lr=0.05),
    "dat_sgd": lambda: decent.DATSGD(lr=0.002),
    "gradient_tracking": lambda: decent.GradientTracking(lr=0.02),
}


def _task() -> LeastSquares:
    return LeastSquares(N, dim=3, heterogeneity=1.0, batch_size=2)


class _Slow(decent.Callback):
    """Rank 0 sleeps after each round, so its neighbours run ahead on its stale values."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def on_round(self, t: int) -> None:
        if self.rank == 0:
            time.sleep(0.005)


def _worker(rank: int, world_size: int) -> dict[str, Any]:
    from decent.comm.gossip import GossipCommunicator

    out = {}
    for name, make in METHODS.items():
        comm = GossipCommunicator(ring(N), staleness=S)
        try:
            result = decent.train(
                make(),
                _task(),
                comm,
                rounds=ROUNDS,
                seed=3,
                eval_every=ROUNDS,
                callbacks=[_Slow(rank)],
            )
        finally:
            comm.close()
        assert result.output is not None
        out[name] = {
            "nodes": [int(i) for i in comm.node_ids],
            "output": result.output.numpy().copy(),
            "versions": comm.versions,
            "max": comm.max_staleness_seen,
        }
    return out


@pytest.fixture(scope="module")
def ranks() -> list[dict[str, Any]]:
    return run_group(_worker, N, timeout=120)


@pytest.mark.parametrize("method", list(METHODS))
def test_the_simulator_replays_the_ranks_delay_pattern(ranks, method: str) -> None:
    tau: dict[tuple[int, int, int], int] = {}
    for per_rank in ranks:
        got = per_rank[method]
        (i,) = got["nodes"]  # one node per rank: rank ids are node ids
        assert len(got["versions"]) == ROUNDS  # one mix per round
        for c, used in enumerate(got["versions"], start=1):
            for j, v in used.items():
                tau[(c, i, int(j))] = c - v

    def schedule(t: int, dst: np.ndarray, src: np.ndarray) -> np.ndarray:
        return np.array([tau[(t, int(i), int(j))] for i, j in zip(dst, src, strict=True)])

    net = NetworkCommunicator(ring(N), delays=DelayModel(S, "given", schedule=schedule))
    sim = decent.train(METHODS[method](), _task(), net, rounds=ROUNDS, seed=3, eval_every=ROUNDS)
    assert sim.output is not None
    for per_rank in ranks:
        got = per_rank[method]
        want = sim.output.numpy()[got["nodes"]]
        np.testing.assert_allclose(got["output"], want, rtol=0, atol=1e-12)
    assert max(tau.values()) == max(r[method]["max"] for r in ranks) <= S
    assert net.delay_max == max(tau.values())
