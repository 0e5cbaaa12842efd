"""Rank functions (importable by spawned processes) and the shared set-up of the DDP tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import decent
from decent.algorithms.transforms import adam, momentum, quasi_global_momentum, weight_decay
from decent.parallel import DecentralizedDataParallel
from decent.tasks import ModuleTask, from_numpy
from decent.topology import OnePeerExponential, RandomMatching, ring

N, ROUNDS, BATCH, SEED = 4, 6, 5, 3

METHODS: dict[str, Callable[[], Any]] = {
    "dsgd": lambda: decent.DSGD(lr=0.1),
    "dsgd_cta_local2": lambda: decent.DSGD(lr=0.1, variant="cta", local_steps=2),
    "dat_sgd": lambda: decent.DATSGD(lr=0.02),
    "gradient_tracking": lambda: decent.GradientTracking(lr=0.05),
    "choco_sgd": lambda: decent.ChocoSGD(
        lr=0.1, consensus_lr=0.5, compressor_kind="top_k", ratio=0.5
    ),
    "minibatch_sgd": lambda: decent.MinibatchSGD(lr=0.1),
    "local_sgd": lambda: decent.LocalSGD(lr=0.1, local_steps=3),
}
TRANSFORMED: dict[str, Callable[[], Any]] = {
    "dat_sgd+momentum+wd": lambda: decent.with_transforms(
        decent.DATSGD(lr=0.02), [momentum(0.9), weight_decay(0.01)]
    ),
    "dsgd+adam": lambda: decent.with_transforms(decent.DSGD(lr=0.01), [adam()]),
    "dsgd+qgm": lambda: decent.with_transforms(decent.DSGD(lr=0.05), [quasi_global_momentum(0.8)]),
}


TOPOLOGIES: dict[str, Callable[[], Any]] = {
    "ring": lambda: ring(N),
    # time-varying: each rank posts only round t's pairs, in an order that cannot deadlock
    "one_peer_exponential": lambda: OnePeerExponential(N),
    "random_matching": lambda: RandomMatching(ring(N), seed=5),
}


def make_net() -> nn.Module:
    torch.manual_seed(0)
    f64 = torch.float64  # explicit: the test process defaults to float64, ranks to float32
    return nn.Sequential(nn.Linear(6, 8, dtype=f64), nn.Tanh(), nn.Linear(8, 3, dtype=f64))


def make_task() -> ModuleTask:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)
    data = from_numpy(x, y, num_classes=3)
    shards = [np.arange(i, 64, N) for i in range(N)]
    return ModuleTask(make_net(), data, shards, batch_size=BATCH)


def simulate(algo: Any, comm: Any) -> np.ndarray:
    """The engine's run of ``algo`` on the task: final outputs ``(n, d)``."""
    result = decent.train(
        algo, make_task(), comm, rounds=ROUNDS, seed=SEED, eval_every=ROUNDS, per_node_eval="none"
    )
    assert result.output is not None
    return result.output.numpy()


def _train_rank(rank: int, algo: Any, overlap: bool, topology: str) -> np.ndarray:
    task = make_task()
    model = DecentralizedDataParallel(make_net(), algo, TOPOLOGIES[topology](), overlap=overlap)
    node = torch.tensor([rank])
    for t in range(1, ROUNDS + 1):
        x, y = task.sample(node, t, SEED)  # the simulator's data order
        model.zero_grad()
        F.cross_entropy(model(x[0]), y[0]).backward()
        model.step()
    model.close()
    return torch.cat([p.detach().reshape(-1) for p in model.module.parameters()]).numpy()


def equivalence_worker(
    rank: int, world: int, names: list[str], overlap: bool, topology: str = "ring"
) -> dict[str, Any]:
    table = {**METHODS, **TRANSFORMED}
    return {name: _train_rank(rank, table[name](), overlap, topology) for name in names}


