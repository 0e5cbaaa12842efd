"""The thread policy of decent._threads: its rules, applied by the round loop."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import torch

import decent
from decent import _threads
from decent.comm import SimCommunicator
from decent.engine import Callback
from decent.tasks import LeastSquares
from decent.topology import ring


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv(_threads.SWEEP_WORKERS_ENV, raising=False)
    return monkeypatch


def test_omp_num_threads_is_the_users_word(no_env: pytest.MonkeyPatch) -> None:
    no_env.setenv("OMP_NUM_THREADS", "3")
    assert _threads.intra_op_threads(busy=99) == 3
    assert _threads.intra_op_threads(work=10, busy=0) == 3
    no_env.setenv("OMP_NUM_THREADS", "junk")  # not a count: the other rules decide
    assert _threads.intra_op_threads(busy=0) == _threads.affinity_cores()


def test_cores_follow_affinity_sweep_workers_and_busy_neighbours(
    no_env: pytest.MonkeyPatch,
) -> None:
    no_env.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    assert _threads.affinity_cores() == 8
    assert _threads.intra_op_threads(busy=0) == 8
    assert _threads.intra_op_threads(busy=5) == 3  # three cores free
    assert _threads.intra_op_threads(busy=20) == 1  # never fewer than one
    assert _threads.intra_op_threads(work=_threads.SMALL_WORK - 1, busy=0) == 1
    no_env.setenv(_threads.SWEEP_WORKERS_ENV, "3")
    assert _threads.share_cores() == 2
    assert _threads.intra_op_threads(busy=0) == 2
    assert _threads.intra_op_threads(busy=7) == 1


def test_busy_elsewhere_is_a_count_of_cores() -> None:
    busy = _threads.busy_elsewhere()
    assert isinstance(busy, int) and busy >= 0


def test_a_run_holds_its_thread_count_and_restores_the_callers(no_env: pytest.MonkeyPatch) -> None:
    """Small work runs torch on one thread; the caller's count comes back afterwards, and
    the numbers do not depend on the count."""
    seen: list[int] = []

    class Spy(Callback):
        def on_round(self, t: int) -> None:
            seen.append(torch.get_num_threads())

    task = LeastSquares(8, dim=3, dtype=torch.float64)
    before = torch.get_num_threads()
    out = decent.train(
        decent.DSGD(lr=0.05), task, SimCommunicator(ring(8)), rounds=5, callbacks=[Spy()]
    )
    assert seen == [1] * 5
    assert torch.get_num_threads() == before
    no_env.setenv("OMP_NUM_THREADS", "2")
    again = decent.train(
        decent.DSGD(lr=0.05), task, SimCommunicator(ring(8)), rounds=5, callbacks=[Spy()]
    )
    assert seen[5:] == [2] * 5
    assert torch.equal(out.output, again.output)  # type: ignore[arg-type]


class _Threads(Callback):
    """Records the torch thread count the round loop runs with."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def on_round(self, t: int) -> None:
        self.seen.add(torch.get_num_threads())


@pytest.mark.parametrize("num_nodes", [1, 4])
def test_the_thread_count_never_changes_a_number(
    no_env: pytest.MonkeyPatch, num_nodes: int
) -> None:
    """The policy moves the thread count with the machine's load, so every record must be
    the same bits on 1 and on 2 threads: gradients, mixing and every metric reduction, on
    an MLP large enough (about 0.3-1.1M parameters per node) that torch splits kernels."""
    from decent.tasks import data, models
    from decent.topology import complete

    hidden = (1024, 1024) if num_nodes == 1 else (512, 512)
    task = models.mlp(data.digits(), num_nodes, hidden=hidden, seed=0)
    topology = ring(num_nodes) if num_nodes >= 3 else complete(num_nodes)
    frames = []
    for threads in (1, 2):
        no_env.setenv("OMP_NUM_THREADS", str(threads))
        for algorithm in (decent.DSGD(lr=0.05), decent.DATSGD(lr=0.001)):
            seen = _Threads()
            res = decent.train(
                algorithm, task, SimCommunicator(topology), rounds=4, eval_every=2,
                callbacks=[seen], per_node_eval="final",
            )  # fmt: skip
            assert seen.seen == {threads}
            frame = res.to_frame()
            frames.append(frame.drop(columns=[c for c in frame.columns if "wall" in c]))
    for one, two in zip(frames[:2], frames[2:], strict=True):
        pd.testing.assert_frame_equal(one, two, check_exact=True)
