"""The distributed runtime: one process per rank (``decent launch`` locally, torchrun across machines).

* :mod:`decent.run.distributed.runtime` - what every rank does: check that the world fits
  the topology and that every rank resolved the same config, then the one run path
  (:func:`decent.run.run_config`) with a distributed communicator, recording from one rank
  (the lowest surviving one in ``fault_tolerant`` mode).
* :mod:`decent.run.distributed.worker` - the ``python -m decent.run.distributed.worker``
  entry each rank runs.
* :mod:`decent.run.distributed.launch` - the local launcher (hosts the store; a dead rank
  does not end a fault-tolerant run) and the torchrun command line for several machines.

The transports themselves are communicators: :class:`decent.comm.DistCommunicator` and
:class:`decent.comm.GossipCommunicator`.
"""

from decent.run.distributed.runtime import (
    MODES,
    LaunchError,
    check_same_config,
    check_world,
    config_digest,
    dist_run_dict,
    run_rank,
)

__all__ = [
    "MODES",
    "LaunchError",
    "check_same_config",
    "check_world",
    "config_digest",
    "dist_run_dict",
    "run_rank",
]
