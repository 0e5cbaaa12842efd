"""Shared fixtures and helpers."""

from __future__ import annotations

import os

import torch

torch.set_default_dtype(torch.float64)
# Keep the suite predictable on 2 cores; spawned dist tests set their own.
torch.set_num_threads(min(2, os.cpu_count() or 1))

# CI runs the same hypothesis examples every time (reproducible verdicts); local runs keep
# exploring new ones. Any failure hypothesis finds is pinned as an explicit regression test.
from hypothesis import settings as _hyp_settings  # noqa: E402

_hyp_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    _hyp_settings.load_profile("ci")
