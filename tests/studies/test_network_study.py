"""The network study's pipeline on a tiny grid (the science is in docs/results/async.md)."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from decent.config import ConfigError
from decent.studies import _kit as kit
from decent.studies.network import NetworkSpec, run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    spec = NetworkSpec(
        machines=(9,),
        topologies=("ring", "torus"),
        rounds=40,
        eval_every=5,
        seeds=(0, 1),
        tune_seeds=(1000,),
        lr_grid=(0.05, 0.1),
        gamma_grid=(0.1, 0.2),
        drops=(0.0, 0.3),
        crash_fractions=(0.25,),
        churn_fractions=(0.25,),
        max_delays=(2,),
        latencies=(1e-3, 0.01, 1.0),
        workers=1,
    )
    out = tmp_path_factory.mktemp("network")
    return spec, out, run(spec, out, progress=False)


def test_every_cell_is_measured_and_written(tiny) -> None:
    spec, out, result = tiny
    ttt = result.time_to_target
    cells = {(r.method, r.topology) for r in ttt.itertuples()}
    assert cells == {
        ("minibatch_sgd", "ring"),
        ("dsgd", "ring"),
        ("dsgd", "torus"),
        ("dat_sgd", "ring"),
        ("dat_sgd", "torus"),
        ("dsgd@stale2", "ring"),
        ("dsgd@stale2", "torus"),
        ("dat_sgd@stale2", "ring"),
        ("dat_sgd@stale2", "torus"),
        ("ad_psgd", "ring"),
        ("ad_psgd", "torus"),
    }
    # bounded staleness waits less than synchronous gossip under stragglers
    per_step = ttt.set_index(["method", "topology"])["time_per_step"]
    for kind in ("ring", "torus"):
        assert per_step[("dsgd@stale2", kind)] < per_step[("dsgd", kind)]
        # nobody waits in AD-PSGD: a step is a gradient and one exchange, about
        # 1 + p (slowdown - 1) + 2 latency on average, far below waiting for the neighbours
        assert per_step[("ad_psgd", kind)] < per_step[("dsgd", kind)]
        assert per_step[("ad_psgd", kind)] == pytest.approx(1 + 0.05 * 9 + 0.02, rel=0.15)
    # the target is target_factor x the best synchronous final error, so that cell reaches it
    synchronous = ttt[~ttt["method"].str.contains("@") & (ttt["method"] != "ad_psgd")]
    assert synchronous["final_error"].min() * spec.target_factor == pytest.approx(result.targets[9])
    for name in ("tables.md", "time_to_target.csv", "faults.csv", "crossover.csv"):
        assert (out / "network" / name).stat().st_size > 0
    for name in ("error_vs_time.png", "faults.png", "crossover.png"):
        assert (out / "network" / name).read_bytes()[:4] == b"\x89PNG"
    faults = result.faults
    assert set(faults["fault"]) == {"none", "drop 30%", "crash 2 nodes", "3 nodes leave and rejoin"}
    assert set(faults["method"]) == {"dsgd", "dat_sgd", "ad_psgd"}
    assert (faults[faults["fault"] == "none"]["vs_no_faults"] == 1.0).all()


def test_the_latency_sweep_reproduces_the_recorded_clock_at_the_study_latency(tiny) -> None:
    spec, _, result = tiny
    cross, ttt = result.crossover, result.time_to_target
    at = cross[(cross["latency"] == spec.latency) & (cross["compute"] == "stragglers")]
    checked = 0
    for row in ttt.itertuples():
        if not math.isfinite(row.time_to_target) or "@" in row.method or row.method == "ad_psgd":
            continue  # the sweep replays synchronous clocks only
        sweep = at[(at["method"] == row.method) & (at["topology"] == row.topology)]
        # the clock alone, same seeds and rounds, is the clock the runs recorded
        assert float(sweep["time_to_target"].iloc[0]) == pytest.approx(row.time_to_target)
        checked += 1
    assert checked >= 3
    # all-reduce pays 2 (M - 1) latency steps a round: its time grows with the latency
    for scenario in ("stragglers", "no stragglers"):
        ar = cross[(cross["method"] == "minibatch_sgd") & (cross["compute"] == scenario)]
        assert ar.sort_values("latency")["time_to_target"].is_monotonic_increasing
    # without stragglers the clock is a closed form: rounds x (1 + 2 (M - 1) latency)
    hit = result.time_to_target.set_index("method").loc["minibatch_sgd"]
    calm = cross[(cross["method"] == "minibatch_sgd") & (cross["compute"] == "no stragglers")]
    expected = [hit["steps_to_target"] * (1 + 2 * 8 * lat) for lat in calm["latency"]]
    assert list(calm["time_to_target"]) == pytest.approx(expected)


def test_the_shipped_spec_is_the_default_and_bad_specs_name_the_field(tmp_path) -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    assert (
        kit.load_spec(NetworkSpec, root / "configs" / "studies" / "network.toml") == NetworkSpec()
    )
    with pytest.raises(ValidationError, match="drops"):
        NetworkSpec(drops=(1.5,))
    with pytest.raises(ValidationError, match="methods"):
        NetworkSpec(methods=("adam",))  # type: ignore[arg-type]
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = 10\nlatncy = 0.1\n")
    with pytest.raises(ConfigError, match=r"latncy: 0\.1 -> unknown field"):
        kit.load_spec(NetworkSpec, bad)
    bad.write_text("rounds = 10\ndrops = [0.5, 2.0]\n")  # the ranges are checked too
    with pytest.raises(ConfigError, match=r"drops\[1\]: 2\.0 -> must be < 1"):
        kit.load_spec(NetworkSpec, bad)
