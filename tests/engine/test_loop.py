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
    res = train(
        DSGD(lr=0.05), task, comm, rounds=20, eval_every=5, callbacks=[hist], per_node_eval=True
    )
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
    res = train(DSGD(lr=0.05), task, comm, rounds=10, eval_every=10, per_node_eval="every")
    r = res.final
    assert r["eval/loss@node_min"] <= r["eval/loss@node_mean"] <= r["eval/loss@node_max"]


@pytest.mark.parametrize(
    ("mode", "with_nodes"),
    [("every", [0, 5, 10]), ("final", [10]), ("none", []), (True, [0, 5, 10]), (False, [])],
)
def test_per_node_evaluation_modes(mode, with_nodes):
    task, comm = _setup()
    res = train(DSGD(lr=0.05), task, comm, rounds=10, eval_every=5, per_node_eval=mode)
    assert [int(r["round"]) for r in res.records if "eval/loss@node_max" in r] == with_nodes
    assert all("eval/loss@mean" in r for r in res.records)


def test_per_node_metrics_do_not_depend_on_the_evaluation_chunks():
    """Many nodes are evaluated in chunks; the numbers equal one evaluation of all rows."""
    from decent.metrics import evaluate

    task = LeastSquares(num_nodes=150, dim=3, heterogeneity=1.0)
    comm = SimCommunicator(ring(150))
    x = torch.randn(150, 3, generator=torch.Generator().manual_seed(1))
    got = evaluate(task, x, comm)
    whole = task.evaluate(x)["loss"]
    assert got["eval/loss@node_max"] == float(whole.max())
    assert got["eval/loss@node_min"] == float(whole.min())


def test_divergence_is_caught_early_relative_to_the_initial_loss():
    """A run whose loss explodes stops at the first check above the limit, not at inf."""
    task, comm = _setup()
    with pytest.warns(DivergenceWarning, match="above divergence_factor = 100 times") as rec:
        res = train(
            DSGD(lr=3.0),
            task,
            comm,
            rounds=400,
            eval_every=50,
            check_every=4,
            divergence_factor=100.0,
        )
    assert res.status == "diverged" and res.rounds_completed <= 40
    assert len(rec) == 1  # one warning, one message
    assert res.message is not None
    assert "produced a" not in res.message and "lr=3.0" in res.message
    # without a factor the same run goes on until the loss is no longer finite
    with pytest.warns(DivergenceWarning, match="infinite|NaN"):
        late = train(
            DSGD(lr=3.0),
            task,
            SimCommunicator(ring(8)),
            rounds=4000,
            eval_every=50,
            check_every=4,
            divergence_factor=None,
        )
    assert late.rounds_completed > res.rounds_completed


def test_x0_sets_the_start_point_for_every_node_or_each_node():
    task, comm = _setup()
    start = torch.tensor([1.0, -1.0, 0.5, 2.0])
    res = train(DSGD(lr=0.0), task, comm, rounds=3, x0=start)
    assert res.output is not None
    assert torch.equal(res.output, start.expand(8, 4))  # lr = 0 keeps the start point
    rows = torch.arange(32.0).reshape(8, 4)
    res = train(DSGD(lr=0.0), task, SimCommunicator(ring(8)), rounds=1, x0=rows)
    mixed = torch.as_tensor(ring(8).weights(1).dense()) @ rows
    torch.testing.assert_close(res.output, mixed, rtol=0, atol=1e-12)
    assert torch.equal(rows, torch.arange(32.0).reshape(8, 4))  # the caller's tensor is untouched
    with pytest.raises(ValueError, match=r"x0 must be a tensor of shape \(d,\) = \(4,\)"):
        train(DSGD(lr=0.1), task, comm, rounds=1, x0=torch.zeros(3))


def test_divergence_stops_with_a_clear_message_and_keeps_records():
    task, comm = _setup()
    with pytest.warns(DivergenceWarning, match=r"diverged at round \d+: dat_sgd with lr=50"):
        res = train(DATSGD(lr=50.0), task, comm, rounds=500, eval_every=2)
    assert res.status == "diverged"
    assert res.rounds_completed < 500
    assert res.message is not None
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
    assert a is not None and b is not None and c is not None
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_compile_is_not_offered():
    """torch.compile of the oracle was slower than eager at every M measured (issue 27), so
    neither the loop nor the oracle takes it; a caller still passing it is told at once."""
    task, comm = _setup(6)
    with pytest.raises(TypeError, match="compile"):
        train(DSGD(lr=0.1), task, comm, rounds=1, compile=True)  # type: ignore[call-arg]


def test_output_averages_equal_averages_of_the_iterates_computed_by_hand():
    """Weighted: sum_s s x_s / sum_s s; tail: uniform over rounds T//2 + 1 .. T."""
    task = LeastSquares(num_nodes=6, dim=4, noise=0.3, heterogeneity=1.0, seed=1)
    T = 9
    outputs = []
    for s in range(1, T + 1):  # x_s: the output after s rounds (same draws: a prefix)
        res = train(DSGD(lr=0.1), task, SimCommunicator(ring(6)), rounds=s, seed=4)
        assert res.output is not None
        outputs.append(res.output.mean(dim=0))
    weighted = torch.stack([s * x for s, x in zip(range(1, T + 1), outputs, strict=True)]).sum(
        dim=0
    ) / (T * (T + 1) / 2)
    tail = torch.stack(outputs[T // 2 :]).mean(dim=0)
    res = train(
        DSGD(lr=0.1),
        task,
        SimCommunicator(ring(6)),
        rounds=T,
        seed=4,
        eval_every=3,
        averages=("tail", "weighted"),
    )
    last = res.records[-1]
    assert last["eval/subopt@mean"] == pytest.approx(
        float(task.excess_risk(outputs[-1][None])[0]), rel=1e-9
    )
    assert last["eval/subopt@weighted"] == pytest.approx(
        float(task.excess_risk(weighted[None])[0]), rel=1e-9
    )
    assert last["eval/subopt@tail"] == pytest.approx(
        float(task.excess_risk(tail[None])[0]), rel=1e-9
    )
    # the tail average exists only once the tail has begun (round 6 > 4, not round 3)
    assert [("eval/subopt@tail" in r) for r in res.records] == [False, False, True, True]


def test_unknown_average_is_rejected():
    task, comm = _setup()
    with pytest.raises(ValueError, match=r"averages may hold \['tail', 'weighted'\], got 'ema'"):
        train(DSGD(lr=0.1), task, comm, rounds=2, averages=("ema",))  # type: ignore[arg-type]
