"""DistCommunicator on real gloo process groups against dense single-process references.

Each world size is spawned once per module (fixtures), running every case in one group;
the tests then compare the collected rows, peers and stats.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from dist_cases import (
    all_reduce_worker,
    caching_worker,
    error_worker,
    initial_values,
    make_topology,
    mix_worker,
    reference,
    stats_dict,
)
from dist_harness import run_group

from decent.comm.base import CommStats
from decent.comm.sim import SimCommunicator

pytestmark = pytest.mark.dist

TOL = 1e-12

# One dict per case; the keys (name, kind, n, k, steps, params, comm, dtype, group_ranks) are
# read by dist_cases.mix_worker / reference, whose specs are dict[str, Any].
SPECS_4: list[dict[str, Any]] = [
    {"name": "ring4", "kind": "ring", "n": 4},
    {"name": "star4", "kind": "star", "n": 4},
    {"name": "complete4", "kind": "complete", "n": 4},
    {"name": "random4", "kind": "random", "n": 4, "params": {"seed": 1}},
    {"name": "schedule4", "kind": "schedule", "n": 4, "params": {"isolated": [0]}, "steps": 7},
    {"name": "random_schedule4", "kind": "random_schedule", "n": 4},
    {
        "name": "ring6_uneven",
        "kind": "ring",
        "n": 6,
        "comm": {"placement": [[0], [1, 2], [3], [4, 5]]},
    },
    {
        "name": "random6_uneven_gather",
        "kind": "random",
        "n": 6,
        "params": {"seed": 2},
        "comm": {"placement": [[5], [0, 3], [1], [4, 2]], "dense_limit": 0},
    },
    {"name": "ring4_float32", "kind": "ring", "n": 4, "dtype": "float32"},
    # 160 kB per row: large gloo messages, everyone sends to and receives from everyone
    {"name": "complete4_large", "kind": "complete", "n": 4, "k": 20_000, "steps": 2},
    {"name": "subgroup_ring3", "kind": "ring", "n": 3, "group_ranks": [1, 2, 3]},
]
SPECS_2: list[dict[str, Any]] = [
    {"name": "ring6", "kind": "ring", "n": 6, "comm": {"nodes_per_rank": 3}},
    {"name": "star6", "kind": "star", "n": 6, "comm": {"nodes_per_rank": 3}},
    {"name": "complete6", "kind": "complete", "n": 6, "comm": {"nodes_per_rank": 3}},
    {
        "name": "random6",
        "kind": "random",
        "n": 6,
        "params": {"seed": 4},
        "comm": {"nodes_per_rank": 3},
    },
    {
        "name": "schedule6",
        "kind": "schedule",
        "n": 6,
        "params": {"isolated": [0, 1, 2]},
        "comm": {"nodes_per_rank": 3},
        "steps": 7,
    },
    {"name": "random_schedule6", "kind": "random_schedule", "n": 6, "comm": {"nodes_per_rank": 3}},
    {
        "name": "random6_interleaved",
        "kind": "random",
        "n": 6,
        "params": {"seed": 4},
        "comm": {"placement": [[0, 2, 4], [1, 3, 5]]},
    },
    {
        "name": "schedule6_interleaved",
        "kind": "schedule",
        "n": 6,
        "params": {"isolated": [0, 2, 4]},
        "comm": {"placement": [[4, 0, 2], [1, 3, 5]], "dense_limit": 0},
        "steps": 6,
    },
]
for _s in SPECS_4 + SPECS_2:
    _s.setdefault("k", 5)
    _s.setdefault("steps", 4)
SPECS = {s["name"]: s for s in SPECS_4 + SPECS_2}
# the one stale-mixing combiner on ranks: two and three exchanges in flight at once
DELAYED_4: list[dict[str, Any]] = [
    {**SPECS["ring6_uneven"], "name": f"ring6_uneven_delay{d}", "delay": d, "steps": 6}
    for d in (1, 2, 3)
]
WORLD = {**{s["name"]: 4 for s in SPECS_4}, **{s["name"]: 2 for s in SPECS_2}}


@pytest.fixture(scope="module")
def group4() -> dict[str, Any]:
    per_rank = run_group(_world4, 4)
    return {"mix": [r["mix"] for r in per_rank], "extras": [r["extras"] for r in per_rank]}


@pytest.fixture(scope="module")
def group2() -> dict[str, Any]:
    mixes = run_group(mix_worker, 2, SPECS_2)
    return {"mix": mixes}


@pytest.fixture(scope="module")
def extras4(group4: dict[str, Any]) -> list[Any]:
    """All-reduce results and error messages from the same 4-rank group."""
    return group4["extras"]


def _world4(rank: int, world_size: int) -> dict[str, Any]:
    """Everything the 4-rank group checks, in one spawn."""
    extras = {
        "reduce": all_reduce_worker(rank, world_size, 4, 3, {}),
        "reduce_uneven": all_reduce_worker(
            rank, world_size, 7, 3, {"placement": [[0, 1], [2], [3, 4, 5], [6]]}
        ),
        "errors": error_worker(rank, world_size),
        "caching": caching_worker(rank, world_size, 12),
        "delayed": mix_worker(rank, world_size, DELAYED_4),
    }
    return {"mix": mix_worker(rank, world_size, SPECS_4), "extras": extras}


def _collect(request: pytest.FixtureRequest, name: str) -> list[Any]:
    fixture = "group4" if WORLD[name] == 4 else "group2"
    per_rank = request.getfixturevalue(fixture)["mix"]
    return [r[name] for r in per_rank]


@pytest.mark.parametrize("name", list(SPECS))
def test_mix_equals_dense_reference(request: pytest.FixtureRequest, name: str) -> None:
    spec = SPECS[name]
    ref = reference(spec)
    tol = 1e-6 if spec.get("dtype") == "float32" else TOL
    ranks = [r for r in _collect(request, name) if r is not None]
    held = sorted(i for r in ranks for i in r["node_ids"])
    assert held == list(range(spec["n"]))
    for r in ranks:
        assert r["dtype"] == f"torch.{spec.get('dtype', 'float64')}"
        for t, (rows, want) in enumerate(zip(r["rows"], ref["outs"], strict=True), start=1):
            np.testing.assert_allclose(
                rows, want[r["node_ids"]], rtol=0, atol=tol, err_msg=f"{name} t={t}"
            )


@pytest.mark.parametrize("name", list(SPECS))
def test_stats_equal_single_process_accounting(request: pytest.FixtureRequest, name: str) -> None:
    want = stats_dict(reference(SPECS[name])["stats"])
    for r in _collect(request, name):
        if r is not None:
            assert r["stats"] == want


@pytest.mark.parametrize(
    "name", ["ring4", "random6_uneven_gather", "schedule6", "random_schedule6"]
)
def test_agrees_with_simulator(request: pytest.FixtureRequest, name: str) -> None:
    spec = SPECS[name]
    topo = make_topology(spec["kind"], spec["n"], **spec.get("params", {}))
    sim = SimCommunicator(topo)
    x = torch.as_tensor(initial_values(spec["n"], spec["k"]))
    sim_rows = []
    for t in range(1, spec["steps"] + 1):
        x = sim.mix(x, t)
        sim_rows.append(x.numpy())
    for r in _collect(request, name):
        for rows, want in zip(r["rows"], sim_rows, strict=True):
            np.testing.assert_allclose(rows, want[r["node_ids"]], rtol=0, atol=TOL)
        assert r["stats"] == stats_dict(sim.stats)


@pytest.mark.parametrize("spec", DELAYED_4, ids=lambda s: s["name"])
def test_delayed_mixing_on_ranks_equals_the_simulator(
    extras4: list[Any], spec: dict[str, Any]
) -> None:
    """``DelayedCommunicator`` over the ranks' transport is the simulator's delayed mix to
    1e-12 (``delay = 1`` is the overlap mode), with up to ``delay`` exchanges in flight."""
    from decent.comm.delay import DelayedCommunicator

    topo = make_topology(spec["kind"], spec["n"])
    sim = DelayedCommunicator(topo, delay=spec["delay"])
    x = torch.as_tensor(initial_values(spec["n"], spec["k"]))
    sim_rows = []
    for t in range(1, spec["steps"] + 1):
        x = sim.mix(x, t)
        sim_rows.append(x.numpy())
    for r in extras4:
        got = r["delayed"][spec["name"]]
        for rows, want in zip(got["rows"], sim_rows, strict=True):
            np.testing.assert_allclose(rows, want[got["node_ids"]], rtol=0, atol=TOL)
        assert got["stats"] == stats_dict(sim.stats)


def _expected_peers(w: np.ndarray, placement: list[list[int]], rank: int) -> tuple[list, list]:
    owner = {i: r for r, b in enumerate(placement) for i in b}
    mine = placement[rank]
    recv = {owner[int(j)] for i in mine for j in np.flatnonzero(w[i]) if owner[int(j)] != rank}
    send = {owner[int(i)] for j in mine for i in np.flatnonzero(w[:, j]) if owner[int(i)] != rank}
    return sorted(send), sorted(recv)


@pytest.mark.parametrize("name", ["schedule4", "schedule6", "schedule6_interleaved", "random4"])
def test_exchanges_only_with_neighbour_ranks(request: pytest.FixtureRequest, name: str) -> None:
    spec = SPECS[name]
    topo = make_topology(spec["kind"], spec["n"], **spec.get("params", {}))
    ranks = _collect(request, name)
    placement = [r["node_ids"] for r in ranks]
    for rank, r in enumerate(ranks):
        for t, (send, recv) in enumerate(r["peers"], start=1):
            want = _expected_peers(topo.weights(t).dense(), placement, rank)
            assert (list(send), list(recv)) == want, f"{name} rank {rank} t={t}"


def test_schedule_has_silent_and_one_way_rounds(request: pytest.FixtureRequest) -> None:
    """The time-varying cases really exercise ranks with nothing to send or receive."""
    for name in ("schedule4", "schedule6"):
        ranks = _collect(request, name)
        # t=1: W = I, nobody talks
        assert all(r["peers"][0] == ([], []) for r in ranks)
        # t=2: rank 0's nodes are isolated while the others still gossip
        assert ranks[0]["peers"][1] == ([], [])
        assert ranks[-1]["peers"][1] != ([], []) or name == "schedule6"
        # t=3: node 0 broadcasts: rank 0 sends and receives nothing
        send, recv = ranks[0]["peers"][2]
        assert send and not recv
    # interleaved placement of the isolating round: both ranks silent
    assert all(r["peers"][1] == ([], []) for r in _collect(request, "schedule6_interleaved"))


def test_float32_payload_bytes(request: pytest.FixtureRequest) -> None:
    ref = CommStats(num_nodes=4)
    w = make_topology("ring", 4).weights(1)
    for _ in range(SPECS["ring4_float32"]["steps"]):
        ref.add_gossip(w.out_degree, payload_bytes=5 * 4)
    for r in _collect(request, "ring4_float32"):
        assert r["stats"]["bytes"] == ref.bytes == 4 * 2 * 20 * SPECS["ring4_float32"]["steps"]


@pytest.mark.parametrize("case,n", [("reduce", 4), ("reduce_uneven", 7)])
def test_all_reduce(extras4: list[Any], case: str, n: int) -> None:
    x = initial_values(n, 3)
    want = {
        "mean": x.mean(0),
        "sum": x.sum(0),
        "min": x.min(0),
        "max": x.max(0),
        "mean_unaccounted": x.mean(0),
    }
    ref = CommStats(num_nodes=n)
    for _ in range(4):
        ref.add_all_reduce(3 * 8)
    for r in extras4:
        got = r[case]
        for op, value in want.items():
            np.testing.assert_allclose(got["results"][op], value, rtol=0, atol=TOL, err_msg=op)
        assert got["stats"] == stats_dict(ref)  # the unaccounted call is not counted


def test_user_errors_are_value_errors_with_helpful_messages(extras4: list[Any]) -> None:
    errors = {label: (kind, msg, is_ve) for label, kind, msg, is_ve in extras4[0]["errors"]}
    for label, (kind, msg, is_ve) in errors.items():
        assert is_ve, f"{label}: {kind} {msg}"
    assert "num_nodes=9" in errors["n_mismatch"][1] and "block_placement" in errors["n_mismatch"][1]
    assert "nodes_per_rank must be an int >= 1, got 0" in errors["bad_nodes_per_rank"][1]
    assert "not both" in errors["both"][1]
    assert "one list of node ids per rank (world_size=4), got 1" in errors["placement_len"][1]
    assert "node 0 appears 2 times" in errors["placement_dup"][1]
    assert "out of range" in errors["placement_range"][1]
    assert "placement[0] is empty" in errors["placement_empty"][1]
    assert "(2, k)" in errors["x_shape"][1] and "(3, 4)" in errors["x_shape"][1]
    assert "(2, k)" in errors["x_ndim"][1]
    assert "median" in errors["bad_op"][1]


def test_plans_are_cached_for_static_and_periodic_topologies(extras4: list[Any]) -> None:
    # 12 rounds: a static W is built once, a period-5 schedule 5 times, a fresh one every round
    for r in extras4:
        assert r["caching"] == {"static": 1, "periodic": 5, "unperiodic": 12}


def test_requires_initialized_process_group() -> None:
    from decent.comm.dist import DistCommunicator, DistConfigError

    with pytest.raises(DistConfigError, match="init_process_group"):
        DistCommunicator(make_topology("ring", 4))
