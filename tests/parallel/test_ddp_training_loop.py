"""The user's loop around the wrapper on 2 gloo ranks: gradient accumulation under
``no_sync``, an LR warm-up schedule, a parameter with no gradient (against plain SGD by
hand), and a ``torch.compile``-d forward under bf16 autocast (against eager float32)."""

from __future__ import annotations

import pytest
from ddp_cases import accumulation_worker, compile_bf16_worker
from dist_harness import run_group

pytestmark = pytest.mark.dist


def test_accumulation_schedule_and_unused_parameter_equal_sgd_by_hand():
    for r in run_group(accumulation_worker, 2, timeout=120.0):
        assert r["err"] <= 1e-12
        assert r["unused_same"]  # no gradient, zero step: untouched


def test_compiled_forward_under_bf16_autocast_tracks_eager_float32():
    for r in run_group(compile_bf16_worker, 2, timeout=240.0):
        assert r["dtype"] == "torch.float32"
        assert r["moved"] > 0.05  # the steps matter at the tolerance below
        assert r["err"] <= 2e-3
