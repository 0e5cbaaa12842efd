"""Byzantine attacks and robust aggregation (``decent.comm.robust``) in the simulator.

The vectorized wrapper is checked against an independent per-node numpy loop in float64,
each attack against a hand computation, the tolerance bounds against their statement, and
a short D-SGD run on a ring where sign-flip attackers break plain gossip and the robust
rules do not.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest
import torch

from decent.comm import SimCommunicator
from decent.comm.robust import RobustCommunicator, alie_z, choose_byzantine, tolerance_error
from decent.config import ConfigError, build, loads_config
from decent.metrics import evaluate
from decent.run import train_experiment
from decent.tasks import LeastSquares
from decent.topology import (
    EdgeDropout,
    OnePeerExponential,
    complete,
    erdos_renyi,
    exponential,
    ring,
)

TOL = 1e-12

# -------------------------------------------------------------------- the numpy reference


def reference_mix(w, x, byz, attack, rule, t, *, trim=1, tau=1.0, scale=1.0, sigma=10.0, z=None,
                  epsilon=1.0, seed=0):  # fmt: skip
    """One robust mix, node by node, from the dense W (the module docstring's rules)."""
    n, k = x.shape
    byz = sorted(int(b) for b in byz)
    is_byz = np.zeros(n, dtype=bool)
    is_byz[byz] = True
    z = alie_z(n, len(byz)) if z is None else z
    sent = x.copy()
    if attack == "sign_flip":
        sent[byz] = -scale * x[byz]
    elif attack == "noise":
        rng = np.random.default_rng(np.random.SeedSequence([seed, t, 0xB12]))
        sent[byz] = x[byz] + sigma * rng.standard_normal((len(byz), k))
    out = np.empty_like(x)
    for i in range(n):
        nbrs = [j for j in range(n) if j != i and w[i, j] > 0]
        vals = {j: sent[j].copy() for j in nbrs}
        bad = [j for j in nbrs if is_byz[j]]
        if not is_byz[i] and bad and attack in ("alie", "dissensus"):
            good = [x[i]] + [x[j] for j in nbrs if not is_byz[j]]
            if attack == "alie":
                forged = np.mean(good, axis=0) - z * np.std(good, axis=0)
            else:
                step = sum((w[i, j] * (x[j] - x[i]) for j in nbrs if not is_byz[j]), np.zeros(k))
                forged = x[i] - epsilon * step / sum(w[i, j] for j in bad)
            for j in bad:
                vals[j] = forged
        if is_byz[i]:  # a colluder's forged message counts as the node's own value
            vals = {j: (x[i] if is_byz[j] else vals[j]) for j in nbrs}
        if is_byz[i] or rule == "mean":
            out[i] = w[i, i] * x[i] + sum((w[i, j] * vals[j] for j in nbrs), np.zeros(k))
        elif rule == "clipping":
            acc = x[i].copy()
            for j in nbrs:
                d = vals[j] - x[i]
                norm = np.linalg.norm(d)
                acc += w[i, j] * (d if norm <= tau else d * tau / norm)
            out[i] = acc
        else:
            stack = np.stack([x[i]] + [vals[j] for j in nbrs])  # (c_i, k)
            if rule == "median":
                out[i] = np.median(stack, axis=0)
            else:
                ranked = np.sort(stack, axis=0)
                out[i] = ranked[trim : len(stack) - trim].mean(axis=0)
    return out


def make(topology, byz, attack, rule, **kw):
    return RobustCommunicator(SimCommunicator(topology), byz, attack, rule, **kw)


TOPOLOGIES = {
    "ring8": ring(8),
    "er12": erdos_renyi(12, 0.6, seed=5),  # in-degrees 4..9
    "exp16": exponential(16, directed=True),  # directed: in- and out-neighbours differ
    "ring8_pair": ring(8),  # two adjacent Byzantine nodes
}
BYZ = {"ring8": [0, 4], "er12": [2, 7], "exp16": [3], "ring8_pair": [0, 1]}
ATTACK_KW: dict[str, dict[str, Any]] = {"sign_flip": {"scale": 1.5}, "noise": {"sigma": 3.0, "seed": 5},
             "alie": {}, "dissensus": {"epsilon": 1.7}}  # fmt: skip
RULE_KW: dict[str, dict[str, Any]] = {
    "mean": {},
    "clipping": {"tau": 0.3},
    "trimmed_mean": {"trim": 1},
    "median": {},
}


@pytest.mark.parametrize("topo", list(TOPOLOGIES))
@pytest.mark.parametrize("attack", list(ATTACK_KW))
@pytest.mark.parametrize("rule", list(RULE_KW))
def test_every_rule_and_attack_equals_the_per_node_reference(topo, attack, rule) -> None:
    topology = TOPOLOGIES[topo]
    kw = {**ATTACK_KW[attack], **RULE_KW[rule]}
    comm = make(topology, BYZ[topo], attack, rule, **kw)
    w = topology.weights(1).dense()
    x = torch.randn(topology.num_nodes, 7, dtype=torch.float64, generator=torch.manual_seed(1))
    for t in (1, 2):
        got = comm.mix(x, t).numpy()
        want = reference_mix(w, x.numpy(), BYZ[topo], attack, rule, t, **kw)
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
        x = torch.as_tensor(got)


@pytest.mark.parametrize("rule", list(RULE_KW))
def test_a_time_varying_topology_takes_each_rounds_neighbours(rule) -> None:
    topology = EdgeDropout(complete(8), 0.4, seed=2)  # a different graph every round
    comm = make(topology, [5], "alie", rule, tau=0.2)
    x = torch.randn(8, 3, dtype=torch.float64, generator=torch.manual_seed(2))
    for t in range(1, 6):
        want = reference_mix(topology.weights(t).dense(), x.numpy(), [5], "alie", rule, t,
                             tau=0.2)  # fmt: skip
        np.testing.assert_allclose(comm.mix(x, t).numpy(), want, rtol=0, atol=TOL)


def test_without_byzantine_nodes_mean_is_exactly_plain_gossip() -> None:
    topology = ring(16)
    plain, robust = SimCommunicator(topology), make(topology, [], "sign_flip", "mean")
    x = torch.randn(16, 650, dtype=torch.float64, generator=torch.manual_seed(0))
    assert torch.equal(robust.mix(x, 1), plain.mix(x, 1))
    assert robust.stats.summary() == plain.stats.summary()


def test_without_byzantine_nodes_robust_rules_reduce_to_their_clean_forms() -> None:
    topology = erdos_renyi(10, 0.4, seed=1)
    w = topology.weights(1).dense()
    x = torch.randn(10, 4, dtype=torch.float64, generator=torch.manual_seed(3))
    # no clipping radius reached: plain gossip (W is row-stochastic)
    wide = make(topology, [], "sign_flip", "clipping", tau=1e9).mix(x, 1)
    np.testing.assert_allclose(wide.numpy(), w @ x.numpy(), rtol=0, atol=TOL)
    # trim 0: the unweighted mean of each closed neighbourhood
    mask = (w > 0).astype(np.float64)
    flat = make(topology, [], "sign_flip", "trimmed_mean", trim=0).mix(x, 1)
    np.testing.assert_allclose(flat.numpy(), mask @ x.numpy() / mask.sum(1, keepdims=True),
                               rtol=0, atol=TOL)  # fmt: skip
    # every counted message is a plain gossip round's
    comm = make(topology, [], "sign_flip", "median")
    comm.mix(x, 1)
    plain = SimCommunicator(topology)
    plain.mix(x, 1)
    assert comm.stats.summary() == plain.stats.summary()


# -------------------------------------------------------------------- attacks by hand
# ring(6): W_ii = W_{i,i+-1} = 1/3; node 0 is Byzantine, node 1 hears nodes 0 and 2.


def _x() -> torch.Tensor:
    return torch.tensor([[1.0, -2.0], [0.5, 0.25], [2.0, 1.0], [0.0, 0.0], [3.0, 3.0],
                         [-1.0, 4.0]], dtype=torch.float64)  # fmt: skip


def test_sign_flip_sends_minus_scale_times_the_value() -> None:
    x = _x()
    out = make(ring(6), [0], "sign_flip", "mean", scale=2.0).mix(x, 1)
    want1 = (x[1] + (-2.0 * x[0]) + x[2]) / 3
    assert torch.allclose(out[1], want1, rtol=0, atol=TOL)
    want5 = (x[5] + x[4] + (-2.0 * x[0])) / 3
    assert torch.allclose(out[5], want5, rtol=0, atol=TOL)
    # the Byzantine node itself averages what it receives and its own value
    assert torch.allclose(out[0], (x[0] + x[1] + x[5]) / 3, rtol=0, atol=TOL)
    # and an honest node without a Byzantine neighbour is untouched
    assert torch.allclose(out[3], (x[2] + x[3] + x[4]) / 3, rtol=0, atol=TOL)


def test_noise_is_seeded_by_seed_and_round_and_large() -> None:
    x = _x()
    a = make(ring(6), [0], "noise", "mean", sigma=100.0, seed=3)
    b = make(ring(6), [0], "noise", "mean", sigma=100.0, seed=3)
    out1, out2 = a.mix(x, 1), a.mix(x, 2)
    assert torch.equal(out1, b.mix(x, 1))  # same (seed, t): same draw
    assert not torch.allclose(out1[1], out2[1])  # a new draw each round
    # node 1's message from node 0 is x_0 + sigma xi: recover xi, it is a standard normal draw
    xi = (3 * out1[1] - x[1] - x[2] - x[0]) / 100.0
    draw = np.random.default_rng(np.random.SeedSequence([3, 1, 0xB12])).standard_normal((1, 2))
    np.testing.assert_allclose(xi.numpy(), draw[0], rtol=0, atol=1e-12)


def test_alie_sends_mean_minus_z_std_of_the_receivers_honest_values() -> None:
    x = _x()
    out = make(ring(6), [0], "alie", "mean", z=1.5).mix(x, 1)
    honest = torch.stack([x[1], x[2]])  # node 1's own value and its honest neighbour's
    forged = honest.mean(0) - 1.5 * honest.std(0, unbiased=False)
    assert torch.allclose(out[1], (x[1] + x[2] + forged) / 3, rtol=0, atol=TOL)
    honest5 = torch.stack([x[5], x[4]])
    forged5 = honest5.mean(0) - 1.5 * honest5.std(0, unbiased=False)
    assert torch.allclose(out[5], (x[5] + x[4] + forged5) / 3, rtol=0, atol=TOL)


def test_alie_default_z_is_baruchs() -> None:
    n, f = 20, 4
    s = math.floor(n / 2 + 1) - f
    assert alie_z(n, f) == NormalDist().inv_cdf((n - s) / n)
    assert make(ring(20), [0, 5, 10, 15], "alie", "mean").z == alie_z(20, 4)


@pytest.mark.parametrize("epsilon", [0.0, 1.0, 2.5])
def test_dissensus_scales_the_receivers_honest_gossip_step_by_one_minus_epsilon(epsilon) -> None:
    x = _x()
    out = make(ring(6), [0], "dissensus", "mean", epsilon=epsilon).mix(x, 1)
    # x_1 + (1 - eps) W_12 (x_2 - x_1): eps = 1 freezes node 1, eps > 1 pushes it away
    want = x[1] + (1 - epsilon) * (x[2] - x[1]) / 3
    assert torch.allclose(out[1], want, rtol=0, atol=TOL)


def test_attackers_cannot_move_a_median_node_with_an_honest_majority() -> None:
    x = _x()
    for attack in ("sign_flip", "noise", "alie", "dissensus"):
        out = make(ring(6), [0], attack, "median", sigma=1e6, scale=1e6, z=1e6).mix(x, 1)
        lo, hi = torch.minimum(x[1], x[2]), torch.maximum(x[1], x[2])
        assert bool(((out[1] >= lo) & (out[1] <= hi)).all()), attack


# -------------------------------------------------------------------- placement and bounds


def test_choose_byzantine_explicit_random_and_bottleneck() -> None:
    w = ring(10).weights(1)
    assert choose_byzantine(w, nodes=[7, 2, 7]).tolist() == [2, 7]
    a = choose_byzantine(w, fraction=0.3, seed=4)
    assert a.size == 3 and a.tolist() == choose_byzantine(w, fraction=0.3, seed=4).tolist()
    assert choose_byzantine(w, fraction=0.0).size == 0
    # two cliques joined through node 4 (a bridge): node 4 is the bottleneck
    import scipy.sparse as sp

    from decent.topology import from_edges

    edges = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    edges += [(i, j) for i in range(5, 9) for j in range(i + 1, 9)] + [(3, 4), (4, 5)]
    bridge = from_edges(9, edges).weights(1)
    assert isinstance(bridge.csr, sp.csr_array)
    assert choose_byzantine(bridge, fraction=0.12, placement="bottleneck").tolist() == [4]
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\)"):
        choose_byzantine(w, fraction=1.0)
    with pytest.raises(ValueError, match="out of range"):
        choose_byzantine(w, nodes=[10])


