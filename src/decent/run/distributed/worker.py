"""The per-rank entry point that torchrun starts: ``python -m decent.run.distributed.worker CONFIG ...``.

It reads the rank and world size from the environment torchrun sets, joins the process
group (gloo, or NCCL with ``--backend nccl``), runs :func:`decent.run.distributed.runtime.run_rank` and
leaves the group. User mistakes (a config that does not validate, a world that does not fit
the topology, configs that differ between ranks) print one clear message and exit with
code 2 on every rank, before any training.

Fault injection for the tests (``DECENT_TEST_KILL_AT="RANK:ROUND:SIGNAL"``) is read by the
run path itself, see :mod:`decent.run.faults`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import sys
from collections.abc import Sequence

USER_ERROR = 2


def parser() -> argparse.ArgumentParser:
    """The worker's command line (``decent launch`` forwards its options here)."""
    p = argparse.ArgumentParser(prog="python -m decent.run.distributed.worker", description=__doc__)
    p.add_argument("config", help="experiment config (TOML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default="results", help="results directory")
    p.add_argument("--study", default=None)
    p.add_argument("--mode", default="sync", choices=["sync", "overlap", "stale", "fault_tolerant"])
    p.add_argument("--staleness", type=int, default=2, help="bound of --mode stale (rounds)")
    p.add_argument("--failure-timeout", type=float, default=10.0, help="seconds (fault_tolerant)")
    p.add_argument("--backend", default="gloo", choices=["gloo", "nccl"])
    p.add_argument("--timeout", type=float, default=300.0, help="collective timeout (s)")
    p.add_argument("--no-force", action="store_true", help="skip a run the store has finished")
    return p


def _loopback_ifname() -> str | None:
    names = [name for _, name in socket.if_nameindex()] if hasattr(socket, "if_nameindex") else []
    for candidate in ("lo", "lo0"):
        if candidate in names:
            return candidate
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one rank; return the exit code."""
    args = parser().parse_args(argv)
    import torch
    import torch.distributed as dist

    from decent.config import ConfigError, load_config
    from decent.run.distributed.runtime import run_rank

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    if os.environ.get("DECENT_LOOPBACK") == "1" and "GLOO_SOCKET_IFNAME" not in os.environ:
        ifname = _loopback_ifname()
        if ifname:
            os.environ["GLOO_SOCKET_IFNAME"] = ifname
    rank = int(os.environ.get("RANK", "0"))
    if args.backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(args.backend, timeout=datetime.timedelta(seconds=args.timeout))
    code = 0
    try:
        cfg = load_config(args.config, args.overrides, study=args.study)
        result = run_rank(
            cfg,
            out=args.out,
            mode=args.mode,
            staleness=args.staleness if args.mode == "stale" else 0,
            failure_timeout=args.failure_timeout,
            force=not args.no_force,
        )
        if rank == 0:
            _summary(cfg, result, args)
        if result is not None and result.status != "finished":
            code = 1
    except (ConfigError, ValueError) as err:  # LaunchError, DistConfigError, ...
        if rank == 0 or "differs between ranks" not in str(err):
            print(f"decent launch (rank {rank}): error: {err}", file=sys.stderr, flush=True)
        code = USER_ERROR
    finally:
        if code == 0 and args.mode != "fault_tolerant":  # a lost peer would fail or hang it
            try:
                dist.barrier()
            except Exception:  # a peer that left (fault_tolerant mode)
                pass
        dist.destroy_process_group()
    return code


def _summary(cfg: object, result: object, args: argparse.Namespace) -> None:
    """One plain line on rank 0 (``decent launch`` prints the full table from the store)."""
    from decent.run.single import HEADLINE

    if result is None:
        print(f"already finished in {args.out} (use force to re-run)", flush=True)
        return
    final = getattr(result, "final", {})
    world = int(os.environ.get("WORLD_SIZE", "1"))
    shown = ", ".join(f"{k}={final[k]:.4e}" for k in HEADLINE if k in final)
    status = getattr(result, "status", "?")
    study = getattr(cfg, "study", "?")
    print(f"{study} dist x{world} {args.mode} [{status}] {shown}; store: {args.out}", flush=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
