"""The ``decent`` commands: run, report, export, topology, config-docs, help and errors."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decent.cli import COMMAND_MODULES, app
from decent.config import reference_markdown
from decent.results import Store

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_real_examples(cli):
    top = cli("--help")
    assert top.exit_code == 0 and "Examples:" in top.output
    for command in ("run", "sweep", "report", "export", "topology", "config-docs"):
        res = cli(command, "--help")
        assert res.exit_code == 0, res.output
        assert "Examples:" in res.output and f"decent {command}" in res.output
    assert cli("flagship", "--help").exit_code == 0
    assert "launch" in COMMAND_MODULES  # the distributed runtime registers itself here


def test_run_records_in_store_and_skips_rerun(cli, small_config, tmp_path):
    cfg = small_config()
    out = tmp_path / "res"
    res = cli("run", cfg, "--out", out, "--no-progress", "--set", "algorithm.lr=0.02")
    assert res.exit_code == 0, res.output
    assert "eval/subopt@mean" in res.output and "final value" in res.output
    runs = Store(out).runs("small")
    assert list(runs["status"]) == ["finished"]
    stored = Store(out).configs("small")
    (config,) = stored.values()
    assert config["algorithm"] == {"kind": "dsgd", "lr": 0.02, "variant": "atc", "local_steps": 1}
    assert config["topology"]["num_nodes"] == 6 and "sweep" not in config
    assert runs["package_version"].iloc[0]
    again = cli("run", cfg, "--out", out, "--no-progress", "--set", "algorithm.lr=0.02")
    assert again.exit_code == 0 and "already finished" in again.output
    assert len(Store(out).runs("small")) == 1


BAD_CONFIGS = {
    "unknown kind": ('[topology]\nkind = "rng"\n', "did you mean 'ring'?"),
    "wrong type": ('rounds = "ten"\n', 'rounds: "ten" -> must be an integer'),
    "syntax": ("rounds = = 3\n", "not valid TOML"),
    "build rule": ('[topology]\nkind = "hypercube"\nnum_nodes = 6\n', "topology:"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_user_mistakes_exit_2_without_traceback(cli, small_config, tmp_path, case):
    body, expected = BAD_CONFIGS[case]
    path = tmp_path / "bad.toml"
    text = small_config().read_text()
    if body.startswith("[topology]"):
        text = text.replace('[topology]\nkind = "ring"\nnum_nodes = 6\n', body)
    else:
        text = body + "\n".join(ln for ln in text.splitlines() if not ln.startswith("rounds"))
    path.write_text(text)
    res = cli("run", path, "--out", tmp_path / "res")
    assert res.exit_code == 2, res.output
    assert expected in res.output and "Traceback" not in res.output


def test_missing_file_and_bad_set_exit_2(cli, small_config, tmp_path):
    res = cli("run", tmp_path / "nope.toml")
    assert res.exit_code == 2 and "no such file" in res.output
    res = cli("run", small_config(), "--set", "algorithm.lr", "--out", tmp_path)
    assert res.exit_code == 2 and "expected KEY=VALUE" in res.output
    res = cli("run", small_config(), "--set", "backend=dist", "--out", tmp_path)
    assert res.exit_code == 2 and "decent launch" in res.output


def to_toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return (
            "nan"
            if v != v
            else ("inf" if v == float("inf") else "-inf" if v == -float("inf") else repr(v))
        )
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(to_toml_value(x) for x in v) + "]"
    return str(v)


LINE = re.compile(r"^  \S.*: .+ -> \S.*$")
VALUES = st.one_of(
    st.integers(-5, 5),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
FIELDS = [
    "rounds",
    "eval_every",
    "seed",
    "topology.num_nodes",
    "topology.kind",
    "algorithm.lr",
    "algorithm.kind",
    "task.dim",
    "task.noise",
    "dtype",
    "backend",
    "sweep.seeds",
]


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(st.tuples(st.sampled_from(FIELDS), VALUES), max_size=3))
def test_cli_fuzz_always_exit_2_with_a_block(cli, small_config, tmp_path, sets):
    """Random overrides plus one unknown key: the CLI must answer with exit 2 and a block."""
    args = ["run", small_config(), "--out", tmp_path / "fuzz", "--no-progress"]
    for key, value in copy.deepcopy(sets):
        args += ["--set", f"{key}={to_toml_value(value)}"]
    args += ["--set", "not_a_field=1"]
    res = cli(*args)
    assert res.exit_code == 2, res.output
    block = [ln for ln in res.output.splitlines() if ln.startswith("  ")]
    assert "invalid config" in res.output and "Traceback" not in res.output
    assert block and all(LINE.match(ln) for ln in block), res.output


def test_report_and_export(cli, small_config, tmp_path):
    out = tmp_path / "res"
    assert cli("run", small_config("alpha"), "--out", out, "--no-progress").exit_code == 0
    res = cli("report", "--out", out)  # default: the most recent study
    assert res.exit_code == 0, res.output
    html = Path(res.output.split("report:")[1].split()[0])
    assert html.is_file() and html.name == "report.html"
    res = cli("export", "alpha", "--format", "csv", "--out", out)
    assert res.exit_code == 0 and (out / "alpha.records.csv").is_file()
    assert cli("report", "nope", "--out", out).exit_code == 2
    assert cli("export", "alpha", "--format", "xml", "--out", out).exit_code == 2
    assert cli("report", "--out", tmp_path / "empty").exit_code == 2


def test_topology_command(cli, tmp_path):
    png = tmp_path / "torus.png"
    res = cli("topology", "torus", "--n", "16", "--png", png)
    assert res.exit_code == 0, res.output
    for word in ("spectral_gap", "degree_min", "degree_mean", "degree_max", "diameter"):
        assert word in res.output
    assert png.is_file() and png.stat().st_size > 0
    res = cli(
        "topology",
        "edge_dropout",
        "--n",
        "8",
        "--set",
        "p=0.3",
        "--set",
        "base=ring",
        "--png",
        tmp_path / "ed.png",
    )
    assert res.exit_code == 0, res.output
    res = cli("topology", "rng", "--n", "8", "--no-draw")
    assert res.exit_code == 2 and "did you mean 'ring'?" in res.output
    res = cli("topology", "ring", "--n", "2", "--no-draw")
    assert res.exit_code == 2 and "ring" in res.output
    res = cli("topology", "erdos_renyi", "--n", "8", "--set", "p=2", "--no-draw")
    assert res.exit_code == 2 and "--set p: 2 -> must be <= 1.0" in res.output


def test_config_reference_is_up_to_date():
    committed = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert committed == reference_markdown(), (
        "run `decent config-docs` to regenerate docs/config.md"
    )


def test_app_is_the_entry_point():
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["decent"] == "decent.cli:app"
    assert app.info.name == "decent"
