"""Thread-based neighbour gossip: bounded staleness and survival of crashed or hung ranks.

Each pair of neighbouring ranks gets its own two-rank gloo group, so a failure poisons only
that edge. Per neighbour one thread sends (blocking ``send`` fed by a queue) and one
receives (blocking ``recv`` in a loop): on gloo, ``is_completed()`` of ``isend``/``irecv``
turns true only inside ``wait()`` and a timed-out ``wait`` closes the connection, so
polling does not work. Every message carries its version (the sender's count of posted
exchanges) in its first 8 bytes, ahead of the rows' bytes, so any dtype travels.

It is the ranks' transport (:class:`~decent.comm.dist.DistCommunicator`) with this
exchange, so the combiners (Chebyshev, robust rules) stand on it.

With ``failure_timeout`` set, each rank beats a heartbeat counter in the rendezvous store
and watches everyone's; a rank whose counter stalls for ``failure_timeout`` seconds
(SIGSTOP) or whose connection closes (SIGKILL) is declared dead in the store. Survivors
drop its edges, rebuild ``W`` with Metropolis-Hastings weights on the surviving graph, and
reduce metrics through the store over the survivors (the world group is unusable then).
"""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from decent._types import NodeTensor
from decent.comm._exchange import DistConfigError, ExchangePlan, block_placement, build_plan
from decent.comm.base import Pending, ReduceOp, reduce_rows
from decent.comm.dist import DistCommunicator
from decent.topology._matrix import MixingMatrix, Topology

__all__ = ["GossipCommunicator", "surviving_metropolis"]

_KEY = "decent/ft"
STORE_CHUNK = 1 << 19
"""float64 values per store key of a fault-tolerant all-reduce (4 MiB; the limit is 8 MiB)."""


def _rank_edges(w: MixingMatrix, owner: np.ndarray) -> list[tuple[int, int]]:
    """Unordered pairs of distinct ranks whose nodes are adjacent in ``W`` (sorted)."""
    coo = w.csr.tocoo()
    a, b = owner[coo.row], owner[coo.col]
    keep = a != b
    pairs = {(int(min(i, j)), int(max(i, j))) for i, j in zip(a[keep], b[keep], strict=True)}
    return sorted(pairs)


def surviving_metropolis(w: MixingMatrix, dead_nodes: Sequence[int]) -> MixingMatrix:
    """Metropolis-Hastings weights on the graph of ``W`` without the ``dead_nodes``:
    ``W'_ij = 1 / (1 + max(deg_i, deg_j))`` on the symmetric support ``S`` of ``W`` among
    survivors (``deg_i = |S_i|``), ``W'_ii = 1 - sum_{j != i} W'_ij``; a dead node keeps its
    value (``W'_dd = 1``). ``W'`` is symmetric and doubly stochastic.

    Example:
        >>> from decent.topology import ring
        >>> w = surviving_metropolis(ring(4).weights(1), [2])
        >>> w.dense().sum(axis=1).tolist()
        [1.0, 1.0, 1.0, 1.0]
    """
    a = w.dense()
    n = a.shape[0]
    alive = np.ones(n, dtype=bool)
    alive[list(dead_nodes)] = False
    s = ((a != 0) | (a.T != 0)) & alive[:, None] & alive[None, :]
    np.fill_diagonal(s, False)
    deg = s.sum(axis=1)
    out = np.where(s, 1.0 / (1.0 + np.maximum(deg[:, None], deg[None, :])), 0.0)
    np.fill_diagonal(out, 1.0 - out.sum(axis=1))
    return MixingMatrix.from_array(out, name=f"{w.name}-survivors")


