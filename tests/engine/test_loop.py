"""The round loop: records, divergence, interruption, callbacks."""

from __future__ import annotations

import math

import pytest
import torch

from decent.algorithms import DATSGD, DSGD
from decent.comm import SimCommunicator
from decent.engine import Callback, DivergenceWarning, History, ProgressBar, train
from decent.tasks import LeastSquares
from decent.topology import ring


def _setup(n=8):
    return LeastSquares(num_nodes=n, dim=4, noise=0.1, seed=0), SimCommunicator(ring(n))


def test_records_have_stable_names_and_cadence():
    task, comm = _setup()
    hist = History()
    res = train(DSGD(lr=0.05), task, comm, rounds=20, eval_every=5, callbacks=[hist])
    assert [int(r["round"]) for r in res.records] == [0, 5, 10, 15, 20]
    assert hist.records == res.records
    expected = {
        "round",
        "eval/loss@mean",
        "eval/subopt@mean",
        "consensus/dist2",
        "eval/loss@node_min",
        "eval/loss@node_mean",
        "eval/loss@node_max",
        "eval/subopt@node_max",
        "grad_evals",
        "comm/bytes",
        "comm/messages",
        "comm/bytes_per_node_max",
        "comm/bytes_per_node_mean",
        "comm/rounds",
        "time/wall_s",
    }
    assert expected <= set(res.records[0])
    assert "train/loss" in res.records[1] and "train/loss" not in res.records[0]
    assert res.final["grad_evals"] == 20 * 8
    assert res.final["comm/bytes"] == 20 * 8 * 2 * 4 * 8  # rounds * nodes * 2 nbrs * d * 8 B
    rounds, values = res.history("consensus/dist2")
    assert rounds == [0, 5, 10, 15, 20] and values[0] == 0.0
    assert len(res.to_frame()) == 5


def test_node_metrics_bracket_the_mean():
    task, comm = _setup()
    res = train(DSGD(lr=0.05), task, comm, rounds=10, eval_every=10)
    r = res.final
    assert r["eval/loss@node_min"] <= r["eval/loss@node_mean"] <= r["eval/loss@node_max"]


def test_divergence_stops_with_a_clear_message_and_keeps_records():
    task, comm = _setup()
    with pytest.warns(DivergenceWarning, match=r"diverged at round \d+: dat_sgd with lr=50"):
        res = train(DATSGD(lr=50.0), task, comm, rounds=500, eval_every=2)
    assert res.status == "diverged"
    assert res.rounds_completed < 500
    assert "gamma = lr * T" in res.message
    assert res.records and math.isfinite(res.records[0]["eval/loss@mean"])


class _Interrupt(Callback):
    def on_round(self, t):
        if t == 7:
            raise KeyboardInterrupt


class _Ends(Callback):
    def __init__(self):
        self.status = None

    def on_end(self, result):
        self.status = (result.status, result.rounds_completed, len(result.records))


def test_interrupt_calls_on_end_then_reraises():
    task, comm = _setup()
    ends = _Ends()
    with pytest.raises(KeyboardInterrupt):
        train(DSGD(lr=0.05), task, comm, rounds=20, eval_every=5, callbacks=[_Interrupt(), ends])
    assert ends.status == ("interrupted", 6, 2)


def test_progress_bar_runs(capsys):
    task, comm = _setup()
    res = train(DSGD(lr=0.05), task, comm, rounds=10, eval_every=5, callbacks=[ProgressBar()])
    assert res.status == "finished"
    assert "10/10" in capsys.readouterr().err


def test_bad_arguments():
    task, comm = _setup()
    with pytest.raises(ValueError, match="rounds must be an integer >= 1"):
        train(DSGD(lr=0.1), task, comm, rounds=0)
    with pytest.raises(ValueError, match="topology has 8 nodes but the task was built for 9"):
        train(DSGD(lr=0.1), LeastSquares(num_nodes=9, dim=4), comm, rounds=3)


def test_runs_are_reproducible_bit_for_bit():
    task, _ = _setup()
    a = train(DATSGD(lr=0.01), task, SimCommunicator(ring(8)), rounds=30, seed=4).output
    b = train(DATSGD(lr=0.01), task, SimCommunicator(ring(8)), rounds=30, seed=4).output
    c = train(DATSGD(lr=0.01), task, SimCommunicator(ring(8)), rounds=30, seed=5).output
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_compiled_oracle_equals_eager_and_survives_many_instances():
    """Many compiled oracles in one process must not fall back to eager (dynamo's limit)."""
    import torch._dynamo.config as dynamo_config

    from decent.engine import GradientOracle

    task, comm = _setup(6)
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    batch = task.sample(comm.node_ids, 1, 0)
    eager = GradientOracle(task)(x, batch)
    for _ in range(3):
        compiled = GradientOracle(task, compile=True)
        grads, losses = compiled(x[:, :4].clone(), batch)
        torch.testing.assert_close(grads, eager[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(losses, eager[1], rtol=1e-12, atol=1e-12)
    assert dynamo_config.recompile_limit >= 256
