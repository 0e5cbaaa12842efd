"""Start a local multi-process run through torchrun, bound to the loopback interface only.

``decent launch --nproc N CONFIG`` checks what it can before starting anything (the config
validates and builds, ``N`` ranks fit the topology, the port is free), then runs::

    python -m torch.distributed.run --nnodes 1 --nproc-per-node N \\
        --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:PORT --local-addr 127.0.0.1 \\
        -m decent.dist.worker CONFIG [--set ...] --out OUT --mode MODE

with ``OMP_NUM_THREADS=1`` (unless set) and gloo bound to the loopback interface.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from decent.dist.runtime import MODES, LaunchError, check_world

__all__ = ["free_port", "launch", "port_is_free", "torchrun_command"]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether ``127.0.0.1:port`` can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def torchrun_command(
    nproc: int,
    config: str | Path,
    *,
    overrides: Sequence[str] = (),
    out: str | Path = "results",
    port: int,
    mode: str = "sync",
    staleness: int = 2,
    failure_timeout: float = 10.0,
    study: str | None = None,
    force: bool = True,
) -> list[str]:
    """The torchrun command line of a local run (a list for ``subprocess``)."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(nproc),
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--local-addr",
        "127.0.0.1",
        "-m",
        "decent.dist.worker",
        str(config),
        "--out",
        str(out),
        "--mode",
        mode,
        "--staleness",
        str(staleness),
        "--failure-timeout",
        str(failure_timeout),
    ]
    for item in overrides:
        cmd += ["--set", item]
    if study:
        cmd += ["--study", study]
    if not force:
        cmd += ["--no-force"]
    return cmd


def launch(
    nproc: int,
    config: str | Path,
    *,
    overrides: Sequence[str] = (),
    out: str | Path = "results",
    port: int | None = None,
    mode: str = "sync",
    staleness: int = 2,
    failure_timeout: float = 10.0,
    study: str | None = None,
    force: bool = True,
    capture: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Check the run, then start ``nproc`` local ranks with torchrun and wait for them.

    Raises:
        ConfigError: the config does not validate or build.
        LaunchError: ``nproc < 1``, more ranks than nodes, a bad mode or a busy port.
    """
    from decent.config import load_config

    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise LaunchError(f"--nproc must be an integer >= 1, got {nproc!r}")
    if mode not in MODES:
        raise LaunchError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    cfg = load_config(config, list(overrides), study=study)
    check_world(cfg.topology.num_nodes, nproc)
    cfg.model_copy(update={"backend": "sim"}).build()  # every builder rule, before any process
    if port is None:
        port = free_port()
    elif not port_is_free(port):
        raise LaunchError(
            f"--port {port} is in use on 127.0.0.1; pick another port or leave --port out "
            "to use a free one"
        )
    cmd = torchrun_command(
        nproc,
        config,
        overrides=overrides,
        out=out,
        port=port,
        mode=mode,
        staleness=staleness,
        failure_timeout=failure_timeout,
        study=study,
        force=force,
    )
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["DECENT_LOOPBACK"] = "1"
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    return subprocess.run(cmd, env=env, text=True, capture_output=capture, check=False)
