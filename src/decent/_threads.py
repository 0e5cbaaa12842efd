"""How many threads decent computes with: the one place that decides it.

torch's CPU kernels run on an OpenMP pool of ``torch.get_num_threads()`` threads whose
workers spin at every barrier. When a pool has more threads than the cores actually free,
one of them is descheduled at every parallel region and the others spin until it gets a
time slice back: a round of small kernels that takes 0.2 ms on an idle machine then takes
several ms (a 30-50x collapse measured beside a second torch process). So the number of
threads follows the cores that are free to *this* process, decided here and nowhere else:

1. ``OMP_NUM_THREADS``, when set to a positive integer, is the user's word: exactly that
   many threads, nothing below overrides it.
2. Otherwise the cores this process may run on (``os.sched_getaffinity``: a container's
   or ``taskset``'s limit, not the machine's core count),
3. divided by the sweep's worker count when the process is one of a sweep's workers
   (``DECENT_SWEEP_WORKERS``, set by :func:`decent.run.run_sweep` for its workers, so
   ``w`` workers on ``c`` cores take ``c // w`` threads each, at least one),
4. less the cores other processes are running on right now: the runnable tasks of the
   machine (``/proc/loadavg``, the instantaneous ``running`` count) minus this process's
   own running threads, taken as the largest of the last few samples so that a busy
   neighbour that pauses for a moment does not hand its core back at once,
5. and torch's pool gets one thread when a round's work is small (fewer than
   :data:`SMALL_WORK` values per node-tensor: torch would not split such kernels across
   threads anyway, and a pool that only waits at barriers costs more than it gives). The
   free cores of (1)-(4) still serve decent's own threads, which wait on locks rather than
   spin: the draws of :mod:`decent._stream` (drawn ahead on a background thread and split
   over :func:`draw_threads` threads).

A run re-checks (4) about every :data:`RECHECK_S` seconds, so a neighbour that starts or
stops during a long run moves the thread count with it. The thread count never changes a
number: every draw is keyed by ``(seed, stream, t, block)`` (:mod:`decent._stream`), and the
engine's kernels are row-independent.

Use :func:`run_threads` around a run (the engine does) and :func:`intra_op_threads` to
ask what it would pick.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque

import torch

SWEEP_WORKERS_ENV = "DECENT_SWEEP_WORKERS"
"""Set by a sweep for its worker processes: how many workers share this machine's cores."""

SMALL_WORK = 1 << 16
"""Values per node-tensor of a round (rows times dimension) below which one thread is used."""

RECHECK_S = 0.25
"""Seconds between two looks at the machine's load during a run."""

_SAMPLES = 4
"""Samples of the neighbours' load kept: the largest decides (a busy neighbour that pauses
for one sample keeps its core)."""


def _env_threads() -> int | None:
    """``OMP_NUM_THREADS`` as a positive integer, or ``None`` when unset or not one."""
    raw = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not raw:
        return None
    try:
        value = int(raw.split(",")[0])  # OpenMP allows a nesting list: "4,2"
    except ValueError:
        return None
    return value if value >= 1 else None


def affinity_cores() -> int:
    """The cores this process may run on (its affinity mask; the core count elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def share_cores() -> int:
    """This process's share of its cores: the affinity divided by a sweep's workers."""
    cores = affinity_cores()
    raw = os.environ.get(SWEEP_WORKERS_ENV, "").strip()
    try:
        workers = int(raw) if raw else 1
    except ValueError:
        workers = 1
    return max(1, cores // max(1, workers))


def _own_running() -> int:
    """Threads of this process in the running state right now (at least this one)."""
    count = 0
    try:
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat", "rb") as fh:
                    stat = fh.read()
            except OSError:
                continue
            # the state follows the command name, which is in parentheses
            if stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] == b"R":
                count += 1
    except OSError:  # pragma: no cover - no /proc
        return 1
    return max(1, count)


def busy_elsewhere() -> int:
    """Cores that other processes are running on right now (0 where ``/proc`` is missing)."""
    try:
        with open("/proc/loadavg", "rb") as fh:
            running = int(fh.read().split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return 0
    return max(0, running - _own_running())


def intra_op_threads(work: int | None = None, busy: int | None = None) -> int:
    """The thread count the rules of this module give (``work``: values per node-tensor of a
    round, ``None`` for large; ``busy``: cores taken by other processes, default measured)."""
    env = _env_threads()
    if env is not None:
        return env
    if work is not None and work < SMALL_WORK:
        return 1
    share = share_cores()
    busy = busy_elsewhere() if busy is None else busy
    free = affinity_cores() - busy
    return max(1, min(share, free))


_ACTIVE: list[ThreadPolicy] = []
"""The policies of the runs in progress on this process (the innermost decides)."""


def draw_threads() -> int:
    """Threads decent's own work (the bulk draws) may use now: the running policy's free
    cores, else torch's thread count."""
    if _ACTIVE:
        return _ACTIVE[-1].cores
    return torch.get_num_threads()


class ThreadPolicy(contextlib.AbstractContextManager["ThreadPolicy"]):
    """Keeps ``torch``'s thread count at :func:`intra_op_threads` during a run.

    :meth:`tick` is cheap (one clock read) and looks at the machine again every
    :data:`RECHECK_S` seconds; :meth:`close` (or the end of a ``with`` block) restores the
    count found at the start.
    """

    def __init__(self, work: int | None = None) -> None:
        self.work = work
        self.saved = torch.get_num_threads()
        self.samples: deque[int] = deque(maxlen=_SAMPLES)
        self.next_check = 0.0
        self.fixed = _env_threads() is not None
        self.threads = self.cores = self.saved
        self._apply()
        _ACTIVE.append(self)

    def _apply(self) -> None:
        if not self.fixed:  # OMP_NUM_THREADS set: the load is not looked at
            self.samples.append(busy_elsewhere())
        cores = intra_op_threads(None, busy=max(self.samples, default=0))
        small = self.work is not None and self.work < SMALL_WORK
        threads = 1 if small and not self.fixed else cores
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        self.threads, self.cores = threads, cores
        self.next_check = time.monotonic() + RECHECK_S

    def tick(self) -> None:
        """Look at the machine again if :data:`RECHECK_S` seconds have passed."""
        if not self.fixed and time.monotonic() >= self.next_check:
            self._apply()

    def close(self) -> None:
        """Restore torch's thread count found at the start."""
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        if torch.get_num_threads() != self.saved:
            torch.set_num_threads(self.saved)

    def __exit__(self, *exc: object) -> None:
        self.close()


run_threads = ThreadPolicy
"""``with run_threads(work):`` holds torch's thread count at this module's choice."""


__all__ = [
    "RECHECK_S",
    "SMALL_WORK",
    "SWEEP_WORKERS_ENV",
    "ThreadPolicy",
    "affinity_cores",
    "busy_elsewhere",
    "draw_threads",
    "intra_op_threads",
    "run_threads",
    "share_cores",
]
