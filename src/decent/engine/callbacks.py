"""Callbacks: everything the loop does besides training (progress, logging, storage)."""

from __future__ import annotations

import math
from typing import Any

from decent.engine.result import RunInfo, RunResult


class Callback:
    """Base class; override the hooks you need. Hooks must not change training state."""

    def on_start(self, info: RunInfo) -> None:
        """Called once before round 1."""

    def on_round(self, t: int) -> None:
        """Called after every round (keep it cheap)."""

    def on_eval(self, t: int, metrics: dict[str, float]) -> None:
        """Called with the flat metrics of every evaluation round (``t = 0`` is the start)."""

    def on_end(self, result: RunResult) -> None:
        """Called once at the end, also when the run diverged or was interrupted."""


class ProgressBar(Callback):
    """A tqdm progress bar over rounds showing the latest headline metric."""

    def __init__(
        self,
        metric: str | None = None,
        *,
        leave: bool = True,
        position: int | None = None,
        desc: str | None = None,
        disable: bool = False,
    ) -> None:
        self.metric = metric
        self.desc = desc
        self.options = {"leave": leave, "position": position, "disable": disable}
        self._bar: Any = None

    def on_start(self, info: RunInfo) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=info.rounds,
            desc=self.desc or f"{info.algorithm} on {info.topology} (n={info.num_nodes})",
            unit="round",
            dynamic_ncols=True,
            mininterval=0.25,
            **self.options,
        )

    def on_round(self, t: int) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def on_eval(self, t: int, metrics: dict[str, float]) -> None:
        if self._bar is None:
            return
        key = self.metric or next(
            (k for k in ("eval/subopt@mean", "eval/loss@mean") if k in metrics), None
        )
        if key is not None and key in metrics:
            value = metrics[key]
            self._bar.set_postfix_str(
                f"{key.split('/')[-1]}={value:.3e}" if math.isfinite(value) else f"{key}={value}",
                refresh=False,
            )

    def on_end(self, result: RunResult) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class History(Callback):
    """Keep every evaluation in memory (the loop already does; this is for composition)."""

    def __init__(self) -> None:
        self.records: list[dict[str, float]] = []

    def on_eval(self, t: int, metrics: dict[str, float]) -> None:
        self.records.append({"round": float(t), **metrics})
