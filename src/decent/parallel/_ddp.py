"""DecentralizedDataParallel: decent's algorithms in the user's own training loop.

One node per rank. The wrapped module's trainable parameters are views into one flat
buffer, the ``(1, d)`` row the algorithm sees; the user's ``backward()`` fills ``.grad``;
:meth:`DecentralizedDataParallel.step` gathers the gradients into a ``(1, d)`` row, runs
``algorithm.update(state, grads, comm, t)`` of the very dataclass the simulator runs, with a
:class:`~decent.comm.dist.DistCommunicator`, and writes the algorithm's query point back into
the parameters. No update rule is implemented here.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from decent.algorithms.base import Algorithm
from decent.algorithms.transforms import GradientTransform, with_transforms
from decent.comm._exchange import MODE_ENV, TIMEOUT_ENV
from decent.comm.base import Communicator, Stale
from decent.topology import Topology, make

BUFFER_MODES: tuple[str, ...] = ("local", "gossip")
MODES: tuple[str, ...] = ("sync", "overlap", "fault_tolerant")
"""Transports of the wrapper, named as the ``[dist]`` section's ``mode``."""


class ParallelError(ValueError):
    """Bad arguments to :class:`DecentralizedDataParallel`; the message names the fix."""


class DecentralizedDataParallel(nn.Module):
    r"""Train any ``nn.Module`` decentralized, one node per process, in your own loop.

    Shaped like ``torch.nn.parallel.DistributedDataParallel``: wrap the model, call it as
    before, and call :meth:`step` after ``backward()`` instead of ``optimizer.step()``.
    Each step runs, on this rank's row ``(1, d)`` of flat parameters,

    .. math:: u_t = T(g_t),\quad \text{state} \leftarrow \text{algorithm.update}(\text{state},
       u_t, \text{comm}, t),\quad \theta \leftarrow \text{algorithm.query}(\text{state})

    where ``g_t`` is the gradient your ``backward()`` left in ``.grad`` (zero for a
    parameter that got none), ``T`` the chain of gradient transforms and ``comm`` the
    distributed communicator on ``topology``. Between steps the module's parameters are the
    algorithm's query point (DAT-SGD's ``x``). ``t`` counts the steps taken (a step the loss
    scaler skips does not count), so schedules given as ``lr`` are functions of it.

    Args:
        module: any ``nn.Module``; trainable parameters must share one dtype and device.
            Parameters with ``requires_grad=False`` are not trained (kept as broadcast).
        algorithm: a decent algorithm (``decent.DATSGD(lr=...)``, ``DSGD``,
            ``GradientTracking``, ``ChocoSGD``, ``MinibatchSGD`` for all-reduce, ...).
        topology: a topology kind (``"ring"``, ``"exponential"``, ``"complete"``, ...) built
            on ``world_size`` nodes, or a :class:`~decent.topology.Topology`.
        transforms: gradient transforms in front of the update
            (``[momentum(0.9), weight_decay(5e-4)]``); see :mod:`decent.algorithms.transforms`.
        overlap: ``True``: one-step-stale gossip, the exchange of step ``t`` runs during the
            forward and backward of step ``t + 1``
            (``DelayedCommunicator(DistCommunicator(...), delay=1)``; static topologies
            only); the same as ``mode="overlap"``.
        mode: ``"sync"``, ``"overlap"`` or ``"fault_tolerant"``: the vector runtime's
            :class:`~decent.comm.gossip.GossipCommunicator` with failure detection, so a
            rank that dies is dropped, ``W`` is re-weighted on the survivors and they go on
            (static topologies only; call :meth:`close` at the end). Default: the
            ``DECENT_DIST_MODE`` that ``decent launch --mode`` sets, else ``"sync"``.
        failure_timeout: seconds of heartbeat silence that declare a rank dead
            (``"fault_tolerant"`` only). Default: ``DECENT_FAILURE_TIMEOUT`` (``decent
            launch --failure-timeout``), else 10.
        buffers: ``"local"`` (default): buffers such as BatchNorm's running statistics stay
            each rank's own (averaged only inside :meth:`averaged`); ``"gossip"``: floating
            buffers are also mixed with the neighbours every step.
        comm: use this communicator instead of building one (then ``topology``,
            ``overlap``, ``mode`` and ``failure_timeout`` are ignored).
        broadcast: copy rank 0's parameters and buffers to every rank first (default), so
            all ranks start identical.

    Raises:
        ParallelError: a bad argument (the message names it and the fix).
        decent.comm.DistConfigError: no initialized process group.

    Example (on every rank, after ``torch.distributed.init_process_group``)::

        model = DecentralizedDataParallel(net, algorithm=DATSGD(lr=0.01), topology="ring",
                                          transforms=[momentum(0.9), weight_decay(5e-4)])
        for x, y in loader:
            model.zero_grad()
            F.cross_entropy(model(x), y).backward()
            model.step()
        with model.averaged():
            evaluate(model)
    """

    def __init__(
        self,
        module: nn.Module,
        algorithm: Algorithm[Any],
        topology: str | Topology = "ring",
        *,
        transforms: Sequence[GradientTransform] = (),
        overlap: bool = False,
        mode: str | None = None,
        failure_timeout: float | None = None,
        buffers: str = "local",
        comm: Communicator | None = None,
        broadcast: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise ParallelError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if buffers not in BUFFER_MODES:
            raise ParallelError(f"buffers must be 'local' or 'gossip', got {buffers!r}")
        if getattr(algorithm, "needs_clock", False):
            raise ParallelError(
                f"{algorithm.name} runs only on a simulated network's clock; pick a "
                "synchronous algorithm (DATSGD, DSGD, GradientTracking, ChocoSGD, ...)"
            )
        self.mode: str | None = None
        timeout = None
        if comm is None:
            self.mode, timeout = _resolve_mode(mode, overlap, failure_timeout)
        stale = comm.staleness if isinstance(comm, Stale) else int(self.mode == "overlap")
        if buffers == "gossip" and (stale or self.mode == "fault_tolerant"):
            raise ParallelError(
                "buffers='gossip' needs mode 'sync': the overlap and fault_tolerant exchanges "
                "carry one message shape per step; keep buffers='local' (they are averaged "
                "in averaged())"
            )
        if self.mode not in (None, "sync") and getattr(algorithm, "compressed", False):
            raise ParallelError(
                f"{algorithm.name} sends compressed messages, which only mode 'sync' carries, "
                f"got mode {self.mode!r}"
            )
        if comm is None:
            comm = _build_comm(topology, self.mode or "sync", timeout)
        if int(comm.node_ids.shape[0]) != 1:
            raise ParallelError(
                f"DecentralizedDataParallel runs one node per rank, the communicator holds "
                f"{int(comm.node_ids.shape[0])}; build it with nodes_per_rank=1"
            )
        self.module = module
        self.comm = comm
        self.algorithm = with_transforms(algorithm, list(transforms))
        self.buffer_mode = buffers
        self.overlap = stale  # neighbours' values this many steps old (0: synchronous)
        self._params = [p for p in module.parameters() if p.requires_grad]
        if not self._params:
            raise ParallelError("module has no trainable parameters; nothing to train")
        dtypes = {p.dtype for p in self._params}
        devices = {p.device for p in self._params}
        if len(dtypes) > 1 or len(devices) > 1:
            raise ParallelError(
                f"trainable parameters must share one dtype and device, got {sorted(map(str, dtypes))} "
                f"on {sorted(map(str, devices))}; call module.to(dtype, device) first"
            )
        if broadcast:
            self._broadcast_from_rank0()
        self._flat = _as_flat_views(self._params)
        self.dim = int(self._flat.numel())
        self._state = self.algorithm.init(self._flat.detach().clone().unsqueeze(0))
        self._t = 0
        self._scaler_growth = 0
        self._write_query()

    # -- the DDP surface ---------------------------------------------------------------

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    @property
    def step_count(self) -> int:
        """Steps taken so far (the round ``t`` of the last update)."""
        return self._t

    @property
    def config(self) -> dict[str, Any]:
        """What runs, for logs and records: algorithm, topology, mode, overlap, buffers."""
        topo = getattr(self.comm, "topology", None)
        return {
            "algorithm": self.algorithm.name,
            "topology": str(getattr(topo, "name", "?")),
            "world_size": int(self.comm.num_nodes),
            "dim": self.dim,
            "mode": self.mode or "given comm",
            "overlap": f"stale-{self.overlap}" if self.overlap else "none",
            "buffers": self.buffer_mode,
        }

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """DDP's gradient-accumulation context; nothing communicates in backward here."""
        yield

    @torch.no_grad()
    def step(self, grad_scaler: Any = None) -> bool:
        """One decentralized step from the gradients in ``.grad``; returns whether it stepped.

        Call after ``backward()`` (after gradient clipping, after the last micro-batch of
        gradient accumulation). Gradients are left in place; zero them as usual.

        Args:
            grad_scaler: a ``torch.amp.GradScaler`` whose scaled loss made the gradients:
                they are unscaled here, and the step is skipped on every rank if any rank
                found an inf or NaN (one agreed decision, so step counters stay in sync);
                the scaler's scale is then updated the same way on every rank
                (backoff on a skip, growth after ``growth_interval`` clean steps).
        """
        grads = self._gather_grads()
        if grad_scaler is not None and grad_scaler.is_enabled():
            if not self._unscale_and_agree(grads, grad_scaler):
                return False
        self._t += 1
        self._state = self.algorithm.update(self._state, grads, self.comm, self._t)
        self._write_query()
        if self.buffer_mode == "gossip":
            self._gossip_buffers()
        return True

    @contextlib.contextmanager
    def averaged(self) -> Iterator[nn.Module]:
        """Within the block the module holds the exact network average, then its own state.

        Parameters become ``(1/n) sum_i output_i`` (the algorithm's output: DAT-SGD's ``x``)
        and floating buffers (BatchNorm statistics) their network mean, via all-reduce;
        every rank must enter the block. On exit the rank's own values come back.
        """
        with torch.no_grad():
            saved = self._flat.detach().clone()
            out = self.algorithm.output(self._state)
            self._flat.copy_(self.comm.all_reduce(out.reshape(1, -1), "mean", accounted=False))
            bufs = _float_buffers(self.module)
            saved_bufs = [b.detach().clone() for b in bufs]
            for b in bufs:
                mean = self.comm.all_reduce(b.detach().reshape(1, -1), "mean", accounted=False)
                b.copy_(mean.view_as(b))
        try:
            yield self.module
        finally:
            with torch.no_grad():
                self._flat.copy_(saved)
                for b, s in zip(bufs, saved_bufs, strict=True):
                    b.copy_(s)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """Everything a resume needs: module parameters and buffers, algorithm and transform
        state, the step, the loss scaler's growth count and this process's RNG states.

        Save one per rank (``torch.save(model.state_dict(), f"ckpt-{rank}.pt")``). In
        overlap mode the exchange in flight is not saved: a resumed run restarts the stale
        pipeline (its first exchange is fresh), so it is not bit-identical to one that ran on.
        """
        return {
            "module": self.module.state_dict(),
            "algorithm": _clone_tree(self._state),
            "step": self._t,
            "scaler_growth": self._scaler_growth,
            "config": self.config,
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),  # noqa: NPY002 (the global state user code draws from)
                "python": random.getstate(),
            },
        }

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> Any:  # type: ignore[override]
        """Restore what :meth:`state_dict` saved (the RNG states too)."""
        missing = {"module", "algorithm", "step"} - set(state)
        if missing:
            raise ParallelError(
                f"checkpoint lacks {sorted(missing)}; pass what DecentralizedDataParallel."
                "state_dict() saved (not the module's own state_dict)"
            )
        saved = state.get("config", {})
        if saved and (saved.get("algorithm"), saved.get("dim")) != (self.algorithm.name, self.dim):
            raise ParallelError(
                f"checkpoint is of {saved.get('algorithm')} with d={saved.get('dim')}, this "
                f"wrapper runs {self.algorithm.name} with d={self.dim}; build the same model "
                "and algorithm before loading"
            )
        result = self.module.load_state_dict(state["module"], strict=strict)
        self._state = _clone_tree(state["algorithm"])
        self._t = int(state["step"])
        self._scaler_growth = int(state.get("scaler_growth", 0))
        rng = state.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            np.random.set_state(rng["numpy"])  # noqa: NPY002
            random.setstate(rng["python"])
        with torch.no_grad():
            self._write_query()
        return result

    def close(self) -> None:
        """Complete the exchange still in flight (overlap mode), or, fault tolerant, tell the
        others this rank is done and wait (at most ``2 * failure_timeout``) until each has
        finished or is known dead; call on every rank at the end."""
        self.comm.close()

    # -- internals ---------------------------------------------------------------------

    def _write_query(self) -> None:
        # the next step's query point: round t + 1
        self._flat.copy_(self.algorithm.query(self._state, self._t + 1).reshape(-1))

    def _gather_grads(self) -> torch.Tensor:
        parts = [
            p.grad.detach().reshape(-1).to(self._flat.dtype)
            if p.grad is not None
            else torch.zeros(p.numel(), dtype=self._flat.dtype, device=self._flat.device)
            for p in self._params
        ]
        return torch.cat(parts).unsqueeze(0)  # fresh: an algorithm may keep it (g_prev)

    def _unscale_and_agree(self, grads: torch.Tensor, scaler: Any) -> bool:
        scale = float(scaler.get_scale())
        grads.mul_(1.0 / scale)
        bad = (~torch.isfinite(grads)).any().to(torch.float64).reshape(1, 1)
        skip = float(self.comm.all_reduce(bad, "max", accounted=False).item()) > 0
        if skip:
            new_scale = scale * float(scaler.get_backoff_factor())
            self._scaler_growth = 0
        else:
            self._scaler_growth += 1
            new_scale = scale
            if self._scaler_growth >= int(scaler.get_growth_interval()):
                new_scale = scale * float(scaler.get_growth_factor())
                self._scaler_growth = 0
        scaler.update(new_scale=float(new_scale))
        return not skip

    def _gossip_buffers(self) -> None:
        bufs = _float_buffers(self.module)
        if not bufs:
            return
        flat = torch.cat([b.detach().reshape(-1).to(torch.float64) for b in bufs]).unsqueeze(0)
        mixed = self.comm.mix(flat, self._t)[0]
        offset = 0
        for b in bufs:
            b.copy_(mixed[offset : offset + b.numel()].view_as(b))
            offset += b.numel()

    def _broadcast_from_rank0(self) -> None:
        rank = dist.get_rank(getattr(self.comm, "group", None))
        with torch.no_grad():
            for tensor in [*self.module.parameters(), *self.module.buffers()]:
                if tensor.numel() == 0:
                    continue
                row = tensor.detach().reshape(1, -1)
                work = row.to(torch.float64) if tensor.dtype == torch.bool else row.clone()
                if rank != 0:
                    work.zero_()
                total = self.comm.all_reduce(work, "sum", accounted=False)
                tensor.copy_(total.view_as(tensor).to(tensor.dtype))


