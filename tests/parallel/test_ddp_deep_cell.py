"""examples/ddp_deep_cell.py (the deep study's cell on gloo ranks, issue 29 item 4) on 4
ranks: fed the simulator's own draws it equals the simulator's run of the same config to
1e-10 in float64, so the 8-rank comparison in docs/results/deep.md measures the runtime
and the data order, nothing else; with its own DataLoader draws it learns."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from dist_harness import run_group

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))

import ddp_deep_cell as cell  # noqa: E402

from decent.config import build  # noqa: E402
from decent.run.single import train_experiment  # noqa: E402
from decent.studies import _kit as kit  # noqa: E402
from decent.studies.deep import STUDY, DeepSpec  # noqa: E402

pytestmark = pytest.mark.dist
WORLD, ROUNDS, STEPS = 4, 12, {"dsgd": 0.9, "dat_sgd": 27.0}
SPEC = kit.load_spec(DeepSpec, ROOT / "configs/studies/deep_quick.toml")


def _worker(rank: int, world: int, draws: str, rounds: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    out = {}
    for m, s in STEPS.items():
        record, params = cell.run_cell(SPEC, m, "ring", 0.1, s, seed=1, rounds=rounds, draws=draws)
        out[m] = (record, params.numpy())  # numpy: torch tensors leave a child by fd passing
    return out


def test_ranks_equal_the_simulator_on_its_draws() -> None:
    ranks = run_group(_worker, WORLD, "simulator", ROUNDS, timeout=240.0)
    spec = SPEC.replace(num_nodes=(WORLD,), evals=1, samples={"digits_mlp": ROUNDS * WORLD * 16})
    for method, step in STEPS.items():
        config = spec.config(("digits_mlp", method, "ring", WORLD, 0.1), step, 1, STUDY)
        output = train_experiment(build(config)).output
        assert output is not None
        expected = output.mean(0)
        for record, params in (r[method] for r in ranks):
            assert record["rounds"] == ROUNDS
            assert abs(params - expected.numpy()).max() <= 1e-10, method
        assert (output[0] - output[1]).abs().max().item() > 1e-6  # mixing seen


def test_own_draws_differ_from_the_simulator_yet_learn() -> None:
    ranks = run_group(_worker, WORLD, "loader", 60, timeout=240.0)
    for method in STEPS:
        record, _ = ranks[0][method]
        assert record["acc"] > 0.3, record  # chance is 0.1 on digits' 10 classes
