"""[network], [privacy] and [byzantine] are derived from the classes they build.

Each field of those tables is a parameter the class declares (same name, default and
rules), so the Python API and a config refuse the same values, each naming the field.
"""

from __future__ import annotations

import dataclasses

import pytest

from decent._params import declared, flat_rules
from decent.comm.network.models import (
    ComputeModel,
    DelayModel,
    FaultModel,
    LinkModel,
    NetworkError,
)
from decent.comm.robust import RobustCommunicator, choose_byzantine
from decent.config import ConfigError, _models, loads_config
from decent.engine.privacy import Privacy, PrivacyError

BASE = """
rounds = 4
[topology]
kind = "ring"
num_nodes = 8
[algorithm]
kind = "dsgd"
lr = 0.1
[task]
kind = "least_squares"
"""

TABLES = [
    (_models.ComputeSection, [ComputeModel], ()),
    (_models.FaultsSection, [FaultModel], ()),
    (_models.DelaysSection, [DelayModel], ("schedule",)),
    (_models.NetworkSection, [LinkModel], ()),
    (_models.PrivacySection, [Privacy], ()),
    (_models.ByzantineSection, [choose_byzantine, RobustCommunicator], ("w", "inner", "byzantine")),
]


@pytest.mark.parametrize(("model", "targets", "skip"), TABLES)
def test_every_declared_parameter_is_a_field_with_its_default_and_rules(
    model, targets, skip
) -> None:
    seen = set()
    for target in targets:
        for p in declared(target, skip=skip):
            if p.name in seen:  # byzantine: the placement's seed is the attack's seed
                continue
            seen.add(p.name)
            field = model.model_fields[p.name]
            assert field.description == p.doc, p.name
            if p.default is dataclasses.MISSING:
                assert field.is_required(), p.name
            else:
                assert field.get_default(call_default_factory=True) == (
                    list(p.default) if isinstance(p.default, tuple) else p.default
                ), p.name
            rules = flat_rules(field.metadata) + [
                r
                for arg in getattr(field.annotation, "__args__", ())
                for r in flat_rules(getattr(arg, "__metadata__", ()))
            ]
            assert all(r in rules for r in flat_rules(p.rules)), p.name
    extra = set(model.model_fields) - seen - {"compute", "faults", "delays"}
    assert not extra, f"{model.__name__} has fields no class declares: {extra}"


@pytest.mark.parametrize(
    ("make", "error", "toml", "path"),
    [
        (
            lambda: ComputeModel(sigma=20.0),
            NetworkError,
            "[network.compute]\nsigma = 20.0",
            "compute.sigma",
        ),
        (
            lambda: LinkModel(latency=2e6),
            NetworkError,
            "[network]\nlatency = 2e6",
            "network.latency",
        ),
        (
            lambda: LinkModel(bandwidth=0.5),
            NetworkError,
            "[network]\nbandwidth = 0.5",
            "network.bandwidth",
        ),
        (lambda: FaultModel(drop=1.5), NetworkError, "[network.faults]\ndrop = 1.5", "faults.drop"),
        (
            lambda: FaultModel(crashes={2: 0}),
            NetworkError,
            '[network.faults]\ncrashes = { "2" = 0 }',
            "faults.crashes",
        ),
        (
            lambda: DelayModel(max_delay=1001),
            NetworkError,
            "[network.delays]\nmax_delay = 1001",
            "delays.max_delay",
        ),
        (
            lambda: Privacy(clip=1.0, noise_multiplier=2e3),
            PrivacyError,
            "[privacy]\nclip = 1.0\nnoise_multiplier = 2e3",
            "privacy.noise_multiplier",
        ),
        (
            lambda: Privacy(clip=0.0, noise_multiplier=1.0),
            PrivacyError,
            "[privacy]\nclip = 0.0\nnoise_multiplier = 1.0",
            "privacy.clip",
        ),
    ],
)
def test_the_api_and_a_config_refuse_the_same_value_naming_the_field(
    make, error, toml, path
) -> None:
    with pytest.raises(error, match=path.split(".")[-1]) as api:
        make()
    assert "\n" not in str(api.value)
    with pytest.raises(ConfigError) as cfg:
        loads_config(BASE + toml, study="derived")
    assert len(cfg.value.issues) == 1
    assert cfg.value.issues[0].path.endswith(path), cfg.value.issues[0].line()


def test_the_python_only_delay_kind_is_not_a_config_choice() -> None:
    DelayModel(kind="given", schedule=lambda t, dst, src: dst * 0)  # fine from Python
    with pytest.raises(ConfigError, match=r"network\.delays\.kind"):
        loads_config(BASE + '[network.delays]\nkind = "given"', study="derived")


def test_a_free_link_is_none_in_both_and_costs_only_latency() -> None:
    link = LinkModel(latency=0.5)
    assert link.bandwidth is None and link.time(1e9) == 0.5
    cfg = loads_config(BASE + "[network]\nlatency = 0.5", study="derived")
    assert cfg.network is not None and cfg.network.bandwidth is None