class GossipCommunicator(DistCommunicator):
    """Mix with the freshest neighbour values (bounded staleness), optionally fault tolerant.

    Row ``i`` at the rank's ``c``-th exchange is ``sum_j W[i, j] x_j(v_j)`` with ``x_j(v)``
    the value node ``j`` posted in its ``v``-th exchange, ``v_i = c`` and ``v_j`` the newest
    version that has arrived with ``c - s <= v_j <= c`` (waiting only when there is none;
    ``s = 0`` is the synchronous mix). ``W`` is the topology's, or after a rank is declared
    dead :func:`surviving_metropolis` on the survivors: ``combine``, :meth:`weights` and
    ``layout`` give the one the latest completed exchange used. Needs a static topology
    and messages of one shape and dtype (every method of decent packs its state into one
    call per round); exchanges complete in the order they were posted.

    Args:
        topology: a static topology.
        placement: nodes per rank (default :func:`~decent.comm.dist.block_placement`).
        staleness: ``s >= 0``, how many calls old a neighbour's value may be.
        failure_timeout: seconds of heartbeat silence after which a rank is declared dead
            (``None``: a dead peer fails the run).
        heartbeat_interval: seconds between heartbeats (default ``min(0.5, timeout / 10)``).
        dense_limit: as in :class:`~decent.comm.dist.DistCommunicator`.

    Raises:
        DistConfigError: no process group, a time-varying topology, a bad placement or
            ``staleness < 0``.
    """

    def __init__(
        self,
        topology: Topology,
        *,
        placement: Sequence[Sequence[int]] | None = None,
        staleness: int = 0,
        failure_timeout: float | None = None,
        heartbeat_interval: float | None = None,
        dense_limit: int = 1 << 16,
    ) -> None:
        if not topology.is_static:
            raise DistConfigError(
                f"the stale and fault_tolerant modes need a static topology, got time-varying "
                f"{topology.name!r}; use mode 'sync' for time-varying graphs"
            )
        if isinstance(staleness, bool) or not isinstance(staleness, int) or staleness < 0:
            raise DistConfigError(f"staleness must be an integer >= 0 (rounds), got {staleness!r}")
        if failure_timeout is not None and not failure_timeout > 0:
            raise DistConfigError(f"failure_timeout must be > 0 seconds, got {failure_timeout!r}")
        if placement is None and dist.is_available() and dist.is_initialized():
            placement = block_placement(int(topology.num_nodes), dist.get_world_size())
        super().__init__(topology, placement=placement, device="cpu", dense_limit=dense_limit)
        self.staleness = staleness
        self.failure_timeout = failure_timeout
        self._w = topology.weights(1)
        self._base_plan = build_plan(self._w, self._my_nodes, self._owner, self.rank, dense_limit)
        self._plan = self._base_plan  # the current one: W, or W on the survivors
        self._mixing = self._base_plan  # the one the latest completed exchange used
        self._out_peers = sorted(self._base_plan.send)
        self._in_peers = sorted(self._base_plan.recv)
        # one two-rank group per edge of the rank graph; new_group is collective, so every
        # rank creates every edge's group, in the same (lexicographic) order
        self._edge: dict[int, Any] = {}
        for low, high in _rank_edges(self._w, self._owner):
            group = dist.new_group([low, high])
            if self.rank in (low, high):
                self._edge[high if low == self.rank else low] = group

        self._cond = threading.Condition()
        self._inbox: dict[int, dict[int, torch.Tensor]] = {p: {} for p in self._in_peers}
        self.dead: set[int] = set()  # ranks
        self.events: list[dict[str, Any]] = []
        self.max_staleness_seen = 0
        self.versions: list[dict[int, int]] = []
        """Per ``mix`` call, the version of each neighbour rank's value it mixed (the pattern
        the simulator replays: :class:`~decent.comm.network.DelayModel` kind ``"given"``)."""
        self._calls = 0  # exchanges posted: the version of the next one is _calls + 1
        self._round = 0  # the round t of the latest exchange posted
        self._k: int | None = None
        self._dtype: torch.dtype | None = None
        self._queues: dict[int, queue.Queue[torch.Tensor | None]] = {}
        self._heartbeat_thread: threading.Thread | None = None
        self._senders: dict[int, threading.Thread] = {}  # peer rank -> its sending thread
        self._receivers: dict[int, threading.Thread] = {}  # peer rank -> its receiving thread
        self._closed = False
        self._ar_seq = 0
        self._ar_chunks: dict[int, int] = {}  # reduce -> chunks this rank posted (to delete)
        self._counted = list(range(self.world_size))  # ranks whose rows the last reduce summed
        self._start = time.monotonic()

        self._store: Any = None
        self._stop = threading.Event()
        self._key = _KEY
        if failure_timeout is not None:
            from torch.distributed import distributed_c10d as c10d

            self._store = c10d._get_default_store()
            # a namespace per communicator: ranks build communicators collectively, so the
            # k-th one of every rank gets the same count from the store
            count = self._store.add(f"{_KEY}/instances/{self.rank}", 1)
            self._key = f"{_KEY}/{count}"
            self._hb_interval = (
                heartbeat_interval
                if heartbeat_interval is not None
                else min(0.5, failure_timeout / 10)
            )
            self._seen = {r: (-1, time.monotonic()) for r in range(self.world_size)}
            self._finished: set[int] = set()
            hb = threading.Thread(target=self._heartbeat, name="decent-heartbeat", daemon=True)
            hb.start()
            self._heartbeat_thread = hb

    # -- failure detection -------------------------------------------------------------
    def _heartbeat(self) -> None:
        store = self._store
        while not self._stop.is_set():
            try:
                store.add(f"{self._key}/hb/{self.rank}", 1)
                now = time.monotonic()
                for r in range(self.world_size):
                    if r == self.rank or r in self.dead or r in self._finished:
                        continue
                    if store.check([f"{self._key}/done/{r}"]):
                        self._finished.add(r)
                        continue
                    if store.check([f"{self._key}/dead/{r}"]):
                        first = int(store.get(f"{self._key}/dead/{r}").decode())
                        self._declare_dead(r, "store", now - self._seen[r][1], first)
                        continue
                    count = store.add(f"{self._key}/hb/{r}", 0)
                    last, since = self._seen[r]
                    if count != last:
                        self._seen[r] = (count, now)
                    elif now - since > float(self.failure_timeout or 0):
                        self._declare_dead(r, "heartbeat", now - since)
            except Exception:  # the store itself is gone: nothing left to watch
                return
            self._stop.wait(self._hb_interval)

    def _declare_dead(
        self, r: int, how: str, silent_s: float, left_round: int | None = None
    ) -> None:
        with self._cond:
            if r in self.dead:
                return
            self.dead.add(r)
            self.events.append(
                {
                    "rank": r,
                    "nodes": list(self.placement[r]),
                    "round": self._round,  # this rank's round when it learned
                    "left_round": self._round if left_round is None else left_round,
                    "detected_by": how,
                    "silent_s": round(float(silent_s), 3),
                    "wall_s": round(time.monotonic() - self._start, 3),
                }
            )
            dead_nodes = [i for d in sorted(self.dead) for i in self.placement[d]]
            w = surviving_metropolis(self._w, dead_nodes)
            self._plan = build_plan(w, self._my_nodes, self._owner, self.rank, self.dense_limit)
            self._cond.notify_all()
        if self._store is not None and how != "store":
            with contextlib.suppress(Exception):  # the store may be gone already
                self._store.set(f"{self._key}/dead/{r}", str(self._round))

    def metrics(self) -> dict[str, float]:
        """Flat metrics for the records: nodes alive, and per lost rank when it was seen gone."""
        out = {"dist/alive_ranks": float(self.world_size - len(self.dead))}
        out["dist/alive_nodes"] = float(
            self.num_nodes - sum(len(self.placement[r]) for r in self.dead)
        )
        for e in self.events:
            out[f"dist/left/rank{e['rank']}/round"] = float(e["left_round"])
            out[f"dist/left/rank{e['rank']}/wall_s"] = float(e["wall_s"])
        return out

    # -- threads -----------------------------------------------------------------------
    def _start_threads(self, k: int, dtype: torch.dtype) -> None:
        self._k, self._dtype = k, dtype
        for p in self._in_peers:
            size = 8 + int(self._base_plan.recv[p].size) * k * dtype.itemsize
            th = threading.Thread(
                target=self._receive, args=(p, size), name=f"decent-recv-{p}", daemon=True
            )
            th.start()
            self._receivers[p] = th
        for q in self._out_peers:
            self._queues[q] = queue.Queue()
            th = threading.Thread(
                target=self._send, args=(q,), name=f"decent-send-{q}", daemon=True
            )
            th.start()
            self._senders[q] = th

    def _receive(self, p: int, size: int) -> None:
        rows = int(self._base_plan.recv[p].size)
        assert self._dtype is not None and self._k is not None
        while True:
            buf = torch.empty(size, dtype=torch.uint8)
            try:
                dist.recv(buf, src=p, group=self._edge[p])
            except Exception:
                if not self._closed:
                    self._declare_dead(p, "connection", 0.0)
                return
            version = int(buf[:8].view(torch.int64).item())
            if version < 0:  # the peer closed
                return
            with self._cond:
                self._inbox[p][version] = buf[8:].view(self._dtype).view(rows, self._k)
                self._cond.notify_all()

    def _send(self, q: int) -> None:
        box = self._queues[q]
        while True:
            payload = box.get()
            if payload is None:
                return
            if q in self.dead:
                continue
            try:
                dist.send(payload, dst=q, group=self._edge[q])
            except Exception:
                if not self._closed:
                    self._declare_dead(q, "connection", 0.0)

    # -- Transport ---------------------------------------------------------------------
    def plan(self, t: int) -> ExchangePlan:
        """The exchange plan of the latest completed exchange (``W`` or ``W`` on the survivors;
        the topology is static, so ``t`` does not matter)."""
        return self._mixing

    def post(self, x: NodeTensor, t: int, *, slot: int = 0, keep: bool = False) -> Pending:
        """Queue each alive neighbour its rows of ``x`` (with this exchange's version) for the
        sending threads; ``wait()`` returns ``Z = [x; received]`` (see the class docstring).

        Raises:
            ValueError: a wrongly shaped ``x``, or a different number of columns or dtype
                than the first call.
        """
        self.check_rows(x, "mix")
        if self._k is None:
            self._start_threads(int(x.shape[1]), x.dtype)
        elif x.shape[1] != self._k or x.dtype != self._dtype:
            raise ValueError(
                f"GossipCommunicator mixes one fixed-size message per round: first call had "
                f"k={self._k} {self._dtype}, now k={x.shape[1]} {x.dtype}"
            )
        self._calls += 1
        self._round = t
        x = x.clone() if keep else x.contiguous()
        version = torch.tensor([self._calls], dtype=torch.int64).view(torch.uint8)
        index = self._base_plan.send_index(x.device)
        for q in self._out_peers:
            if q not in self.dead:
                rows = x.index_select(0, index[q]).reshape(-1).view(torch.uint8)
                self._queues[q].put(torch.cat([version, rows]))
        return Pending(x, functools.partial(self._gather, x, self._calls))

    def _gather(self, x: torch.Tensor, c: int) -> torch.Tensor:
        """``Z = [x; received]`` of exchange ``c``: wait until every neighbour of the current
        plan that is not dead has a version in ``c - s .. c``, take the newest of each.

        Raises:
            RuntimeError: a neighbour stays silent and failure handling is off.
        """
        lo = c - self.staleness
        deadline = time.monotonic() + 300.0
        with self._cond:
            while True:
                plan = self._plan
                missing = [
                    p
                    for p in sorted(plan.recv)
                    if p not in self.dead and not any(lo <= v <= c for v in self._inbox[p])
                ]
                if not missing:
                    break
                if self.failure_timeout is None and time.monotonic() > deadline:
                    raise RuntimeError(
                        f"rank {self.rank}: no message of rounds {lo}..{c} from ranks {missing} "
                        "within 300 s; a peer died or hangs (use mode 'fault_tolerant')"
                    )
                self._cond.wait(0.05)
            received = []
            used: dict[int, int] = {}
            self.versions.append(used)
            for p in sorted(plan.recv):
                box = self._inbox[p]
                v = max(v for v in box if lo <= v <= c)
                used[p] = int(v)
                self.max_staleness_seen = max(self.max_staleness_seen, c - v)
                for old in [u for u in box if u < v]:
                    del box[old]
                rows = box[v]
                want = plan.recv[p]
                if want.size != self._base_plan.recv[p].size:  # a subset after a failure
                    pos = np.searchsorted(self._base_plan.recv[p], want)
                    rows = rows[torch.as_tensor(pos)]
                received.append(rows)
        self._mixing = plan
        return torch.cat([x, *received], dim=0) if received else x

    def all_reduce(
        self, x: NodeTensor, op: ReduceOp = "mean", *, accounted: bool = True
    ) -> torch.Tensor:
        """Reduce over all (surviving) nodes; through the store when failures are handled."""
        if self._store is None:
            return super().all_reduce(x, op, accounted=accounted)
        self.check_rows(x, "all_reduce")
        if accounted:
            self.stats.add_all_reduce(x.shape[1] * x.element_size())
        return self._store_reduce(reduce_rows(x, op), op)

    def _store_reduce(self, local: torch.Tensor, op: str) -> torch.Tensor:
        """All-reduce through the rendezvous store among the ranks not declared dead.

        Each rank posts its partial in chunks of :data:`STORE_CHUNK` values (the store's
        server refuses a payload over 8 MiB) and deletes its own keys of two reduces ago:
        every survivor has read them, since it posted the last reduce only after that.
        """
        self._ar_seq += 1
        seq = self._ar_seq
        arr = local.detach().to(torch.float64).numpy().reshape(-1)
        chunks = range(max(1, -(-arr.size // STORE_CHUNK)))
        for k in chunks:
            part = arr[k * STORE_CHUNK : (k + 1) * STORE_CHUNK]
            self._store.set(f"{self._key}/ar/{seq}/{self.rank}/{k}", part.tobytes())
        for k in range(self._ar_chunks.pop(seq - 2, 0)):
            self._store.delete_key(f"{self._key}/ar/{seq - 2}/{self.rank}/{k}")
        self._ar_chunks[seq] = len(chunks)
        parts: list[np.ndarray] = []
        self._counted = []
        for r in range(self.world_size):
            if r == self.rank:
                parts.append(arr)
                self._counted.append(r)
                continue
            key = f"{self._key}/ar/{seq}/{r}"
            while True:
                if self._store.check([f"{key}/{chunks[-1]}"]):  # posted in order: all there
                    got = [self._store.get(f"{key}/{k}") for k in chunks]
                    parts.append(np.frombuffer(b"".join(got), dtype=np.float64))
                    self._counted.append(r)
                    break
                if r in self.dead:
                    break
                time.sleep(0.001)
        stack = np.stack(parts)
        res = {"min": stack.min, "max": stack.max}.get(op, stack.sum)(axis=0)
        count = self.counted_nodes().size
        return torch.as_tensor(res / count if op == "mean" else res, dtype=local.dtype)

    def close(self) -> None:
        """Tell the neighbours this rank is done, flush the sends, stop and join the threads.

        With failure handling it also waits (at most ``2 * failure_timeout``) until every
        rank has finished or is known dead, so the caller sees the final membership (a
        recorder's takeover relies on it). Afterwards no thread of this communicator runs,
        except a receiver of a peer declared dead without closing its connection: gloo
        cannot cancel a posted ``recv``, so it stays blocked until the process exits. The
        join matters: CPython ends a daemon thread still running at finalization
        (``pthread_exit``) when it next takes the GIL, and the unwind through libtorch's
        ``noexcept`` frames aborts the process (a killed rank's neighbour died with SIGABRT).
        """
        if self._closed:
            return
        limit = time.monotonic() + 2 * (self.failure_timeout or 60.0)
        if self._k is not None:
            assert self._dtype is not None
            end = torch.tensor([-1], dtype=torch.int64).view(torch.uint8)
            for q in self._out_peers:
                size = int(self._base_plan.send[q].size) * self._k * self._dtype.itemsize
                self._queues[q].put(torch.cat([end, torch.zeros(size, dtype=torch.uint8)]))
                self._queues[q].put(None)
            # senders flush; receivers end with the peer's last message; the heartbeat still
            # runs meanwhile, so a peer that fails now ends the wait for it
            for peer, th in [*self._senders.items(), *self._receivers.items()]:
                while th.is_alive() and peer not in self.dead and time.monotonic() < limit:
                    th.join(timeout=0.05)
        self._closed = True
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.set(f"{self._key}/done/{self.rank}", "1")
            others = set(range(self.world_size)) - {self.rank}
            while not others <= (self._finished | self.dead) and time.monotonic() < limit:
                self._stop.wait(0.05)
        self._stop.set()
        # The heartbeat ends after its current pass over the store, a sender of a dead peer
        # at its end-of-queue mark, a receiver whose recv failed at once; a receiver still in
        # recv on a dead peer after a short wait is the blocked one described above.
        grace = max(1.0, float(self.failure_timeout or 0.0))
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join(timeout=grace)
        for th in self._senders.values():
            th.join(timeout=grace)
        for peer, th in self._receivers.items():
            th.join(timeout=0.1 if peer in self.dead else grace)

    def counted_nodes(self) -> np.ndarray:
        """The node ids whose rows the latest :meth:`all_reduce` summed (all of them, unless a
        rank was lost before posting its share)."""
        return np.concatenate(
            [np.asarray(self.placement[r], dtype=np.int64) for r in self._counted]
        )

    def alive_ranks(self) -> list[int]:
        """The ranks not declared dead, ascending (all of them without failure handling)."""
        with self._cond:
            return [r for r in range(self.world_size) if r not in self.dead]

    def __repr__(self) -> str:
        return (
            f"GossipCommunicator({self.topology.name}, n={self.num_nodes}, rank={self.rank}/"
            f"{self.world_size}, staleness={self.staleness}, "
            f"failure_timeout={self.failure_timeout})"
        )
