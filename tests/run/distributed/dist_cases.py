"""Mixing matrices, small topologies and rank workers shared by the parent and the children.

Everything here is a pure function of its arguments, so the parent (reference numbers) and
every spawned rank (the code under test) build identical ``W_t`` and initial values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from decent.topology._matrix import MixingMatrix


# -- matrices (W[i, j] = weight node i gives node j) --------------------------------------
def ring_w(n: int) -> np.ndarray:
    w = np.zeros((n, n))
    for i in range(n):
        for j in (i - 1, i, i + 1):
            w[i, j % n] += 1.0 / 3.0
    return w


def star_w(n: int) -> np.ndarray:
    """Metropolis-Hastings weights on the star with centre 0."""
    w = np.zeros((n, n))
    for j in range(1, n):
        w[0, j] = w[j, 0] = 1.0 / n
        w[j, j] = 1.0 - 1.0 / n
    w[0, 0] = 1.0 - (n - 1) / n
    return w


def complete_w(n: int) -> np.ndarray:
    return np.full((n, n), 1.0 / n)


def random_w(n: int, seed: int, p: float = 0.4) -> np.ndarray:
    """A random directed graph with random positive weights, rows normalized."""
    rng = np.random.default_rng(seed)
    a = (rng.random((n, n)) < p) * rng.uniform(0.1, 1.0, (n, n))
    np.fill_diagonal(a, rng.uniform(0.1, 1.0, n))
    return a / a.sum(axis=1, keepdims=True)


def isolate_w(n: int, isolated: list[int]) -> np.ndarray:
    """A ring over the other nodes; the ``isolated`` nodes only keep their own value."""
    rest = [i for i in range(n) if i not in isolated]
    w = np.eye(n)
    sub = ring_w(len(rest)) if len(rest) >= 3 else complete_w(len(rest))
    w[np.ix_(rest, rest)] = sub
    return w


def broadcast_w(n: int, src: int = 0) -> np.ndarray:
    """Node ``src`` sends to everyone and receives from no one."""
    w = 0.5 * np.eye(n)
    w[:, src] += 0.5
    w[src] = 0.0
    w[src, src] = 1.0
    return w


# -- topologies (the Topology protocol, nothing more) -------------------------------------
@dataclass
class StaticTopology:
    w: np.ndarray
    name: str = "static"

    @property
    def num_nodes(self) -> int:
        return int(self.w.shape[0])

    @property
    def is_static(self) -> bool:
        return True

    def weights(self, t: int) -> MixingMatrix:
        return MixingMatrix.from_array(self.w, name=self.name)


@dataclass
class PeriodicSchedule:
    """``W_t = ws[(t - 1) % len(ws)]``, with ``period`` set so plans are cached."""

    ws: list[np.ndarray]
    name: str = "schedule"

    @property
    def num_nodes(self) -> int:
        return int(self.ws[0].shape[0])

    @property
    def is_static(self) -> bool:
        return False

    @property
    def period(self) -> int:
        return len(self.ws)

    def weights(self, t: int) -> MixingMatrix:
        return MixingMatrix.from_array(self.ws[(t - 1) % len(self.ws)], name=f"{self.name}[{t}]")


@dataclass
class RandomSchedule:
    """A fresh random directed graph every round from ``(seed, t)``; no period (no caching)."""

    n: int
    seed: int
    name: str = "random_schedule"

    @property
    def num_nodes(self) -> int:
        return self.n

    @property
    def is_static(self) -> bool:
        return False

    def weights(self, t: int) -> MixingMatrix:
        return MixingMatrix.from_array(random_w(self.n, self.seed * 1000 + t, p=0.3))


def make_topology(kind: str, n: int, **kw: Any) -> Any:
    if kind == "ring":
        return StaticTopology(ring_w(n), "ring")
    if kind == "star":
        return StaticTopology(star_w(n), "star")
    if kind == "complete":
        return StaticTopology(complete_w(n), "complete")
    if kind == "random":
        return StaticTopology(random_w(n, kw.get("seed", 0)), "random")
    if kind == "schedule":
        iso = kw["isolated"]
        return PeriodicSchedule(
            [np.eye(n), isolate_w(n, iso), broadcast_w(n, 0), random_w(n, 3), star_w(n)]
        )
    if kind == "random_schedule":
        return RandomSchedule(n, kw.get("seed", 5))
    raise KeyError(kind)


def initial_values(n: int, k: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, k))


def reference(spec: dict[str, Any]) -> dict[str, Any]:
    """Dense single-process numbers: ``X_t = W_t X_{t-1}`` and the matching CommStats."""
    from decent.comm.base import CommStats

    topo = make_topology(spec["kind"], spec["n"], **spec.get("params", {}))
    x = initial_values(spec["n"], spec["k"])
    itemsize = np.dtype(spec.get("dtype", "float64")).itemsize
    stats = CommStats(num_nodes=spec["n"])
    outs = []
    for t in range(1, spec["steps"] + 1):
        w = topo.weights(t)
        x = w.dense() @ x
        outs.append(x)
        stats.add_gossip(w.out_degree, payload_bytes=spec["k"] * itemsize)
    return {"outs": outs, "stats": stats, "topology": topo}


def stats_dict(stats: Any) -> dict[str, Any]:
    return {
        "messages": stats.messages,
        "bytes": stats.bytes,
        "rounds": stats.rounds,
        "bytes_per_node": np.asarray(stats.bytes_per_node).tolist(),
        "num_nodes": stats.num_nodes,
    }


# -- rank workers --------------------------------------------------------------------------
def mix_worker(rank: int, world_size: int, specs: list[dict[str, Any]]) -> dict[str, Any]:
    """Run every spec's mixing chain on this rank; return rows, stats and peers per spec."""
    import torch
    import torch.distributed as dist

    from decent.comm.dist import DistCommunicator

    out: dict[str, Any] = {}
    for spec in specs:
        group = None
        if "group_ranks" in spec:
            group = dist.new_group(spec["group_ranks"])  # every rank must call new_group
            if rank not in spec["group_ranks"]:
                out[spec["name"]] = None
                continue
        topo = make_topology(spec["kind"], spec["n"], **spec.get("params", {}))
        comm: Any = DistCommunicator(topo, group=group, **spec.get("comm", {}))
        transport = comm
        if spec.get("delay"):  # the stale-mixing combiner over the ranks' transport
            from decent.comm.delay import DelayedCommunicator

            comm = DelayedCommunicator(comm, delay=spec["delay"])
        ids = comm.node_ids.numpy()
        dtype = getattr(torch, spec.get("dtype", "float64"))
        x = torch.as_tensor(initial_values(spec["n"], spec["k"])[ids], dtype=dtype)
        rows, peers = [], []
        for t in range(1, spec["steps"] + 1):
            x = comm.mix(x, t)
            rows.append(x.numpy().copy())
            peers.append(transport.peers(t))
        comm.close()
        out[spec["name"]] = {
            "node_ids": ids.tolist(),
            "rows": rows,
            "peers": peers,
            "stats": stats_dict(comm.stats),
            "dtype": str(x.dtype),
        }
    return out


