"""The Python examples in docs/own_algorithm.md and docs/own_model.md run as written."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def python_blocks(name: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / name).read_text(), flags=re.S)


@pytest.mark.parametrize("name", ["own_algorithm.md", "own_model.md"])
def test_doc_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples write results/ and toy.svm here
    blocks = python_blocks(name)
    assert len(blocks) >= 2
    module = types.ModuleType("doc_example")  # dataclasses need a real module
    monkeypatch.setitem(sys.modules, "doc_example", module)
    for block in blocks:
        exec(compile(block, f"{name}", "exec"), module.__dict__)
    if name == "own_algorithm.md":
        from decent.results import Store

        runs = Store(tmp_path / "results").runs("momentum")
        assert list(runs["status"]) == ["finished"]
        assert runs["algorithm.kind"].tolist() == ["dsgd_momentum"]
