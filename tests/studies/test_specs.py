"""Every study spec is a frozen pydantic model: a bad field of its TOML file is one line
naming the field, a check across fields too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from decent.config import ConfigError
from decent.studies import _kit as kit
from decent.studies.compare import CompareSpec
from decent.studies.deep import DeepSpec
from decent.studies.network import NetworkSpec
from decent.studies.robustness import RobustnessSpec
from decent.studies.scaling import ScalingSpec

SPECS = [NetworkSpec, RobustnessSpec, CompareSpec, DeepSpec, ScalingSpec]


@pytest.mark.parametrize(
    ("cls", "text", "line"),
    [
        (NetworkSpec, "straggler_p = 1.5\n", "straggler_p: 1.5 -> must be <= 1.0"),
        (NetworkSpec, "max_delays = [4, 0]\n", "max_delays[1]: 0 -> must be >= 1"),
        (  # every item refused: not also "must not be empty"
            NetworkSpec,
            'methods = ["adam"]\n',
            "methods[0]: \"adam\" -> must be one of 'minibatch_sgd', 'dsgd', 'dat_sgd' or 'ad_psgd'",
        ),
        (CompareSpec, "seeds = []\n", "seeds: [] -> must not be empty"),
        (
            RobustnessSpec,
            'compressors = ["sign", "qsgd:0"]\n',
            "compressors[1]: \"qsgd:0\" -> 'qsgd:0' needs bits in 1..16, e.g. 'qsgd:2'",
        ),
        (
            RobustnessSpec,
            "[rounds]\ndigits = 30\n",
            "rounds: {digits = 30} -> give task 'stream' a number of rounds >= 1",
        ),
        (CompareSpec, "num_nodes = 1\n", "num_nodes: 1 -> must be >= 2"),
        (
            DeepSpec,
            'dtype = "float16"\n',
            "dtype: \"float16\" -> must be one of 'float32' or 'float64'; did you mean 'float64'?",
        ),
        (
            DeepSpec,
            'tasks = ["digits_mlp"]\n[targets]\ndigits_mlp = 2.0\n',
            "targets: {digits_mlp = 2.0} -> give task 'digits_mlp' a test accuracy in (0, 1]",
        ),
        (ScalingSpec, "min_machines = 3\n", "min_machines: 3 -> must be a power of two"),
    ],
)
def test_a_bad_field_is_one_line_naming_it(tmp_path: Path, cls: type, text: str, line: str) -> None:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        kit.load_spec(cls, path)
    assert str(err.value).splitlines() == [f"invalid config in {path} (1 problem):", f"  {line}"]


@pytest.mark.parametrize("cls", SPECS)
def test_a_spec_is_frozen_and_refuses_unknown_fields(cls: Any) -> None:
    spec = cls()
    with pytest.raises(ValidationError, match="frozen"):
        spec.seeds = (7,)
    with pytest.raises(ValidationError, match="seedz"):
        cls(seedz=(7,))
    assert spec.model_copy(update={"workers": 3}).workers == 3
    assert cls.model_validate(spec.model_dump()) == spec