def all_reduce_worker(rank: int, world_size: int, n: int, k: int, comm_kw: dict[str, Any]) -> Any:
    """All four reductions of the initial values, accounted and not; stats after."""
    import torch

    from decent.comm.dist import DistCommunicator

    comm = DistCommunicator(StaticTopology(ring_w(n)), **comm_kw)
    x = torch.as_tensor(initial_values(n, k)[comm.node_ids.numpy()])
    res = {op: comm.all_reduce(x, op).numpy() for op in ("mean", "sum", "min", "max")}
    res["mean_unaccounted"] = comm.all_reduce(x, "mean", accounted=False).numpy()
    return {"results": res, "stats": stats_dict(comm.stats)}


def error_worker(rank: int, world_size: int) -> list[tuple[str, str, str, bool]]:
    """Provoke every user error the communicator checks.

    Return ``(label, type, message, is a ValueError)`` per attempt.
    """
    import torch

    from decent.comm.dist import DistCommunicator

    n = world_size * 2
    good = StaticTopology(ring_w(n))
    attempts: dict[str, Any] = {
        "n_mismatch": lambda: DistCommunicator(StaticTopology(ring_w(n + 1)), nodes_per_rank=2),
        "bad_nodes_per_rank": lambda: DistCommunicator(good, nodes_per_rank=0),
        "both": lambda: DistCommunicator(
            good, nodes_per_rank=2, placement=[[2 * r, 2 * r + 1] for r in range(world_size)]
        ),
        "placement_len": lambda: DistCommunicator(good, placement=[list(range(n))]),
        "placement_dup": lambda: DistCommunicator(
            good, placement=[[0, 0]] + [[2 * r, 2 * r + 1] for r in range(1, world_size)]
        ),
        "placement_range": lambda: DistCommunicator(
            good, placement=[[0, n + 5]] + [[2 * r, 2 * r + 1] for r in range(1, world_size)]
        ),
        "placement_empty": lambda: DistCommunicator(
            good, placement=[[]] + [[2 * r, 2 * r + 1] for r in range(1, world_size)]
        ),
        "x_shape": lambda: DistCommunicator(good, nodes_per_rank=2).mix(
            torch.zeros(3, 4, dtype=torch.float64), 1
        ),
        "x_ndim": lambda: DistCommunicator(good, nodes_per_rank=2).mix(
            torch.zeros(2, dtype=torch.float64), 1
        ),
        "bad_op": lambda: DistCommunicator(good, nodes_per_rank=2).all_reduce(
            torch.zeros(2, 4, dtype=torch.float64),
            "median",  # type: ignore[arg-type]
        ),
    }
    out = []
    for label, attempt in attempts.items():
        try:
            attempt()
        except Exception as e:
            out.append((label, type(e).__name__, str(e), isinstance(e, ValueError)))
        else:
            out.append((label, "no error", "", False))
    return out


class CountingTopology:
    """Wrap a topology and count ``weights`` calls (to observe plan caching)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0
        if hasattr(inner, "period"):
            self.period = inner.period

    @property
    def num_nodes(self) -> int:
        return int(self.inner.num_nodes)

    @property
    def name(self) -> str:
        return f"counting({self.inner.name})"

    @property
    def is_static(self) -> bool:
        return bool(self.inner.is_static)

    def weights(self, t: int) -> MixingMatrix:
        self.calls += 1
        return self.inner.weights(t)


def caching_worker(rank: int, world_size: int, rounds: int) -> dict[str, int]:
    """How often each kind of topology is asked for ``W_t`` over ``rounds`` mixes."""
    import torch

    from decent.comm.dist import DistCommunicator

    n = world_size
    topologies = {
        "static": make_topology("ring", n),
        "periodic": make_topology("schedule", n, isolated=[0]),
        "unperiodic": make_topology("random_schedule", n),
    }
    calls = {}
    for label, inner in topologies.items():
        topo = CountingTopology(inner)
        comm = DistCommunicator(topo)
        x = torch.ones(1, 2, dtype=torch.float64)
        for t in range(1, rounds + 1):
            x = comm.mix(x, t)
        calls[label] = topo.calls
    return calls
