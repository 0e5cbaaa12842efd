"""A user's own algorithm or topology, registered by a decorator or an entry point, is a TOML kind.

The entry-point path is exercised with a real installed-distribution metadata folder
(``*.dist-info`` with ``entry_points.txt``) on ``sys.path``, as ``pip install`` leaves it.
"""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from decent.algorithms import ALGORITHMS
from decent.config import ConfigError, build, loads_config, reference_markdown
from decent.config import _models as m
from decent.run import train_experiment
from decent.topology import TOPOLOGY_KINDS

CONFIG = """
rounds = 6
eval_every = 3
[topology]
kind = "{topology}"
num_nodes = 8
{topology_extra}
[algorithm]
kind = "{algorithm}"
lr = 0.05
[task]
kind = "least_squares"
dim = 5
"""

PLUGIN = '''
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

import annotated_types as at

from decent._params import Doc
from decent.algorithms import DSGD
from decent.topology import ring


@dataclass(frozen=True)
class {cls}(DSGD):
    """D-SGD under another name (a user's method)."""

    name: ClassVar[str] = "{algorithm}"


def {topology}(
    n: int, *, lazy: Annotated[float | None, at.Interval(ge=0, lt=1), Doc("Self weight.")] = None
):
    """A ring (a user's graph)."""
    return ring(n, lazy=lazy)
'''


@pytest.fixture
def clean_registries():
    algorithms, topologies = dict(ALGORITHMS), dict(TOPOLOGY_KINDS)
    yield
    ALGORITHMS.clear()
    ALGORITHMS.update(algorithms)
    TOPOLOGY_KINDS.clear()
    TOPOLOGY_KINDS.update(topologies)
    m.sync()


def _final(text: str) -> torch.Tensor:
    result = train_experiment(build(loads_config(text)))
    return torch.tensor([r["eval/loss@mean"] for r in result.records], dtype=torch.float64)


def _reference() -> torch.Tensor:
    return _final(CONFIG.format(topology="ring", topology_extra="", algorithm="dsgd"))


def test_kind_registered_by_decorator(clean_registries, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "my_decorated.py").write_text(
        PLUGIN.format(cls="MyDSGD", algorithm="my_dsgd", topology="my_ring")
        + textwrap.dedent(
            """
            from decent.algorithms import register
            from decent.topology import register as register_topology

            register(MyDSGD)
            register_topology("my_ring")(my_ring)
            """
        )
    )
    with pytest.raises(ConfigError, match="unknown kind"):
        loads_config(CONFIG.format(topology="ring", topology_extra="", algorithm="my_dsgd"))
    import my_decorated  # noqa: F401  (registers on import)

    text = CONFIG.format(topology="my_ring", topology_extra="lazy = 0.5", algorithm="my_dsgd")
    ours = _final(text)
    lazy_ring = CONFIG.format(topology="ring", topology_extra="lazy = 0.5", algorithm="dsgd")
    assert torch.equal(ours, _final(lazy_ring))  # the same method on the same graph, bit for bit
    assert not torch.equal(ours, _reference())  # and lazy = 0.5 reached the generator
    assert '### `kind = "my_dsgd"`' in reference_markdown(plugins=True)
    assert "my_dsgd" not in reference_markdown()
    with pytest.raises(ConfigError, match=r"topology.lazy: 2.0 -> "):
        loads_config(text.replace("lazy = 0.5", "lazy = 2.0"))


def test_kind_registered_by_entry_point(clean_registries, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "my_plugin.py").write_text(
        PLUGIN.format(cls="PluginDSGD", algorithm="plugin_dsgd", topology="plugin_ring")
    )
    info = tmp_path / "my_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[decent.algorithms]\nplugin_dsgd = my_plugin:PluginDSGD\n\n"
        "[decent.topologies]\nplugin_ring = my_plugin:plugin_ring\n"
        "broken_ring = my_plugin:no_such_function\n"
    )
    assert "my_plugin" not in sys.modules
    text = CONFIG.format(topology="plugin_ring", topology_extra="", algorithm="plugin_dsgd")
    with pytest.warns(UserWarning, match=r"entry point broken_ring = 'my_plugin:no_such_function'"):
        ours = _final(text)
    assert torch.equal(ours, _reference())
    assert ALGORITHMS["plugin_dsgd"].__module__ == "my_plugin"


def test_taken_names_are_refused(clean_registries):
    from dataclasses import dataclass
    from typing import ClassVar

    from decent.algorithms import DSGD, AlgorithmError, register
    from decent.topology import TopologyError, ring
    from decent.topology import register as register_topology

    @dataclass(frozen=True)
    class Impostor(DSGD):
        name: ClassVar[str] = "dat_sgd"

    with pytest.raises(AlgorithmError, match="'dat_sgd' is taken by DATSGD"):
        register(Impostor)
    with pytest.raises(TopologyError, match="'torus' is taken"):
        register_topology("torus")(ring)
