"""Deep nesting and a UTF-8 byte-order mark in configs (issue 28): one line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from decent.config import ConfigError
from decent.config._load import load_config, loads_config, parse_toml
from decent.config._overrides import MAX_DEPTH, apply_overrides

DEEP = 5000  # far past Python's recursion limit


def _nested_array(n: int) -> str:
    return "[" * n + "]" * n


def _nested_table(n: int) -> str:
    return "{b = " * n + "1" + "}" * n


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, DEEP])
@pytest.mark.parametrize(
    "toml",
    [lambda n: f"a = {_nested_array(n)}", lambda n: f"a = {_nested_table(n)}"],
    ids=["array", "inline-table"],
)
def test_deep_toml_is_refused_in_one_line(toml, depth: int) -> None:
    with pytest.raises(ConfigError) as err:
        parse_toml(toml(depth), "deep.toml")
    lines = str(err.value).splitlines()
    assert lines[0] == "invalid config in deep.toml (1 problem):"
    assert lines[1].endswith(
        f"nested deeper than {MAX_DEPTH} levels; flatten it (configs need fewer than 6)"
    )


@pytest.mark.parametrize(
    "item",
    [
        "a" + ".a" * DEEP + "=1",
        "a" + ".a" * MAX_DEPTH + "=1",
        "a=" + _nested_array(DEEP),
        "a=" + _nested_table(DEEP),
        "a.b=" + _nested_array(MAX_DEPTH),
    ],
    ids=["key-5000", "key-33", "array-5000", "table-5000", "array-33"],
)
def test_deep_set_is_refused_in_one_line(item: str) -> None:
    with pytest.raises(ConfigError) as err:
        apply_overrides({}, [item])
    (issue,) = err.value.issues
    assert issue.path.startswith("--set")
    assert f"nested deeper than {MAX_DEPTH} levels" in issue.rule
    assert len(issue.line()) < 200


def test_nesting_within_the_limit_is_kept() -> None:
    value = apply_overrides({}, ["a.b=" + _nested_array(MAX_DEPTH - 2)])["a"]["b"]
    for _ in range(MAX_DEPTH - 2):
        assert isinstance(value, list)
        value = value[0] if value else value
    assert parse_toml("a = " + _nested_array(MAX_DEPTH - 1))["a"]


def test_a_utf8_bom_is_ignored(tmp_path: Path) -> None:
    text = Path("configs/dsgd.toml").read_text(encoding="utf-8")
    plain = loads_config(text)
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load_config(path, study="experiment") == plain
    assert loads_config("\ufeff" + text) == plain
