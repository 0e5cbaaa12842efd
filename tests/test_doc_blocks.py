"""Every code block of the README and docs/ runs as written (shortened where slow).

Python blocks of a page run in order in one namespace, in a scratch directory that has the
repository's ``configs/``. Shell blocks are split into commands; each command must match a
rule below: run it (``decent`` in-process through its CLI, with overrides that keep it
short, or ``python -m ...`` as a subprocess), or skip it for a stated reason. A command no
rule knows fails the test, so a new block cannot slip in untested. ``toml`` blocks
must parse, and one that is a whole experiment (it sets ``rounds``) runs through ``decent
run``, shortened. Blocks in other languages (``sql``, ``text``, layouts) are data.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from decent.cli import app

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(page: Path, lang: set[str]) -> list[str]:
    return [m.group(2) for m in FENCE.finditer(page.read_text()) if m.group(1) in lang]


def commands(block: str) -> list[str]:
    """Logical shell commands: continuations joined, comments and blank lines dropped."""
    out, current = [], ""
    for raw in block.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        text = current.split(" #", 1)[0].strip()
        current = ""
        if text and not text.startswith("#"):
            out.append(text)
    return out


# -- how each shell command is handled -------------------------------------------------------

SHORT = ["--set", "rounds=12", "--set", "eval_every=6"]


def _decent(args: list[str], work: Path) -> None:
    """Run ``decent ARGS`` in-process, shortened: few rounds, one worker, two ranks."""
    command = args[0]
    if command in ("run", "sweep", "launch"):
        args = [*args, *SHORT]
    if command in ("run", "sweep"):
        args.append("--no-progress")
    if command == "sweep":
        args += ["--workers", "1", "--set", "sweep.seeds=[0]"]
    if command == "launch":
        i = args.index("--nproc")
        args[i + 1] = "2"  # two ranks are enough to check the command works
        if "--mode" in args and args[args.index("--mode") + 1] == "fault_tolerant":
            args += ["--failure-timeout", "2"]
    if command == "topology":
        args = [a if not a.endswith(".png") else str(work / a) for a in args]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, f"decent {' '.join(args)}\n{result.output}"


def _python_module(args: list[str], work: Path, env: dict[str, str]) -> None:
    module = args[args.index("-m") + 1]
    if module.startswith("benchmarks."):
        # a benchmark takes minutes: here it only has to exist and parse its options
        # (tests/benchmarks/ runs the simulator benchmark on a tiny configuration; the
        # distributed one needs ~30 s even with --quick and is run by hand)
        _benchmark_parses(module, args[args.index("-m") + 2 :])
        return
    example = next((a for a in args if a.startswith("examples/")), "")
    # the two training examples' only runs under torchrun: their result line is checked below
    trains = example.endswith(("ddp_mnist1d.py", "ddp_charlm.py"))
    if module == "torch.distributed.run" and example:
        # an example trains 8 ranks for minutes: here 2 ranks (3 for the training examples,
        # each rank with two neighbours) and a few steps
        args[args.index("--nproc_per_node") + 1] = "3" if trains else "2"
        if example.endswith("ddp_mnist1d.py"):
            args = [*args, "--steps", "3", "--samples", "120"]
        if example.endswith("ddp_charlm.py"):
            args = [*args, "--steps", "3", "--context", "16", "--max-chars", "2000"]
            args += ["--test-windows", "8"]
    proc = subprocess.run(
        [sys.executable, *args[1:]],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    if module == "torch.distributed.run" and trains:
        _example_result(example, proc.stdout)


def _benchmark_parses(module: str, argv: list[str]) -> None:
    """``python -m MODULE ARGV --help`` in this process: its ``main`` parses ``ARGV`` and
    prints its usage (a fresh process would only import torch and decent again)."""
    if str(ROOT) not in sys.path:  # the benchmarks package lives at the repository root
        sys.path.insert(0, str(ROOT))
    main = importlib.import_module(module).main
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown), pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code in (0, None), f"{module} {' '.join(argv)}: exit {exit_.value.code}"
    assert "usage:" in shown.getvalue(), shown.getvalue()


def _example_result(example: str, stdout: str) -> None:
    """A DDP example's one JSON result line: 3 ranks, 3 steps, a test metric."""
    line = json.loads(next(x for x in stdout.splitlines() if x.startswith("{")))
    assert line["world_size"] == 3 and line["steps"] == 3, line
    if example.endswith("ddp_mnist1d.py"):
        assert "test_accuracy" in line, line
    if example.endswith("ddp_charlm.py"):
        # 3 steps from a random init: the test loss is finite and near log(128) = 4.85 nats
        assert 3.0 < line["test_loss"] < 6.0, line


