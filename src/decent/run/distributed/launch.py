"""Start a local multi-process run, bound to the loopback interface only.

``decent launch --nproc N CONFIG`` checks what it can before starting anything (the config
validates and builds, ``N`` ranks fit the topology, the port is free), then starts the ranks
itself, without torchrun's elastic agent: this process hosts the c10d ``TCPStore`` on
``127.0.0.1:PORT`` and runs :func:`worker_command` ``N`` times with the environment torchrun
would set (``TORCHELASTIC_USE_AGENT_STORE=True``: every rank is a store client, so any rank
may die without taking the store with it) and gloo on the loopback (``DECENT_LOOPBACK=1``).

Failure policy (torchrun's agent would end a ``fault_tolerant`` run at the first SIGKILL):
``fault_tolerant`` lets the survivors finish, every other mode fails fast after
:data:`FAIL_FAST_GRACE` seconds; the ranks die with the launcher (``PR_SET_PDEATHSIG``), and
a run no rank could close is closed by the launcher with the cause (:func:`record_leftover`).
``docs/distributed.md`` has the whole story; :func:`torchrun_command` is the command line
for several machines.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from decent.comm._exchange import MODE_ENV, TIMEOUT_ENV
from decent.results import run_id_for
from decent.run.distributed.runtime import MODES, LaunchError, check_world, dist_run_dict

__all__ = [
    "LaunchResult",
    "RankExit",
    "free_port",
    "launch",
    "port_is_free",
    "record_leftover",
    "run_local",
    "torchrun_command",
    "worker_command",
]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loopback_listener(port: int) -> socket.socket:
    """A TCP socket listening on ``127.0.0.1:port`` only (for the launcher's store)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


def check_port(port: int) -> int:
    """Return ``port`` if it is a TCP port number; raise :class:`LaunchError` otherwise."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise LaunchError(
            f"--port must be a TCP port number in 1..65535, got {port!r}; leave --port out "
            "to use a free one"
        )
    return port


def port_is_free(port: int) -> bool:
    """Whether ``127.0.0.1:port`` can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def worker_command(
    config: str | Path,
    *,
    overrides: Sequence[str] = (),
    out: str | Path = "results",
    study: str | None = None,
    force: bool = False,
) -> list[str]:
    """The command line of one rank, ``python -m decent.run.distributed.worker CONFIG ...``
    (the transport mode is the config's ``[dist]`` section: ``--set dist.mode=...``)."""
    args = [sys.executable, "-m", "decent.run.distributed.worker", str(config), "--out", str(out)]
    for item in overrides:
        args += ["--set", item]
    return args + (["--study", study] if study else []) + ([] if force else ["--no-force"])


def torchrun_command(nproc: int, config: str | Path, *, port: int, **options: Any) -> list[str]:
    """The torchrun command line of a local run (a list for ``subprocess``); ``options`` as
    :func:`worker_command`.

    ``decent launch`` does not use it (see the module docstring); it is the reference for
    runs on several machines (``docs/distributed.md``).
    """
    agent = ["--nnodes", "1", "--nproc-per-node", str(nproc), "--rdzv-backend", "c10d"]
    agent += ["--rdzv-endpoint", f"127.0.0.1:{port}", "--local-addr", "127.0.0.1"]
    rank = worker_command(config, **options)
    return [sys.executable, "-m", "torch.distributed.run", *agent, *rank[1:]]


@dataclass(frozen=True)
class RankExit:
    """How one rank ended.

    Attributes:
        rank: the global rank.
        returncode: its exit status (``-N``: ended by signal ``N``, as in ``subprocess``).
        wall_s: seconds from the start of the launch to its exit.
        killed_by_launcher: why the launcher ended it (``""``: it ended on its own), e.g.
            ``"stopped"`` (found in state T after the others exited), ``"hung"``,
            ``"fail-fast"`` (another rank failed first), ``"interrupted"`` (Ctrl-C).
    """

    rank: int
    returncode: int
    wall_s: float
    killed_by_launcher: str = ""

    @property
    def signal(self) -> str | None:
        """The name of the signal that ended the rank (``"SIGKILL"``), or ``None``."""
        if self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"

    def describe(self) -> str:
        """One line: ``rank 2 died (SIGKILL) after 12.3 s``."""
        if self.killed_by_launcher:
            how = f"was {self.killed_by_launcher} and killed by the launcher"
        elif self.signal is not None:
            how = f"died ({self.signal})"
        elif self.returncode == 0:
            how = "finished"
        else:
            how = f"failed (exit code {self.returncode})"
        return f"rank {self.rank} {how} after {self.wall_s:.1f} s"


@dataclass
class LaunchResult:
    """What a local launch ended with.

    Attributes:
        returncode: ``0`` when the run finished and was recorded; ``2`` for a user error
            reported by the ranks; ``1`` otherwise. In ``fault_tolerant`` mode a run that
            some rank finished is a success even if other ranks died (the lowest survivor
            records it, taking the recording over when rank 0 died).
        ranks: every rank's :class:`RankExit`, by rank.
        mode: the transport mode.
        stdout / stderr: the ranks' output in rank order when ``capture``, else ``None``.
    """

    returncode: int
    ranks: list[RankExit]
    mode: str
    stdout: str | None = None
    stderr: str | None = None
    notes: list[str] = field(default_factory=list)
    run_id: str | None = None

    @property
    def survivors(self) -> list[RankExit]:
        """The ranks that finished on their own with exit code 0."""
        return [r for r in self.ranks if r.returncode == 0 and not r.killed_by_launcher]

    @property
    def left(self) -> list[RankExit]:
        """The ranks that did not finish cleanly (died, failed or were killed): the others."""
        return [r for r in self.ranks if r not in self.survivors]

    def reason(self) -> str:
        """Why the launch failed, one line: the first rank that ended on its own badly."""
        own = [r for r in self.left if not r.killed_by_launcher]
        first = min(own or self.left, key=lambda r: r.wall_s, default=None)
        if first is None:
            return "the launch failed"
        return f"{first.describe()}; the launch stopped ({self.summary()})"

    def summary(self) -> str:
        """One line: ``3 of 4 ranks survived`` (``4 ranks`` when no rank can be lost)."""
        n = len(self.ranks)
        if self.mode == "fault_tolerant" or self.left:
            return f"{len(self.survivors)} of {n} ranks survived"
        return f"{n} ranks"


def _is_stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (state ``T``; Linux ``/proc`` only)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] in ("T", "t")


