"""Placement helpers of the distributed communicator (pure functions, no process group)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decent.comm.dist import DistConfigError, block_placement


@settings(max_examples=50, deadline=None)
@given(world=st.integers(1, 16), extra=st.integers(0, 40))
def test_block_placement_is_contiguous_balanced_cover(world: int, extra: int) -> None:
    n = world + extra
    blocks = block_placement(n, world)
    assert len(blocks) == world
    assert [i for b in blocks for i in b] == list(range(n))  # contiguous, in rank order
    sizes = [len(b) for b in blocks]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)  # the larger blocks come first


def test_block_placement_rejects_more_ranks_than_nodes() -> None:
    with pytest.raises(DistConfigError, match=r"num_nodes=3 < world_size=4"):
        block_placement(3, 4)
    with pytest.raises(DistConfigError, match="world_size must be >= 1"):
        block_placement(3, 0)
