"""`decent launch --nproc N script.py` and torchrun both start a user's own script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.dist

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "ddp_quickstart.py"


def _run(args: list[str]) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.parametrize(
    "launcher",
    [
        ["-m", "decent.cli", "launch", "--nproc", "3"],
        ["-m", "torch.distributed.run", "--nproc_per_node", "3"],
    ],
    ids=["decent-launch", "torchrun"],
)
def test_a_script_runs_on_every_rank(launcher):
    out = _run([*launcher, str(SCRIPT)])
    for rank in range(3):
        assert f"rank {rank}: " in out
    assert "'topology': 'ring(3)'" in out and "'world_size': 3" in out


def test_decent_launch_names_a_missing_script(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "decent.cli", "launch", "--nproc", "2", str(tmp_path / "no.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "not found; pass the path of a .py file" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("algorithm", ["dat_sgd", "dsgd", "allreduce"])
def test_mnist1d_example_runs_tiny(algorithm):
    out = _run(
        [
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "3",
            str(ROOT / "examples" / "ddp_mnist1d.py"),
            "--algorithm",
            algorithm,
            "--steps",
            "3",
            "--samples",
            "120",
        ]
    )
    line = next(x for x in out.splitlines() if x.startswith("{"))
    assert '"world_size": 3' in line and '"test_accuracy"' in line


@pytest.mark.parametrize("algorithm", ["dat_sgd", "dsgd", "allreduce"])
def test_charlm_example_runs_tiny(algorithm):
    out = _run(
        [
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "3",
            str(ROOT / "examples" / "ddp_charlm.py"),
            "--algorithm",
            algorithm,
            "--steps",
            "3",
            "--context",
            "16",
            "--max-chars",
            "2000",
            "--test-windows",
            "8",
        ]
    )
    line = json.loads(next(x for x in out.splitlines() if x.startswith("{")))
    assert line["world_size"] == 3 and line["steps"] == 3
    # 3 steps from a random init: the test loss is finite and near log(128) = 4.85 nats
    assert 3.0 < line["test_loss"] < 6.0


def test_decent_launch_passes_the_arguments_after_the_double_dash(tmp_path):
    script = tmp_path / "echo.py"
    script.write_text(
        "import json, os, sys\nprint(json.dumps([os.environ['RANK'], sys.argv[1:]]))\n"
    )
    out = _run(["-m", "decent.cli", "launch", "--nproc", "2", str(script), "--", "--lr", "0.1"])
    seen = sorted(json.loads(line) for line in out.splitlines() if line.startswith("["))
    assert seen == [["0", ["--lr", "0.1"]], ["1", ["--lr", "0.1"]]]


def test_a_config_takes_no_script_arguments():
    from decent.run.distributed.launch import LaunchError, launch

    with pytest.raises(LaunchError, match=r"only a \.py script takes arguments"):
        launch(2, ROOT / "configs" / "dsgd.toml", script_args=["--lr", "0.1"])