def _die_with_parent() -> None:
    """In a rank, before exec: SIGTERM when the launcher dies (Linux ``PR_SET_PDEATHSIG``).

    The launcher hosts the rendezvous store; without it no rank can finish, so each rank
    records its run and stops instead of failing on the lost store with a traceback.
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the ranks fail on the lost store
        pass


FAIL_FAST_GRACE = 3.0
"""Seconds the other ranks get to end on their own (recording the run) once one failed."""


def _wait_all(procs: dict[int, subprocess.Popen[bytes]], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(p.poll() is None for p in procs.values()):
        time.sleep(0.05)


def _end(procs: dict[int, subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM the processes still alive, wait ``grace`` s, SIGKILL the rest."""
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            p.send_signal(signal.SIGCONT)  # a stopped process handles SIGTERM only when run
    deadline = time.monotonic() + grace
    for p in procs.values():
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_local(
    nproc: int,
    worker_cmd: Sequence[str],
    *,
    port: int,
    mode: str = "sync",
    hang_grace: float = 10.0,
    env: dict[str, str] | None = None,
    capture: bool = False,
) -> LaunchResult:
    """Host the store on ``127.0.0.1:port``, start ``nproc`` ranks, wait for them.

    No check is made here (:func:`launch` checks first). Policy: in ``fault_tolerant`` mode
    a rank that dies does not end the others; once every other rank has exited, a rank that
    is stopped (state ``T``) is killed at once and one that still runs is killed after
    ``hang_grace`` seconds. In every other mode the first rank that fails ends the others
    (SIGTERM, then SIGKILL after 5 s), as torchrun does. Ctrl-C (or SIGTERM to the launcher)
    forwards SIGTERM to the ranks.

    Args:
        nproc: number of ranks.
        worker_cmd: the command of one rank (:func:`worker_command`).
        port: a free port of 127.0.0.1 for the store.
        mode: the transport mode (sets the failure policy).
        hang_grace: seconds a fault-tolerant rank may outlive all the others.
        env: base environment (default: ``os.environ``).
        capture: collect the ranks' stdout and stderr instead of passing them through.

    Returns:
        The :class:`LaunchResult`.
    """
    import datetime

    import torch.distributed as dist

    base = dict(os.environ if env is None else env)
    base.setdefault("OMP_NUM_THREADS", "1")
    base.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # a lost peer is reported in one line
    base["DECENT_LOOPBACK"] = "1"
    base.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(nproc),
        LOCAL_WORLD_SIZE=str(nproc),
        GROUP_RANK="0",
        GROUP_WORLD_SIZE="1",
        ROLE_RANK="0",
        TORCHELASTIC_USE_AGENT_STORE="True",  # every rank is a client of our store
    )
    # The store is unauthenticated (it carries heartbeats and membership): listen on the
    # loopback interface only. TCPStore's server ignores its host argument and binds every
    # interface, so hand it a socket already bound to 127.0.0.1.
    listener = loopback_listener(port)
    try:
        server = dist.TCPStore(
            "127.0.0.1",
            port,
            nproc,
            is_master=True,
            wait_for_workers=False,
            timeout=datetime.timedelta(seconds=300),
            master_listen_fd=listener.fileno(),
            use_libuv=True,
        )
    except BaseException:
        listener.close()
        raise
    listener.detach()  # the store owns the socket now and closes it
    fault_tolerant = mode == "fault_tolerant"
    logs: list[tuple[IO[bytes], IO[bytes]]] = []
    procs: dict[int, subprocess.Popen[bytes]] = {}
    exits: dict[int, RankExit] = {}
    start = time.monotonic()

    def note(why: str = "", ended: bool = True) -> bool:
        """Record the ranks that exited; ``ended``: all the others too, ended by ``why``."""
        now = time.monotonic()
        new = [r for r, p in procs.items() if r not in exits and (ended or p.poll() is not None)]
        for r in new:
            exits[r] = RankExit(r, int(procs[r].returncode), now - start, why)
        return bool(new)

    previous_term: Any = None
    try:
        previous_term = signal.signal(signal.SIGTERM, signal.default_int_handler)
    except ValueError:  # not the main thread: Ctrl-C only
        previous_term = None
    try:
        for rank in range(nproc):
            rank_env = dict(base, RANK=str(rank), LOCAL_RANK=str(rank), ROLE_RANK=str(rank))
            out: Any = None
            err: Any = None
            if capture:
                out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
                logs.append((out, err))
            procs[rank] = subprocess.Popen(
                list(worker_cmd),
                env=rank_env,
                stdout=out,
                stderr=err,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        last_exit = None
        while len(exits) < nproc:
            now = time.monotonic()
            if note(ended=False):
                last_exit = now
            if any(e.returncode != 0 for e in exits.values()) and not fault_tolerant:
                # the others see the lost peer and record the run; give them a moment
                _wait_all(procs, FAIL_FAST_GRACE)
                note(ended=False)
                _end(procs, 5.0)
                note("fail-fast")
                break
            running = [r for r in procs if r not in exits]
            if fault_tolerant and exits and running and last_exit is not None:
                # only stragglers left? stopped ones go at once, running ones after the grace
                stopped = {r for r in running if _is_stopped(procs[r].pid)}
                late = any(e.returncode == 0 for e in exits.values()) and (
                    now - last_exit > hang_grace
                )
                if len(stopped) == len(running) or late:
                    for r in running:
                        procs[r].kill()
                        procs[r].wait()
                        why = "stopped" if r in stopped else "hung"
                        exits[r] = RankExit(r, int(procs[r].returncode), now - start, why)
            time.sleep(0.05)
    except KeyboardInterrupt:
        # a terminal's Ctrl-C reached the ranks too: let them record "interrupted" first
        _wait_all(procs, 2.0)
        _end(procs, 5.0)
        note("interrupted")
        raise
    finally:
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        del server
    ranks = [exits[r] for r in range(nproc)]
    stdout = stderr = None
    if capture:
        outs, errs = [], []
        for o, e in logs:
            o.seek(0)
            e.seek(0)
            outs.append(o.read().decode(errors="replace"))
            errs.append(e.read().decode(errors="replace"))
            o.close()
            e.close()
        stdout, stderr = "".join(outs), "".join(errs)
    return LaunchResult(_returncode(ranks, mode), ranks, mode, stdout, stderr)


def _returncode(ranks: list[RankExit], mode: str) -> int:
    """0: the run finished and was recorded; 2: a user error; 1: anything else."""
    codes = [r.returncode for r in ranks]
    if all(c == 0 for c in codes):
        return 0
    if any(c == 2 for c in codes):
        return 2
    if mode == "fault_tolerant" and any(r.returncode == 0 for r in ranks):
        return 0  # a survivor finished: the lowest one recorded the run (taking over if need be)
    return 1


def launch(
    nproc: int,
    config: str | Path,
    *,
    overrides: Sequence[str] = (),
    out: str | Path = "results",
    port: int | None = None,
    mode: str | None = None,
    staleness: int | None = None,
    failure_timeout: float | None = None,
    study: str | None = None,
    force: bool = False,
    capture: bool = False,
    script_args: Sequence[str] = (),
) -> LaunchResult:
    """Check the run, then start ``nproc`` local ranks (:func:`run_local`) and wait for them.

    Args:
        nproc: number of local ranks.
        config: the experiment config (TOML), or a Python script (``.py``) to start on every
            rank as torchrun would (env:// rendezvous; overrides do not apply; ``mode`` and
            ``failure_timeout`` become its ``DecentralizedDataParallel``'s defaults and set
            the failure policy, so ``fault_tolerant`` lets the survivors of a dead rank finish).
        overrides: ``KEY=VALUE`` overrides, as ``--set``.
        out: the results directory (rank 0 writes it).
        port: the store's port on 127.0.0.1 (default: a free one).
        mode: one of :data:`~decent.run.distributed.runtime.MODES`; ``mode``,
            ``staleness`` and ``failure_timeout`` override the config's ``[dist]`` section
            (``None``: the section's value, or its default).
        staleness: bound of ``--mode stale``.
        failure_timeout: seconds of heartbeat silence that declare a rank dead
            (``fault_tolerant``).
        study: the study name (default: the config's).
        force: re-run a run the store has finished (default: skip it, as ``decent run``).
        capture: collect the ranks' output in the result instead of printing it.
        script_args: arguments for a ``.py`` script (``decent launch ... script.py -- ARGS``);
            a TOML config takes none.

    Returns:
        The :class:`LaunchResult` (``returncode`` 0 when the run finished and was recorded).

    Raises:
        ConfigError: the config does not validate or build.
        ConfigError: also a bad ``dist`` setting (``--staleness``, ``--failure-timeout``),
            checked before any process starts.
        LaunchError: ``nproc < 1``, more ranks than nodes, a bad mode or a busy port.
    """
    from decent.config import build, load_config
    from decent.config._models import DistSection

    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise LaunchError(f"--nproc must be an integer >= 1, got {nproc!r}")
    if mode is not None and mode not in MODES:
        raise LaunchError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if Path(config).suffix == ".py":  # a user's own script (DecentralizedDataParallel): as torchrun
        if not Path(config).is_file():
            raise LaunchError(f"script {str(config)!r} not found; pass the path of a .py file")
        cmd = [sys.executable, str(config), *script_args]
        env = _script_env(mode, staleness, failure_timeout)
        grace = max(10.0, 2 * float(env.get(TIMEOUT_ENV, 10.0)))
        return run_local(
            nproc,
            cmd,
            port=port or free_port(),
            mode=mode or "sync",
            hang_grace=grace,
            env=env,
            capture=capture,
        )
    if script_args:
        raise LaunchError(
            f"unexpected arguments {' '.join(script_args)[:80]!r}: only a .py script takes "
            "arguments (after --); a config takes --set KEY=VALUE"
        )
    flags = {"mode": mode, "staleness": staleness, "failure_timeout": failure_timeout}
    overrides = [*overrides, *(f"dist.{k}={v!r}" for k, v in flags.items() if v is not None)]
    cfg = load_config(config, list(overrides), study=study)
    dist = cfg.dist if cfg.dist is not None else DistSection.model_validate({})
    mode, staleness, failure_timeout = dist.mode, dist.staleness, dist.failure_timeout
    check_world(cfg.topology.num_nodes, nproc)
    built = build(cfg.model_copy(update={"backend": "sim"}))  # every rule, before any process
    if getattr(built.algorithm, "compressed", False) and mode != "sync":
        raise LaunchError(
            f"--mode {mode}: {cfg.algorithm.kind} sends compressed messages, which only the "
            "synchronous transport does; use --mode sync"
        )
    if port is None:
        port = free_port()
    elif not port_is_free(check_port(port)):
        raise LaunchError(
            f"--port {port} is in use on 127.0.0.1; pick another port or leave --port out "
            "to use a free one"
        )
    cmd = worker_command(config, overrides=overrides, out=out, study=study, force=force)
    resolved = dist_run_dict(cfg, nproc, mode, staleness)
    run_id = run_id_for(cfg.study, resolved)
    try:
        result = run_local(
            nproc,
            cmd,
            port=port,
            mode=mode,
            hang_grace=max(10.0, 2 * failure_timeout),
            capture=capture,
        )
    except KeyboardInterrupt:
        record_leftover(
            out, run_id, "interrupted", "the launch was interrupted (Ctrl-C or SIGTERM)"
        )
        raise
    result.run_id = run_id
    if result.returncode != 0:
        record_leftover(out, run_id, "failed", result.reason())
    return result


def _script_env(
    mode: str | None, staleness: int | None, failure_timeout: float | None
) -> dict[str, str]:
    """The environment of a script's ranks: ``--mode`` and ``--failure-timeout`` become the
    defaults of ``DecentralizedDataParallel`` (``DECENT_DIST_MODE``,
    ``DECENT_FAILURE_TIMEOUT``); the launcher applies the same mode's failure policy."""
    if mode == "stale" or staleness is not None:
        raise LaunchError(
            "--mode stale and --staleness apply to configs; a script's "
            "DecentralizedDataParallel runs mode sync, overlap or fault_tolerant"
        )
    env = dict(os.environ)
    if mode is not None:
        env[MODE_ENV] = mode
    if failure_timeout is not None:
        if mode != "fault_tolerant" or not 0 < failure_timeout <= 3600:
            raise LaunchError(
                f"--failure-timeout must be in (0, 3600] seconds with --mode fault_tolerant, "
                f"got {failure_timeout!r} with --mode {mode or 'sync'}"
            )
        env[TIMEOUT_ENV] = repr(float(failure_timeout))
    return env


def record_leftover(out: str | Path, run_id: str, status: str, reason: str) -> bool:
    """Once every rank has exited: end the run with ``status`` and ``reason`` if no rank
    could (:meth:`~decent.results.Store.close_leftover`; records are kept).

    A rank killed by SIGKILL leaves its run ``running``; a rank that saw only a lost peer
    records ``failed`` with that symptom. The launcher knows the cause and stores it first.
    Returns whether the store was changed; a store that cannot be written is left as is
    (its run reads ``interrupted`` once its writer is gone).
    """
    from decent.results import Store, StoreError, resolve_db_path

    if not resolve_db_path(out).is_file():
        return False
    try:
        with Store(out) as store:
            return store.close_leftover(run_id, status, reason)
    except StoreError:
        return False
