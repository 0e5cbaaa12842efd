"""Compressed gossip in configs: building, recording, and the errors before training."""

from __future__ import annotations

import pytest

from decent.config import ConfigError, build, loads_config
from decent.run import train_experiment

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


def test_compressed_gossip_does_not_run_on_a_simulated_network():
    text = _error(BASE + "\n[network]\nlatency = 0.1\n")
    assert "algorithm.kind" in text and "sends compressed messages" in text


def test_compressed_gossip_does_not_combine_with_chebyshev():
    text = _error(BASE, "chebyshev_steps=3")
    assert "sends compressed messages" in text
