"""The Python API's entry points name a wrong argument, and a non-finite problem is not
reported as a step size that is too large (issue 28, items 7 and 5)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

import decent
from decent.algorithms import DSGD
from decent.comm import SimCommunicator
from decent.engine import DivergenceWarning, train, train_replicas
from decent.engine.loop import _divergence_message
from decent.engine.privacy import Privacy
from decent.tasks import LeastSquares
from decent.topology import ring

N, D = 8, 5


def _parts() -> dict[str, Any]:
    return {
        "algorithm": DSGD(lr=0.05),
        "task": LeastSquares(num_nodes=N, dim=D),
        "comm": SimCommunicator(ring(N)),
    }


@pytest.mark.parametrize(
    ("argument", "bad", "fix"),
    [
        ("algorithm", "dsgd", "DSGD(lr=0.05)"),
        ("algorithm", DSGD, "DSGD(lr=0.05)"),
        ("algorithm", None, "DSGD(lr=0.05)"),
        ("task", "least_squares", "LeastSquares("),
        ("task", 3, "LeastSquares("),
        ("comm", "ring", "decent.topology.ring(8)"),
        ("comm", ring(N), "SimCommunicator("),
    ],
)
def test_train_names_a_wrong_argument(argument: str, bad: Any, fix: str) -> None:
    parts = _parts()
    parts[argument] = bad
    with pytest.raises(TypeError) as err:
        decent.train(parts["algorithm"], parts["task"], parts["comm"], rounds=2)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{argument} must be") and fix in line


def test_train_replicas_names_a_string_where_a_list_belongs() -> None:
    parts = _parts()
    with pytest.raises(TypeError, match=r"^algorithms must be a list"):
        train_replicas("dsgd", [parts["task"]], parts["comm"], rounds=2, seeds=[0])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^algorithm must be"):
        train_replicas(["dsgd"], [parts["task"]], parts["comm"], rounds=2, seeds=[0])  # type: ignore[list-item]


@pytest.mark.parametrize("bad", ["ring", b"ring", 8, 0.5, None, ring, [ring(4)]])
def test_sim_communicator_names_a_non_topology(bad: Any) -> None:
    with pytest.raises(TypeError) as err:
        SimCommunicator(bad)
    line = str(err.value)
    assert "\n" not in line and line.startswith("topology must be") and "ring(8)" in line


def _message(result: Any) -> str:
    assert result.status == "diverged"
    assert isinstance(result.message, str) and "\n" not in result.message
    return result.message


@pytest.mark.parametrize("lr", [0.0, 0.05])
def test_a_non_finite_start_is_not_blamed_on_the_step_size(lr: float) -> None:
    parts = _parts()
    x0 = torch.full((D,), float("nan"), dtype=torch.float64)
    with pytest.warns(DivergenceWarning):
        result = train(DSGD(lr=lr), parts["task"], parts["comm"], rounds=4, x0=x0)
    msg = _message(result)
    assert "not finite at round 0" in msg and "step size (try" not in msg
    assert result.rounds_completed == 0 and len(result.records) == 1


def test_non_finite_gradients_at_the_first_round_name_the_problem() -> None:
    parts = _parts()
    # Privacy now refuses noise_multiplier > 1e3, so the loop's own check is reached by a
    # value set after validation: noise 1e308 * N(0, 1) gives inf gradients at round 1.
    huge = Privacy(clip=1.0, noise_multiplier=1.0)
    object.__setattr__(huge, "noise_multiplier", 1e308)
    with pytest.warns(DivergenceWarning):
        result = train(parts["algorithm"], parts["task"], parts["comm"], rounds=4, privacy=huge)
    msg = _message(result)
    assert "gradients are not finite at round 1" in msg and "privacy.noise_multiplier" in msg
    assert "lower the step size" not in msg and result.rounds_completed == 0
    assert result.output is not None and torch.isfinite(result.output).all()  # no step taken


def test_a_real_divergence_still_suggests_a_smaller_step() -> None:
    parts = _parts()
    with pytest.warns(DivergenceWarning):
        result = train(DSGD(lr=10.0), parts["task"], parts["comm"], rounds=40)
    assert "lower the step size" in _message(result)
    zero = _divergence_message(DSGD(lr=0.0), 3, "made the training loss NaN")
    assert "lower the step size" not in zero and "lr = 0" in zero


def test_a_non_finite_replica_stops_alone_and_the_other_is_its_solo_run() -> None:
    task, comm = LeastSquares(num_nodes=N, dim=D), SimCommunicator(ring(N))
    nan = torch.full((D,), float("nan"), dtype=torch.float64)
    algos = [DSGD(lr=0.05), DSGD(lr=0.1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)
        bad, good = train_replicas(
            algos, [task, task], comm, rounds=6, seeds=[0, 1], x0s=[nan, None]
        )
    solo = train(algos[1], task, SimCommunicator(ring(N)), rounds=6, seed=1)
    assert bad.status == "diverged" and "not finite at round 0" in str(bad.message)
    assert good.status == "finished"
    assert good.output is not None and solo.output is not None
    assert torch.equal(good.output, solo.output)