def test_the_bounds_of_trimmed_mean_and_median() -> None:
    w = ring(8).weights(1)  # every node: 2 in-neighbours, c_i = 3 values
    assert tolerance_error(w, np.array([0, 4]), "trimmed_mean", 1) is None
    assert tolerance_error(w, np.array([0, 4]), "median", 1) is None
    two = tolerance_error(w, np.array([0, 2]), "trimmed_mean", 1)  # node 1 hears 0 and 2
    assert two is not None and "at most b Byzantine" in two and "node 1 has 2" in two
    wide = tolerance_error(w, np.array([0]), "trimmed_mean", 2)
    assert wide is not None and "2b < c_i" in wide and "c_i=3" in wide
    med = tolerance_error(w, np.array([0, 2]), "median", 1)
    assert med is not None and "strict honest majority" in med and "node 1" in med
    # the attacked Byzantine node itself is no concern; clipping and mean have no count bound
    assert tolerance_error(w, np.array([0, 1, 2]), "clipping", 1) is None
    with pytest.raises(ValueError, match="node 1 has 2"):
        make(ring(8), [0, 2], "sign_flip", "trimmed_mean", trim=1)


def test_a_time_varying_graph_is_checked_on_each_new_matrix() -> None:
    # one peer per round: c_i = 2 values, so a median node tolerates no Byzantine neighbour;
    # node 1 is heard by node 0 at t = 1 and t = 3 (W_t[0, 1] > 0), by node 7 at t = 2
    topology = OnePeerExponential(8)
    with pytest.raises(ValueError, match="strict honest majority"):
        make(topology, [1], "sign_flip", "median")
    comm = make(topology, [1], "sign_flip", "clipping")  # no count bound
    assert comm.mix(torch.zeros(8, 2, dtype=torch.float64), 2).abs().max() == 0


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match=r"byzantine\.attack must be 'sign_flip' or 'noise'"):
        make(ring(4), [0], "flip", "mean")
    with pytest.raises(ValueError, match=r"byzantine\.aggregation must be 'mean' or"):
        make(ring(4), [0], "sign_flip", "krum")
    with pytest.raises(ValueError, match=r"ids must be in 0\.\.3"):
        make(ring(4), [4], "sign_flip", "mean")
    with pytest.raises(ValueError, match=r"byzantine.tau must be a finite number > 0\.0"):
        make(ring(4), [0], "sign_flip", "clipping", tau=0.0)
    with pytest.raises(ValueError, match=r"byzantine\.trim must be an integer >= 0"):
        make(ring(4), [0], "sign_flip", "trimmed_mean", trim=-1)
    with pytest.raises(ValueError, match=r"byzantine\.sigma must be a finite number >= 0"):
        make(ring(4), [0], "noise", "mean", sigma=-1.0)


