"""BatchNorm, dropout, tied weights, parameters without a gradient, clipping, checkpoint and
resume, averaged(), and a loss scaler whose skip decision all ranks agree on (4 gloo ranks)."""

from __future__ import annotations

import numpy as np
import pytest
from ddp_cases import N, features_worker, scaler_worker
from dist_harness import run_group

pytestmark = pytest.mark.dist


def test_resume_tied_weights_and_averaged(tmp_path):
    ranks = run_group(features_worker, N, str(tmp_path), timeout=240.0)
    for r in ranks[1:]:  # rank 0's start was broadcast
        np.testing.assert_array_equal(r["start"], ranks[0]["start"])
        np.testing.assert_array_equal(r["frozen"], ranks[0]["frozen"])
    for r in ranks:
        assert r["tied"]
        assert r["resumed_step"] == 8
        for full, resumed in zip(r["full"], r["resumed"], strict=True):
            np.testing.assert_array_equal(full, resumed)  # bit for bit
        # BatchNorm statistics, DAT-SGD's [w | x], momentum and Adam moments: all resumed
        for name in ("buffers", "state"):
            assert len(r[f"full_{name}"]) == len(r[f"resumed_{name}"]) > 1
            for full, resumed in zip(r[f"full_{name}"], r[f"resumed_{name}"], strict=True):
                np.testing.assert_array_equal(full, resumed)
        for after, full in zip(r["after_avg"], r["full"], strict=True):
            np.testing.assert_array_equal(after, full)  # averaged() restores
        np.testing.assert_array_equal(r["running_mean_after"], r["running_mean"])
    # the exact network average of the outputs, identical on every rank
    mean_out = np.mean([r["output"][0] for r in ranks], axis=0)
    flat = np.concatenate([p.reshape(-1) for p in ranks[0]["avg_params"]])
    np.testing.assert_allclose(flat[: mean_out.size], mean_out, rtol=0, atol=1e-6)
    mean_bn = np.mean([r["running_mean"] for r in ranks], axis=0)
    for r in ranks:
        np.testing.assert_allclose(r["avg_running_mean"], mean_bn, rtol=0, atol=1e-6)
        for a, b in zip(r["avg_params"], ranks[0]["avg_params"], strict=True):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(ranks[0]["running_mean"], ranks[1]["running_mean"])  # local
    assert not np.array_equal(ranks[0]["full"][0], ranks[1]["full"][0])  # gossip, not averaging


def test_loss_scaler_skips_on_every_rank_together():
    ranks = run_group(scaler_worker, N, timeout=120.0)
    for r in ranks:
        assert r["taken"] == [True, False, True, True, True]
        assert r["unchanged"] == [False, True, False, False, False]
        assert r["t"] == 4
        assert r["scales"] == ranks[0]["scales"]
    assert ranks[0]["scales"] == [1024.0, 512.0, 512.0, 1024.0, 1024.0]


def test_gossiped_buffers_are_mixed_by_w():
    from ddp_cases import gossip_buffers_worker

    from decent.topology import ring

    ranks = run_group(gossip_buffers_worker, N, timeout=120.0)
    w = ring(N).weights(1).dense()
    before = np.stack([r["before"] for r in ranks])
    after = np.stack([r["after"] for r in ranks])
    np.testing.assert_allclose(after, w @ before, rtol=0, atol=1e-6)
    assert not np.allclose(before[0], before[1])
