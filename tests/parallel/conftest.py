"""The DDP drop-in's tests spawn gloo ranks with the project's harness (tests/run/distributed)."""

from __future__ import annotations

import sys
from pathlib import Path

_HARNESS = str(Path(__file__).resolve().parents[1] / "run" / "distributed")
if _HARNESS not in sys.path:
    sys.path.insert(0, _HARNESS)
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
