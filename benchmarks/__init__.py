"""Side-by-side benchmarks of decent, each runnable by one command.

* ``python -m benchmarks.simulator``: the vectorized simulator against a per-node loop,
  the FLOP efficiency of the vmapped MLP and the share of a round spent in gossip
  (``--quick`` for a smoke run). Results go to ``docs/benchmarks.md``.
"""
