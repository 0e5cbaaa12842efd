"""The distributed runtime: one process per rank (``decent launch`` locally, torchrun across machines).

* :mod:`decent.dist.runtime` - what every rank does: join the group, check that the world
  fits the topology and that every rank resolved the same config, train with the ONE round
  loop, record from one rank only.
* :mod:`decent.dist.worker` - the ``python -m decent.dist.worker`` entry each rank runs.
* :mod:`decent.dist.launch` - the local launcher (hosts the store; a dead rank does not end a
  fault-tolerant run) and the torchrun command line for several machines (loopback only locally).
* :mod:`decent.dist.gossip` - a thread-based transport for bounded staleness and crash
  tolerance (one receiving thread per neighbour, heartbeats through the rendezvous store).
"""

from decent.dist.runtime import (
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