def _resolve_mode(
    mode: str | None, overlap: bool, failure_timeout: float | None
) -> tuple[str, float | None]:
    """The transport mode and failure timeout: the arguments, else ``decent launch``'s env."""
    if mode is None:
        mode = "overlap" if overlap else os.environ.get(MODE_ENV) or "sync"
        where = f"mode (from ${MODE_ENV}, set by decent launch --mode)"
    else:
        where = "mode"
    if mode not in MODES:
        raise ParallelError(f"{where} must be one of {', '.join(MODES)}, got {mode!r}")
    if overlap and mode != "overlap":
        raise ParallelError(f"overlap=True contradicts mode={mode!r}; pass one of them")
    if mode != "fault_tolerant":
        if failure_timeout is not None:
            raise ParallelError(
                f"failure_timeout applies to mode='fault_tolerant' only, got mode={mode!r}"
            )
        return mode, None
    if failure_timeout is None:
        text = os.environ.get(TIMEOUT_ENV) or "10"
        try:
            failure_timeout = float(text)
        except ValueError:
            raise ParallelError(
                f"${TIMEOUT_ENV} must be a number of seconds, got {text!r}"
            ) from None
    return mode, failure_timeout


def _build_comm(topology: str | Topology, mode: str, failure_timeout: float | None) -> Communicator:
    """The runtime's transport of ``mode`` (as ``make_comm_factory`` builds it), one node per rank."""
    from decent.comm import DelayedCommunicator
    from decent.comm.dist import DistCommunicator
    from decent.comm.gossip import GossipCommunicator

    if not (dist.is_available() and dist.is_initialized()):
        raise ParallelError(
            "DecentralizedDataParallel needs an initialized process group: launch with "
            "torchrun or `decent launch --nproc N script.py` and call "
            "torch.distributed.init_process_group('gloo' or 'nccl') first"
        )
    n = dist.get_world_size()
    topo = make(topology, n) if isinstance(topology, str) else topology
    if int(topo.num_nodes) != n:
        raise ParallelError(
            f"topology {topo.name!r} has {topo.num_nodes} nodes but the world has {n} ranks; "
            "build it with num_nodes = world_size (or pass its kind as a string)"
        )
    if mode == "fault_tolerant":
        return GossipCommunicator(topo, failure_timeout=failure_timeout)
    comm = DistCommunicator(topo)
    return DelayedCommunicator(comm, delay=1) if mode == "overlap" else comm


def _as_flat_views(params: Sequence[nn.Parameter]) -> torch.Tensor:
    """One flat buffer holding the parameters' values; each parameter becomes a view of it."""
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    offset = 0
    for p in params:
        n = p.numel()
        p.data = flat[offset : offset + n].view_as(p)
        offset += n
    return flat


def _float_buffers(module: nn.Module) -> list[torch.Tensor]:
    return [b for b in module.buffers() if b.is_floating_point()]


def _clone_tree(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)._make(_clone_tree(v) for v in value)  # type: ignore[attr-defined]
    if isinstance(value, tuple):
        return tuple(_clone_tree(v) for v in value)
    return value