# -------------------------------------------------------------------- metrics and config


def test_evaluation_covers_honest_nodes_only() -> None:
    task = LeastSquares(num_nodes=6, dim=2, heterogeneity=1.0, seed=0)
    comm = make(ring(6), [0, 3], "sign_flip", "mean")
    x = torch.randn(6, 2, dtype=torch.float64, generator=torch.manual_seed(4))
    x[0] = 1e6  # a Byzantine model counts for nothing
    got = evaluate(task, x, comm)
    honest = x[[1, 2, 4, 5]]
    at_mean = task.evaluate(honest.mean(0, keepdim=True))["loss"][0]
    assert got["eval/loss@mean"] == pytest.approx(float(at_mean), rel=1e-12)
    per = task.evaluate(honest)["loss"]
    assert got["eval/loss@node_max"] == pytest.approx(float(per.max()), rel=1e-12)
    assert got["eval/loss@node_min"] == pytest.approx(float(per.min()), rel=1e-12)
    assert got["eval/loss@node_mean"] == pytest.approx(float(per.mean()), rel=1e-12)
    dist2 = (honest - honest.mean(0)).square().sum(1).mean()
    assert got["consensus/dist2"] == pytest.approx(float(dist2), rel=1e-12)
    assert comm.metrics() == {"byzantine/count": 2.0, "byzantine/fraction": 2 / 6}


