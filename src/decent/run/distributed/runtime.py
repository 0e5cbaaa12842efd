"""What every rank of a distributed run does, whoever started it (torchrun or a test).

:func:`run_rank` is the whole life of one rank after ``init_process_group``: fit the world to
the topology, check that every rank resolved the same config, then the one run path
(:func:`decent.run.run_config`) with a distributed communicator as the only difference from
the simulator. One rank records; the metrics of the loop are global (collectives), so it
stores exactly what a simulator run of the same config stores, with the config marked
``backend = "dist"`` and a ``dist`` section (world size, mode). In ``fault_tolerant`` mode
every other rank stands by and the lowest surviving rank takes the recording over when the
recorder dies.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch.distributed as dist

from decent.comm._exchange import DistConfigError, block_placement
from decent.comm.base import AliveRanks
from decent.config import build
from decent.config._models import DistSection
from decent.engine import Callback, RunResult
from decent.results import Store, flatten, run_id_for
from decent.run.single import run_config, run_label

if TYPE_CHECKING:
    from decent.config import ExperimentConfig

__all__ = [
    "MODES",
    "LaunchError",
    "check_same_config",
    "check_world",
    "config_digest",
    "dist_run_dict",
    "run_rank",
]

MODES = ("sync", "overlap", "stale", "fault_tolerant")
"""Transports of a distributed run.

* ``sync``: :class:`~decent.comm.dist.DistCommunicator`, one blocking neighbour exchange
  per round (equals the simulator).
* ``overlap``: the exchange of round ``t`` runs during the gradient computation of round
  ``t + 1``; equals the simulator with :class:`~decent.comm.delay.DelayedCommunicator`
  (delay 1).
* ``stale``: :class:`~decent.comm.gossip.GossipCommunicator`, each rank mixes the freshest
  neighbour values at most ``staleness`` rounds old.
* ``fault_tolerant``: the same transport with failure detection: a dead or hung rank is
  dropped and the survivors go on.
