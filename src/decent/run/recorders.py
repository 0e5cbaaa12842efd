"""The one recorder: stream a run's evaluations into the results store as it goes.

Every way of running a config (``decent run``, a sweep worker, each rank of a distributed
run) records through :class:`StoreRecorder`; the TensorBoard and MLflow sinks
(:mod:`decent.run.sinks`) are extra callbacks beside it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from decent.algorithms import ALGORITHMS
from decent.engine.callbacks import Callback
from decent.engine.result import RunInfo, RunResult
from decent.results import RunWriter, Store, StoreError, run_id_for


def _finite(row: Mapping[str, float]) -> dict[str, float]:
    return {k: v for k, v in row.items() if math.isfinite(v)}


def _info(info: RunInfo) -> dict[str, Any]:
    """What the store keeps of a run besides its config: the task's objective, and the
    method's name for tables and figures and whether it averages exactly (centralized), so
    that a report reads them from the store rather than from the algorithm registry."""
    out: dict[str, Any] = {}
    if info.objective is not None:
        out["objective"] = info.objective.to_json()
    cls = ALGORITHMS.get(info.algorithm)
    if cls is not None:
        out["method"] = {"label": cls.label or cls.name, "centralized": bool(cls.centralized)}
    return out


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, so that a store commit in progress
    completes; a signal that came meanwhile is handled right after, by the handler that was
    in place.

    On the main thread the Python-level handlers are swapped for one that only notes the
    signal: blocking the signal there (``pthread_sigmask``) would not do, because the kernel
    hands a process-directed signal to any thread that does not block it (the draws'
    read-ahead thread, torch's workers) and CPython then runs the handler on the main thread
    anyway. Other threads, which cannot set handlers, block the signals for themselves.
    """
    import signal
    import threading

    held = (signal.SIGINT, signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread():
        try:
            before = signal.pthread_sigmask(signal.SIG_BLOCK, set(held))
        except (AttributeError, OSError, ValueError):  # not POSIX
            yield
            return
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)
        return
    came: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: came.append(signum)) for sig in held}
    try:
        yield
    finally:
        for sig, handler in previous.items():  # None: a handler set outside Python
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        for signum in dict.fromkeys(came):  # once each, in order of arrival
            signal.raise_signal(signum)


class RunStopped(Exception):
    """A run stopped from outside for a stated reason (its launcher died, ...).

    Recorded ``failed`` with the message as the whole error: no traceback, it is no bug.
    """


def error_text(err: BaseException) -> str:
    """What the store keeps as the error of a run that raised ``err``.

    One line when the cause is known and outside the code (an interrupt, a stop from
    outside, a full disk or an unwritable file, the store itself); the traceback otherwise
    (a bug: where it happened matters).
    """
    import traceback

    if isinstance(err, KeyboardInterrupt):
        return str(err) or "interrupted (Ctrl-C or SIGTERM)"
    if isinstance(err, RunStopped | StoreError):
        return str(err)
    if isinstance(err, OSError):
        from decent.results._errors import os_error_text

        return os_error_text(err)
    return "".join(traceback.format_exception(type(err), err, err.__traceback__))


class StoreRecorder(Callback):
    """Record every evaluation of one run in a :class:`~decent.results.Store`.

    The run is registered as ``running`` when training starts, records are committed in
    batches by the writer (a killed process loses at most the records since the last
    commit, and its run stays unfinished), and :meth:`close` ends it with the run's status,
    final metrics and message.

    A recorder may also stand by: with ``active`` given and false, it only keeps the rows
    in memory. The moment ``active()`` turns true (the recording rank of a distributed run
    died and this rank is now the lowest survivor) it resumes the run in the store
    (:meth:`Store.resume_run`, which keeps what the first recorder committed), writes every
    row it kept, and records from then on.

    Args:
        store: the results store.
        study: the run's study.
        config: the resolved config (JSON data); with ``study`` it gives the run id.
        name: a human-readable run name.
        replace: overwrite a finished run with the same id (``--force``).
        extra: metrics the transport adds to every row (``Communicator.metrics``).
        active: whether this process records now (default: always).
        flush_every: commit after this many evaluations.
    """

    def __init__(
        self,
        store: Store,
        study: str,
        config: dict[str, Any],
        *,
        name: str | None = None,
        replace: bool = False,
        extra: Callable[[], Mapping[str, float]] | None = None,
        active: Callable[[], bool] | None = None,
        flush_every: int = 50,
    ) -> None:
        self.store = store
        self.study = study
        self.config = config
        self.name = name
        self.replace = replace
        self.run_id = run_id_for(study, config)
        self._extra = extra
        self._active = active
        self._flush_every = flush_every
        self._writer: RunWriter | None = None
        self._kept: list[tuple[int, dict[str, float]]] = []

    @property
    def recording(self) -> bool:
        """Whether this recorder writes to the store (as opposed to standing by)."""
        return self._writer is not None

    def _row(self, metrics: Mapping[str, float]) -> dict[str, float]:
        extra = self._extra() if self._extra is not None else {}
        return _finite({**metrics, **extra})

    def _maybe_take_over(self) -> None:
        if self._writer is None and self._active is not None and self._active():
            self._writer = self.store.resume_run(
                self.study, self.config, self.name, flush_every=self._flush_every
            )
            for t, row in self._kept:
                self._writer.log(t, row)
            self._writer.flush()
            self._kept.clear()

    def on_start(self, info: RunInfo) -> None:
        if self._active is None or self._active():
            self._writer = self.store.start_run(
                self.study,
                self.config,
                self.name,
                replace=self.replace,
                flush_every=self._flush_every,
                info=_info(info),
            )

    def on_eval(self, t: int, metrics: dict[str, float]) -> None:
        row = self._row(metrics)
        if self._writer is None:
            self._kept.append((t, row))
            self._maybe_take_over()
        else:
            self._writer.log(t, row)

    def close(self, result: RunResult) -> None:
        """End the run in the store with ``result``'s status, final metrics and message.

        A standby recorder that is still not active writes nothing.
        """
        self._maybe_take_over()
        writer = self._writer
        if writer is None or writer.closed:
            return
        final = self._row(result.final)
        final["rounds_completed"] = result.rounds_completed
        if result.status in ("finished", "diverged"):
            writer.finish(result.status, final=final, message=result.message)
        else:
            writer.fail("interrupted", result.message)

    def abort(self, err: BaseException) -> None:
        """End the run as ``interrupted`` (``KeyboardInterrupt``) or ``failed`` (training
        raised ``err``), keeping every record already logged; :func:`error_text` is stored."""
        if self._writer is not None and not self._writer.closed:
            status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
            try:
                with signals_deferred():  # a second Ctrl-C must not cut the commit short
                    self._writer.fail(status, error_text(err))
            except StoreError:  # a full disk: the run stays "running" and, once this
                pass  # process is gone, reads "interrupted"; the error raised is the one to report


__all__ = ["RunStopped", "StoreRecorder", "error_text"]