BASE = """
study = "byz"
rounds = 150
eval_every = 150
per_node_eval = true

[topology]
kind = "ring"
num_nodes = 12

[algorithm]
kind = "dsgd"
lr = 0.1

[task]
kind = "least_squares"
dim = 5
noise = 0.1
batch_size = 4
"""


def _run(byzantine: str) -> dict[str, float]:
    result = train_experiment(build(loads_config(BASE + "[byzantine]\n" + byzantine)))
    assert result.status == "finished"
    return result.final


def test_sign_flip_breaks_plain_gossip_and_robust_rules_keep_honest_nodes_near_the_optimum() -> (
    None
):
    attack = 'nodes = [0, 6]\nattack = "sign_flip"\nscale = 2.0\n'
    start = _run(attack + 'aggregation = "mean"\n')
    assert start["byzantine/count"] == 2.0
    plain = start["eval/subopt@node_max"]
    clean = train_experiment(build(loads_config(BASE))).final["eval/subopt@node_max"]
    assert plain > 0.3 and clean < 1e-3  # f(x_0) - f* = 0.5: plain gossip is stuck
    for rule in ('aggregation = "clipping"\ntau = 0.02\n', 'aggregation = "trimmed_mean"\n',
                 'aggregation = "median"\n'):  # fmt: skip
        worst = _run(attack + rule)["eval/subopt@node_max"]
        assert worst < 2e-3, (rule, worst)


