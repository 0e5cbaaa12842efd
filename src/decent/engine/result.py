"""What a run leaves behind (:class:`RunResult`) and what callbacks learn at its start (:class:`RunInfo`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from decent._types import NodeTensor
from decent.tasks.base import Objective


@dataclass(frozen=True)
class RunInfo:
    """What a callback learns at the start of a run."""

    algorithm: str
    task: str
    topology: str
    num_nodes: int
    dim: int
    rounds: int
    eval_every: int
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)
    objective: Objective | None = None
    """What the task is judged by (:func:`decent.tasks.base.objective_of`)."""


Status = Literal["finished", "diverged", "interrupted"]


class DivergenceWarning(RuntimeWarning):
    """A run produced a non-finite loss and was stopped."""


@dataclass
class RunResult:
    """What a run leaves behind.

    Attributes:
        records: one flat dict per evaluation round (``"round"`` plus stable metric names).
        status: ``"finished"``, ``"diverged"`` or ``"interrupted"``.
        message: why a run stopped early (``None`` when finished).
        rounds_completed: rounds fully executed.
        state: the algorithm's final state.
        output: the final evaluated models ``(m, d)`` (``algorithm.output(state)``).
    """

    records: list[dict[str, float]]
    status: Status
    rounds_completed: int
    state: Any = None
    output: NodeTensor | None = None
    message: str | None = None
    info: RunInfo | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> dict[str, float]:
        """The last evaluation's metrics."""
        return dict(self.records[-1]) if self.records else {}

    def history(self, metric: str) -> tuple[list[int], list[float]]:
        """``(rounds, values)`` of one metric over the evaluation rounds."""
        rounds = [int(r["round"]) for r in self.records if metric in r]
        values = [r[metric] for r in self.records if metric in r]
        return rounds, values

    def to_frame(self) -> Any:
        """The records as a pandas DataFrame (one row per evaluation round)."""
        import pandas as pd

        return pd.DataFrame.from_records(self.records)
