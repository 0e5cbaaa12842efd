"""The per-rank entry point that torchrun starts: ``python -m decent.run.distributed.worker CONFIG ...``.

It reads the rank and world size from the environment torchrun sets, joins the process
group (gloo, or NCCL with ``--backend nccl``), runs :func:`decent.run.distributed.runtime.run_rank` and
leaves the group. User mistakes (a config that does not validate, a world that does not fit
the topology, configs that differ between ranks) print one clear message and exit with
code 2 on every rank, before any training.

A rank always ends its run recorded: SIGTERM (the launcher forwarding Ctrl-C) or SIGINT
records it ``interrupted`` (exit 130), the death of the launcher (which hosts the rendezvous
store; the launcher asks the kernel to send SIGTERM then) records it ``failed`` with that
reason, and any other error (a peer that died mid-collective) is one line on stderr, exit 1.

Fault injection for the tests (``DECENT_TEST_KILL_AT="RANK:ROUND:SIGNAL"``, see
:mod:`decent.run.faults`) is read here, at the process's entry, not by the run path.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import os
import re
import signal
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from decent._names import shown

if TYPE_CHECKING:
    from decent.config import ExperimentConfig
    from decent.engine import RunResult

USER_ERROR = 2
INTERRUPTED = 130


def parser() -> argparse.ArgumentParser:
    """The worker's command line (``decent launch`` forwards its options here)."""
    p = argparse.ArgumentParser(prog="python -m decent.run.distributed.worker", description=__doc__)
    p.add_argument("config", help="experiment config (TOML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default="results", help="results directory")
    p.add_argument("--study", default=None)
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


def _stop_on_sigterm(rank: int) -> None:
    """SIGTERM ends the run as Ctrl-C does (recorded ``interrupted``), unless the launcher
    is gone (``PR_SET_PDEATHSIG`` sends it then): that is recorded ``failed`` with the reason."""
    import time

    from decent.results._store import owner_is_gone, process_token
    from decent.run.recorders import RunStopped

    parent = os.getppid()
    launcher = process_token(parent)

    def handler(signum: int, frame: object) -> None:
        deadline = time.monotonic() + 0.2  # the dying launcher may not read as gone yet
        gone = os.getppid() != parent or owner_is_gone(launcher)
        while not gone and time.monotonic() < deadline:
            time.sleep(0.02)
            gone = os.getppid() != parent or owner_is_gone(launcher)
        if gone:
            raise RunStopped(
                f"the launcher (pid {parent}) ended, and with it the rendezvous store; rank "
                f"{rank} stopped: launch the run again (it restarts; records kept until then)"
            )
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _say(line: str) -> None:
    """Write ``line`` and its newline to stderr in one ``write``, so the lines of ranks that
    share the stream never interleave (``print`` may write the newline separately)."""
    sys.stderr.flush()
    try:
        os.write(sys.stderr.fileno(), (line + "\n").encode(errors="replace"))
    except (AttributeError, OSError, ValueError):  # a stream with no descriptor (captured)
        sys.stderr.write(line + "\n")


def _one_line(err: BaseException) -> str:
    """``RuntimeError: Connection closed by peer [127.0.0.1]:1234``: the first sentence of
    an error's first line, without a C++ source location."""
    lines = str(err).strip().splitlines()
    text = re.sub(r"^\[[^\]]*\.(cc|cpp|h|hpp):\d+\]\s*", "", lines[0] if lines else "")
    text = text.split(". ", 1)[0]
    return f"{type(err).__name__}: {text}".rstrip(": ")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one rank; return the exit code (0, 1: the run did not finish, 2, 130)."""
    args = parser().parse_args(argv)
    import torch
    import torch.distributed as dist

    from decent.config import ConfigError, load_config
    from decent.run import faults
    from decent.run.distributed.runtime import run_rank
    from decent.run.recorders import RunStopped

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    if os.environ.get("DECENT_LOOPBACK") == "1" and "GLOO_SOCKET_IFNAME" not in os.environ:
        ifname = _loopback_ifname()
        if ifname:
            os.environ["GLOO_SOCKET_IFNAME"] = ifname
    rank = int(os.environ.get("RANK", "0"))
    _stop_on_sigterm(rank)
    if args.backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    where = f"decent launch (rank {rank})"
    try:
        dist.init_process_group(args.backend, timeout=datetime.timedelta(seconds=args.timeout))
    except KeyboardInterrupt:
        return INTERRUPTED
    except Exception as err:  # the launcher's store is gone, a peer never came
        _say(f"{where}: error: could not join the run: {_one_line(err)}")
        return 1
    code, mode = 0, "sync"
    try:
        cfg = load_config(args.config, args.overrides, study=args.study)
        mode = cfg.dist.mode if cfg.dist is not None else mode
        result = run_rank(
            cfg, out=args.out, force=not args.no_force, callbacks=faults.from_env(rank)
        )
        if rank == 0:
            _summary(cfg, result, args.out, mode)
        if result is not None and result.status != "finished":
            code = 1
    except (ConfigError, ValueError) as err:  # LaunchError, DistConfigError, StoreError...
        if rank == 0 or "differs between ranks" not in str(err):
            _say(f"{where}: error: {shown(err, keep_newlines=True)}")
        code = USER_ERROR
    except KeyboardInterrupt:  # the run is recorded "interrupted"
        _say(f"{where}: interrupted")
        code = INTERRUPTED
    except RunStopped as err:  # the run is recorded; nothing of the group can be left
        _say(f"{where}: {err}")
        sys.stdout.flush()
        os._exit(1)  # a clean exit would abort in torch's store threads ("terminate called")
    except Exception as err:  # a peer that died mid-collective, a lost store: one line
        _say(f"{where}: stopped: {_one_line(err)}")
        code = 1
    finally:
        if code == 0 and mode != "fault_tolerant":  # a lost peer would fail or hang it
            with contextlib.suppress(Exception):
                dist.barrier()
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
        # the run is recorded: a late signal ends the process quietly, not mid-shutdown
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    return code


def _summary(cfg: ExperimentConfig, result: RunResult | None, out: str, mode: str) -> None:
    """One plain line on rank 0 (``decent launch`` prints the full table from the store)."""
    from decent.run.single import HEADLINE

    if result is None:
        print(f"already finished in {out} (use force to re-run)", flush=True)
        return
    world = int(os.environ.get("WORLD_SIZE", "1"))
    values = ", ".join(f"{k}={result.final[k]:.4e}" for k in HEADLINE if k in result.final)
    line = f"{cfg.study} dist x{world} {mode} [{result.status}] {values}; store: {out}"
    print(shown(line), flush=True)


if __name__ == "__main__":  # pragma: no cover
    code = main()
    gc.freeze()  # the run is recorded: no last full collection at exit (0.5-0.9 s, as the CLI)
    sys.exit(code)
