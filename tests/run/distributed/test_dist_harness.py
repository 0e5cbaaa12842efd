"""The spawn harness itself: results come back by rank, failures fail fast instead of hanging."""

from __future__ import annotations

import os
import time

import pytest
from dist_harness import free_port, run_group

pytestmark = pytest.mark.dist


def _echo(rank: int, world_size: int, tag: str) -> tuple[int, int, str, str | None]:
    import torch.distributed as dist

    return dist.get_rank(), dist.get_world_size(), tag, os.environ.get("OMP_NUM_THREADS")


def _raise_on_1(rank: int, world_size: int) -> int:
    if rank == 1:
        raise ValueError("boom on rank 1")
    return rank


def _silent_exit_on_0(rank: int, world_size: int) -> int:
    if rank == 0:
        os._exit(7)
    return rank


def test_results_come_back_in_rank_order() -> None:
    assert run_group(_echo, 3, "x") == [(r, 3, "x", "1") for r in range(3)]


def test_a_raising_rank_fails_with_its_traceback() -> None:
    with pytest.raises(RuntimeError, match=r"(?s)rank 1 of 2 failed first.*boom on rank 1"):
        run_group(_raise_on_1, 2)


def test_a_rank_that_dies_silently_fails_fast() -> None:
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="rank 0 exited with code 7 without reporting"):
        run_group(_silent_exit_on_0, 2, timeout=60)
    assert time.monotonic() - start < 30


def _run_ahead(rank: int, world_size: int) -> list[list[float]] | None:
    """Rank 0 completes three sends before rank 1 posts its first receive."""
    import torch
    import torch.distributed as dist

    if rank == 0:
        for t in range(3):
            buf = torch.full((t + 1,), float(t))
            for work in dist.batch_isend_irecv([dist.P2POp(dist.isend, buf, 1)]):
                work.wait()
        return None
    time.sleep(0.5)
    got = []
    for t in range(3):
        buf = torch.zeros(t + 1)
        for work in dist.batch_isend_irecv([dist.P2POp(dist.irecv, buf, 0)]):
            work.wait()
        got.append(buf.tolist())
    return got


def test_gloo_matches_point_to_point_messages_in_order() -> None:
    """DistCommunicator relies on this: a rank may run rounds ahead of its receivers."""
    assert run_group(_run_ahead, 2)[1] == [[0.0], [1.0, 1.0], [2.0, 2.0, 2.0]]


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
