"""A killed rank's neighbours continue: ``DecentralizedDataParallel(mode="fault_tolerant")``.

4 gloo ranks on a ring train D-SGD (adapt then combine, ``x_i <- sum_j W_ij (x_j - eta g_j)``)
in the wrapper's fault-tolerant mode, the vector runtime's transport; the victim SIGKILLs
itself before its step 4 of 10. Each survivor's every step is replayed from the recorded
query points and gradients: while the victim's value is mixed, with the ring's weights
(1/3 each); once it is not, with the Metropolis-Hastings weights of the surviving path
``a - b - c`` written out by hand (ends 2/3 self and 1/3 to the middle, the middle 1/3 each).
So the survivors keep training by exactly gossip over the re-weighted graph; the victim's
edges are used up to its last step and dropped from its death on, and ``averaged()`` is one
average of the survivors' own parameters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ddp_ft_script import CRASH_STEP, LR, STEPS, train
from dist_harness import run_group
from typer.testing import CliRunner

from decent.cli import app

pytestmark = pytest.mark.dist

N = 4
TIMEOUT_S = 2.0
SCRIPT = Path(__file__).resolve().parent / "ddp_ft_script.py"


def _worker(rank: int, world: int, victim: int, path: str) -> dict[str, Any]:
    return train(rank, world, victim, path, mode="fault_tolerant", timeout=TIMEOUT_S)


def _check(records: dict[int, dict[str, Any]], victim: int, path: Path) -> None:
    survivors = [i for i in range(N) if i != victim]
    assert sorted(records) == survivors
    dead = json.loads((path / "victim.json").read_text())
    assert len(dead["before"]) == CRASH_STEP - 1
    a, b, c = (victim - 1) % N, (victim + 2) % N, (victim + 1) % N  # the path a - b - c
    ring = {i: {i: 1 / 3, (i - 1) % N: 1 / 3, (i + 1) % N: 1 / 3} for i in range(N)}
    path_w = {a: {a: 2 / 3, b: 1 / 3}, b: {a: 1 / 3, b: 1 / 3, c: 1 / 3}, c: {c: 2 / 3, b: 1 / 3}}
    # y_j(t) = x_j(t-1) - eta g_j(t): what node j sends in round t
    y = {j: np.array(r["before"]) - LR * np.array(r["grad"]) for j, r in records.items()}
    y[victim] = np.array(dead["before"]) - LR * np.array(dead["grad"])
    for i in survivors:
        r = records[i]
        assert r["step"] == STEPS and r["mode"] == "fault_tolerant"
        assert r["alive"] == survivors
        for t in range(1, STEPS + 1):
            used = dict(r["versions"][t - 1])
            assert set(used.values()) == {t}  # synchronous: round t's values only
            assert set(ring[i]) - {i, victim} <= set(used) <= set(ring[i]) - {i}
            if victim in ring[i] and t <= CRASH_STEP - 2:
                assert victim in used  # it sent them before it died
            if t >= CRASH_STEP:
                assert victim not in used
            row = ring[i] if victim in used else path_w[i]
            expected = sum(w * y[j][t - 1] for j, w in row.items())
            np.testing.assert_allclose(r["after"][t - 1], expected, rtol=0, atol=1e-12)
        assert np.isfinite(r["own"]).all()
        # one network average of the survivors' own parameters, the same on each of them
        mean = np.mean([records[j]["own"] for j in survivors], axis=0)
        np.testing.assert_allclose(r["averaged"], mean, rtol=0, atol=1e-12)
        assert r["averaged"] == records[survivors[0]]["averaged"]


@pytest.mark.parametrize("victim", [0, 2])
def test_survivors_of_a_killed_rank_train_on_the_reweighted_ring(victim, tmp_path):
    results = run_group(_worker, N, victim, str(tmp_path), may_die=[victim], timeout=120)
    assert results[victim] is None
    _check({i: r for i, r in enumerate(results) if i != victim}, victim, tmp_path)


def _cheb_worker(rank: int, world: int, victim: int, path: str) -> dict[str, Any]:
    return train(rank, world, victim, path, timeout=TIMEOUT_S, chebyshev=2)


def test_chebyshev_over_the_survivors_replays_step_by_step(tmp_path):
    """Chebyshev (K = 2) over the fault-tolerant transport: every survivor's every step is
    ``y_2 = omega W_b y_1 + (1 - omega) y_0``, ``y_1 = W_a y_0``, ``y_0 = x - eta g``, with
    ``omega = 2 / (2 - lambda^2)`` of the ring (``lambda = 1/3``) and each exchange's row
    ``W_a``, ``W_b`` the ring's or the surviving path's as that exchange's versions say,
    the neighbours' ``y_1`` replayed the same way: the survivors run ``P_2`` of the
    re-weighted ``W`` with the ring's ``omega`` (a contraction, ``|P_2(mu)| < 1``)."""
    victim, k = 2, 2
    results = run_group(_cheb_worker, N, victim, str(tmp_path), may_die=[victim], timeout=120)
    assert results[victim] is None
    records = {i: r for i, r in enumerate(results) if i != victim}
    dead = json.loads((tmp_path / "victim.json").read_text())
    a, b, c = (victim - 1) % N, (victim + 2) % N, (victim + 1) % N
    ring = {i: {i: 1 / 3, (i - 1) % N: 1 / 3, (i + 1) % N: 1 / 3} for i in range(N)}
    path_w = {a: {a: 2 / 3, b: 1 / 3}, b: {a: 1 / 3, b: 1 / 3, c: 1 / 3}, c: {c: 2 / 3, b: 1 / 3}}
    omega = 2 / (2 - (1 / 3) ** 2)
    y0 = {j: np.array(r["before"]) - LR * np.array(r["grad"]) for j, r in records.items()}
    y0[victim] = np.array(dead["before"]) - LR * np.array(dead["grad"])

    def row(i: int, t: int, e: int) -> dict[int, float]:
        if i == victim:
            return ring[i]
        used = dict(records[i]["versions"][(t - 1) * k + e])
        assert set(used.values()) == {(t - 1) * k + e + 1}  # synchronous: this exchange's
        return ring[i] if victim in used else path_w[i]

    for t in range(1, STEPS + 1):
        alive = [*records, victim] if t < CRASH_STEP else list(records)
        y1 = {i: sum(w * y0[j][t - 1] for j, w in row(i, t, 0).items()) for i in alive}
        for i in records:
            if t >= CRASH_STEP:
                assert victim not in dict(records[i]["versions"][(t - 1) * k + 1])
            mixed = sum(w * y1[j] for j, w in row(i, t, 1).items())
            want = omega * mixed + (1 - omega) * y0[i][t - 1]
            np.testing.assert_allclose(records[i]["after"][t - 1], want, rtol=0, atol=1e-12)
    for r in records.values():
        assert r["alive"] == sorted(records) and np.isfinite(r["own"]).all()