def test_every_gossip_algorithm_runs_with_a_robust_rule() -> None:
    for algo in ('kind = "dat_sgd"\nlr = 0.01', 'kind = "gradient_tracking"\nlr = 0.05'):
        text = BASE.replace('kind = "dsgd"\nlr = 0.1', algo)
        cfg = loads_config(text + '[byzantine]\nnodes = [0, 6]\nattack = "alie"\n'
                           'aggregation = "trimmed_mean"\n')  # fmt: skip
        result = train_experiment(build(cfg))
        assert result.status == "finished" and math.isfinite(result.final["eval/loss@mean"])


def _error(byzantine: str, prefix: str = "") -> str:
    with pytest.raises(ConfigError) as err:
        build(loads_config(prefix + BASE + "[byzantine]\n" + byzantine))
    return str(err.value)


def test_bad_byzantine_input_names_the_field_before_training() -> None:
    msg = _error('nodes = [0, 2]\naggregation = "trimmed_mean"\ntrim = 1\n')
    assert "byzantine.trim" in msg and "at most b Byzantine" in msg and "node 1 has 2" in msg
    msg = _error('nodes = [0]\naggregation = "trimmed_mean"\ntrim = 2\n')
    assert "byzantine.trim" in msg and "2b < c_i" in msg
    msg = _error('nodes = [0, 2]\naggregation = "median"\n')
    assert "byzantine.aggregation" in msg and "strict honest majority" in msg
    msg = _error("fraction = 1.0\n")
    assert "byzantine.fraction" in msg and "< 1" in msg
    msg = _error("fraction = -0.1\n")
    assert "byzantine.fraction" in msg
    msg = _error('nodes = [1]\nattack = "flip"\n')
    assert "byzantine.attack" in msg and "sign_flip" in msg and "dissensus" in msg
    msg = _error('nodes = [1]\naggregation = "krum"\n')
    assert "byzantine.aggregation" in msg and "trimmed_mean" in msg
    msg = _error("nodes = [1]\nfraction = 0.1\n")
    assert "byzantine" in msg and "not both" in msg
    msg = _error("nodes = [12]\n")
    assert "byzantine.nodes" in msg and "0..11" in msg
    msg = _error("nodes = [1]\n", prefix="chebyshev_steps = 2\n")
    assert "chebyshev_steps" in msg and "[byzantine]" in msg
    with pytest.raises(ConfigError) as err:
        build(loads_config(BASE + "[network]\nlatency = 0.1\n[byzantine]\nnodes = [1]\n"))
    assert "network" in str(err.value) and "[byzantine]" in str(err.value)
    choco = BASE.replace('kind = "dsgd"', 'kind = "choco_sgd"')
    with pytest.raises(ConfigError) as err:
        build(loads_config(choco + "[byzantine]\nnodes = [1]\n"))
    assert 'algorithm.kind: "choco_sgd"' in str(err.value) and "[byzantine]" in str(err.value)
