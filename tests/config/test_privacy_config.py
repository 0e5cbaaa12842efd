"""The ``[privacy]`` section: building, recording epsilon, grouping, the report, and errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from decent.cli import app
from decent.config import ConfigError, build, build_privacy, loads_config
from decent.engine.privacy import Privacy, epsilon, sampling_rates
from decent.results import Store
from decent.run import run_config
from decent.run.single import replica_key

BASE = """
study = "dp"
rounds = 12
eval_every = 4

[topology]
kind = "ring"
num_nodes = 4

[algorithm]
kind = "dsgd"
lr = 0.1

[task]
kind = "logistic_regression"
batch_size = 5
sampling = "without_replacement"
l2 = 1e-3

[task.dataset]
kind = "random"
num_samples = 120
num_features = 3
num_classes = 2
test_fraction = 0.0
"""

PRIVACY = """
[privacy]
clip = 0.5
noise_multiplier = 1.5
delta = 1e-4
"""


def lines(err: ConfigError) -> list[str]:
    return str(err).splitlines()[1:]


def test_a_private_run_records_epsilon_at_every_evaluation_and_its_config(tmp_path) -> None:
    path = tmp_path / "dp.toml"
    path.write_text(BASE + PRIVACY)
    out = tmp_path / "results"
    res = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "DP-SGD (clip=0.5, noise_multiplier=1.5, delta=0.0001, rdp)" in res.output
    store = Store(out)
    runs = store.runs("dp")
    assert list(runs["status"]) == ["finished"]
    assert runs["privacy.clip"].tolist() == [0.5]
    assert runs["privacy.accountant"].tolist() == ["rdp"]
    rows = store.records(metrics=["privacy/epsilon"]).sort_values("round")
    assert list(rows["round"]) == [0, 4, 8, 12]
    cfg = loads_config(BASE + PRIVACY)
    rates = sampling_rates(build(cfg).task).rates
    expected = [max(epsilon(q, 1.5, t, 1e-4, "rdp") for q in rates) for t in (0, 4, 8, 12)]
    assert list(rows["value"]) == expected
    assert expected[0] == 0.0 and expected[1] < expected[2] < expected[3]


def test_without_a_privacy_section_nothing_changes_and_old_run_ids_stay() -> None:
    cfg = loads_config(BASE)
    assert "privacy" not in cfg.run_dict() and build_privacy(cfg) is None
    private = loads_config(BASE + PRIVACY)
    assert private.run_dict()["privacy"] == {
        "clip": 0.5,
        "noise_multiplier": 1.5,
        "delta": 1e-4,
        "accountant": "rdp",
    }
    assert build_privacy(private) == Privacy(0.5, 1.5, 1e-4, "rdp")
    # runs group into replica batches only with the same privacy
    more = loads_config(BASE + PRIVACY.replace("1.5", "3.0"))
    assert len({replica_key(cfg), replica_key(private), replica_key(more)}) == 3
    assert replica_key(private) == replica_key(loads_config("seed = 4\n" + BASE + PRIVACY))


def test_private_seeds_run_as_one_replica_batch_each_recorded(tmp_path) -> None:
    configs = [loads_config(f"seed = {s}\n" + BASE + PRIVACY) for s in (0, 1)]
    batch = run_config(configs, Store(tmp_path / "a"))
    alone = [run_config(c, Store(tmp_path / "b")) for c in configs]
    for got, want in zip(batch, alone, strict=True):
        assert got.status == want.status == "finished"
        assert got.final["privacy/epsilon"] == want.final["privacy/epsilon"] > 0
        assert got.final["eval/loss@mean"] == pytest.approx(want.final["eval/loss@mean"], 1e-12)
    assert batch[0].final["eval/loss@mean"] != batch[1].final["eval/loss@mean"]


def test_the_report_of_a_private_run_shows_epsilon(tmp_path) -> None:
    from decent.report import write_report

    store = Store(tmp_path / "results")
    run_config(loads_config(BASE + PRIVACY), store)
    page = write_report(store, "dp", tmp_path / "report")
    text = page.read_text(encoding="utf-8")
    assert "privacy/epsilon" in text and "ε at δ, worst node (DP)" in text
    assert "against ε at δ, worst node (DP)" in text  # the objective against epsilon


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("clip = 0.5", "clip = 0.0", "privacy.clip: 0.0 -> must be > 0"),
        ("noise_multiplier = 1.5", "noise_multiplier = -1.0", "privacy.noise_multiplier: -1.0"),
        ("delta = 1e-4", "delta = 1.0", "privacy.delta: 1.0 -> must be < 1"),
        ("delta = 1e-4", "delta = 0.0", "privacy.delta: 0.0 -> must be > 0"),
        ("delta = 1e-4", 'accountant = "gdp"', "must be one of 'rdp' or 'prv'"),
        ("clip = 0.5", "clip = 0.5\nepsilon = 3.0", "privacy.epsilon: 3.0 -> unknown field"),
    ],
)
def test_bad_privacy_input_is_refused_before_training(old, new, expected) -> None:
    with pytest.raises(ConfigError) as err:
        build(loads_config(BASE + PRIVACY.replace(old, new)))
    assert any(expected in line for line in lines(err.value)), lines(err.value)


def test_sampling_with_replacement_is_refused_naming_the_fix() -> None:
    text = (BASE + PRIVACY).replace('sampling = "without_replacement"\n', "")
    with pytest.raises(ConfigError) as err:
        build(loads_config(text))
    (line,) = (x.strip() for x in lines(err.value))
    assert line.startswith('task.sampling: "with_replacement" ->')
    assert 'set sampling = "without_replacement" in [task]' in line
