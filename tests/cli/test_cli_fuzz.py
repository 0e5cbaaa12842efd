"""Typed edge values through every config field and every option of the core commands.

Each case must end in one clean outcome: accepted, or refused with a message (a
``ConfigError`` / ``ValueError`` in-process; exit code 2 with one line on the command
line). It fails on any other exception (a traceback), on a raw control character in the
output, and on a file written outside ``--out`` / ``--dest``.

Config fields are driven in-process (fast): every numeric or text leaf of a base config
with each section switched on, through ``load_config(--set FIELD=VALUE)``, the resource
check and ``build`` (``build`` only for values small enough to build on a laptop; a huge
value must be refused before that). CLI options are driven through typer's CliRunner:
every option of run, sweep, report, export, topology and launch; of the study commands
(flagship, scaling, compare, network, robustness) only the values they must refuse before
a study starts (the rest are listed in STUDY_SKIPPED); config-docs with every value.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from decent.cli import app
from decent.config import ConfigError, build, load_config
from decent.run import resources

BASE = """
study = "fuzz"
rounds = 3
eval_every = 1
[topology]
kind = "ring"
num_nodes = 4
[algorithm]
kind = "dat_sgd"
lr = 0.05
[task]
kind = "least_squares"
dim = 3
"""

EDGE_NUMBERS = ["nan", "inf", "-inf", "0", "-1", "1e308", "1000000000", "1e-320"]
EDGE_TEXT = ['""', '"' + "x" * 300 + '"', '"\\u001b]0;t\\u0007"', '"a\\nb"']
HUGE = {"1e308", "1000000000", "inf"}

# Huge values (HUGE) that validation and the resource check accept are not built here (a
# batch of 10^9 rows would allocate it): refusing absurd numbers in the schema, with the
# field named, is issue 28 items 5-6 (engineer "config"); the test prints them. Cases
# excluded until that work lands, as (field, value); none today.
PENDING_CONFIG: set[tuple[str, str]] = set()


def _leaves(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, dict):
        out = []
        for k, v in data.items():
            out += _leaves(v, f"{prefix}{k}.")
        return out
    return [(prefix[:-1], data)]


def _fields(tmp_path: Path) -> list[str]:
    cfg = tmp_path / "base.toml"
    cfg.write_text(BASE)
    data = load_config(cfg).run_dict()
    return sorted(
        k
        for k, v in _leaves(data)
        if isinstance(v, int | float | str) and not isinstance(v, bool) and k != "study"
    )


def _no_raw_control(text: str) -> bool:
    return all(ch.isprintable() or ch == "\n" for ch in text)


def test_every_config_field_takes_every_edge_value_cleanly(tmp_path: Path) -> None:
    cfg = tmp_path / "base.toml"
    cfg.write_text(BASE)
    fields = _fields(tmp_path)
    assert len(fields) >= 15
    bad: list[str] = []
    unbuilt: list[str] = []  # huge values the schema and the resource check let through
    cases = clean = 0
    for field in fields:
        for value in EDGE_NUMBERS + EDGE_TEXT:
            if (field, value) in PENDING_CONFIG:
                continue
            cases += 1
            try:
                c = load_config(cfg, [f"{field}={value}"])
                resources.check_config(c)
                if value not in HUGE:
                    build(c)
                elif _finite_value(c, field):
                    unbuilt.append(f"{field}={value}")
            except (ConfigError, ValueError) as err:  # one clear refusal
                if not _no_raw_control(str(err)):
                    bad.append(f"{field}={value}: raw control character in {str(err)!r}")
                    continue
            except Exception as err:
                bad.append(f"{field}={value}: {type(err).__name__}: {str(err)[:120]}")
                continue
            clean += 1
    print(f"config fuzz: {cases} cases, {clean} clean; accepted, not built: {unbuilt}")
    assert not bad, "\n".join(bad)


def _finite_value(c: Any, field: str) -> bool:
    """Whether a huge value was kept as given (not refused, not clipped by the schema)."""
    data: Any = c.run_dict()
    for part in field.split("."):
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return isinstance(data, int | float) and (abs(data) >= 1e9 or math.isinf(data))


CLI_VALUES = ["nan", "inf", "-1", "0", "1e308", "1000000000", "", "x" * 300]


def _commands(cfg: Path, out: Path) -> dict[str, tuple[list[str], list[str]]]:
    """``{command: (base args, options to fuzz)}``."""
    return {
        "run": (["run", str(cfg), "--out", str(out), "--no-progress"], ["--study", "--set"]),
        "sweep": (
            ["sweep", str(cfg), "--out", str(out), "--no-progress"],
            ["--workers", "--replicas", "--study", "--set"],
        ),
        "report": (["report", "fuzz", "--out", str(out)], ["--dest"]),
        "export": (["export", "fuzz", "--out", str(out)], ["--format", "--table", "--dest"]),
        "topology": (["topology", "ring", "--no-draw"], ["--n", "--set"]),
        "launch": (
            ["launch", str(cfg), "--out", str(out), "--nproc", "9"],
            ["--nproc", "--staleness", "--failure-timeout", "--port", "--mode"],
        ),
    }


def test_every_option_of_the_core_commands_takes_every_edge_value_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "base.toml"
    cfg.write_text(BASE.replace("rounds = 3", "rounds = 2"))
    out = tmp_path / "res"
    runner = CliRunner()
    assert runner.invoke(app, ["run", str(cfg), "--out", str(out)]).exit_code == 0
    before = {p for p in tmp_path.rglob("*") if out not in p.parents and p != out}
    bad: list[str] = []
    cases = clean = 0
    for name, (base, options) in _commands(cfg, out).items():
        for option in options:
            for value in CLI_VALUES:
                if option == "--dest":
                    value = str(out / (value[:50] or "d"))  # inside --out: allowed
                if option == "--set":
                    value = f"rounds={value or 0}"
                if name == "launch" and option == "--nproc":
                    base = [a for a in base if a not in ("--nproc", "9")]
                cases += 1
                res = runner.invoke(app, [*base, option, value])
                text = res.output
                if res.exception is not None and not isinstance(res.exception, SystemExit):
                    bad.append(f"{name} {option} {value[:20]!r}: {type(res.exception).__name__}")
                elif "Traceback" in text or not _no_raw_control(text.replace("\r", "")):
                    bad.append(f"{name} {option} {value[:20]!r}: traceback or raw control text")
                elif res.exit_code not in (0, 1, 2):
                    bad.append(f"{name} {option} {value[:20]!r}: exit code {res.exit_code}")
                else:
                    clean += 1
    after = {p for p in tmp_path.rglob("*") if out not in p.parents and p != out}
    assert not (after - before), f"files written outside --out: {sorted(after - before)}"
    print(f"CLI fuzz: {cases} cases, {clean} clean")
    assert not bad, "\n".join(bad)


# The study commands (flagship, scaling, compare, network, robustness, deep) start a study of
# minutes to hours on any value their options accept, so only values they must refuse before
# running are driven; every (command, option, value) they would accept is in STUDY_SKIPPED,
# with the reason, and counted. config-docs writes one file (--dest inside --out) and
# --check writes nothing, so every value is driven there.
STUDIES = ["flagship", "scaling", "compare", "network", "robustness", "deep"]
STUDY_SKIPPED: list[tuple[str, str, str]] = [
    *((s, "--workers", "1000000000") for s in STUDIES),
    ("compare", "--rounds", "1000000000"),
    ("compare", "--num-nodes", "1000000000"),
]
SKIP_REASONS = {
    "--workers": "a valid worker count: the study would start",
    "--rounds": "a valid round count: the study would start",
    "--num-nodes": "a valid node count: the study would start",
    "--out": "any path is a valid results folder: the study would start",
    "--folder": "any path is a valid figures folder: the study would start",
}
STUDY_SKIPPED += [(s, "--out", v) for s in STUDIES for v in CLI_VALUES]
STUDY_SKIPPED += [("scaling", "--folder", v) for v in CLI_VALUES]


def _other_commands(out: Path) -> list[tuple[str, list[str], str]]:
    """``[(name, base args, option to fuzz)]``; an option ``""`` fuzzes the positional."""
    cases = [(s, [s, "--out", str(out), "--no-progress"], "--workers") for s in STUDIES]
    cases += [
        (s, [s, "--out", str(out), "--no-progress"], "")
        for s in ("scaling", "network", "robustness", "deep")
    ]
    cases += [
        ("flagship", ["flagship", "--out", str(out), "--no-progress"], "--config"),
        ("compare", ["compare", "--out", str(out), "--no-progress"], "--rounds"),
        ("compare", ["compare", "--out", str(out), "--no-progress"], "--num-nodes"),
        ("config-docs", ["config-docs"], "--dest"),
        ("config-docs", ["config-docs", "--check"], "--dest"),
    ]
    return cases


def test_every_option_of_the_other_commands_takes_every_refused_edge_value_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "res"
    out.mkdir()
    runner = CliRunner()
    bad: list[str] = []
    cases = clean = one_line = 0
    for name, base, option in _other_commands(out):
        for value in CLI_VALUES:
            if (name, option, value) in STUDY_SKIPPED:
                continue
            if option == "--dest" and "--check" not in base:
                value = str(out / (value[:50] or "d"))  # inside --out: allowed
            args = [*base, option, value] if option else [*base, "--", value]
            cases += 1
            res = runner.invoke(app, args)
            text = res.output
            label = f"{name} {option or 'CONFIG'} {value[:20]!r}"
            if res.exception is not None and not isinstance(res.exception, SystemExit):
                bad.append(f"{label}: {type(res.exception).__name__}")
            elif "Traceback" in text or not _no_raw_control(text.replace("\r", "")):
                bad.append(f"{label}: traceback or raw control text")
            elif res.exit_code not in (1, 2) and name != "config-docs":
                bad.append(f"{label}: exit code {res.exit_code}, not refused (a study started?)")
            elif res.exit_code not in (0, 1, 2):
                bad.append(f"{label}: exit code {res.exit_code}")
            else:
                clean += 1
                one_line += len(text.strip().splitlines()) == 1
    outside = {p for p in tmp_path.rglob("*") if out not in p.parents and p != out}
    assert not outside, f"files written outside --out: {sorted(outside)}"
    print(f"other commands fuzz: {cases} cases, {clean} clean ({one_line} in one line)")
    print(f"skipped, would start a study: {len(STUDY_SKIPPED)}: {SKIP_REASONS}")
    assert not bad, "\n".join(bad)
