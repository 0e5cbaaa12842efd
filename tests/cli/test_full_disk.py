"""A full disk (or a file-size limit) during ``decent run``: one line, records kept.

The store stays a valid database, everything committed before the disk filled is kept,
the run is recorded ``failed`` with one line naming the file and the cause (no
traceback), and the terminal shows that line with exit code 2. The limit is a process
file-size limit (``RLIMIT_FSIZE``, ``ulimit -f``), which works anywhere; where the test
may mount (root), a 200 KiB tmpfs too.
"""

from __future__ import annotations

import errno
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from decent.results import Store
from decent.results._errors import os_error_text

CONFIG = """
study = "disk"
rounds = 2000
eval_every = 1
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


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (200 * 1024, 200 * 1024))


@pytest.fixture
def tmpfs(tmp_path: Path):
    where = tmp_path / "small"
    where.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(where)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root); the file-size limit case covers it")
    yield where
    subprocess.run(["umount", str(where)], check=False)


@pytest.mark.parametrize("how", ["file-size limit", "tmpfs"])
def test_a_full_disk_is_one_line_and_keeps_the_records(tmp_path: Path, how: str, request) -> None:
    cfg = tmp_path / "disk.toml"
    cfg.write_text(CONFIG)
    out = request.getfixturevalue("tmpfs") if how == "tmpfs" else tmp_path / "res"
    run = subprocess.run(
        [sys.executable, "-m", "decent.cli", "run", str(cfg), "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_file_size if how == "file-size limit" else None,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert str(out / "decent.sqlite") in lines[0] and "full" in lines[0], lines[0]
    assert "everything committed before is kept" in lines[0]
    with Store(out, readonly=True) as store:
        runs = store.runs("disk")
        records = store.records("disk", metrics=["eval/loss@mean"])
    assert runs["status"].tolist() == ["failed"]
    error = str(runs.iloc[0]["error"])
    assert "\n" not in error and "full" in error and "Traceback" not in error, error
    rounds = sorted(records["round"])
    assert rounds and rounds == list(range(len(rounds)))  # a prefix of the run, no gaps


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EDQUOT])
def test_a_full_disk_writing_any_file_is_one_line(code: int) -> None:
    text = os_error_text(OSError(code, "No space left on device", "/x/report.html"))
    assert text.startswith("the disk is full writing /x/report.html")
    assert "\n" not in text
