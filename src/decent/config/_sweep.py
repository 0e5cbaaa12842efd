"""Expand a config's ``[sweep]`` section into the runs it stands for."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from decent.config._errors import ConfigError, Issue, dotted, issues_from_validation
from decent.config._models import ExperimentConfig
from decent.config._overrides import set_path


@dataclass(frozen=True)
class SweepPoint:
    """One run of a sweep: its validated config and the grid values that made it."""

    config: ExperimentConfig
    values: dict[str, Any]

    def label(self) -> str:
        """A short description: ``algorithm=dsgd(lr=0.1) topology=ring seed=0``."""
        parts = []
        for key, value in self.values.items():
            if isinstance(value, dict):
                inner = ", ".join(f"{k}={v}" for k, v in value.items() if k != "kind")
                text = f"{value.get('kind', '')}({inner})" if inner else str(value.get("kind"))
            else:
                text = str(value)
            parts.append(f"{key}={text}")
        return " ".join(parts)


def expand(config: ExperimentConfig) -> list[SweepPoint]:
    """Cross ``sweep.grid`` (in the order written) with ``sweep.seeds``; validate every point.

    A config without a sweep section is one point. Each point's config has ``sweep = None``.

    Raises:
        ConfigError: when a point is invalid; the line names the grid entry responsible,
            e.g. ``sweep.grid.algorithm[1].lr: -0.1 -> must be >= 0.0``.
    """
    base = config.model_dump(mode="json", exclude={"sweep"})
    sweep = config.sweep
    if sweep is None:
        return [SweepPoint(config.model_copy(update={"sweep": None}), {})]
    keys = list(sweep.grid)
    axes: list[list[tuple[int, Any]]] = [list(enumerate(sweep.grid[k])) for k in keys]
    seeds = sweep.seeds if sweep.seeds is not None else [config.seed]
    points: list[SweepPoint] = []
    issues: list[Issue] = []
    for combo in itertools.product(*axes):
        raw = copy.deepcopy(base)
        try:
            for key, (_, value) in zip(keys, combo, strict=False):
                raw = set_path(raw, key, value)
        except ConfigError as err:
            issues += err.issues
            continue
        for seed in seeds:
            raw_seed = dict(raw, seed=seed) if sweep.seeds is not None else raw
            try:
                cfg = ExperimentConfig.model_validate(raw_seed)
            except ValidationError as err:
                for issue in issues_from_validation(err, ExperimentConfig, raw_seed):
                    issues.append(_attribute(issue, keys, combo))
                continue
            if cfg.cross_issues():
                issues += [_attribute(i, keys, combo) for i in cfg.cross_issues()]
                continue
            values = {k: v for k, (_, v) in zip(keys, combo, strict=False)}
            if sweep.seeds is not None:
                values["seed"] = seed
            points.append(SweepPoint(cfg, values))
    if issues:
        raise ConfigError(issues)
    return points


def _attribute(issue: Issue, keys: list[str], combo: tuple[tuple[int, Any], ...]) -> Issue:
    """Rename ``algorithm.lr`` to ``sweep.grid.algorithm[1].lr`` when a grid entry set it."""
    for key, (index, _) in reversed(list(zip(keys, combo, strict=False))):
        if (
            issue.path == key
            or issue.path.startswith(key + ".")
            or issue.path.startswith(key + "[")
        ):
            rest = issue.path[len(key) :]
            return Issue(f"sweep.grid.{dotted([key])}[{index}]{rest}", issue.value, issue.rule)
    return issue
