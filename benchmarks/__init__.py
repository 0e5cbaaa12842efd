"""Side-by-side benchmarks of decent, each runnable by one command from the repository root.

* ``python -m benchmarks.engine``: the round loop against a plain vectorized loop, the
  roofline, the draw and the mix, busy neighbours, the per-round overhead, replica batches and
  whole processes (issue 27's targets). Writes its section of ``docs/benchmarks.md``.
* ``python -m benchmarks.modules``: ModuleTask's gradient path against the ``bmm`` ceiling.
* ``python -m benchmarks.robustness``: compressed gossip and robust aggregation.
* ``OMP_NUM_THREADS=1 python -m benchmarks.distributed``: gloo gossip, all-reduce, stragglers.
* ``python -m benchmarks.ddp``: the DDP drop-in against torch's DistributedDataParallel.

Each takes ``--quick`` for a smoke run.
"""
