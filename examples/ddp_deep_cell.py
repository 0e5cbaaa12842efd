"""One cell of the deep-learning study on real processes (issue 29, item 4).

    OMP_NUM_THREADS=1 python -m torch.distributed.run --nproc_per_node 8 \\
        examples/ddp_deep_cell.py --out deep_ddp.jsonl

The cell is the first task of ``--spec`` (default the digits MLP of
``configs/studies/deep_quick.toml``; ``--spec configs/studies/deep_cnn.toml --table
docs/results/deep_cnn/final.csv`` runs the MNIST-1D CNN) on a ring of M = world size nodes
with Dirichlet alpha = 0.1. Each method runs with the step size the
reduced study tuned for the cell (``docs/results/deep/final.csv``), on the same config the
simulator ran (task, shards, init, topology weights, algorithm and its step size all come from
:meth:`decent.studies.deep.DeepSpec.config`), for the same number of rounds, so the same
sample budget. What differs is the runtime: one gloo process per node with
:class:`decent.DecentralizedDataParallel`, and each rank drawing its minibatches from its own
Dirichlet shard with an ordinary ``DataLoader`` (``RandomSampler`` with replacement, as the
simulator samples) seeded by ``(seed, rank)``, not from the simulator's stream.

Rank 0 prints one JSON line per (method, seed): the test accuracy of the exact network
average and of the worst node's own model.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

import decent
from decent.config import build
from decent.studies import _kit as kit
from decent.studies.deep import STUDY, DeepSpec
from decent.tasks.models import ModuleTask, TaskWarning

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("minibatch_sgd", "dsgd", "dat_sgd")


def tuned_step(table: Path, task: str, method: str, graph: str, m: int, alpha: float) -> float:
    """The step (gamma = lr T for DAT-SGD) the study tuned for the cell, from its final.csv."""
    graph = "complete" if kit.centralized(method) else graph
    with table.open() as f:
        for row in csv.DictReader(f):
            key = (row["task"], row["method"], row["graph"], int(row["M"]), float(row["alpha"]))
            if key == (task, method, graph, m, alpha):
                return float(row["step"])
    raise SystemExit(f"{table}: no tuned step for {method} on {graph}, M = {m}, alpha = {alpha}")


def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    with torch.no_grad():
        acc = (net(x).argmax(1) == y).double().mean().item()
    net.train()
    return acc


def run_cell(
    spec: DeepSpec,
    method: str,
    graph: str,
    alpha: float,
    step: float,
    seed: int,
    rounds: int = 0,
    draws: str = "loader",
) -> tuple[dict, torch.Tensor]:
    """Train one (method, seed) on this process group.

    Every rank returns the same record and the network average's parameters ``(d,)``.
    ``draws="loader"`` draws minibatches with a ``DataLoader`` seeded by ``(seed, rank)``;
    ``draws="simulator"`` feeds each rank the simulator's own draws (``task.sample``), so
    the run must equal the simulator's in float64.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    if rounds:  # a shorter run: its own sample budget, so DAT-SGD's lr = gamma / rounds
        spec = spec.replace(
            num_nodes=(world,),
            evals=1,
            samples={spec.tasks[0]: rounds * world * spec.batch_size},
        )
    graph = "complete" if kit.centralized(method) else graph
    cell = (spec.tasks[0], method, graph, world, alpha)
    config = spec.config(cell, step, seed, STUDY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TaskWarning)  # shards under one batch at alpha = 0.1
        exp = build(config)
    task = exp.task
    assert isinstance(task, ModuleTask) and task.test is not None
    rounds = config.rounds
    net = copy.deepcopy(task.module)  # the simulator's start point for this seed
    torch.nn.utils.vector_to_parameters(task.init_params(seed), net.parameters())
    model = decent.DecentralizedDataParallel(net, algorithm=exp.algorithm, topology=exp.topology)
    shard = task.partition[rank]
    data = TensorDataset(task.train.features[shard], task.train.labels[shard])
    gen = torch.Generator().manual_seed(1_000_003 * (seed + 1) + rank)
    sampler = RandomSampler(
        data, replacement=True, num_samples=rounds * task.batch_size, generator=gen
    )
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]]
    loader = DataLoader(data, batch_size=task.batch_size, sampler=sampler)
    if draws == "simulator":
        node = torch.tensor([rank])
        loader = [
            (b[0][0], b[1][0]) for b in (task.sample(node, t, seed) for t in range(1, rounds + 1))
        ]
    start = time.perf_counter()
    model.train()
    for x, y in loader:
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        model.step()
    x_test, y_test = task.test.features, task.test.labels
    own = torch.tensor([accuracy(model.module, x_test, y_test)], dtype=torch.float64)
    worst = own.clone()
    dist.all_reduce(worst, op=dist.ReduceOp.MIN)
    with model.averaged() as averaged:
        acc = accuracy(averaged, x_test, y_test)
        params = torch.nn.utils.parameters_to_vector(averaged.parameters()).detach().clone()
    model.close()
    record = {
        "method": method,
        "graph": cell[2],
        "M": world,
        "alpha": alpha,
        "step": step,
        "lr": config.algorithm.lr,
        "seed": seed,
        "rounds": rounds,
        "samples": rounds * task.batch_size * world,
        "acc": round(acc, 6),
        "worst_node_acc": round(worst.item(), 6),
        "seconds": round(time.perf_counter() - start, 1),
    }
    return record, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "configs/studies/deep_quick.toml")
    parser.add_argument("--table", type=Path, default=ROOT / "docs/results/deep/final.csv")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--graph", default="ring")
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--step", type=float, help="default: the tuned one from --table")
    parser.add_argument("--rounds", type=int, default=0, help="default: the study's (0)")
    parser.add_argument("--out", type=Path, help="append the JSON lines to this file too")
    args = parser.parse_args()

    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    else:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    torch.set_num_threads(1)
    spec = kit.load_spec(DeepSpec, args.spec)
    world = dist.get_world_size()
    for method in args.methods:
        task = spec.tasks[0]
        step = args.step or tuned_step(args.table, task, method, args.graph, world, args.alpha)
        for seed in args.seeds:
            record, _ = run_cell(spec, method, args.graph, args.alpha, step, seed, args.rounds)
            if dist.get_rank() == 0:
                line = json.dumps({"example": "deep_cell", **record})
                print(line, flush=True)
                if args.out is not None:
                    with args.out.open("a") as f:
                        f.write(line + "\n")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
