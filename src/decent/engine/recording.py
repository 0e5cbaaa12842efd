"""A callback that streams a run's records into the results store as it goes."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from decent.engine.callbacks import Callback

if TYPE_CHECKING:
    from decent.engine.loop import RunResult
    from decent.results import RunWriter


class StoreRecorder(Callback):
    """Log every evaluation to a :class:`decent.results.RunWriter` and close the run at the end.

    Records are committed in batches by the writer, so a killed process loses at most the
    records since the last commit, and its run stays marked unfinished.
    """

    def __init__(self, writer: RunWriter) -> None:
        self.writer = writer

    def on_eval(self, t: int, metrics: dict[str, float]) -> None:
        self.writer.log(t, {k: v for k, v in metrics.items() if math.isfinite(v)})

    def on_end(self, result: RunResult) -> None:
        if self.writer.closed:
            return
        final = {k: v for k, v in result.final.items() if math.isfinite(v)}
        final["rounds_completed"] = result.rounds_completed
        if result.status == "finished":
            self.writer.finish("finished", final=final)
        elif result.status == "diverged":
            self.writer.finish("diverged", final=final)
        else:
            self.writer.fail("interrupted", result.message)
