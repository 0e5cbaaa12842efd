"""Training on real gloo ranks equals the simulator: iterates to 1e-12, metrics to 1e-10.

One spawn per world size runs every case (sync and overlap) through
:func:`decent.run.distributed.runtime.run_rank`, the path ``decent launch`` takes on each rank.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from dist_harness import run_group
from train_cases import CASES, OVERLAP_CASES, THREAD_CASES, train_worker

from decent.comm.delay import DelayedCommunicator
from decent.config import ExperimentConfig, build
from decent.run import train_experiment

pytestmark = pytest.mark.dist

ITER_TOL = 1e-12
METRIC_TOL = 1e-10


def _mismatch(rank: int) -> str:
    from decent.run.distributed.runtime import LaunchError, check_same_config

    cfg = {"study": "s", "algorithm": {"kind": "dsgd", "lr": 0.2 if rank == 1 else 0.1}}
    try:
        check_same_config(cfg)
    except LaunchError as err:
        return str(err)
    return "no error"


def _both(rank: int, world_size: int) -> dict[str, Any]:
    return {
        "mismatch": _mismatch(rank),
        "sync": train_worker(rank, world_size, CASES, "sync"),
        "overlap": train_worker(rank, world_size, OVERLAP_CASES, "overlap"),
        "stale0": train_worker(rank, world_size, THREAD_CASES, "stale"),
        "ft": train_worker(rank, world_size, THREAD_CASES, "fault_tolerant"),
    }


@pytest.fixture(scope="module")
def runs() -> dict[int, list[dict[str, Any]]]:
    return {4: run_group(_both, 4, timeout=120), 2: run_group(_both, 2, timeout=120)}


def _simulate(raw: dict[str, Any], delay: int = 0) -> Any:
    cfg = ExperimentConfig.model_validate(raw)
    factory = (lambda topo: DelayedCommunicator(topo, delay=delay)) if delay else None
    return train_experiment(build(cfg, factory))


def _check(per_rank: list[dict[str, Any]], sim: Any) -> None:
    want = sim.output.numpy()
    held = sorted(i for r in per_rank for i in r["node_ids"])
    assert held == list(range(want.shape[0]))
    for r in per_rank:
        assert r["status"] == "finished"
        np.testing.assert_allclose(r["output"], want[r["node_ids"]], rtol=0, atol=ITER_TOL)
        for key, value in sim.final.items():
            if key.startswith("time/"):
                continue
            assert r["final"][key] == pytest.approx(value, rel=0, abs=METRIC_TOL), key


@pytest.mark.parametrize("world", [4, 2])
@pytest.mark.parametrize("name", list(CASES))
def test_sync_equals_simulator(runs: dict[int, Any], world: int, name: str) -> None:
    _check([r["sync"][name] for r in runs[world]], _simulate(CASES[name]))


@pytest.mark.parametrize("world", [4, 2])
@pytest.mark.parametrize("name", list(OVERLAP_CASES))
def test_overlap_equals_simulator_with_delay_one(
    runs: dict[int, Any], world: int, name: str
) -> None:
    sim = _simulate(OVERLAP_CASES[name], delay=1)
    _check([r["overlap"][name] for r in runs[world]], sim)
    # and it is really stale: not the synchronous iterates
    sync = _simulate(OVERLAP_CASES[name]).output.numpy()
    assert np.abs(sim.output.numpy() - sync).max() > 1e-6


@pytest.mark.parametrize("world", [4, 2])
@pytest.mark.parametrize("mode", ["stale0", "ft"])
@pytest.mark.parametrize("name", list(THREAD_CASES))
def test_thread_transport_without_staleness_equals_simulator(
    runs: dict[int, Any], world: int, mode: str, name: str
) -> None:
    """Staleness 0 through the per-edge threads (and the store reductions of the fault
    tolerant mode, no failure) is the synchronous mix."""
    _check([r[mode][name] for r in runs[world]], _simulate(THREAD_CASES[name]))


def test_a_config_that_differs_between_ranks_fails_on_every_rank(runs: dict[int, Any]) -> None:
    for r in runs[4]:
        msg = r["mismatch"]
        assert "differs between ranks" in msg
        assert "rank 1" in msg and "algorithm.lr (rank 0: 0.1, rank 1: 0.2)" in msg
        assert "same config file" in msg
