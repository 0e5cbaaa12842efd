"""Run a config's ``[sweep]`` grid into the results store, in parallel and resumably.

Every run's id is a hash of its study and resolved config, so rerunning a sweep skips the
runs that are finished (or diverged: a complete result) and redoes the others. Runs execute
in ``spawn``ed worker processes (each its share of the cores, see :mod:`decent._threads`); each run is committed to the store the
moment it ends. Ctrl-C terminates the workers, which mark their runs ``interrupted``;
finished runs are never touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing as mp
import os
import queue
import signal
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decent._names import shown
from decent._threads import SWEEP_WORKERS_ENV, affinity_cores, intra_op_threads
from decent.config import ConfigError, ExperimentConfig, Issue, SweepPoint, expand
from decent.results import Store, run_id_for
from decent.run import faults
from decent.run.single import RunOutcome, replica_key, run_config, run_label

ENDED = ("finished", "diverged", "skipped")
"""Statuses of a sweep's runs that ended with a result (``skipped``: one already stored)."""


@dataclass
class SweepSummary:
    """What a sweep did: one outcome per point, in grid order."""

    study: str
    outcomes: list[RunOutcome]
    interrupted: bool = False

    def count(self, status: str) -> int:
        """Number of runs that ended with ``status``."""
        return sum(o.status == status for o in self.outcomes)

    @property
    def ok(self) -> bool:
        """True when no run failed and the sweep was not interrupted."""
        return not self.interrupted and all(o.status in ENDED for o in self.outcomes)

    def raise_if_not_ok(self, out: str | os.PathLike[str]) -> None:
        """Stop a study whose runs did not all end: it would otherwise score a failed or
        never-run run as diverged and build its tables on what is missing.

        Raises:
            KeyboardInterrupt: the sweep was interrupted (finished runs are kept).
            SweepFailedError: a run failed; the message names the first and its error.
        """
        if self.interrupted:
            raise KeyboardInterrupt
        failed = [o for o in self.outcomes if o.status not in ENDED]
        if failed:
            first = failed[0]
            raise SweepFailedError(
                f"{len(failed)} of {len(self.outcomes)} runs of study {shown(self.study)!r} "
                f"did not finish; the first, {shown(first.label)!r}, {first.status}: "
                f"{shown(first.message or 'no message')}; finished runs are kept in "
                f"{shown(os.fspath(out))}: fix the cause and rerun the same command to resume"
            )


class SweepFailedError(RuntimeError):
    """A study's sweep ended with runs that failed (:meth:`SweepSummary.raise_if_not_ok`)."""


# ----------------------------------------------------------------------------- workers


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _watch_parent(parent_pid: int) -> None:
    """Exit this worker when the sweep process is gone (killed outright)."""
    import time

    while True:
        if os.getppid() != parent_pid:
            os._exit(3)
        time.sleep(0.5)


def _sink_callbacks(config: ExperimentConfig, label: str, sinks: SinkOptions) -> list[Any]:
    """The TensorBoard/MLflow callbacks asked for (``sinks = (tensorboard, mlflow)``)."""
    if sinks == (None, None):
        return []
    from decent.run.sinks import make_sinks

    return make_sinks(*sinks, run_name=label, config=config.run_dict(), experiment=config.study)


