"""The robustness study's pipeline on a tiny grid (the science is in
docs/results/robustness.md)."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from decent.config import ConfigError
from decent.studies import _kit as kit
from decent.studies.robustness import RobustnessSpec, parse_compressor, run, spread_nodes


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    spec = RobustnessSpec(
        tasks=("digits", "stream"),
        nodes=16,
        rounds={"digits": 20, "stream": 30},
        eval_every=10,
        seeds=(0,),
        methods=("dsgd",),
        compressors=("top_k:0.2", "qsgd:2"),
        lr_grid=(0.05, 0.1, 0.2),
        consensus_grid=(0.15, 0.4),
        privacy_methods=("dsgd",),
        noise_multipliers=(1.0, 4.0),
        byzantine_fractions=(0.125,),
        attacks=("sign_flip",),
        rules=("mean", "clipping:0.1"),
        # a quarter of the digits as the training split: each of the 17 digits runs builds
        # its task and computes f* by Newton (a Hessian over every training sample), which
        # was two thirds of this fixture; 28 samples a node keep every minibatch distinct
        digits=dict(
            RobustnessSpec().digits,
            dataset={"kind": "digits", "test_fraction": 0.75},
            partition={"kind": "iid"},
        ),
        workers=1,
    )
    out = tmp_path_factory.mktemp("robustness")
    return spec, out, run(spec, out, progress=False)


def test_every_experiment_is_measured_and_written(tiny) -> None:
    _spec, out, result = tiny
    comp = result.compression
    assert set(zip(comp["task"], comp["compressor"], strict=True)) == {
        (t, c) for t in ("digits", "stream") for c in ("none", "top_k:0.2", "qsgd:2")
    }
    # compressed messages are smaller: top-k 20% of d values with indices, QSGD 2 bits
    ratio = comp.set_index(["task", "compressor"])["bytes_ratio"]
    assert ratio[("stream", "none")] == 1.0
    assert ratio[("stream", "top_k:0.2")] == pytest.approx(10 * 9 / (50 * 8))
    assert ratio[("stream", "qsgd:2")] == pytest.approx((8 + math.ceil(50 * 3 / 8)) / (50 * 8))
    # more noise, less epsilon
    priv = result.privacy.sort_values("privacy.noise_multiplier")
    assert list(priv["privacy.noise_multiplier"]) == [1.0, 4.0]
    assert priv["epsilon"].iloc[0] > priv["epsilon"].iloc[1] > 0
    byz = result.byzantine
    assert set(zip(byz["attack"], byz["rule"], strict=True)) == {
        ("none", "mean"),
        ("sign_flip", "mean"),
        ("sign_flip", "clipping:0.1"),
    }
    assert set(byz["fraction"]) == {0.0, 0.125}
    folder = out / "robustness"
    for name in ("compression", "privacy", "byzantine"):
        assert (folder / f"{name}.png").stat().st_size > 10_000
        assert (folder / f"{name}.csv").exists()
    tables = (folder / "tables.md").read_text()
    assert "## Tuned consensus steps" in tables and "top-k 20%" in tables


def test_a_rerun_skips_finished_runs(tiny) -> None:
    spec, out, first = tiny
    again = run(spec, out, progress=False)
    assert again.wall_s < first.wall_s
    assert again.compression.equals(first.compression)


def test_spread_nodes_never_share_a_neighbour() -> None:
    import networkx as nx

    from decent.config import build_topology, validate

    nodes = spread_nodes("torus", 64, 6, seed=3)
    cfg = validate(
        {
            "study": "x",
            "rounds": 1,
            "topology": {"kind": "torus", "num_nodes": 64},
            "algorithm": {"kind": "dsgd", "lr": 0.1},
            "task": {"kind": "least_squares", "dim": 2},
        }
    )
    graph = nx.from_scipy_sparse_array(build_topology(cfg.topology).weights(1).csr)
    for a in nodes:
        for b in nodes:
            if a < b:
                assert nx.shortest_path_length(graph, a, b) >= 3
    with pytest.raises(ValueError, match="cannot be placed"):
        spread_nodes("ring", 8, 3)


@pytest.mark.parametrize(
    "text, want",
    [
        ("top_k:0.1", {"compressor_kind": "top_k", "ratio": 0.1}),
        ("qsgd:4", {"compressor_kind": "qsgd", "bits": 4}),
        ("sign", {"compressor_kind": "sign"}),
    ],
)
def test_compressor_names(text, want) -> None:
    assert parse_compressor(text) == want


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"compressors": ("top_k",)}, "needs a ratio"),
        ({"compressors": ("qsgd:0",)}, "needs bits in 1..16"),
        ({"compressors": ("zip",)}, "is not one of"),
        ({"tasks": ("mnist",)}, "tasks.0"),
        ({"byzantine_fractions": (0.6,)}, "byzantine_fractions.0"),
        ({"byzantine_fractions": (0.4,)}, "byzantine_fractions: 6 of the 16 nodes of torus cannot"),
        ({"noise_multipliers": (-1.0,)}, "noise_multipliers.0"),
        ({"delta": 1.0}, "delta"),
        ({"rules": ("clipping:-1",)}, "must be one of mean, trimmed_mean, median, clipping"),
        ({"rules": ("median:2",)}, "must be one of mean, trimmed_mean, median, clipping"),
        ({"rounds": {"digits": 10}}, "rounds: give task 'stream' a number of rounds >= 1"),
    ],
)
def test_bad_specs_name_the_field(kwargs, match) -> None:
    with pytest.raises(ValidationError, match=match):
        RobustnessSpec(**kwargs)


def test_the_shipped_spec_loads(tmp_path) -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = kit.load_spec(RobustnessSpec, root / "configs" / "studies" / "robustness.toml")
    assert spec == RobustnessSpec()
    bad = tmp_path / "bad.toml"
    bad.write_text("nodez = 3\n")
    with pytest.raises(ConfigError, match="unknown field"):
        kit.load_spec(RobustnessSpec, bad)


def test_the_command_runs_a_spec_file(tmp_path) -> None:
    """``decent robustness SPEC --out DIR`` end to end on a tiny spec file (the README's
    command with the shipped spec is an hour; tests/test_doc_blocks.py skips it)."""
    from typer.testing import CliRunner

    from decent.cli import app

    spec = tmp_path / "tiny.toml"
    text = (
        'tasks = ["stream"]\nnodes = 9\nrounds = {stream = 12}\neval_every = 6\nseeds = [0]\n'
        'methods = ["dsgd"]\ncompressors = ["top_k:0.2"]\nlr_grid = [0.05, 0.1]\n'
        'consensus_grid = [0.4]\nprivacy_methods = ["dsgd"]\nnoise_multipliers = [1.0]\n'
        'byzantine_fractions = [0.125]\nattacks = ["sign_flip"]\nrules = ["mean"]\n'
    )
    spec.write_text(text)
    out = tmp_path / "out"
    args = ["robustness", str(spec), "--out", str(out), "--workers", "1", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in ("compression", "privacy", "byzantine"):
        assert (out / "robustness" / f"{name}.csv").exists()
    # a spec whose Byzantine torus cannot be built is one line naming it, not a traceback
    spec.write_text(text.replace("nodes = 9", "nodes = 8"))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "torus(8): no factorization" in result.output
