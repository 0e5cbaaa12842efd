"""A rank that dies (SIGKILL) or hangs (SIGSTOP) does not take the run down.

4 gloo ranks on a ring train D-SGD in the fault_tolerant mode; rank 2 kills (or stops)
itself at round 15 of 40. Its neighbours detect it (closed connection, or heartbeat
silence past ``failure_timeout``), drop its edges, re-weight W on the survivors, and the
three survivors finish; rank 0 records the run with who left and when.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from dist_harness import run_group

from decent.results import Store

pytestmark = pytest.mark.dist

VICTIM = 2
CRASH_ROUND = 15
TIMEOUT_S = 2.0


def _raw(study: str) -> dict[str, Any]:
    return {
        "study": study,
        "rounds": 40,
        "eval_every": 10,
        "topology": {"kind": "ring", "num_nodes": 4},
        "algorithm": {"kind": "dsgd", "lr": 0.05},
        "task": {"kind": "least_squares", "dim": 3, "batch_size": 2, "heterogeneity": 1.0},
    }


COMBINERS: dict[str, dict[str, Any]] = {
    "chebyshev": {"chebyshev_steps": 2},
    "byzantine": {
        "byzantine": {"nodes": [0], "attack": "sign_flip", "aggregation": "clipping", "tau": 0.5}
    },
}
"""Combiners over the fault-tolerant transport: Chebyshev's 2 exchanges a round, a robust rule."""


def _crash_worker(
    rank: int, world_size: int, out: str, sig: int, study: str, combiner: str = ""
) -> Any:
    import time

    from decent.config import ExperimentConfig
    from decent.engine import Callback
    from decent.run.distributed.runtime import run_rank

    class Crash(Callback):
        def on_round(self, t: int) -> None:
            if rank == VICTIM and t == CRASH_ROUND:
                os.kill(os.getpid(), sig)
                time.sleep(600)  # SIGSTOP: never reached until continued

    start = time.monotonic()
    result = run_rank(
        ExperimentConfig.model_validate({**_raw(study), **COMBINERS.get(combiner, {})}),
        out=out,
        mode="fault_tolerant",
        failure_timeout=TIMEOUT_S,
        callbacks=[Crash()],
    )
    assert result is not None and result.output is not None
    return {
        "status": result.status,
        "events": result.extra["events"],
        "output": result.output.numpy(),
        "final": result.final,
        "wall_s": time.monotonic() - start,
    }


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["sigkill", "sigstop"])
def test_survivors_finish_and_record_who_left(tmp_path: Path, sig: int) -> None:
    study = f"crash-{signal.Signals(sig).name.lower()}"
    results = run_group(
        _crash_worker, 4, str(tmp_path), int(sig), study, may_die=[VICTIM], timeout=90
    )
    assert results[VICTIM] is None
    survivors = [r for i, r in enumerate(results) if i != VICTIM]
    for rank, r in enumerate(results):
        if rank == VICTIM:
            continue
        assert r["status"] == "finished"
        (event,) = r["events"]
        assert event["rank"] == VICTIM and event["nodes"] == [VICTIM]
        # neighbours 1 and 3 stop at the crash round; rank 0 learns at the latest when it
        # waits for the victim in the next evaluation (round 20)
        last = CRASH_ROUND + 3 if rank in (1, 3) else 20
        assert CRASH_ROUND <= event["round"] <= last, (rank, event)
        assert event["wall_s"] < r["wall_s"]
        if sig == signal.SIGSTOP:  # only the heartbeat can tell
            assert event["silent_s"] <= TIMEOUT_S + 1.5
        assert np.all(np.isfinite(r["output"]))
        # metrics over the 3 survivors: the same on every survivor
        assert r["final"]["eval/loss@mean"] == survivors[0]["final"]["eval/loss@mean"]
    # the neighbours of the victim, 1 and 3, see it directly
    if sig == signal.SIGKILL:
        assert {results[1]["events"][0]["detected_by"], results[3]["events"][0]["detected_by"]} <= {
            "connection",
            "heartbeat",
            "store",
        }
    store = Store(tmp_path)
    runs = store.runs(study)
    assert list(runs["status"]) == ["finished"]
    final = dict(zip(store.final(study)["metric"], store.final(study)["value"], strict=True))
    assert final["dist/alive_nodes"] == 3.0
    assert CRASH_ROUND <= final[f"dist/left/rank{VICTIM}/round"] <= CRASH_ROUND + 3
    assert np.isfinite(final["eval/loss@mean"])
    records = store.records(study)
    alive = records[records["metric"] == "dist/alive_nodes"].sort_values("round")
    assert next(iter(alive["value"])) == 4.0 and list(alive["value"])[-1] == 3.0


@pytest.mark.parametrize("combiner", list(COMBINERS))
def test_combiners_carry_on_over_the_survivors(tmp_path: Path, combiner: str) -> None:
    """Chebyshev and a robust rule over the fault-tolerant transport: rank 2 is killed, the
    survivors finish on the re-weighted W, the lowest of them records (through the combiner),
    and the metrics are over the survivors, checked against the task at their outputs: the
    honest ones only with Byzantine node 0 (nodes 1 and 3: 2 honest, not the 3 of the start)."""
    from decent.config import ExperimentConfig, build

    study = f"crash-{combiner}"
    results = run_group(
        _crash_worker,
        4,
        str(tmp_path),
        int(signal.SIGKILL),
        study,
        combiner,
        may_die=[VICTIM],
        timeout=90,
    )
    assert results[VICTIM] is None
    counted = [1, 3] if combiner == "byzantine" else [0, 1, 3]
    task = build(ExperimentConfig.model_validate({**_raw(study), **COMBINERS[combiner]})).task
    x = np.concatenate([results[i]["output"] for i in counted])
    want_mean = float(task.evaluate(torch.as_tensor(x.mean(axis=0))[None])["loss"][0])
    want_nodes = float(task.evaluate(torch.as_tensor(x))["loss"].mean())
    for rank, r in enumerate(results):
        if rank == VICTIM:
            continue
        assert r["status"] == "finished"
        (event,) = r["events"]
        assert event["rank"] == VICTIM
        assert CRASH_ROUND <= event["round"] <= 20, (rank, event)  # rounds, not exchanges
        assert np.all(np.isfinite(r["output"]))
        assert r["final"]["eval/loss@mean"] == pytest.approx(want_mean, rel=1e-12)
        assert r["final"]["eval/loss@node_mean"] == pytest.approx(want_nodes, rel=1e-12)
    store = Store(tmp_path)
    assert list(store.runs(study)["status"]) == ["finished"]
    final = dict(zip(store.final(study)["metric"], store.final(study)["value"], strict=True))
    assert final["dist/alive_nodes"] == 3.0
    assert final["eval/loss@mean"] == pytest.approx(want_mean, rel=1e-12)
