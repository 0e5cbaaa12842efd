"""The fault-injection hooks the crash and resume tests drive (decent.run.faults)."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from decent.engine import RunInfo
from decent.run import faults


def test_kill_spec_selects_the_rank_and_the_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(faults.KILL_ENV, raising=False)
    monkeypatch.delenv(faults.HOLD_ENV, raising=False)
    assert faults.from_env(2) == []
    monkeypatch.setenv(faults.KILL_ENV, "2:15:KILL")
    assert faults.from_env(1) == []
    (kill,) = faults.from_env(2)
    assert isinstance(kill, faults.KillAt) and kill.round == 15 and kill.sig == signal.SIGKILL
    monkeypatch.setenv(faults.KILL_ENV, "2:15:SIGSTOP")
    assert faults.from_env(2)[0].sig == signal.SIGSTOP  # type: ignore[attr-defined]
    for bad in ("2-15", "2:15:NOPE", "x:15:KILL"):
        monkeypatch.setenv(faults.KILL_ENV, bad)
        with pytest.raises(ValueError, match="RANK:ROUND:SIGNAL"):
            faults.from_env(0)


def test_hold_spec(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv(faults.KILL_ENV, raising=False)
    monkeypatch.setenv(faults.HOLD_ENV, f"5:{tmp_path}:2")
    (hold,) = faults.from_env()
    assert isinstance(hold, faults.HoldAt) and hold.round == 5 and hold.seed == 2
    for bad in ("5", "x:/tmp", "5::", "5:/tmp:y"):
        monkeypatch.setenv(faults.HOLD_ENV, bad)
        with pytest.raises(ValueError, match="ROUND:DIR"):
            faults.from_env()


def _info(seed: int) -> RunInfo:
    return RunInfo("dsgd", "task", "ring", 4, 2, 10, 5, seed)


def test_hold_announces_itself_and_waits_for_the_release(tmp_path) -> None:
    hold = faults.HoldAt(3, tmp_path, seed=1)
    other = faults.HoldAt(3, tmp_path, seed=1)
    other.on_start(_info(seed=0))
    other.on_round(3)  # another seed: passes straight through
    hold.on_start(_info(seed=1))
    hold.on_round(2)  # another round: passes straight through
    done = threading.Event()

    def held_round() -> None:
        hold.on_round(3)
        done.set()

    thread = threading.Thread(target=held_round)
    thread.start()
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob("held-*-1")) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(list(tmp_path.glob("held-*"))) == 1
    assert not done.is_set()  # still held: nothing released it
    (tmp_path / "release").touch()
    thread.join(timeout=30)
    assert done.is_set()
