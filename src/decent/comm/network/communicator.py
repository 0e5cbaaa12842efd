"""The simulated network's communicator: the simulator's mixing under a clock and faults
(the model: :mod:`decent.comm.network`)."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch

from decent._types import NodeTensor
from decent.comm.base import BaseTransport, CommStats, Posted, ReduceOp, reduce_rows
from decent.comm.network.clock import edges, tick_all_reduce, tick_gossip
from decent.comm.network.delays import History
from decent.comm.network.events import PairwiseClock, PairwiseRound, event_layers, reverse_edges
from decent.comm.network.faults import Losses, churn
from decent.comm.network.models import (
    DELAY_STREAM,
    PAIR_STREAM,
    ComputeModel,
    DelayModel,
    Draws,
    FaultModel,
    LinkModel,
    NetworkError,
)
from decent.comm.sim import SimCommunicator
from decent.topology._matrix import MixingMatrix, Topology

__all__ = ["NetworkCommunicator"]


class NetworkCommunicator(BaseTransport):
    """The simulator's communicator on a simulated network (see the module docstring).

    Args:
        inner: the simulator communicator, or a topology to build one.
        compute: per-node compute times (default: 1 s per round, every node alike).
        link: per-message times (default: free).
        faults: drops, link failures and churn (default: none).
        delays: bounded-delay gossip (default: none).
        seed: seeds every draw of the clock and the faults (a config passes the run's).

    Raises:
        NetworkError: a node the network does not have, or a fault schedule that leaves
            no node alive or no link among the live ones, or a joining node nobody to pull from.

    Example:
        >>> import torch
        >>> from decent.topology import ring
        >>> net = NetworkCommunicator(ring(4), link=LinkModel(latency=0.5))
        >>> _ = net.mix(torch.ones(4, 1, dtype=torch.float64), t=1)
        >>> net.metrics()["time/sim"]  # one second of compute, half a second of latency
        1.5
    """

    def __init__(
        self,
        inner: SimCommunicator | Topology,
        *,
        compute: ComputeModel | None = None,
        link: LinkModel | None = None,
        faults: FaultModel | None = None,
        delays: DelayModel | None = None,
        seed: int = 0,
    ) -> None:
        self.inner = inner if isinstance(inner, SimCommunicator) else SimCommunicator(inner)
        self.topology = self.inner.topology
        self.num_nodes = n = self.inner.num_nodes
        self.node_ids = self.inner.node_ids
        self.compute = compute or ComputeModel()
        self.link = link or LinkModel()
        self.faults = faults or FaultModel()
        self.delays = delays or DelayModel()
        self.seed = int(seed)
        if self.delays.max_delay > 0 and self.faults.any and not self.topology.is_static:
            raise NetworkError(
                "delays.max_delay > 0 with faults needs a static topology (a lost message is "
                f"remembered per link), got time-varying {self.topology.name!r}"
            )
        named = {f"faults.{k}": getattr(self.faults, k) for k in ("crashes", "leaves", "joins")}
        for name, nodes in {**named, "compute.slow_nodes": self.compute.slow_nodes}.items():
            for node in nodes:
                if not 0 <= node < n:
                    raise NetworkError(
                        f"{name} names node {node}, but the network has nodes 0..{n - 1}"
                    )
        if len(self.faults.crashes) >= n:
            raise NetworkError(
                f"faults.crashes crashes all {n} nodes; at least one node must stay alive"
            )
        self.stats = CommStats(num_nodes=n)
        self.clock = np.zeros(n)
        """``(n,)`` simulated seconds at which each node finished its latest step."""
        self.alive = np.ones(n, dtype=bool)
        """Which nodes take part now (not crashed, not left, not yet to join)."""
        self.alive[self.faults.absent_at_start()] = False
        self.pulled: dict[int, int] = {}
        """The latest join of each node: ``{node: the neighbour it pulled its state from}``."""
        self.dropped = 0
        """Messages lost so far (drops and down links; never charged as bytes)."""
        self._round = 0  # the last round whose compute time is on the clock
        self._joins: list[tuple[int, int]] = []
        self.draws = Draws(self.seed)
        self.losses = Losses(self.faults, self.draws, n)
        self._rows_t: dict[tuple[bool, torch.device], torch.Tensor] = {}  # see _rows
        self._live: tuple[int, MixingMatrix, tuple[np.ndarray, ...]] | None = None
        self._alive_version = 0  # bumped whenever the live set changes
        self._histories: list[History] = []  # one per mix call of a round (slot)
        self._slot = 0
        self._slot_round = 0
        self.delay_sum = 0.0
        """Sum of ``tau_ij(t)`` over the messages mixed so far (``delay/mean`` divides)."""
        self.delay_count = 0
        self.delay_max = 0
        self._pair: PairwiseClock | None = None
        if self.faults.churn:
            self._check_schedule()

    @property
    def staleness(self) -> int:
        """``delays.max_delay``: neighbours' values are up to this many rounds old."""
        return int(self.delays.max_delay)

    def _check_schedule(self) -> None:
        """Before training: some node is alive at every round, live nodes keep at least one
        link among them, and every joining node has a neighbour to pull its state from."""
        alive = self.alive.copy()
        for t in [1, *self.faults.change_rounds()]:
            churn(self.faults, alive, t, partial(self.inner.weights, t))
            dst, src, _, _ = edges(self.inner.weights(t))
            live = int(alive.sum())
            if live == 0:
                raise NetworkError(
                    f"the fault schedule (faults.crashes, faults.leaves, faults.joins) leaves "
                    f"no node alive at round {t}; at least one node must stay alive"
                )
            if live > 1 and not np.any(alive[dst] & alive[src]):
                raise NetworkError(
                    f"the fault schedule (faults.crashes, faults.leaves, faults.joins) "
                    f"disconnects every node at round {t}: no two of the {live} live nodes "
                    "are neighbours"
                )

    # -- the clock -----------------------------------------------------------------------
    def _advance(self, t: int) -> None:
        """Charge the compute of rounds ``_round + 1 .. t`` and apply the crashes due."""
        while self._round < t:
            self._round += 1
            if self.faults.churn:
                self._churn(self._round)
            times = self.compute.draw(self.seed, self._round, self.num_nodes)
            if self.faults.churn:
                times[~self.alive] = 0.0
            self.clock += times

    def _churn(self, t: int) -> None:
        """Apply round ``t``'s churn; a joining node starts at its source's clock."""
        if self.faults.events(t) == ([], []):
            return
        for node, source in churn(self.faults, self.alive, t, lambda: self.inner.weights(t)):
            self.pulled[node] = source
            self.clock[node] = self.clock[source]
            self._joins.append((node, source))
        self._rows_t = {}
        self._alive_version += 1

    def begin_round(self, t: int) -> list[tuple[int, int]]:
        """The engine's hook before round ``t``: the nodes compute its gradients (a round
        without communication still takes its compute time). Returns ``(node, source)`` per
        node joining at ``t``: the engine copies row ``source`` of every node-stacked state
        tensor into row ``node`` before the round's gradients."""
        self._joins = []
        self._advance(t)
        return self._joins

    # -- Exchange: the simulator's, exact without faults and delays ----------------------
    def post(self, x: NodeTensor, t: int, *, slot: int = 0, keep: bool = False) -> Posted:
        """The simulator's exchange (nothing moves)."""
        return self.inner.post(x, t, slot=slot, keep=keep)

    def combine(self, z: NodeTensor, t: int) -> NodeTensor:
        """``W_t @ z``, uncounted."""
        return self.inner.combine(z, t)

    def count(self, t: int, nbytes: int) -> None:
        """One gossip round of ``W_t`` on the clock, ``nbytes`` per message.

        Raises:
            NetworkError: faults or delays, under which a round's exchange is not ``W_t``.
        """
        if self.faults.any or self.delays.max_delay > 0:
            raise NetworkError(
                "this needs the exact exchange of W_t, but lost messages, absent nodes and "
                "delays change the mixing from round to round; remove faults and delays"
            )
        self._advance(t)
        w = self.inner.weights(t)
        self.stats.add_gossip(w.out_degree, nbytes)
        dst, src, _, _ = edges(w)
        self._tick(dst, src, nbytes)

    # -- Communicator --------------------------------------------------------------------
    def mix(self, x: NodeTensor, t: int) -> NodeTensor:
        """One gossip step under the round's faults; advances the clock."""
        self._advance(t)
        plan = self.inner.checked_plan(x, t)
        w = plan.matrix
        nbytes = x.shape[1] * x.element_size()
        dst, src, weights, _ = edges(w)
        if self.delays.max_delay > 0:
            return self._mix_delayed(x, t, w, nbytes)
        if not self.faults.any:
            self.stats.add_gossip(w.out_degree, nbytes)
            self._tick(dst, src, nbytes)
            return self.inner.apply_plan(plan, x)
        lost = self.losses.lost(w, t, dst, src)
        everyone = bool(self.alive.all())
        live = None if everyone else self._live_entries(w, dst, src, weights)
        reached = None if live is None else live[0]
        if reached is not None:
            lost &= reached
        count = int(np.count_nonzero(lost))
        self.dropped += count
        if reached is None:
            sent = w.out_degree - np.bincount(src[lost], minlength=w.n) if count else w.out_degree
            self.stats.add_gossip(sent, nbytes)
            # a receiver waits for every live in-neighbour: a lost message times out after
            # the time a delivered one takes
            self._tick(dst, src, nbytes)
            if not count:
                return self.inner.apply_plan(plan, x)
            # W' x = W x + sum over lost (i <- j) of W_ij (x_i - x_j): the weight of a lost
            # message goes back to its receiver (only while every node is alive: a crashed
            # node's value may be anything, NaN included, and must not enter W x at all)
            weight = torch.as_tensor(weights[lost], dtype=x.dtype, device=x.device)
            i = torch.as_tensor(dst[lost], device=x.device)
            j = torch.as_tensor(src[lost], device=x.device)
            diff = x.index_select(0, i).sub_(x.index_select(0, j)).mul_(weight[:, None])
            # index_put_ with accumulate: the same sum as index_add_, at half its cost on CPU
            return self.inner.apply_plan(plan, x).index_put_((i,), diff, accumulate=True)
        assert live is not None
        _, dst_r, src_r, to_dead, w_dead = live
        delivered = np.bincount(src_r, minlength=w.n)
        if count:
            delivered -= np.bincount(src[lost], minlength=w.n)
        self.stats.add_gossip(delivered, nbytes)
        self._tick(dst_r, src_r, nbytes)
        return self._apply_live(plan, x, dst, src, weights, lost, to_dead, w_dead)

    def _live_entries(
        self, w: MixingMatrix, dst: np.ndarray, src: np.ndarray, weights: np.ndarray
    ) -> tuple[np.ndarray, ...]:
        """``(reached, dst, src of the reached, receivers and weights of the live <- dead
        entries)``: what the live set decides, cached until it changes."""
        found = self._live
        if found is not None and found[0] == self._alive_version and found[1] is w:
            return found[2]
        reached = self.alive[dst] & self.alive[src]
        cut = self.alive[dst] & ~self.alive[src]
        entries = (reached, dst[reached], src[reached], dst[cut], weights[cut])
        self._live = (self._alive_version, w, entries)
        return entries

    def _mix_delayed(self, x: NodeTensor, t: int, w: MixingMatrix, nbytes: int) -> NodeTensor:
        """``y_i = W_ii x_i(t) + sum_j W_ij x_j(t - tau_ij(t))`` (see :class:`DelayModel`)."""
        if self._slot_round != t:
            self._slot_round, self._slot = t, 0
        slot = self._slot
        self._slot += 1
        depth = self.delays.max_delay + 1
        if slot == len(self._histories):
            self._histories.append(History(depth, x))
        hist = self._histories[slot]
        ready = self.clock.copy()  # s_i(t): computed, ready to send and mix
        hist.push(t, x, ready)
        dst, src, weight, diagonal = edges(w)
        oldest = min(self.delays.max_delay, hist.rounds - 1)  # never before the first round
        kind = self.delays.kind
        link = self.link.time(nbytes)
        live: np.ndarray | None = None
        if self.faults.any:
            # this round's messages: lost ones are remembered, so no later round mixes them
            live = self._live_entries(w, dst, src, weight)[0]
            lost_now = self.losses.lost(w, t, dst, src) & live
            self.dropped += int(lost_now.sum())
            self.stats.add_gossip(np.bincount(src[live & ~lost_now], minlength=w.n), nbytes)
            if hist.lost is None or hist.lost.shape[1] != dst.shape[0]:
                hist.lost = np.zeros((depth, dst.shape[0]), dtype=bool)
            hist.lost[t % depth] = lost_now | ~live
        else:
            self.stats.add_gossip(w.out_degree, nbytes)
        if kind == "uniform":
            u = self.draws.uniforms(DELAY_STREAM, t, dst.shape[0])
            tau = np.minimum((u * (self.delays.max_delay + 1)).astype(np.int64), oldest)
        elif kind == "given":
            assert self.delays.schedule is not None
            tau = np.asarray(self.delays.schedule(t, dst, src), dtype=np.int64)
            if tau.shape != dst.shape or (tau.size and not 0 <= tau.min() <= tau.max() <= oldest):
                raise NetworkError(
                    f"delays.schedule must return {dst.shape[0]} integer delays in "
                    f"0..{oldest} at round {t}, got shape {tau.shape}"
                    + (f", range {tau.min()}..{tau.max()}" if tau.size else "")
                )
        else:
            # j's message of round t - oldest must be in (or time out, if lost): wait for it
            must = hist.sent[(t - oldest) % depth][src] + link
            wait = ready.copy()
            if live is None:
                np.maximum.at(wait, dst, must)
            else:  # a dead node waits for nobody, and nobody waits for it
                np.maximum.at(wait, dst[live], must[live])
                wait = np.where(self.alive, wait, ready)
            self.clock = wait
            if kind == "constant":
                tau = np.full(dst.shape[0], oldest, dtype=np.int64)
            else:
                # the newest message of rounds t - oldest .. t that has arrived by then
                ages = np.arange(oldest + 1)
                arrived = hist.sent[(t - ages) % depth][:, src] + link <= wait[dst][None, :]
                if hist.lost is not None and live is not None:
                    arrived &= ~hist.lost[(t - ages) % depth]
                tau = np.argmax(arrived, axis=0).astype(np.int64)  # first True: the newest
                if live is not None:
                    live = live & arrived.any(axis=0)
        n = x.shape[0]
        coef_np, diag_np, to, tau_used = weight, diagonal, dst, tau
        if live is not None:
            assert hist.lost is not None
            # mixed: from a live sender to a live receiver, and not lost on its way; the
            # weight of the others stays with the receiver, and a dead row keeps its value
            has = live & ~hist.lost[(t - tau) % depth, np.arange(dst.shape[0])]
            diag_np = diagonal + np.bincount(dst[~has], weights=weight[~has], minlength=n)
            diag_np[~self.alive] = 1.0
            coef_np, to, tau_used, src = weight[has], dst[has], tau[has], src[has]
        self.delay_sum += float(tau_used.sum())
        self.delay_count += int(tau_used.shape[0])
        self.delay_max = max(self.delay_max, int(tau_used.max()) if tau_used.size else 0)
        where = torch.as_tensor(((t - tau_used) % depth) * n + src, device=x.device)
        stale = hist.values.view(depth * n, -1).index_select(0, where)
        coef = torch.as_tensor(coef_np, dtype=x.dtype, device=x.device)
        diag = torch.as_tensor(diag_np, dtype=x.dtype, device=x.device)
        out = x * diag[:, None]
        return out.index_add_(0, torch.as_tensor(to, device=x.device), stale.mul_(coef[:, None]))

    # -- asynchronous pairwise averaging (AD-PSGD) --------------------------------------
    def mean_step(self, nbytes: int) -> float:
        """The expected seconds of one AD-PSGD step: a gradient and one exchange (a message
        each way), averaged over nodes."""
        return self.compute.mean_time(self.num_nodes) + 2 * self.link.time(nbytes)

    def pairwise(self, x: NodeTensor, t: int) -> PairwiseRound:
        """Round ``t`` of asynchronous pairwise averaging (see :class:`PairwiseRound`).

        A round is half a mean step (:meth:`mean_step`), so about half the nodes finish a
        gradient in each (a second finish in one slice waits for the next round). The
        initiator pays a message each way; the partner averages in place while it computes
        (AD-PSGD's staleness). A lost message cancels the exchange: the node steps alone.
        Absent nodes take no part.

        Raises:
            NetworkError: delays (``delays.max_delay > 0``), or a graph that is not
                undirected (pairwise averaging needs a link both ways).
        """
        self._advance(t)  # crashes, leaves and joins due
        n = self.num_nodes
        nbytes = x.shape[1] * x.element_size()
        exchange = 2 * self.link.time(nbytes)
        p = self._pair
        if p is None:
            if self.delays.max_delay > 0:
                raise NetworkError(
                    "delays.max_delay must be 0 for AD-PSGD: its staleness comes from the "
                    "clock itself (pairwise averaging while neighbours compute)"
                )
            first = self.compute.draw(self.seed, 1, n).copy()
            p = self._pair = PairwiseClock(self.mean_step(nbytes) / 2, first, self.alive.copy())
        back = self.alive & ~p.alive  # joined since the last round: start computing now
        if back.any():
            p.next[back] = p.now + self.compute.draw(self.seed, t, n)[back]
        p.alive = self.alive.copy()
        p.now = t * p.slice
        w = self.inner.weights(t)
        dst, src, _, _ = edges(w)
        rev, first_entry, end_entry = reverse_edges(w, self.topology.name)
        nodes = np.flatnonzero(self.alive & (p.next <= p.now))
        nodes = nodes[np.argsort(p.next[nodes], kind="stable")]  # time order, ties by id
        # a partner drawn uniformly among the live neighbours: off-diagonal entries are in
        # CSR order (by receiver), so a node's are one run; rank the live ones by a cumsum
        cl = np.concatenate([[0], np.cumsum(self.alive[src])])
        start = first_entry[nodes]
        count = cl[end_entry[nodes]] - cl[start]
        has = count > 0
        u = self.draws.uniforms(PAIR_STREAM, t, n)[nodes]
        k = np.minimum((u * count).astype(np.int64), np.maximum(count - 1, 0))
        edge = np.searchsorted(cl, cl[start] + k + 1, "left") - 1
        edge = np.where(has, edge, 0)
        partners = np.where(has, src[edge] if src.size else -1, -1)
        sent_i, sent_j = has.copy(), has.copy()
        if src.size and (self.faults.drop > 0 or self.faults.link_fail > 0):
            lost = self.losses.lost(w, t, dst, src)  # per entry (receiver <- sender)
            request_lost = has & lost[rev[edge]]  # i -> j is entry (j <- i)
            sent_j = has & ~request_lost & ~lost[edge]
            self.dropped += int(request_lost.sum()) + int((has & ~request_lost & lost[edge]).sum())
            sent_i = has & ~request_lost
        partners = np.where(sent_j, partners, -1)  # a partner only if both messages arrived
        counts = np.bincount(nodes[sent_i], minlength=n) + np.bincount(
            partners[sent_j], minlength=n
        )
        self.stats.add_gossip(counts, nbytes)
        times = p.next[nodes].copy()
        p.next[nodes] = times + np.where(has, exchange, 0.0)
        p.next[nodes] += self.compute.draw(self.seed, t + 1, n)[nodes]
        p.done += int(nodes.size)
        return PairwiseRound(event_layers(nodes, partners, n, x.device), nodes, partners, times)

    def _tick(self, dst: np.ndarray, src: np.ndarray, nbytes: int) -> None:
        """One gossip round on the clock (see :func:`~decent.comm.network.clock.tick_gossip`)."""
        alive = self.alive if self.faults.churn else None
        self.clock = tick_gossip(self.clock, dst, src, self.link.time(nbytes), alive)

    def _apply_live(
        self,
        plan: Any,
        x: NodeTensor,
        dst: np.ndarray,
        src: np.ndarray,
        weights: np.ndarray,
        lost: np.ndarray,
        to_dead: np.ndarray,
        w_dead: np.ndarray,
    ) -> NodeTensor:
        """``W'_t x`` while some node is away: a dead row keeps its value, a live row's
        weights on dead nodes and ``lost`` messages go to its diagonal. Computed as ``W`` (x
        with dead rows zeroed: a dead value, NaN included, reaches nobody) plus ``W_ij x_i``
        per live ``i`` whose ``j`` is dead or lost, minus ``W_ij x_j`` per lost one."""
        dead = self._rows(False, x.device)
        y = self.inner.apply_plan(plan, x.index_fill(0, dead, 0.0))
        # one gather and one scatter: + W_ij x_i per entry whose sender is dead (``to_dead``,
        # ``w_dead``) or whose message was lost, - W_ij x_j per lost one
        i, j, wl = dst[lost], src[lost], weights[lost]
        to = np.concatenate([to_dead, i, i])
        at = np.concatenate([to_dead, i, j])
        coef = np.concatenate([w_dead, wl, -wl])
        if to.size:
            weight = torch.as_tensor(coef, dtype=x.dtype, device=x.device)
            rows = x.index_select(0, torch.as_tensor(at, device=x.device)).mul_(weight[:, None])
            y.index_put_((torch.as_tensor(to, device=x.device),), rows, accumulate=True)
        return y.index_copy_(0, dead, x.index_select(0, dead))

    def _rows(self, alive: bool, device: torch.device) -> torch.Tensor:
        """The ids of the live (``alive``) or absent nodes on ``device``, until churn."""
        found = self._rows_t.get((alive, device))
        if found is None:
            ids = np.flatnonzero(self.alive == alive)
            found = self._rows_t[(alive, device)] = torch.as_tensor(ids, device=device)
        return found

    def all_reduce(
        self, x: NodeTensor, op: ReduceOp = "mean", *, accounted: bool = True
    ) -> torch.Tensor:
        """Reduce over the live nodes; an accounted call waits for every live node and
        costs a ring all-reduce on the clock."""
        live = x if bool(self.alive.all()) else x.index_select(0, self._rows(True, x.device))
        out = live.mean(dim=0) if op == "mean" else reduce_rows(live, op)
        if accounted:
            nbytes = x.shape[1] * x.element_size()
            self.stats.add_all_reduce(nbytes)
            self.clock = tick_all_reduce(self.clock, self.alive, self.link, nbytes)
        return out

    def metrics(self) -> dict[str, float]:
        """``time/sim`` (the last live node's clock), ``time/sim_mean``, ``faults/dropped``
        and ``faults/alive_nodes``; ``faults/crashed/node<i>/round``,
        ``faults/left/node<i>/round`` and ``faults/joined/node<i>/round`` per node and
        event so far (the latest round of each)."""
        live = self.clock[self.alive]
        out = {
            "time/sim": float(live.max()),
            "time/sim_mean": float(live.mean()),
            "faults/dropped": float(self.dropped),
            "faults/alive_nodes": float(self.alive.sum()),
        }
        if self._pair is not None:  # asynchronous: the slice's end, gradients completed
            out["time/sim"] = out["time/sim_mean"] = self._pair.now
            out["grad_evals"] = float(self._pair.done)
        if self.delays.max_delay > 0:
            out["delay/mean"] = self.delay_sum / max(self.delay_count, 1)
            out["delay/max"] = float(self.delay_max)
        for what, name in (("crashed", "crashes"), ("left", "leaves"), ("joined", "joins")):
            for node, at in sorted(getattr(self.faults, name).items()):
                if at <= self._round:
                    out[f"faults/{what}/node{node}/round"] = float(at)
        return out

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return (
            f"NetworkCommunicator({self.topology.name}, n={self.num_nodes}, "
            f"compute={self.compute.kind}, drop={self.faults.drop})"
        )
