"""``signals_deferred`` holds Ctrl-C and SIGTERM while a store commit completes, even with
other threads alive (a process-directed signal may land on any thread that does not block
it, and CPython runs its handler on the main thread), and hands each to the handler that
was in place as soon as the block ends."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    from decent.run.recorders import signals_deferred

    sig = getattr(signal, sys.argv[1])
    # a process started with SIGINT ignored (a test runner's worker) inherits that: set the
    # handlers a command line has, Ctrl-C as KeyboardInterrupt and SIGTERM made one
    signal.signal(signal.SIGINT, signal.default_int_handler)
    def to_interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, to_interrupt)
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    idle = threading.Event()
    threading.Thread(target=idle.wait, daemon=True).start()  # as the draws' read-ahead
    steps = []
    try:
        with signals_deferred():
            os.kill(os.getpid(), sig)
            for _ in range(50):
                time.sleep(0.002)  # bytecode boundaries, where a handler would run
            steps.append("block completed")
        steps.append("after the block")
    except KeyboardInterrupt:
        steps.append("interrupted")
    print(";".join(steps))
    print((signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers)
    """
)


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_signal_during_the_block_is_handled_after_it(name: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, name], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    steps, restored = proc.stdout.splitlines()
    assert steps == "block completed;interrupted"
    assert restored == "True"  # both handlers are back


def test_off_the_main_thread_the_block_runs_and_restores_the_mask() -> None:
    import signal
    import threading

    from decent.run.recorders import signals_deferred

    seen: list[object] = []

    def work() -> None:
        before = signal.pthread_sigmask(signal.SIG_BLOCK, set())
        with signals_deferred():
            seen.append(signal.pthread_sigmask(signal.SIG_BLOCK, set()))
        seen.append(signal.pthread_sigmask(signal.SIG_BLOCK, set()) == before)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    inside, restored = seen
    assert isinstance(inside, set) and {signal.SIGINT, signal.SIGTERM} <= inside
    assert restored is True
