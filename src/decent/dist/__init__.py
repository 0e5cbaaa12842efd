"""The distributed runtime: one process per rank, launched by torchrun (``decent launch``).

* :mod:`decent.dist.runtime` - what every rank does: join the group, check that the world
  fits the topology and that every rank resolved the same config, train with the ONE round
  loop, record from one rank only.
* :mod:`decent.dist.worker` - the ``python -m decent.dist.worker`` entry torchrun starts.
* :mod:`decent.dist.launch` - builds and runs the torchrun command line (loopback only).
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