SKIP: list[tuple[str, str]] = [
    (
        r"^bash scripts/(main|test)\.sh",
        "the README's two set-up commands: CI runs test.sh, tests/studies runs the flagship",
    ),
    (
        r"^decent (scaling|compare|network|robustness|deep)\b",
        "a study of minutes to an hour; tests/studies runs each on a tiny spec",
    ),
    (r"^pip install ", "installs packages"),
    (r"^tensorboard --logdir", "starts a server"),
    (r"python -m torch\.distributed\.run .*--nnodes 2", "needs two machines"),
    (
        r"python -m decent\.run\.distributed\.worker",
        "what decent launch runs on every rank; every launch above runs it",
    ),
]


def run_command(text: str, work: Path) -> str:
    """Run (or knowingly skip) one documented command; return what was done."""
    for pattern, reason in SKIP:
        if re.search(pattern, text):
            return f"skipped: {reason}"
    words = shlex.split(text)
    env: dict[str, str] = {}
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    if words[0] == "decent":
        _decent(words[1:], work)
        return "ran"
    if words[:2] == ["python", "-m"]:
        _python_module(words, work, env)
        return "ran"
    raise AssertionError(f"no rule for the documented command {text!r}: add one in {__file__}")


# -- the tests -------------------------------------------------------------------------------


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


PY_PAGES = [p for p in PAGES if blocks(p, {"python"})]
SH_PAGES = [p for p in PAGES if blocks(p, {"bash", "sh", "console", "shell"})]

PRELUDE: dict[str, Callable[[pytest.MonkeyPatch], None]] = {}


def _single_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/distributed.md's snippet, on a one-rank gloo group (as torchrun would set it)."""
    from decent.run.distributed.launch import free_port

    env = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)


PRELUDE["distributed.md"] = _single_process_group


@pytest.mark.parametrize("page", PY_PAGES, ids=[p.name for p in PY_PAGES])
def test_python_blocks_run(page: Path, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if page.name in PRELUDE:
        PRELUDE[page.name](monkeypatch)
    module = types.ModuleType("doc_example")  # dataclasses need a real module
    monkeypatch.setitem(sys.modules, "doc_example", module)
    try:
        for i, block in enumerate(blocks(page, {"python"})):
            exec(compile(block, f"{page.name}[python block {i}]", "exec"), module.__dict__)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    if page.name == "own_algorithm.md":  # the example recorded its run through run_config
        from decent.results import Store

        runs = Store(work / "results", readonly=True).runs("momentum")
        assert list(runs["status"]) == ["finished"]
        assert runs["algorithm.kind"].tolist() == ["dsgd_momentum"]


TOML_PAGES = [p for p in PAGES if blocks(p, {"toml"})]


@pytest.mark.parametrize("page", TOML_PAGES, ids=[p.name for p in TOML_PAGES])
def test_toml_blocks_parse_and_whole_experiments_run(page: Path, work: Path) -> None:
    from decent.config._overrides import tomllib

    ran = 0
    for i, block in enumerate(blocks(page, {"toml"})):
        if "rounds" in tomllib.loads(block):  # a fragment of a section only has to parse
            (work / f"block{i}.toml").write_text(block)
            _decent(["run", f"block{i}.toml"], work)
            ran += 1
    assert ran or page.name not in ("config.md", "concepts.md")


SH_BLOCKS = [
    (page, i, block)
    for page in SH_PAGES
    for i, block in enumerate(blocks(page, {"bash", "sh", "console", "shell"}))
]


@pytest.mark.parametrize(
    ("page", "index", "block"), SH_BLOCKS, ids=[f"{p.name}-{i}" for p, i, _ in SH_BLOCKS]
)
def test_shell_blocks_run(page: Path, index: int, block: str, work: Path) -> None:
    """Each block on its own (a fresh directory), so the suite's workers share the slow
    pages; the commands of one block run in order, as a reader would type them."""
    for cmd in commands(block):
        run_command(cmd, work)


def test_every_documented_command_has_a_rule() -> None:
    """Cheap and complete: each command of every page is either runnable or knowingly skipped,
    and every page but the README (whose set-up commands and studies are run elsewhere) has a
    command that runs."""
    for page in SH_PAGES:
        runnable = [
            cmd
            for block in blocks(page, {"bash", "sh", "console", "shell"})
            for cmd in commands(block)
            if not any(re.search(p, cmd) for p, _ in SKIP)
        ]
        assert runnable or page.name == "README.md", f"{page.name}: every command is skipped"
        for block in blocks(page, {"bash", "sh", "console", "shell"}):
            for cmd in commands(block):
                words = shlex.split(cmd)
                while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                    words.pop(0)
                known = (
                    any(re.search(p, cmd) for p, _ in SKIP)
                    or words[0] == "decent"
                    or (words[:2] == ["python", "-m"])
                )
                assert known, f"{page.name}: no rule for {cmd!r}"
