"""Running configs into the results store: one run, a sweep, a distributed run.

* :func:`run_config` - the one way to build, train and record a config (used by
  ``decent run``, every sweep worker and every distributed rank);
* :func:`run_sweep` - a config's ``[sweep]`` grid in parallel worker processes, resumable;
  :func:`run_points` the same for any list of configs (a study that is not a grid);
* :class:`StoreRecorder` and the sinks (:mod:`decent.run.sinks`, TensorBoard and MLflow);
* :mod:`decent.run.distributed` - ``decent launch`` and what every torch.distributed rank
  does (imported on first use: it loads torch.distributed).
"""

from decent.run.recorders import StoreRecorder
from decent.run.single import (
    HEADLINE,
    RunOutcome,
    replica_key,
    run_config,
    run_label,
    train_experiment,
)
from decent.run.sweep import (
    DEFAULT_REPLICAS,
    SweepFailedError,
    SweepSummary,
    batches,
    default_workers,
    run_points,
    run_sweep,
)

__all__ = [
    "DEFAULT_REPLICAS",
    "HEADLINE",
    "RunOutcome",
    "StoreRecorder",
    "SweepFailedError",
    "SweepSummary",
    "batches",
    "default_workers",
    "replica_key",
    "run_config",
    "run_label",
    "run_points",
    "run_sweep",
    "train_experiment",
]
