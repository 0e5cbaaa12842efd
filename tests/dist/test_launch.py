"""``decent launch``: torchrun on loopback, one writer, the same numbers as the simulator."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from decent.cli import app
from decent.config import load_config
from decent.results import Store

pytestmark = pytest.mark.dist

CONFIG = """
study = "launch-test"
rounds = 30
eval_every = 10

[topology]
kind = "ring"
num_nodes = 6

[algorithm]
kind = "dat_sgd"
lr = 0.003

[task]
kind = "least_squares"
dim = 4
batch_size = 2
heterogeneity = 1.0
"""


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("launch") / "tiny.toml"
    path.write_text(CONFIG)
    return path


def test_launch_records_the_simulator_numbers(config_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    # 4 ranks hold 2, 2, 1, 1 of the 6 nodes
    res = CliRunner().invoke(app, ["launch", "--nproc", "4", str(config_file), "--out", str(out)])
    assert res.exit_code == 0, res.output
    store = Store(out)
    runs = store.runs("launch-test")
    assert len(runs) == 1  # one writer
    run = runs.iloc[0]
    assert run["status"] == "finished"
    assert run["backend"] == "dist" and int(run["dist.world_size"]) == 4
    table = store.final("launch-test")
    final = dict(zip(table["metric"], table["value"], strict=True))
    sim = load_config(config_file).build().train()
    for key, value in sim.final.items():
        if key.startswith("time/") or key == "round":
            continue
        assert final[key] == pytest.approx(value, rel=0, abs=1e-10), key
    records = store.records("launch-test")
    assert sorted(set(records["round"])) == [0, 10, 20, 30]


def test_more_ranks_than_nodes_fails_before_starting(config_file: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["launch", "--nproc", "8", str(config_file), "--out", str(tmp_path)]
    )
    assert res.exit_code == 2
    assert "world_size=8" in res.output and "--nproc 6" in res.output


def test_a_busy_port_fails_before_starting(config_file: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = CliRunner().invoke(
            app,
            [
                "launch",
                "--nproc",
                "2",
                str(config_file),
                "--port",
                str(port),
                "--out",
                str(tmp_path),
            ],
        )
    assert res.exit_code == 2
    assert f"--port {port} is in use" in res.output


def test_a_bad_mode_is_a_user_error(config_file: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["launch", "--nproc", "2", str(config_file), "--mode", "fast"])
    assert res.exit_code == 2 and "sync, overlap, stale, fault_tolerant" in res.output
