"""Distributed runtime benchmark: one command, ratios in one run.

    OMP_NUM_THREADS=1 python -m benchmarks.distributed [--quick] [--out docs/benchmarks_distributed.md]

Part 1 (per world size 4 and 8, d in 1e3..1e7, float32, one node per rank on a ring):
  * gossip: one ``DistCommunicator.mix`` (send to / receive from the 2 ring neighbours),
  * all_reduce: ``dist.all_reduce`` of the same (d,) tensor,
  * ddp: one DistributedDataParallel step of a d-parameter model (forward, backward with
    the bucketed gradient all-reduce, SGD step).
  Median seconds per call over a few repeats; ratio = all_reduce / gossip (> 1: gossip faster).

Part 2 (4 ranks, D-SGD on least squares, ring of 4): rank 1 is a straggler that sleeps
``30 ms`` in 30 % of the rounds (seeded by (seed, t)). Wall time to reach a target loss
for sync, overlap (one-step-stale) and stale (bound 2) modes.
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import statistics
import sys
import time
from typing import Any

import torch.multiprocessing as mp

DIMS = (10**3, 10**4, 10**5, 10**6, 10**7)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(rank: int, world: int, port: int, fn: Any, args: tuple, out: Any) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=600),
    )
    try:
        res = fn(rank, world, *args)
        dist.barrier()
        out.put((rank, (True, res)))
    except BaseException:
        import traceback

        out.put((rank, (False, traceback.format_exc())))
    finally:
        dist.destroy_process_group()


def spawn(fn: Any, world: int, *args: Any) -> list[Any]:
    """Run ``fn(rank, world, *args)`` on ``world`` local gloo ranks; results by rank."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _port()
    procs = [ctx.Process(target=_entry, args=(r, world, port, fn, args, out)) for r in range(world)]
    for p in procs:
        p.start()
    res = {}
    for _ in range(world):
        rank, (ok, value) = out.get(timeout=900)
        if not ok:
            for p in procs:
                p.kill()
            raise RuntimeError(f"rank {rank} failed:\n{value}")
        res[rank] = value
    for p in procs:
        p.join()
    return [res[r] for r in range(world)]


