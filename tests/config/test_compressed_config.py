"""Compressed gossip in configs: building, recording, and the errors before training."""

from __future__ import annotations

import pytest
import torch

import decent
from decent.config import ConfigError, build, loads_config
from decent.run import train_experiment
from decent.topology import ring

BASE = """
study = "choco"
rounds = 20
eval_every = 10

[topology]
kind = "ring"
num_nodes = 8

[algorithm]
kind = "choco_sgd"
lr = 0.05
consensus_lr = 0.5
compressor_kind = "qsgd"
bits = 2

[task]
kind = "least_squares"
dim = 4
heterogeneity = 1.0
"""


def _error(text: str, *overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        build(loads_config(text, list(overrides)))
    return str(info.value)


def test_a_compressed_run_records_the_compressed_bytes():
    result = train_experiment(build(loads_config(BASE)))
    assert result.status == "finished"
    # ring(8): 16 messages a round of 8 (float64 norm) + ceil(4 * 3 / 8) = 2 bytes
    assert result.records[-1]["comm/bytes"] == 20 * 16 * 10


@pytest.mark.parametrize(
    "override, field, rule",
    [
        ("algorithm.ratio=0", "algorithm.ratio: 0", "must be > 0.0"),
        ("algorithm.ratio=1.5", "algorithm.ratio: 1.5", "must be <= 1.0"),
        ("algorithm.bits=0", "algorithm.bits: 0", "must be >= 1"),
        ("algorithm.bits=17", "algorithm.bits: 17", "must be <= 16"),
        ("algorithm.consensus_lr=0", "algorithm.consensus_lr: 0", "must be > 0.0"),
        ("algorithm.compressor_kind=zip", "compressor_kind", "'top_k'"),
    ],
)
def test_bad_compressor_settings_name_the_field(override, field, rule):
    text = _error(BASE, override)
    assert field in text and rule in text


@pytest.mark.parametrize("kind", ["choco_sgd", "choco_dat_sgd", "choco_gradient_tracking"])
@pytest.mark.parametrize("topology", ["random_matching", "one_peer_exponential"])
def test_compressed_gossip_needs_a_static_topology(kind, topology):
    text = _error(
        BASE.replace('kind = "ring"', f'kind = "{topology}"').replace("consensus_lr = 0.5\n", ""),
        f"algorithm.kind={kind}",
    )
    assert "topology" in text and f"{kind} needs a static topology" in text


def test_compressed_gossip_on_a_fault_free_network_is_the_simulator_on_a_clock():
    """Without faults the network's exchange is W_t: the iterates are the simulator's bit
    for bit, and the clock charges each round 1 s of compute plus one compressed message
    (latency + 10 bytes / bandwidth), not the dense 32-byte row."""
    net = "\n[network]\nlatency = 0.25\nbandwidth = 1000.0\n"
    on_net = train_experiment(build(loads_config(BASE + net)))
    in_sim = train_experiment(build(loads_config(BASE)))
    assert on_net.status == "finished"
    assert on_net.output is not None and in_sim.output is not None
    assert torch.equal(on_net.output, in_sim.output)
    last = on_net.records[-1]
    assert last["comm/bytes"] == in_sim.records[-1]["comm/bytes"] == 20 * 16 * 10
    assert last["time/sim"] == pytest.approx(20 * (1.0 + 0.25 + 10 / 1000.0), rel=1e-12)


def test_compressed_gossip_refuses_network_faults_and_delays_saying_why():
    text = _error(BASE + "\n[network]\nlatency = 0.1\n[network.faults]\ndrop = 0.1\n")
    assert "network.faults" in text and "change the effective W'_t" in text
    text = _error(BASE + "\n[network]\n[network.delays]\nmax_delay = 2\n")
    assert "algorithm.kind" in text and "NetworkCommunicator mixes stale values" in text


def test_a_faulty_network_is_refused_on_the_api_path_too():
    from decent.comm.network import FaultModel, NetworkCommunicator, NetworkError

    algo = decent.ChocoSGD(lr=0.1)
    comm = NetworkCommunicator(ring(4), faults=FaultModel(drop=0.5), seed=0)
    state = algo.init(torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(NetworkError, match="exact exchange of W_t"):
        algo.update(state, torch.ones(4, 2, dtype=torch.float64), comm, 1)


def test_compressed_gossip_does_not_combine_with_chebyshev():
    text = _error(BASE, "chebyshev_steps=3")
    assert "ChebyshevCommunicator lacks" in text and "dense W^k q" in text


def test_compressed_gossip_refuses_the_overlap_mode_saying_why():
    """The ranks' overlap mode is the delay-1 combiner over the exchange (here over the
    simulator's, which the launcher's factory would build over the ranks')."""
    from decent.comm import DelayedCommunicator

    with pytest.raises(ConfigError) as info:
        build(loads_config(BASE), comm_factory=lambda topo: DelayedCommunicator(topo, delay=1))
    text = str(info.value)
    assert "algorithm.kind" in text and "DelayedCommunicator mixes stale values" in text
    assert "stale copies are a method CHOCO is not derived for" in text
