"""Deterministic fault injection for the crash, interrupt and resume tests.

Two environment variables, read by :func:`decent.run.run_config` for every run it starts
(single runs, sweep workers, distributed ranks); neither is part of any config and both do
nothing when unset:

* ``DECENT_TEST_KILL_AT="RANK:ROUND:SIGNAL"`` (e.g. ``"2:15:KILL"``, ``"2:15:STOP"``): the
  process of rank ``RANK`` (``$RANK``, 0 outside torch.distributed) sends itself ``SIGNAL``
  at the end of round ``ROUND``.
* ``DECENT_TEST_HOLD_AT="ROUND:DIR[:SEED]"``: at the end of round ``ROUND`` of every run
  (only runs with that ``seed`` when given) the process writes the file
  ``DIR/held-<pid>-<seed>`` and waits until ``DIR/release`` exists. A test waits for the
  ``held-*`` files, so it knows exactly which runs are in flight, and then signals or
  kills, whatever the machine's speed.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from decent.engine import Callback, RunInfo

KILL_ENV = "DECENT_TEST_KILL_AT"
HOLD_ENV = "DECENT_TEST_HOLD_AT"


class KillAt(Callback):
    """Send this process ``sig`` at the end of round ``round``."""

    def __init__(self, round: int, sig: signal.Signals) -> None:
        self.round = round
        self.sig = sig

    def on_round(self, t: int) -> None:
        if t == self.round:
            os.kill(os.getpid(), self.sig)
            time.sleep(0.5)  # SIGSTOP: nothing more until continued


class HoldAt(Callback):
    """Announce ``DIR/held-<pid>-<seed>`` at round ``round`` and wait for ``DIR/release``."""

    def __init__(self, round: int, directory: str | os.PathLike[str], seed: int | None = None):
        self.round = round
        self.directory = Path(directory)
        self.seed = seed
        self._seed: int | None = None

    def on_start(self, info: RunInfo) -> None:
        self._seed = info.seed

    def on_round(self, t: int) -> None:
        if t != self.round or (self.seed is not None and self._seed != self.seed):
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / f"held-{os.getpid()}-{self._seed}").touch()
        release = self.directory / "release"
        while not release.exists():  # a signal (SIGINT, SIGTERM) ends the wait
            time.sleep(0.01)


def from_env(rank: int | None = None) -> list[Callback]:
    """The fault-injection callbacks the environment asks for (``[]`` normally).

    Raises:
        ValueError: a malformed value, naming the variable and the expected form.
    """
    rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    out: list[Callback] = []
    kill = os.environ.get(KILL_ENV, "")
    if kill:
        try:
            victim, at, name = kill.split(":")
            sig = signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
            victim_rank, round_ = int(victim), int(at)
        except (ValueError, KeyError):
            raise ValueError(
                f"{KILL_ENV}={kill!r} must be RANK:ROUND:SIGNAL, e.g. 2:15:KILL"
            ) from None
        if victim_rank == rank:
            out.append(KillAt(round_, sig))
    hold = os.environ.get(HOLD_ENV, "")
    if hold:
        try:
            at, _, rest = hold.partition(":")
            directory, _, seed = rest.partition(":")
            if not directory:
                raise ValueError
            out.append(HoldAt(int(at), directory, int(seed) if seed else None))
        except ValueError:
            raise ValueError(
                f"{HOLD_ENV}={hold!r} must be ROUND:DIR or ROUND:DIR:SEED, e.g. 5:/tmp/hold:2"
            ) from None
    return out


__all__ = ["HOLD_ENV", "KILL_ENV", "HoldAt", "KillAt", "from_env"]