def _repeats(d: int, quick: bool) -> int:
    base = 3 if d >= 10**7 else 5 if d >= 10**6 else 20
    return max(2, base // 2) if quick else base


def comm_worker(rank: int, world: int, dims: tuple[int, ...], quick: bool) -> dict[int, Any]:
    """Time gossip vs all_reduce vs a DDP step for each d; every rank returns its medians."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from decent.comm.dist import DistCommunicator
    from decent.topology import ring

    comm = DistCommunicator(ring(world))
    out: dict[int, Any] = {}
    for d in dims:
        reps = _repeats(d, quick)
        x = torch.randn(1, d)
        flat = x[0].clone()
        model = DDP(torch.nn.Linear(d, 1, bias=False))
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        inp = torch.randn(1, d)

        def gossip(x: torch.Tensor = x) -> None:
            comm.mix(x, 1)

        def allreduce(flat: torch.Tensor = flat) -> None:
            dist.all_reduce(flat)

        def ddp(model: Any = model, opt: Any = opt, inp: torch.Tensor = inp) -> None:
            opt.zero_grad()
            model(inp).sum().backward()
            opt.step()

        row = {}
        for name, op in (("gossip", gossip), ("all_reduce", allreduce), ("ddp", ddp)):
            op()  # warm up
            times = []
            for _ in range(reps):
                dist.barrier()
                t0 = time.perf_counter()
                op()
                times.append(time.perf_counter() - t0)
            row[name] = statistics.median(times)
        out[d] = row
    return out


def straggler_worker(rank: int, world: int, mode: str, rounds: int) -> dict[str, Any]:
    """Train D-SGD with a seeded straggler on rank 1; return the records of rank 0."""
    import numpy as np

    from decent.config import ExperimentConfig
    from decent.engine import Callback
    from decent.run.distributed.runtime import run_rank

    class Straggler(Callback):
        def on_round(self, t: int) -> None:
            if rank == 1 and np.random.default_rng([7, t]).random() < 0.3:
                time.sleep(0.03)

    cfg = ExperimentConfig.model_validate(
        {
            "study": "straggler",
            "rounds": rounds,
            "eval_every": 10,
            "per_node_eval": False,
            "topology": {"kind": "ring", "num_nodes": world},
            "algorithm": {"kind": "dsgd", "lr": 0.05},
            "task": {"kind": "least_squares", "dim": 10, "batch_size": 4, "heterogeneity": 1.0},
        }
    )
    staleness = 2 if mode == "stale" else 0
    t0 = time.perf_counter()
    result = run_rank(cfg, mode=mode, staleness=staleness, callbacks=[Straggler()])
    total = time.perf_counter() - t0
    assert result is not None
    return {"records": result.records, "total_s": total}


def _fmt(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, d <= 1e6")
    ap.add_argument("--worlds", default="4,8")
    ap.add_argument("--rounds", type=int, default=150)
    ap.add_argument("--skip-comm", action="store_true", help="only the straggler part")
    ap.add_argument("--out", default=None, help="also write the markdown tables here")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    dims = DIMS[:-1] if args.quick else DIMS
    lines = [
        f"Machine: {os.cpu_count()} CPU cores, torch gloo on 127.0.0.1, OMP_NUM_THREADS=1, "
        "float32, one node per rank, ring.",
        "",
        "| ranks | d | gossip (ring mix) | all_reduce | DDP step | all_reduce / gossip | "
        "DDP / gossip |",
        "|---|---|---|---|---|---|---|",
    ]
    start = time.perf_counter()
    worlds = [] if args.skip_comm else [int(w) for w in args.worlds.split(",")]
    for world in worlds:
        per_rank = spawn(comm_worker, world, dims, args.quick)
        for d in dims:
            # the slowest rank's median is the time of the collective step
            g = max(r[d]["gossip"] for r in per_rank)
            a = max(r[d]["all_reduce"] for r in per_rank)
            p = max(r[d]["ddp"] for r in per_rank)
            lines.append(
                f"| {world} | {d:.0e} | {_fmt(g)} | {_fmt(a)} | {_fmt(p)} | {a / g:.2f} | "
                f"{p / g:.2f} |"
            )
            print(lines[-1], flush=True)
    lines += [
        "",
        f"Straggler: 4 ranks, D-SGD (lr 0.05) on least squares (d=10), ring; rank 1 sleeps "
        f"30 ms in 30 % of rounds (seeded); {args.rounds} rounds.",
        "",
        "| mode | wall time | time to target | speedup vs sync (target) |",
        "|---|---|---|---|",
    ]
    runs = {m: spawn(straggler_worker, 4, m, args.rounds)[0] for m in ("sync", "overlap", "stale")}
    sync_final = [r["eval/loss@mean"] for r in runs["sync"]["records"]]
    target = sync_final[0] - 0.9 * (sync_final[0] - min(sync_final))  # 90 % of sync's decrease
    reach: dict[str, float] = {}
    for mode, res in runs.items():
        hit = [r["time/wall_s"] for r in res["records"] if r["eval/loss@mean"] <= target]
        reach[mode] = hit[0] if hit else float("nan")
    for mode, res in runs.items():
        lines.append(
            f"| {mode}{' (bound 2)' if mode == 'stale' else ''} | {res['total_s']:.2f} s | "
            f"{reach[mode]:.2f} s | {reach['sync'] / reach[mode]:.2f} |"
        )
        print(lines[-1], flush=True)
    lines += [
        "",
        f"(target loss {target:.4f}; benchmark wall time {time.perf_counter() - start:.0f} s)",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