def test_decent_launch_lets_a_scripts_survivors_finish(tmp_path):
    """The launcher's --mode reaches the script's wrapper, and its policy keeps the others."""
    victim = 1
    args = ["launch", "--nproc", str(N), str(SCRIPT), "--mode", "fault_tolerant"]
    args += ["--failure-timeout", str(TIMEOUT_S), "--", str(victim), str(tmp_path)]
    # the launcher in this process (its ranks are fresh processes, as ever)
    res = CliRunner().invoke(app, args, env={"OMP_NUM_THREADS": "1"}, catch_exceptions=False)
    assert res.exit_code == 0, res.output[-4000:]
    assert f"rank {victim} died (SIGKILL)" in res.stderr
    assert "3 of 4 ranks survived (mode fault_tolerant)" in res.stdout
    assert not (tmp_path / f"rank-{victim}.json").exists()
    survivors = [i for i in range(N) if i != victim]
    records = {i: json.loads((tmp_path / f"rank-{i}.json").read_text()) for i in survivors}
    _check(records, victim, tmp_path)


def _big_worker(rank: int, world: int) -> dict[str, Any]:
    import torch

    import decent
    from decent.comm.gossip import STORE_CHUNK

    torch.manual_seed(rank)  # and no broadcast: every rank its own parameters
    # over 8 MiB of float64, the store's limit for one value: 3 chunks
    net = torch.nn.Linear(1024, STORE_CHUNK // 512 + 1, dtype=torch.float64)
    model = decent.DecentralizedDataParallel(
        net, decent.DSGD(lr=0.1), "ring", mode="fault_tolerant", broadcast=False
    )
    own = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().copy()
    averages, keys = [], []
    for _ in range(6):
        with model.averaged() as avg:
            averages.append(torch.cat([p.detach().reshape(-1) for p in avg.parameters()]).numpy())
        keys.append(model.comm._store.num_keys())  # type: ignore[attr-defined]
    model.close()
    return {"own": own, "averages": averages, "keys": keys}


def test_averaged_of_a_model_larger_than_one_store_payload():
    """The store's server refuses a value over 8 MiB: the reduce posts chunks, and deletes
    its keys of two reduces ago, so the store does not grow with every averaged()."""
    results = run_group(_big_worker, N, timeout=120)
    mean = np.mean([r["own"] for r in results], axis=0)
    assert mean.size * 8 > 2**23
    for r in results:
        for avg in r["averages"]:
            np.testing.assert_allclose(avg, mean, rtol=0, atol=1e-12)
        # from the 2nd reduce on, each rank holds the 3 chunks of 2 or 3 reduces (this one
        # of 2); without the deletion every reduce would add 12 (4 ranks x 3 chunks)
        assert max(r["keys"][1:]) - min(r["keys"][1:]) <= 9, r["keys"]


@pytest.mark.parametrize(
    ("kwargs", "env", "message"),
    [
        ({"mode": "stale"}, {}, "mode must be one of sync, overlap, fault_tolerant, got 'stale'"),
        ({}, {"DECENT_DIST_MODE": "ft"}, "mode (from $DECENT_DIST_MODE, set by decent launch"),
        ({"overlap": True, "mode": "fault_tolerant"}, {}, "overlap=True contradicts mode="),
        ({"failure_timeout": 2.0}, {}, "failure_timeout applies to mode='fault_tolerant' only"),
        (
            {"mode": "fault_tolerant"},
            {"DECENT_FAILURE_TIMEOUT": "soon"},
            "$DECENT_FAILURE_TIMEOUT must be a number of seconds, got 'soon'",
        ),
        ({"buffers": "gossip"}, {"DECENT_DIST_MODE": "fault_tolerant"}, "needs mode 'sync'"),
        ({"choco": True, "mode": "fault_tolerant"}, {}, "which only mode 'sync' carries"),
    ],
)
def test_fault_tolerant_mode_refuses_what_it_cannot_run(kwargs, env, message, monkeypatch):
    import torch

    import decent
    from decent.parallel import ParallelError

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    algo = decent.ChocoSGD(lr=0.1) if kwargs.pop("choco", False) else decent.DSGD(lr=0.1)
    with pytest.raises(ParallelError) as err:  # before any process group is needed
        decent.DecentralizedDataParallel(torch.nn.Linear(2, 1), algo, **kwargs)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "stale"}, "--mode stale and --staleness apply to configs"),
        ({"failure_timeout": 2.0}, "--failure-timeout must be in (0, 3600] seconds with --mode"),
        ({"mode": "fault_tolerant", "failure_timeout": 0.0}, "got 0.0 with --mode fault_tolerant"),
    ],
)
def test_decent_launch_refuses_script_flags_it_cannot_apply(kwargs, message):
    from decent.run.distributed.launch import LaunchError, launch

    with pytest.raises(LaunchError) as err:
        launch(N, SCRIPT, **kwargs)
    assert message in str(err.value)
