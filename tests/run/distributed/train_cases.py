"""Experiment configs and the rank worker of the training tests (importable by the children)."""

from __future__ import annotations

from typing import Any

ROUNDS = 50


def base(**over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "study": "dist-test",
        "rounds": ROUNDS,
        "eval_every": 50,
        "per_node_eval": True,
        "topology": {"kind": "ring", "num_nodes": 4},
        "algorithm": {"kind": "dsgd", "lr": 0.05},
        "task": {"kind": "least_squares", "dim": 3, "batch_size": 2, "heterogeneity": 1.0},
    }
    for key, value in over.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and key in cfg else value
    return cfg


CASES: dict[str, dict[str, Any]] = {
    "dat_sgd": base(algorithm={"kind": "dat_sgd", "lr": 0.002}),
    "dsgd_atc": base(algorithm={"kind": "dsgd", "lr": 0.05, "variant": "atc"}),
    "dsgd_cta": base(algorithm={"kind": "dsgd", "lr": 0.05, "variant": "cta"}),
    "gradient_tracking": base(algorithm={"kind": "gradient_tracking", "lr": 0.05}),
    "dsgd_local3": base(algorithm={"kind": "dsgd", "lr": 0.05, "local_steps": 3}),
    "dat_sgd_local3": base(algorithm={"kind": "dat_sgd", "lr": 0.002, "local_steps": 3}),
    "minibatch_sgd": base(algorithm={"kind": "minibatch_sgd", "lr": 0.05}),
    "one_peer_exp": base(topology={"kind": "one_peer_exponential", "num_nodes": 4}),
    "random_matching": base(
        topology={"kind": "random_matching", "num_nodes": 4, "seed": 3, "base": "complete"}
    ),
}
"""Every case runs on 4 ranks x 1 node and 2 ranks x 2 nodes, synchronous mode."""

OVERLAP_CASES: dict[str, dict[str, Any]] = {
    "dsgd_atc": CASES["dsgd_atc"],
    "dat_sgd": CASES["dat_sgd"],
    "gradient_tracking": base(algorithm={"kind": "gradient_tracking", "lr": 0.02}),
}
"""Overlap mode (one-step-stale) against the simulator with a delay of 1."""


THREAD_CASES: dict[str, dict[str, Any]] = {
    "dat_sgd": CASES["dat_sgd"],
    "minibatch_sgd": CASES["minibatch_sgd"],
    "gradient_tracking": CASES["gradient_tracking"],
    "chebyshev3": base(chebyshev_steps=3),
    "byzantine": base(
        byzantine={"nodes": [2], "attack": "alie", "aggregation": "trimmed_mean", "trim": 1}
    ),
}
"""Per-edge thread transport with staleness 0 (stale and fault_tolerant modes), alone and
under the combiners: Chebyshev's ``K`` exchanges per round, a robust rule."""


def train_worker(rank: int, world_size: int, cases: dict[str, dict[str, Any]], mode: str) -> Any:
    """Train every case through :func:`decent.run.distributed.runtime.run_rank`; return rows and finals."""
    from decent.config import ExperimentConfig
    from decent.run.distributed.runtime import run_rank

    out = {}
    for name, raw in cases.items():
        cfg = ExperimentConfig.model_validate(raw)
        result = run_rank(cfg, mode=mode, staleness=0)
        assert result is not None and result.output is not None
        out[name] = {
            "node_ids": [int(i) for i in result.extra.get("node_ids", [])],
            "output": result.output.numpy().copy(),
            "final": result.final,
            "status": result.status,
        }
    return out