class Net(nn.Module):
    """BatchNorm, dropout, tied weights, a branch used only on odd steps, a frozen layer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 6, bias=False)
        self.bn = nn.BatchNorm1d(6)
        self.drop = nn.Dropout(0.3)
        self.mid = nn.Linear(6, 6)
        self.side = nn.Linear(6, 6)
        self.frozen = nn.Linear(6, 6)
        self.frozen.requires_grad_(False)
        self.head = nn.Linear(6, 4, bias=False)
        self.head.weight = self.embed.weight  # tied: (6, 4) is used as (4, 6)^T below

    def forward(self, x: torch.Tensor, use_side: bool = False) -> torch.Tensor:
        h = self.drop(torch.relu(self.bn(self.embed(x))))
        h = self.mid(h) + self.frozen(h)
        if use_side:
            h = h + self.side(h)
        return h @ self.head.weight


def _loop(model: DecentralizedDataParallel, start: int, stop: int) -> None:
    for t in range(start, stop):
        x = torch.randn(8, 4)
        loss = (model(x, use_side=t % 2 == 1) - x).square().mean()
        model.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        model.step()


def _ddp_net(seed: int) -> DecentralizedDataParallel:
    torch.manual_seed(seed)  # ranks build different inits: the broadcast makes them equal
    algo = decent.with_transforms(
        decent.DATSGD(lr=0.01), [momentum(0.9), adam(), weight_decay(0.1)]
    )
    return DecentralizedDataParallel(Net(), algo, "ring")


def _tensors(tree: Any) -> list[torch.Tensor]:
    """Every tensor in a (nested) algorithm/transform state, in order."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, tuple):
        return [t for v in tree for t in _tensors(v)]
    return []


def features_worker(rank: int, world: int, path: str) -> dict[str, Any]:
    """Uninterrupted vs checkpoint+resume; tied weights; averaged(); buffers stay local."""
    out: dict[str, Any] = {}
    model = _ddp_net(100 + rank)
    out["start"] = model.module.mid.weight.detach().clone().numpy()  # type: ignore[operator,union-attr]
    torch.manual_seed(7 + rank)
    model.train()
    _loop(model, 1, 9)
    out["full"] = [p.detach().clone().numpy() for p in model.module.parameters()]
    out["full_buffers"] = [b.clone().numpy() for b in model.module.buffers()]
    out["full_state"] = [s.clone().numpy() for s in _tensors(model._state)]
    out["tied"] = model.module.head.weight is model.module.embed.weight  # type: ignore[union-attr]
    out["frozen"] = model.module.frozen.weight.detach().clone().numpy()  # type: ignore[operator,union-attr]
    out["running_mean"] = model.module.bn.running_mean.clone().numpy()  # type: ignore[operator,union-attr]
    with model.averaged() as avg:
        out["avg_params"] = [p.detach().clone().numpy() for p in avg.parameters()]
        out["avg_running_mean"] = avg.bn.running_mean.clone().numpy()  # type: ignore[operator,union-attr]
    out["after_avg"] = [p.detach().clone().numpy() for p in model.module.parameters()]
    out["running_mean_after"] = model.module.bn.running_mean.clone().numpy()  # type: ignore[operator,union-attr]
    out["output"] = model.algorithm.output(model._state).numpy()

    # the same run, interrupted after step 4 and resumed in a fresh wrapper
    first = _ddp_net(100 + rank)
    torch.manual_seed(7 + rank)
    first.train()
    _loop(first, 1, 5)
    torch.save(first.state_dict(), f"{path}/ckpt-{rank}.pt")
    torch.manual_seed(12345)  # a resumed process starts with other RNG states
    second = _ddp_net(200 + rank)
    second.load_state_dict(torch.load(f"{path}/ckpt-{rank}.pt", weights_only=False))
    second.train()
    _loop(second, 5, 9)
    out["resumed"] = [p.detach().clone().numpy() for p in second.module.parameters()]
    out["resumed_buffers"] = [b.clone().numpy() for b in second.module.buffers()]
    out["resumed_state"] = [s.clone().numpy() for s in _tensors(second._state)]
    out["resumed_step"] = second.step_count
    return out


