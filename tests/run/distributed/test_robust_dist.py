"""Byzantine attacks and robust rules on real gloo ranks equal the simulator (1e-12).

One spawn of 4 ranks mixes every attack x rule for a few rounds, with one node per rank
(ring(4)) and two nodes per rank (ring(8): a rank mixes a local neighbour and a received
one), over the synchronous ranks and over the fault-tolerant thread transport (no failure),
and trains one config with a ``[byzantine]`` section through ``run_rank`` (the path
``decent launch`` takes), whose honest-only metrics must match the simulator's too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from dist_harness import run_group

from decent.comm.robust import Aggregation, Attack

pytestmark = pytest.mark.dist

TOL = 1e-12
ATTACKS: tuple[Attack, ...] = ("sign_flip", "noise", "alie", "dissensus")
RULES: tuple[Aggregation, ...] = ("mean", "clipping", "trimmed_mean", "median")
LAYOUTS = {"ring4": (4, 1, [1]), "ring8": (8, 2, [0, 1, 5])}  # n, nodes per rank, Byzantine
KW: dict[str, Any] = {"tau": 0.3, "trim": 1, "sigma": 2.0, "seed": 7, "epsilon": 1.5, "scale": 1.5}
ROUNDS = 3
TRANSPORTS = ("sync", "fault_tolerant")  # DistCommunicator; GossipCommunicator, no failure

TRAIN = {
    "study": "byz-dist",
    "rounds": 30,
    "eval_every": 15,
    "per_node_eval": True,
    "topology": {"kind": "ring", "num_nodes": 4},
    "algorithm": {"kind": "dsgd", "lr": 0.05},
    "task": {"kind": "least_squares", "dim": 3, "batch_size": 2, "heterogeneity": 1.0},
    "byzantine": {"nodes": [2], "attack": "alie", "aggregation": "trimmed_mean"},
}


def _start(n: int) -> Any:
    import torch

    return torch.randn(n, 5, dtype=torch.float64, generator=torch.manual_seed(11))


def _mixes(comm: Any, x: Any) -> list[Any]:
    out = []
    for t in range(1, ROUNDS + 1):
        x = comm.mix(x, t)
        out.append(x.numpy().copy())
    return out


def _worker(rank: int, world_size: int) -> dict[str, Any]:
    from decent.comm import DelayedCommunicator
    from decent.comm.dist import DistCommunicator, block_placement
    from decent.comm.gossip import GossipCommunicator
    from decent.comm.robust import RobustCommunicator
    from decent.config import ExperimentConfig
    from decent.run.distributed.runtime import run_rank
    from decent.topology import ring

    out: dict[str, Any] = {}
    for layout, (n, per, byz) in LAYOUTS.items():
        for transport in TRANSPORTS:
            inner = (
                DistCommunicator(ring(n), nodes_per_rank=per)
                if transport == "sync"
                else GossipCommunicator(
                    ring(n), placement=block_placement(n, world_size), failure_timeout=30.0
                )
            )
            ids = inner.node_ids
            out[f"{layout}/ids"] = ids.tolist()
            for attack in ATTACKS:
                for rule in RULES:
                    comm = RobustCommunicator(inner, byz, attack, rule, **KW)
                    out[f"{layout}/{transport}/{attack}/{rule}"] = _mixes(comm, _start(n)[ids])
            out[f"{layout}/{transport}/stats"] = inner.stats.summary()
            inner.close()
    try:
        stale = DelayedCommunicator(DistCommunicator(ring(4)))
        RobustCommunicator(stale, [1], "alie", "median")  # type: ignore[arg-type]
        out["overlap"] = "accepted"
    except ValueError as err:
        out["overlap"] = str(err)
    result = run_rank(ExperimentConfig.model_validate(TRAIN), mode="sync")
    assert result is not None and result.output is not None
    out["train"] = {
        "ids": list(result.extra["node_ids"]),
        "output": result.output.numpy().copy(),
        "final": result.final,
    }
    return out


@pytest.fixture(scope="module")
def ranks() -> list[dict[str, Any]]:
    return run_group(_worker, 4, timeout=120)


def _simulate(n: int, byz: list[int], attack: Attack, rule: Aggregation) -> list[Any]:
    from decent.comm import SimCommunicator
    from decent.comm.robust import RobustCommunicator
    from decent.topology import ring

    comm = RobustCommunicator(SimCommunicator(ring(n)), byz, attack, rule, **KW)
    return _mixes(comm, _start(n))


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("rule", RULES)
def test_every_rule_and_attack_on_ranks_equals_the_simulator(
    ranks: list[dict[str, Any]], transport: str, layout: str, attack: Attack, rule: Aggregation
) -> None:
    n, _, byz = LAYOUTS[layout]
    want = _simulate(n, byz, attack, rule)
    for r in ranks:
        ids = r[f"{layout}/ids"]
        for got, sim in zip(r[f"{layout}/{transport}/{attack}/{rule}"], want, strict=True):
            np.testing.assert_allclose(got, sim[ids], rtol=0, atol=TOL)
    # an attack changes the outcome (the test could fail): honest rows differ from plain
    if attack != "dissensus" or rule == "mean":
        plain = _simulate(n, [], "sign_flip", "mean")
        assert np.abs(want[-1] - plain[-1]).max() > 1e-6


def test_the_overlapped_transport_is_refused(ranks: list[dict[str, Any]]) -> None:
    for r in ranks:
        assert "synchronous transport" in r["overlap"] and "mode = 'sync'" in r["overlap"]


def test_ranks_count_the_traffic_of_plain_gossip(ranks: list[dict[str, Any]]) -> None:
    for r in ranks:
        for transport in TRANSPORTS:
            messages = r[f"ring4/{transport}/stats"]["comm/messages"]
            assert messages == 8 * ROUNDS * len(ATTACKS) * len(RULES)  # 8 directed edges


def test_a_byzantine_config_trains_on_ranks_as_in_the_simulator(
    ranks: list[dict[str, Any]],
) -> None:
    from decent.config import ExperimentConfig, build
    from decent.run import train_experiment

    sim = train_experiment(build(ExperimentConfig.model_validate(TRAIN)))
    assert sim.output is not None
    want = sim.output.numpy()
    for r in ranks:
        got = r["train"]
        np.testing.assert_allclose(got["output"], want[got["ids"]], rtol=0, atol=TOL)
        for key, value in sim.final.items():
            if not key.startswith("time/"):
                assert got["final"][key] == pytest.approx(value, rel=0, abs=1e-10), key
    assert sim.final["byzantine/count"] == 1.0
