"""The ``[dist]`` section: launch settings as config fields, the launch flags as overrides."""

from __future__ import annotations

import math

import pytest

from decent.config import ConfigError, loads_config
from decent.run.distributed.launch import launch
from decent.run.distributed.runtime import MODES, dist_run_dict

BASE = """
rounds = 4
[topology]
kind = "ring"
num_nodes = 4
[algorithm]
kind = "dsgd"
lr = 0.1
[task]
kind = "least_squares"
"""


def test_modes_agree_with_the_runtime():
    from decent.config._models import DistSection

    assert DistSection.model_fields["mode"].annotation.__args__ == MODES  # type: ignore[union-attr]


def test_section_does_not_change_run_ids():
    plain = loads_config(BASE)
    with_section = loads_config(BASE + '[dist]\nmode = "stale"\nstaleness = 3\n')
    assert with_section.run_dict() == plain.run_dict()  # a simulator run ignores it
    stored = dist_run_dict(
        with_section.model_copy(update={"backend": "dist"}), 2, "stale", staleness=3
    )
    before = dist_run_dict(plain.model_copy(update={"backend": "dist"}), 2, "stale", staleness=3)
    assert stored == before
    assert stored["dist"] == {"world_size": 2, "mode": "stale", "staleness": 3}


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        ({"failure_timeout": -1.0}, "dist.failure_timeout"),
        ({"failure_timeout": math.nan}, "dist.failure_timeout"),
        ({"failure_timeout": math.inf}, "dist.failure_timeout"),
        ({"staleness": -1}, "dist.staleness"),
        ({"staleness": 10**9}, "dist.staleness"),
    ],
)
def test_launch_flags_are_checked_as_the_section_before_any_rank(flags, field, tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(BASE)
    with pytest.raises(ConfigError) as info:
        launch(2, path, out=tmp_path / "out", **flags)
    assert str(info.value).splitlines()[1].strip().startswith(f"{field}:")
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_section_values_reach_the_launch_and_flags_override_them(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(BASE + "[dist]\nstaleness = -1\n")
    with pytest.raises(ConfigError, match=r"dist.staleness: -1"):
        launch(2, path, out=tmp_path / "out")
    with pytest.raises(ConfigError, match=r"dist.staleness: -2"):
        launch(2, path, out=tmp_path / "out", staleness=-2)
