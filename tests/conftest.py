"""Shared fixtures and helpers."""

from __future__ import annotations

import os

import torch

torch.set_default_dtype(torch.float64)
# Keep the suite predictable on 2 cores; spawned dist tests set their own.
torch.set_num_threads(min(2, os.cpu_count() or 1))