"""


class LaunchError(DistConfigError):
    """A distributed run that cannot start; the message names the rule and the fix."""


def check_world(num_nodes: int, world_size: int) -> list[list[int]]:
    """Place ``num_nodes`` nodes on ``world_size`` ranks (contiguous blocks).

    Returns:
        :func:`~decent.comm.dist.block_placement` ``(num_nodes, world_size)``.

    Raises:
        LaunchError: fewer nodes than ranks.

    Example:
        >>> check_world(6, 4)
        [[0, 1], [2, 3], [4], [5]]
    """
    if world_size < 1 or num_nodes < world_size:
        raise LaunchError(
            f"world_size={world_size} ranks cannot hold topology.num_nodes={num_nodes} nodes: "
            "every rank needs at least one node; launch at most "
            f"{num_nodes} processes (--nproc {num_nodes}) or set topology.num_nodes >= "
            f"{world_size}"
        )
    return block_placement(num_nodes, world_size)


def config_digest(resolved: dict[str, Any]) -> str:
    """The sha256 of the canonical JSON of a resolved config (key order does not matter)."""
    text = json.dumps(resolved, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def check_same_config(resolved: dict[str, Any], group: dist.ProcessGroup | None = None) -> str:
    """All-gather the digest of ``resolved`` and fail on every rank if two ranks differ.

    Args:
        resolved: this rank's resolved config.
        group: the process group (default: the world).

    Returns:
        The common digest.

    Raises:
        LaunchError: naming the ranks whose config differs from rank 0's and the fields.
    """
    digest = config_digest(resolved)
    world = dist.get_world_size(group)
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, (digest, resolved), group=group)
    bad = [r for r, (h, _) in enumerate(gathered) if h != gathered[0][0]]
    if not bad:
        return digest
    ref = flatten(gathered[0][1])
    lines = []
    for r in bad:
        other = flatten(gathered[r][1])
        keys = sorted(k for k in set(ref) | set(other) if ref.get(k) != other.get(k))
        fields = ", ".join(
            f"{k} (rank 0: {ref.get(k)!r}, rank {r}: {other.get(k)!r})" for k in keys
        )
        lines.append(f"rank {r} (digest {gathered[r][0][:12]}): {fields}")
    raise LaunchError(
        f"the resolved config differs between ranks (rank 0 digest {gathered[0][0][:12]}):\n  "
        + "\n  ".join(lines)
        + "\nevery rank must load the same config file with the same --set overrides; copy "
        "the file to every machine"
    )


def dist_run_dict(config: ExperimentConfig, world_size: int, mode: str, staleness: int = 0) -> dict:
    """The resolved config stored for a distributed run.

    It is ``config.run_dict()`` with ``backend = "dist"`` and a ``dist`` section
    ``{"world_size": ..., "mode": ...}`` (and ``"staleness"`` in ``stale`` mode), so a
    report groups it next to the simulator run of the same experiment and tells them apart.
    """
    out = config.run_dict()
    out["backend"] = "dist"
    out["dist"] = {"world_size": int(world_size), "mode": mode}
    if mode == "stale":
        out["dist"]["staleness"] = staleness
    return out


def make_comm_factory(
    placement: list[list[int]],
    mode: str,
    *,
    staleness: int = 0,
    failure_timeout: float | None = None,
    device: Any = None,
) -> Callable[[Any], Any]:
    """The ``comm_factory`` for :meth:`ExperimentConfig.build` of one transport mode."""
    if mode not in MODES:
        raise LaunchError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")

    def factory(topology: Any) -> Any:
        if mode in ("sync", "overlap"):
            from decent.comm import DelayedCommunicator
            from decent.comm.dist import DistCommunicator

            comm = DistCommunicator(topology, placement=placement, device=device)
            return DelayedCommunicator(comm, delay=1) if mode == "overlap" else comm
        from decent.comm.gossip import GossipCommunicator

        return GossipCommunicator(
            topology,
            placement=placement,
            staleness=staleness,
            failure_timeout=failure_timeout if mode == "fault_tolerant" else None,
        )

    return factory


def run_rank(
    config: ExperimentConfig,
    *,
    out: str | Path | None = None,
    mode: str | None = None,
    staleness: int | None = None,
    failure_timeout: float | None = None,
    force: bool = True,
    callbacks: Sequence[Callback] = (),
    recorder_rank: int = 0,
) -> RunResult | None:
    """Run one rank of a distributed experiment (after ``init_process_group``).

    Every rank: place the nodes (:func:`check_world`), compare the resolved config across
    ranks (:func:`check_same_config`), then :func:`decent.run.run_config` with a
    distributed communicator. ``recorder_rank`` writes the results store; in
    ``fault_tolerant`` mode every other rank keeps the records in memory, and if the
    recorder dies the lowest surviving rank resumes the run in the store (nothing already
    recorded is lost) and finishes it.

    Args:
        config: the experiment (its ``backend`` is set to ``"dist"``).
        out: the results directory; ``None`` records nothing.
        mode: one of :data:`MODES`; ``mode``, ``staleness`` and ``failure_timeout`` override
            the config's ``[dist]`` section (``None``: the section's value, or its default).
        staleness: bound of the ``stale`` mode (rounds; other modes mix without staleness).
        failure_timeout: seconds without a heartbeat after which the ``fault_tolerant``
            mode declares a rank dead.
        force: re-run a config that the store already has finished; when ``False`` such a
            run is skipped on every rank and ``None`` is returned.
        callbacks: extra engine callbacks on this rank.
        recorder_rank: the rank that writes the store.

    Returns:
        The rank's :class:`~decent.engine.RunResult`, or ``None`` when skipped.

    Raises:
        LaunchError: world size vs topology, a config that differs between ranks, bad mode.
        ConfigError: the config cannot be built (on every rank alike).
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    config = config.model_copy(update={"backend": "dist"})
    placement = check_world(config.topology.num_nodes, world)
    section = config.dist or DistSection.model_validate({})
    mode = mode or section.mode
    staleness = section.staleness if staleness is None else staleness
    staleness = staleness if mode == "stale" else 0
    failure_timeout = failure_timeout or section.failure_timeout
    resolved = dist_run_dict(config, world, mode, staleness)
    check_same_config(resolved)
    make = make_comm_factory(placement, mode, staleness=staleness, failure_timeout=failure_timeout)
    transports: list[Any] = []  # kept: the combiners over it (Chebyshev, robust) hide its members

    def factory(topology: Any) -> Any:
        transports.append(make(topology))
        return transports[-1]

    fault_tolerant = mode == "fault_tolerant"
    # every rank of a fault-tolerant run holds a recorder: one writes, the others stand by
    store = Store(out) if out is not None and (rank == recorder_rank or fault_tolerant) else None
    run_id = run_id_for(config.study, resolved)
    finished = [rank == recorder_rank and store is not None and store.is_finished(run_id)]
    dist.broadcast_object_list(finished, src=recorder_rank)
    if finished[0] and not force:
        return None
    experiment = build(config, factory)
    comm, transport = experiment.comm, transports[0]
    recording: Callable[[], bool] | None = None
    if fault_tolerant:
        recording = functools.partial(_is_lowest_alive, transport, rank)
    elif rank != recorder_rank:
        store = None
    outcome = run_config(
        config,
        store,
        resolved=resolved,
        label=f"{run_label(config)} dist x{world} {mode}",
        force=True,
        callbacks=callbacks,
        recording=recording,
        experiment=experiment,
    )
    result = outcome.result
    assert result is not None
    result.extra["node_ids"] = [int(i) for i in comm.node_ids.tolist()]
    if isinstance(transport, AliveRanks):
        result.extra["events"] = list(transport.events)
    return result


def _is_lowest_alive(transport: Any, rank: int) -> bool:
    """Whether ``rank`` is the lowest rank the fault-tolerant transport still counts alive."""
    alive = transport.alive_ranks() if isinstance(transport, AliveRanks) else []
    return bool(alive) and alive[0] == rank