def scaler_worker(rank: int, world: int) -> dict[str, Any]:
    """Rank 1 overflows at step 2: every rank skips it and the scales agree."""
    torch.manual_seed(0)
    net = nn.Linear(3, 2).to(torch.float64)
    model = DecentralizedDataParallel(net, decent.DSGD(lr=0.1), "ring")
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=2)
    taken, scales, params = [], [], []
    torch.manual_seed(rank)
    for t in range(1, 6):
        x = torch.randn(4, 3, dtype=torch.float64)
        model.zero_grad()
        scaler.scale(model(x).square().mean()).backward()
        if t == 2 and rank == 1:
            next(model.parameters()).grad[0, 0] = float("inf")  # type: ignore[index]
        before = next(model.parameters()).detach().clone()
        stepped = model.step(grad_scaler=scaler)
        taken.append(stepped)
        scales.append(float(scaler.get_scale()))
        params.append(bool(torch.equal(before, next(model.parameters()))))
    return {"taken": taken, "scales": scales, "unchanged": params, "t": model.step_count}


def gossip_buffers_worker(rank: int, world: int) -> dict[str, Any]:
    """buffers='gossip': after a step, each rank's BatchNorm statistics are mixed by W."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    model = DecentralizedDataParallel(net, decent.DSGD(lr=0.0), "ring", buffers="gossip")
    torch.manual_seed(rank)
    model.zero_grad()
    model(torch.randn(6, 3) + rank).sum().backward()
    # this rank's own statistics after forward
    before = net[1].running_mean.clone().numpy()  # type: ignore[operator]
    model.step()
    return {"before": before, "after": net[1].running_mean.clone().numpy()}  # type: ignore[operator]


def _warmup(t: int) -> float:
    """A linear warm-up over 3 steps, then a decay: the step size the wrapper's algorithm gets."""
    return 0.3 * min(t, 3) / 3 / (1 + 0.1 * max(t - 3, 0))


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2, dtype=torch.float64)
        self.unused = nn.Linear(3, 2, dtype=torch.float64)  # never in the graph: no .grad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def accumulation_worker(rank: int, world: int) -> dict[str, Any]:
    """MinibatchSGD with a warm-up schedule, two accumulated half-batches per step under
    ``no_sync`` and a parameter without gradient, against plain SGD on a local copy fed
    every rank's full batch (``x -= lr(t) * mean_i grad_i``)."""
    torch.manual_seed(0)
    model = DecentralizedDataParallel(_Branchy(), decent.MinibatchSGD(lr=_warmup), "complete")
    torch.manual_seed(0)
    ref = _Branchy()
    unused_start = ref.unused.weight.detach().clone()
    for t in range(1, 7):
        batches = [torch.Generator().manual_seed(100 * t + r) for r in range(world)]
        data = [torch.randn(8, 3, generator=g, dtype=torch.float64) for g in batches]
        x = data[rank]
        model.zero_grad()
        with model.no_sync():
            (model(x[:4]).sin().sum() / 8).backward()
        (model(x[4:]).sin().sum() / 8).backward()
        model.step()
        ref.zero_grad()
        for xr in data:
            (ref(xr).sin().sum() / 8 / world).backward()
        with torch.no_grad():
            for p in ref.parameters():
                if p.grad is not None:
                    p.sub_(_warmup(t) * p.grad)
    got = [p.detach().clone() for p in model.module.parameters()]
    want = [p.detach().clone() for p in ref.parameters()]
    return {
        "err": max(float((a - b).abs().max()) for a, b in zip(got, want, strict=True)),
        "unused_same": bool(torch.equal(model.module.unused.weight, unused_start)),  # type: ignore[union-attr,arg-type]
    }


def compile_bf16_worker(rank: int, world: int) -> dict[str, Any]:
    """DAT-SGD with a ``torch.compile``-d forward under bf16 autocast vs the same run eager
    in float32: final parameters of both, on this rank."""
    finals = []
    for compiled in (False, True):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
        start = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
        if compiled:
            net.forward = torch.compile(net.forward)  # type: ignore[method-assign]
        model = DecentralizedDataParallel(net, decent.DATSGD(lr=0.1), "complete")
        gen = torch.Generator().manual_seed(rank)
        for _ in range(5):
            x, y = torch.randn(16, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen)
            model.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=compiled):
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            model.step()
        finals.append(torch.cat([p.detach().reshape(-1) for p in net.parameters()]))
    return {
        "err": float((finals[0] - finals[1]).abs().max()),
        "moved": float((finals[0] - start).abs().max()),
        "dtype": str(finals[1].dtype),
    }
