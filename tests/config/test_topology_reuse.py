"""A config's static topology is built once and reused by the next runs that ask for the
same one (a study builds ``complete(4096)``, seconds of work, for every run of a cell);
anything else is built fresh."""

from __future__ import annotations

import numpy as np
import pytest

from decent.config import build_topology, loads_config
from decent.topology import StaticTopology


def _section(kind: str, n: int, extra: str = "") -> object:
    cfg = loads_config(
        f"""
rounds = 2
[topology]
kind = "{kind}"
num_nodes = {n}
{extra}
[algorithm]
kind = "dsgd"
lr = 0.1
[task]
kind = "least_squares"
dim = 3
"""
    )
    return cfg.topology


def test_the_same_static_section_gives_the_same_built_topology() -> None:
    first = build_topology(_section("torus", 9))
    again = build_topology(_section("torus", 9))
    assert isinstance(first, StaticTopology) and again is first
    other = build_topology(_section("torus", 16))
    assert other is not first and other.num_nodes == 16
    seeded = build_topology(_section("random_regular", 10, "k = 3\nseed = 1"))
    reseeded = build_topology(_section("random_regular", 10, "k = 3\nseed = 2"))
    assert seeded is not reseeded
    assert seeded is build_topology(_section("random_regular", 10, "k = 3\nseed = 1"))


def test_the_reused_topology_equals_a_fresh_build_and_is_kept_bounded() -> None:
    from decent.config import _build
    from decent.topology import make

    reused = build_topology(_section("exponential", 12))
    fresh = make("exponential", 12)
    assert np.array_equal(reused.weights(1).dense(), fresh.weights(1).dense())
    for n in range(3, 3 + 2 * _build._BUILT_MAX):
        build_topology(_section("ring", n))
    assert len(_build._BUILT) <= _build._BUILT_MAX


def test_a_time_varying_topology_is_built_fresh() -> None:
    a = build_topology(_section("one_peer_exponential", 8))
    b = build_topology(_section("one_peer_exponential", 8))
    assert a is not b


def test_the_kept_topologies_stay_within_their_entry_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from decent.config import _build

    monkeypatch.setattr(_build, "_BUILT", {})
    monkeypatch.setattr(_build, "_BUILT_NNZ", 100)
    big = build_topology(_section("ring", 40))  # 120 entries: never kept
    assert build_topology(_section("ring", 40)) is not big
    ten = build_topology(_section("ring", 10))  # 30 entries
    twelve = build_topology(_section("ring", 12))  # 36
    assert build_topology(_section("ring", 10)) is ten  # now used after ring(12)
    build_topology(_section("ring", 20))  # 60: ring(12), least recently used, goes
    assert build_topology(_section("ring", 10)) is ten
    assert build_topology(_section("ring", 12)) is not twelve
