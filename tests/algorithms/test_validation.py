"""Bad hyperparameters get errors that name the field, the value and the rule."""

from __future__ import annotations

import math

import pytest

from decent.algorithms import (
    DATSGD,
    DSGD,
    AlgorithmError,
    Constant,
    Cosine,
    InverseSqrt,
    LocalSGD,
    Warmup,
)


# Cases marked type: ignore pass ill-typed values on purpose: the runtime checks are under test.
@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: DSGD(lr=-1.0), r"dsgd.lr: lr must be a finite number >= 0, got -1.0"),
        (lambda: DSGD(lr=math.nan), r"dsgd.lr"),
        (
            lambda: DSGD(lr=0.1, variant="both"),  # type: ignore[arg-type]
            r"dsgd.variant must be 'atc'.*got 'both'",
        ),
        (lambda: DSGD(lr=0.1, local_steps=0), r"dsgd.local_steps must be an integer >= 1"),
        (
            lambda: DATSGD(lr=0.1, weight_power=-1),
            r"dat_sgd.weight_power must be a finite number >= 0",
        ),
        (
            lambda: LocalSGD(lr=0.1, local_steps=2.5),  # type: ignore[arg-type]
            r"local_sgd.local_steps",
        ),
    ],
)
def test_errors_name_the_field(make, match):
    with pytest.raises(AlgorithmError, match=match):
        make()


def test_schedules():
    assert Constant(0.3)(100) == 0.3
    assert InverseSqrt(1.0, t0=4)(1) == 1.0
    assert InverseSqrt(1.0, t0=4)(13) == pytest.approx(0.5)
    cos = Cosine(1.0, total=10, final=0.1)
    assert cos(1) == pytest.approx(1.0) and cos(11) == pytest.approx(0.1)
    assert cos(6) == pytest.approx(0.55)
    warm = Warmup(Constant(2.0), steps=4)
    assert [warm(t) for t in (1, 2, 4, 9)] == [0.5, 1.0, 2.0, 2.0]
    assert DSGD(lr=InverseSqrt(0.5)).eta(4) == pytest.approx(0.25)
