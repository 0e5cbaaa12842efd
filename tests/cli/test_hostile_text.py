"""Hostile names and planted links: nothing raw reaches the terminal, nothing is written
through a symbolic link, and a reader that closes the pipe ends the command quietly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from decent._names import shown
from decent.cli import app
from decent.config import ConfigError, load_config
from decent.results import Store

CONFIG = """
study = "{study}"
name = "{name}"
rounds = 4
[topology]
kind = "ring"
num_nodes = 4
[algorithm]
kind = "dsgd"
lr = 0.05
[task]
kind = "least_squares"
dim = 3
"""

HOSTILE = [
    "\\u001b]0;owned\\u0007",  # sets the terminal title
    "\\u001b[2J",  # clears the screen
    "a\\rb",  # overwrites the line
    "\\u202eevil",  # right-to-left override
    "\\u009b31m",  # a C1 control sequence introducer
]


def _raw_control(text: str) -> list[str]:
    return [ch for ch in text if not ch.isprintable() and ch not in "\n"]


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_run_name_is_escaped_everywhere(tmp_path: Path, name: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(study="hostile", name=name))
    out = tmp_path / "res"
    for args in (
        ["run", str(cfg), "--out", str(out), "--no-progress"],
        ["sweep", str(cfg), "--out", str(tmp_path / "res2"), "--workers", "1", "--no-progress"],
        ["export", "hostile", "--out", str(out), "--table", "runs"],
    ):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        assert not _raw_control(res.output), repr(res.output)
    with Store(out, readonly=True) as store:
        stored = str(store.runs("hostile").iloc[0]["name"])
    assert shown(stored) in CliRunner().invoke(app, ["run", str(cfg), "--out", str(out)]).output


@pytest.mark.parametrize("study", ["ok\\n", "a\\tb", "\\u001b[2J"])
def test_a_study_name_with_control_characters_is_refused(tmp_path: Path, study: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(study=study, name="x"))
    with pytest.raises(ConfigError, match="study"):
        load_config(cfg)


@pytest.mark.parametrize("arg", ["a\nb", "\x1b[2J", "x\x07"])
def test_an_argument_with_control_characters_is_refused(tmp_path: Path, arg: str) -> None:
    res = CliRunner().invoke(app, ["run", "c.toml", "--study", arg])
    assert res.exit_code == 2
    assert "holds a control character" in res.output
    assert not _raw_control(res.output), repr(res.output)


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(study="links", name="x"))
    out = tmp_path / "res"
    assert CliRunner().invoke(app, ["run", str(cfg), "--out", str(out)]).exit_code == 0
    return out


def test_export_never_writes_through_a_planted_link(tmp_path: Path, store_dir: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (store_dir / "links.records.csv").symlink_to(victim)
    res = CliRunner().invoke(app, ["export", "links", "--out", str(store_dir)])
    assert res.exit_code == 2
    assert "is a symbolic link" in res.output and "links.records.csv" in res.output
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("where", ["folder", "parent", "file inside"])
def test_report_never_writes_through_a_planted_link(
    tmp_path: Path, store_dir: Path, where: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    report = store_dir / "report"
    if where == "folder":
        report.mkdir()
        (report / "links").symlink_to(elsewhere, target_is_directory=True)
    elif where == "parent":
        report.symlink_to(elsewhere, target_is_directory=True)
    else:
        (report / "links").mkdir(parents=True)
        (report / "links" / "report.html").symlink_to(elsewhere / "report.html")
    res = CliRunner().invoke(app, ["report", "links", "--out", str(store_dir)])
    assert res.exit_code == 2, res.output
    assert "is a symbolic link" in res.output
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("command", ["run", "export"])
def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(
    tmp_path: Path, store_dir: Path, command: str
) -> None:
    cfg = tmp_path / "c.toml"
    args = {
        "run": ["run", str(cfg), "--out", str(store_dir), "--force", "--no-progress"],
        "export": ["export", "links", "--out", str(store_dir), "--dest", "/dev/stdout"],
    }[command]
    proc = subprocess.Popen(
        [sys.executable, "-m", "decent.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, COLUMNS="80"),
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert err == ""
    with Store(store_dir, readonly=True) as store:
        assert store.runs("links")["status"].tolist() == ["finished"]