def _worker(
    out: str,
    tasks: Any,
    results: Any,
    parent_pid: int,
    sinks: SinkOptions = (None, None),
    ignored: Sequence[type[Warning]] = (),
) -> None:
    """Worker process: take (index, config) items until ``None``; report start/end;
    ``ignored``: the warning categories the parent ignores."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    signal.signal(signal.SIGTERM, _raise_interrupt)  # parent's terminate(): stop the run
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    pid = os.getpid()
    # one line per worker, repeated for every worker, is noise in a sweep's output
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    for category in ignored:
        warnings.simplefilter("ignore", category)
    try:
        import torch

        torch.set_num_threads(intra_op_threads())  # this worker's share (decent._threads)
        store = Store(out)
        while True:
            item = tasks.get()
            if item is None:
                return
            indices, run_ids, raws, labels = item
            results.put(("start", pid, indices))
            configs = [ExperimentConfig.model_validate(raw) for raw in raws]
            for index, outcome in zip(
                indices, _run_group(configs, run_ids, labels, store, sinks), strict=True
            ):
                results.put(("done", pid, index, dataclasses.replace(outcome, result=None)))
    except KeyboardInterrupt:
        return


def _run_group(
    configs: list[ExperimentConfig],
    run_ids: list[str],
    labels: list[str],
    store: Store,
    sinks: SinkOptions,
) -> list[RunOutcome]:
    """Run one batch of the grid (one run, or a replica batch); failures become outcomes."""
    try:
        hooks = faults.from_env()  # test hooks: nothing unless DECENT_TEST_* is set
        callbacks = [
            [*_sink_callbacks(c, lab, sinks), *hooks]
            for c, lab in zip(configs, labels, strict=True)
        ]
        return run_config(configs, store, label=labels, callbacks=callbacks)
    except KeyboardInterrupt:
        raise
    except ConfigError as err:
        message = str(err)
    except Exception:  # a bug or a failing run: report it, keep the sweep going
        message = traceback.format_exc()
    return [
        RunOutcome(r, lab, "failed", message=message)
        for r, lab in zip(run_ids, labels, strict=True)
    ]


def batches(points: list[SweepPoint], pending: list[int], replicas: int | None) -> list[list[int]]:
    """Group the pending points that can share one replica batch (grid order kept).

    Points with one :func:`~decent.run.single.replica_key` (they differ in seed, step size,
    the task's scalars or a static graph) form batches of at most ``replicas`` runs
    (default :data:`DEFAULT_REPLICAS`) on one graph, split into equal parts; runs on
    different graphs share a batch where that makes fewer batches whose state stays small
    (:func:`shared_size`). ``replicas = 1`` runs every point alone.
    """
    groups: dict[str, list[int]] = {}
    for i in pending:
        alone = replicas is not None and int(replicas) <= 1
        key = str(i) if alone else replica_key(points[i].config)
        groups.setdefault(key, []).append(i)
    out: list[list[int]] = []
    for members in groups.values():
        limit = DEFAULT_REPLICAS if replicas is None else max(1, int(replicas))
        graphs: dict[str, list[int]] = {}
        for i in members:
            graphs.setdefault(points[i].config.topology.model_dump_json(), []).append(i)
        alone_per_graph = [part for runs in graphs.values() for part in _even(runs, limit)]
        shared = shared_size(points[members[0]].config)
        shared = shared if replicas is None else min(limit, shared)
        together = _even(members, shared) if len(graphs) > 1 and shared > 1 else None
        use_shared = together is not None and len(together) < len(alone_per_graph)
        out += together if use_shared and together is not None else alone_per_graph
    return sorted(out, key=lambda g: g[0])


def _even(runs: list[int], limit: int) -> list[list[int]]:
    """``runs`` in the fewest parts of at most ``limit``, of equal sizes (66 runs, limit 64:
    two of 33, not 64 + 2, whose 2 would pay a whole batch's overhead per round)."""
    parts = -(-len(runs) // limit)
    size = -(-len(runs) // parts)
    return [runs[k : k + size] for k in range(0, len(runs), size)]


DEFAULT_REPLICAS = 64
"""Runs per replica batch unless ``replicas`` says otherwise."""

SMALL_VALUES = 1 << 16
"""Values per state tensor (``num_nodes * replicas * dim``, 512 kB in float64) up to which
runs on different graphs share a batch. Below it a round costs about the loop's fixed
overhead, which a batch pays once (the scaling study's 3 graphs x 22 runs at M = 4 and
d = 100: 1.3x faster as one batch); above it a bigger batch only leaves the cache (5 x 22
runs at M = 64: 1.8x slower as one batch, measured on 2 busy cores)."""


def shared_size(config: ExperimentConfig) -> int:
    """How many runs of ``config``'s key on different graphs may share one batch:
    ``SMALL_VALUES / (num_nodes dim)`` for a streaming task, 0 (never) for the others,
    whose rounds already cost more than the loop's overhead."""
    from decent.config._models import STREAMING_TASKS

    if config.task.kind not in STREAMING_TASKS:
        return 0
    return SMALL_VALUES // (config.topology.num_nodes * int(getattr(config.task, "dim", 1)))


def _work(config: ExperimentConfig, replicas: int) -> float:
    """A batch's rough cost: rounds times (a fixed per-round overhead + its node rows)."""
    return config.rounds * (64 + config.topology.num_nodes * replicas)


@contextlib.contextmanager
def _worker_env(n_workers: int) -> Iterator[None]:
    """The environment a worker is spawned with: how many workers share the cores, so that
    each takes its share of threads (the rules are :mod:`decent._threads`'s; a user's
    ``OMP_NUM_THREADS`` is passed on and wins)."""
    saved = os.environ.get(SWEEP_WORKERS_ENV)
    os.environ[SWEEP_WORKERS_ENV] = str(n_workers)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(SWEEP_WORKERS_ENV, None)
        else:
            os.environ[SWEEP_WORKERS_ENV] = saved


def default_workers() -> int:
    """The number of usable CPU cores (:func:`decent._threads.affinity_cores`)."""
    return affinity_cores()


Event = Callable[[RunOutcome], None]
SinkOptions = tuple[str | None, str | None]
"""``(tensorboard log dir, mlflow tracking URI)``; ``None`` for a sink not asked for."""


def run_sweep(
    config: ExperimentConfig,
    out: str | os.PathLike[str],
    *,
    workers: int | None = None,
    progress: bool = True,
    on_done: Event | None = None,
    tensorboard: str | os.PathLike[str] | None = None,
    mlflow: str | os.PathLike[str] | None = None,
    replicas: int | None = None,
) -> SweepSummary:
    """Run every point of ``config``'s sweep into the store at ``out``; skip finished ones.

    Points that differ only in seed, step size or the task's scalars run together as one
    replica batch (:func:`decent.engine.train_replicas`; ``replicas`` runs per batch at
    most, default :data:`DEFAULT_REPLICAS`, ``1`` for one process per run); each replica is
    recorded as its own run, so resume, reports and export see no difference.

    Args:
        config: a config with a ``[sweep]`` section (without one: a single run).
        out: results directory (``<out>/decent.sqlite``).
        workers: worker processes (default: the number of cores); ``1`` runs in this process.
        progress: show an overall progress bar.
        on_done: called with each run's outcome as it ends (also for skipped runs).
        tensorboard: also write each run's TensorBoard events under this directory.
        mlflow: also log each run to this MLflow tracking URI (experiment = the study).
        replicas: the largest replica batch (``1``: no batching).

    Returns:
        A :class:`SweepSummary`. On Ctrl-C the workers are stopped, their runs marked
        ``interrupted``, and the summary has ``interrupted = True`` (nothing finished is
        lost; rerun to resume).

    Raises:
        ConfigError: when a point of the grid is invalid or its topology/algorithm cannot
            be built (checked for every point before anything runs).
        MissingDependencyError: when a sink is asked for without its extra installed.
    """
    return run_points(
        expand(config),
        out,
        workers=workers,
        progress=progress,
        on_done=on_done,
        tensorboard=tensorboard,
        mlflow=mlflow,
        replicas=replicas,
    )


def run_points(
    points: Sequence[SweepPoint | ExperimentConfig],
    out: str | os.PathLike[str],
    *,
    workers: int | None = None,
    progress: bool = True,
    on_done: Event | None = None,
    tensorboard: str | os.PathLike[str] | None = None,
    mlflow: str | os.PathLike[str] | None = None,
    replicas: int | None = None,
    desc: str | None = None,
    longest_first: bool = False,
) -> SweepSummary:
    """Run any list of validated configs as one sweep: what :func:`run_sweep` does for a grid.

    A study whose points are not a cross product (e.g. a scaling study pairs each number
    of nodes with its own number of rounds) builds its configs itself and runs them here,
    with the same workers, replica batches, resume and store. Arguments as
    :func:`run_sweep`; ``desc`` labels the progress bar (default ``sweep <study>``);
    ``longest_first`` starts the batches with the most node-rounds of work first (fewer
    idle workers at the end when run lengths differ by orders of magnitude).
    """
    if not points:
        raise ValueError("run_points needs at least one config")
    grid = [p if isinstance(p, SweepPoint) else SweepPoint(p, {}) for p in points]
    sinks: SinkOptions = (
        None if tensorboard is None else os.fspath(tensorboard),
        None if mlflow is None else os.fspath(mlflow),
    )
    if sinks != (None, None):  # fail before anything runs when an extra is missing
        from decent.run.sinks import make_sinks

        make_sinks(*sinks)
    study = grid[0].config.study
    _prebuild(grid)
    store = Store(out)
    for name in sorted({p.config.study for p in grid}):
        store.mark_stale(name)  # runs left "running" by killed processes read as interrupted
    labels = [p.label() or run_label(p.config) for p in grid]
    labels = [
        f"{lab} seed={p.config.seed}" if "seed=" not in lab else lab
        for lab, p in zip(labels, grid, strict=False)
    ]
    ids = [run_id_for(p.config.study, p.config.run_dict()) for p in grid]
    outcomes: dict[int, RunOutcome] = {}
    pending: list[int] = []
    seen: set[str] = set()
    for i, rid in enumerate(ids):
        if store.is_finished(rid) or rid in seen:
            outcomes[i] = RunOutcome(rid, labels[i], "skipped")
        else:
            pending.append(i)
        seen.add(rid)

    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(grid),
        desc=desc or f"sweep {study}",
        unit="run",
        disable=not progress,
        dynamic_ncols=True,
        initial=len(grid) - len(pending),
    )
    for i in sorted(outcomes):
        if on_done is not None:
            on_done(outcomes[i])

    def done(i: int, outcome: RunOutcome) -> None:
        outcomes[i] = outcome
        bar.update(1)
        if on_done is not None:
            on_done(outcome)

    groups = batches(grid, pending, replicas)
    if longest_first:
        groups.sort(key=lambda g: -_work(grid[g[0]].config, len(g)))
    n_workers = max(1, min(workers or default_workers(), len(groups)))
    interrupted = False
    try:
        if n_workers == 1:
            interrupted = _run_inline(grid, groups, ids, labels, store, done, sinks)
        else:
            interrupted = _run_pool(grid, groups, ids, labels, store, out, n_workers, done, sinks)
    finally:
        bar.close()
        store.close()
    ordered = [
        outcomes.get(i, RunOutcome(ids[i], labels[i], "interrupted")) for i in range(len(grid))
    ]
    return SweepSummary(study, ordered, interrupted)


def _prebuild(points: list[SweepPoint]) -> None:
    """Build every distinct topology and algorithm once, so a bad point fails before running."""
    from decent.config import build_algorithm, build_topology

    seen: set[str] = set()
    issues: list[Issue] = []
    for p in points:
        for section, fn in (
            ("topology", lambda c: build_topology(c.topology)),
            ("algorithm", lambda c: build_algorithm(c.algorithm, c.rounds)),
        ):
            key = section + repr(getattr(p.config, section))
            if key in seen:
                continue
            seen.add(key)
            try:
                fn(p.config)
            except ConfigError as err:
                issues += err.issues
    if issues:
        raise ConfigError(issues)


def _run_inline(
    points: list[SweepPoint],
    groups: list[list[int]],
    ids: list[str],
    labels: list[str],
    store: Store,
    done: Callable[[int, RunOutcome], None],
    sinks: SinkOptions = (None, None),
) -> bool:
    for group in groups:
        configs = [points[i].config for i in group]
        try:
            outcomes = _run_group(
                configs, [ids[i] for i in group], [labels[i] for i in group], store, sinks
            )
        except KeyboardInterrupt:
            return True
        for i, outcome in zip(group, outcomes, strict=True):
            done(i, outcome)
    return False


def _run_pool(
    points: list[SweepPoint],
    groups: list[list[int]],
    ids: list[str],
    labels: list[str],
    store: Store,
    out: str | os.PathLike[str],
    n_workers: int,
    done: Callable[[int, RunOutcome], None],
    sinks: SinkOptions = (None, None),
) -> bool:
    ctx = mp.get_context("spawn")
    tasks = ctx.Queue()
    results = ctx.Queue()
    for group in groups:
        raws = [points[i].config.model_dump(mode="json") for i in group]
        tasks.put((group, [ids[i] for i in group], raws, [labels[i] for i in group]))
    for _ in range(n_workers):
        tasks.put(None)
    out_str = str(Path(out))
    # the caller's "ignore this category" filters (a study silencing TaskWarning): a spawned
    # worker starts with the default filters and would print what the caller asked to hide
    ignored = [f[2] for f in warnings.filters if f[0] == "ignore" and f[1] is None and not f[3]]

    def spawn() -> Any:
        proc = ctx.Process(
            target=_worker,
            args=(out_str, tasks, results, os.getpid(), sinks, ignored),
            daemon=True,
        )
        with _worker_env(n_workers):
            proc.start()
        return proc

    procs = [spawn() for _ in range(n_workers)]
    in_flight: dict[int, set[int]] = {}  # worker pid -> the point indices it runs
    remaining = {i for g in groups for i in g}
    respawns = len(groups)
    try:
        while remaining:
            try:
                msg = results.get(timeout=0.5)
            except queue.Empty:
                msg = None
            if msg is not None and msg[0] == "start":
                _, pid, indices = msg
                in_flight[pid] = set(indices)
            elif msg is not None and msg[0] == "done":
                _, pid, index, outcome = msg
                in_flight.get(pid, set()).discard(index)
                remaining.discard(index)
                done(index, outcome)
            if msg is None:
                for k, proc in enumerate(procs):
                    if proc.is_alive() or proc.exitcode is None:
                        continue
                    if proc.exitcode != 0:
                        why = f"worker died (exit code {proc.exitcode})"
                        for index in sorted(in_flight.pop(proc.pid, set())):
                            _close_running(store, points[index].config, ids[index], "failed", why)
                            remaining.discard(index)
                            done(
                                index, RunOutcome(ids[index], labels[index], "failed", message=why)
                            )
                        if respawns > 0 and remaining:
                            respawns -= 1
                            procs[k] = spawn()
                            continue
                if all(not p.is_alive() for p in procs):
                    break  # every worker has exited: items lost with a dead worker stay pending
        for proc in procs:
            proc.join(timeout=30)
        return False
    except KeyboardInterrupt:
        _stop(procs)
        # drain reports that arrived while stopping
        with contextlib.suppress(Exception):
            while True:
                msg = results.get(timeout=0.2)
                if msg[0] == "done":
                    in_flight.get(msg[1], set()).discard(msg[2])
                    done(msg[2], msg[3])
        for index in sorted(i for indices in in_flight.values() for i in indices):
            why = "sweep stopped (Ctrl-C)"
            _close_running(store, points[index].config, ids[index], "interrupted", why)
        return True
    finally:
        for q in (tasks, results):
            q.cancel_join_thread()
            q.close()


def _close_running(
    store: Store, config: ExperimentConfig, run_id: str, status: str, message: str
) -> None:
    """End a run its worker left ``running`` with ``status`` and ``message``."""
    from decent.results import RunWriter

    if store.status(run_id, stored=True) == "running":
        RunWriter(store, run_id, config.study, config.run_dict()).fail(status, message)


def _stop(procs: list[Any]) -> None:
    """Terminate workers (SIGTERM: they mark their run interrupted), then kill stragglers."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abort this
    try:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
    finally:
        signal.signal(signal.SIGINT, previous)


__all__ = [
    "DEFAULT_REPLICAS",
    "SweepSummary",
    "batches",
    "default_workers",
    "run_points",
    "run_sweep",
]
