"""Spawn a real gloo process group on localhost, run a function on every rank, collect results.

``run_group(fn, world_size, *args)`` starts ``world_size`` fresh processes,
each joins ``init_process_group("gloo", tcp://127.0.0.1:<free port>)``, calls
``fn(rank, world_size, *args)`` and sends its (picklable) return value back through a queue.
``fn`` must be importable at module level. A rank that raises or a group that hangs fails the
calling test with the rank's traceback or a timeout instead of hanging it.

Start method: ``forkserver`` where the platform has it, with torch and decent preloaded in
the server, else ``spawn`` (set ``DECENT_TEST_START_METHOD=spawn`` to force it). Children
never inherit a parent that has run torch code (no fork of a threaded process), and on a
2-core machine a 4-rank group starts in about a second instead of the ~15 s that four
``spawn``-ed interpreters take to import torch.
"""

from __future__ import annotations

import datetime
import os
import queue
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import torch.multiprocessing as mp

#: seconds a collective may block inside a child before gloo raises
OP_TIMEOUT_S = 30.0

_PRELOAD = [
    "torch",
    "torch.distributed",
    "scipy.sparse",
    "decent.comm.dist",
    "decent.comm.sim",
    # the training tests: config, engine, tasks, store (pandas) imported once, in the server
    "decent.config",
    "decent.engine",
    "decent.results",
    "decent.run",
    "decent.run.distributed.runtime",
    "decent.comm.gossip",
]


def _context() -> Any:
    method = os.environ.get("DECENT_TEST_START_METHOD", "")
    if not method:
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        # takes effect when the server starts (first use in this process); harmless after
        ctx.set_forkserver_preload([*_PRELOAD, "dist_harness", "dist_cases", "train_cases"])
    return ctx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind port 0 and read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(
    fn: Callable[..., Any],
    rank: int,
    world_size: int,
    port: int,
    out: Any,
    args: tuple[Any, ...],
    backend: str,
    parent_store: bool = False,
) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    try:
        if "nccl" in backend:
            torch.cuda.set_device(rank)  # NCCL: one GPU per rank, set before any P2P
        if parent_store:  # the parent hosts the store: any rank may die
            store = dist.TCPStore("127.0.0.1", port, world_size, is_master=False)
            dist.init_process_group(
                backend,
                store=store,
                rank=rank,
                world_size=world_size,
                timeout=datetime.timedelta(seconds=OP_TIMEOUT_S),
            )
        else:
            dist.init_process_group(
                backend,
                init_method=f"tcp://127.0.0.1:{port}",
                rank=rank,
                world_size=world_size,
                timeout=datetime.timedelta(seconds=OP_TIMEOUT_S),
            )
    except BaseException:
        out.put((rank, False, traceback.format_exc()))
        return
    try:
        result = fn(rank, world_size, *args)
        if not parent_store:
            dist.barrier()  # nobody tears the group down while a peer still talks
        out.put((rank, True, result))
    except BaseException:
        # report before tearing down, so the cause arrives before the peers' consequences
        out.put((rank, False, traceback.format_exc()))
        time.sleep(0.2)
    finally:
        dist.destroy_process_group()


_COLLATERAL = ("Connection closed by peer", "Connection reset by peer", "without reporting")


def run_group(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    backend: str = "gloo",
    timeout: float = 90.0,
    may_die: Sequence[int] = (),
) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` ranks; return results by rank.

    ``backend`` is passed to ``init_process_group`` (``"gloo"``; ``"nccl"`` sets the CUDA
    device of rank ``r`` to ``r`` first).

    ``may_die``: ranks that are allowed to die or hang (crash tests). Then the parent hosts
    the rendezvous store (so any rank may go), children skip the final barrier, the call
    returns once every other rank reported, and those ranks' results are ``None`` (or
    what they returned, if they did).

    Raises:
        RuntimeError: a rank raised (its traceback is in the message).
        TimeoutError: not every rank reported within ``timeout`` seconds.
    """
    ctx = _context()
    out = ctx.Queue()
    port = free_port()
    parent_store = bool(may_die)
    server = None
    if parent_store:
        import torch.distributed as dist

        server = dist.TCPStore(
            "127.0.0.1", port, world_size, is_master=True, wait_for_workers=False
        )
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    procs = [
        ctx.Process(
            target=_entry,
            args=(fn, r, world_size, port, out, args, backend, parent_store),
            daemon=True,
        )
        for r in range(world_size)
    ]
    try:
        for p in procs:
            p.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    results: dict[int, Any] = {}
    errors: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    give_up_at = deadline  # moved earlier once a rank failed or died without reporting
    try:
        must = set(range(world_size)) - set(may_die)
        while not must <= set(results) | set(errors):
            now = time.monotonic()
            if now >= give_up_at:
                break
            try:
                rank, ok, payload = out.get(timeout=min(0.5, give_up_at - now))
            except queue.Empty:
                dead = [
                    r
                    for r, p in enumerate(procs)
                    if r not in results
                    and r not in errors
                    and r not in may_die
                    and p.exitcode is not None
                ]
                for r in dead:  # died (abort, segfault, os._exit) without a word
                    errors[r] = f"rank {r} exited with code {procs[r].exitcode} without reporting"
                if errors:  # the peers of a failed rank get a short grace period
                    give_up_at = min(give_up_at, time.monotonic() + 5.0)
                continue
            (results if ok else errors)[rank] = payload
            if not ok:
                give_up_at = min(give_up_at, time.monotonic() + 5.0)
    finally:
        for p in procs:
            p.join(timeout=5.0)
        for p in procs:
            if p.is_alive():
                p.kill()  # SIGKILL also ends a stopped (SIGSTOP) process
                p.join(timeout=5.0)
        del server
    if errors:
        # the first report that is not a lost connection is the cause; the rest follow from it
        causes = [r for r, msg in errors.items() if not any(c in msg for c in _COLLATERAL)]
        first = causes[0] if causes else next(iter(errors))
        others = "".join(
            f"\n--- rank {r}: {msg.strip().splitlines()[-1]}"
            for r, msg in errors.items()
            if r != first
        )
        raise RuntimeError(
            f"rank {first} of {world_size} failed first (failed ranks {sorted(errors)}):\n"
            f"{errors[first]}{others}"
        )
    missing = sorted(set(range(world_size)) - set(results) - set(may_die))
    if missing:
        raise TimeoutError(f"ranks {missing} of {world_size} did not finish within {timeout} s")
    for r in may_die:
        results.setdefault(r, None)
    return [results[r] for r in range(world_size)]


__all__ = ["OP_TIMEOUT_S", "free_port", "run_group"]
