"""An algorithm's dataclass is the one source of its hyperparameters; the config is derived.

Also: what each method assumes of W, and that building a run checks it.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import pytest
from annotated_types import Ge, Interval
from pydantic import ValidationError

from decent.algorithms import (
    ALGORITHMS,
    DATSGD,
    DSGD,
    AlgorithmError,
    LearningRate,
    Method,
    MinibatchSGD,
    MixingAssumptionWarning,
    hparam,
    hparams,
    mixing_violations,
)
from decent.config import ConfigError, build, loads_config
from decent.config._models import ALGORITHM_MODELS, algorithm_model
from decent.topology import OnePeerExponential, exponential, from_matrix, ring


def test_every_registered_algorithm_has_a_config_model_mirroring_its_dataclass():
    assert [
        typing.get_args(m.model_fields["kind"].annotation)[0] for m in ALGORITHM_MODELS
    ] == list(ALGORITHMS)
    for model, cls in zip(ALGORITHM_MODELS, ALGORITHMS.values(), strict=True):
        fields = {f.name: f for f in hparams(cls)}
        # every table also takes [[algorithm.transforms]] (a chain in front of the method)
        assert set(model.model_fields) - {"kind", "transforms"} == set(fields), cls.name
        for name, f in fields.items():
            info = model.model_fields[name]
            assert info.description == f.metadata["doc"], (cls.name, name)
            if f.default is dataclasses.MISSING:
                assert info.is_required()
            else:
                assert info.default == f.default, (cls.name, name)
        assert cls.__doc__ is not None and model.__doc__ is not None
        assert cls.label and cls.__doc__.strip().startswith(model.__doc__.rstrip("."))


@dataclass(frozen=True)
class _Heavy(Method):
    """Heavy-ball D-SGD (a test method declared the way a user adds one)."""

    lr: LearningRate = hparam(doc="Step size.")
    beta: float = hparam(0.9, Interval(ge=0.0, lt=1.0), doc="Momentum.")
    rounds_between: int = hparam(1, Ge(1), doc="Gossip every this many rounds.")
    mode: Literal["fast", "safe"] = hparam("safe", doc="A choice.")
    name: ClassVar[str] = "heavy"
    label: ClassVar[str] = "Heavy"


def test_a_new_algorithm_is_checked_from_its_declaration():
    assert _Heavy(lr=0.1).eta(7) == 0.1
    cases: list[tuple[dict[str, Any], str]] = [
        ({"beta": 1.0}, r"heavy.beta must be a finite number >= 0.0, < 1.0, got 1.0"),
        ({"rounds_between": 0}, r"heavy.rounds_between must be an integer >= 1, got 0"),
        ({"rounds_between": True}, r"heavy.rounds_between must be an integer"),
        ({"mode": "quick"}, r"heavy.mode must be 'fast' or 'safe', got 'quick'"),
        ({"lr": -1.0}, r"heavy.lr: lr must be a finite number >= 0"),
    ]
    for kwargs, message in cases:
        with pytest.raises(AlgorithmError, match=message):
            _Heavy(**{"lr": 0.1, **kwargs})


def test_a_new_algorithm_gets_its_config_model_with_the_same_rules():
    model = algorithm_model(_Heavy)
    # the model is built at run time: its fields are read back as data, not attributes
    ok = model.model_validate({"kind": "heavy", "lr": 0.1, "beta": 0.5}).model_dump()
    assert ok["beta"] == 0.5 and ok["rounds_between"] == 1 and ok["mode"] == "safe"
    assert _Heavy.__doc__ is not None
    assert model.__doc__ == _Heavy.__doc__.splitlines()[0]
    for bad in ({"beta": 1.0}, {"rounds_between": 0}, {"mode": "quick"}, {"gamma": 1}):
        with pytest.raises(ValidationError):
            model.model_validate({"kind": "heavy", "lr": 0.1, **bad})
    hints = typing.get_type_hints(_Heavy)
    assert hints["beta"] is float


BASE = """
rounds = 10
[topology]
kind = "one_peer_exponential"
num_nodes = 8
[algorithm]
kind = "dat_sgd"
lr = 0.001
[task]
kind = "least_squares"
dim = 3
"""


def test_building_a_run_refuses_a_w_outside_the_methods_analysis():
    with pytest.raises(ConfigError) as err:
        build(loads_config(BASE))
    text = str(err.value)
    assert "topology:" in text and "dat_sgd assumes a symmetric, doubly stochastic W" in text
    assert "not symmetric" in text and 'mixing_check = "warn"' in text
    # D-SGD only needs a doubly stochastic W, which the one-peer exponential graph has
    build(loads_config(BASE, ["algorithm.kind=dsgd"]))
    # opting out runs it with a warning
    with pytest.warns(MixingAssumptionWarning, match="running it anyway"):
        build(loads_config(BASE, ["mixing_check=warn"]))


def test_mixing_violations_per_assumption():
    assert mixing_violations(DATSGD(lr=0.1), ring(6), rounds=5) == []
    assert mixing_violations(DATSGD(lr=0.1), exponential(8), rounds=5) == []
    directed = exponential(8, directed=True)  # circulant: doubly stochastic, not symmetric
    assert mixing_violations(DSGD(lr=0.1), directed, rounds=5) == []
    assert [v.split(" (")[0] for v in mixing_violations(DATSGD(lr=0.1), directed, 5)] == [
        "W_t is not symmetric"
    ]
    rows_only = from_matrix(np.array([[0.5, 0.5, 0.0], [0.25, 0.5, 0.25], [0.0, 0.5, 0.5]]))
    hub = rows_only  # rows sum to 1, the middle column to 1.5
    assert "doubly stochastic" in mixing_violations(DSGD(lr=0.1), hub, rounds=5)[0]
    # a centralized method assumes nothing of W
    assert mixing_violations(MinibatchSGD(lr=0.1), hub, rounds=5) == []
    # time-varying: checked over one period of the schedule
    one_peer = OnePeerExponential(8)
    assert mixing_violations(DSGD(lr=0.1), one_peer, rounds=50) == []
    assert "round 1..3 checked" in mixing_violations(DATSGD(lr=0.1), one_peer, rounds=50)[0]
