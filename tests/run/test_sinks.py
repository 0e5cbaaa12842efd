"""TensorBoard and MLflow sinks: what they write is read back by each tool's own reader."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import decent
from decent.engine import Callback, DivergenceWarning, RunInfo, RunResult, train
from decent.results import MissingDependencyError, ResultsError, Store, flatten
from decent.run.sinks import (
    MLFLOW_STATUS,
    MLflowSink,
    TensorBoardSink,
    make_sinks,
    mlflow_metric_name,
)

pytest.importorskip("tensorboard", reason="the TensorBoard sink needs decent[tensorboard]")
pytest.importorskip("mlflow", reason="the MLflow sink needs decent[mlflow]")

from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator,
)
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util

ROOT = Path(__file__).resolve().parents[2]
CONFIG = {"algorithm": {"kind": "dsgd", "lr": 0.05}, "topology": {"kind": "ring"}, "seed": 0}


@pytest.fixture(autouse=True, scope="module")
def _no_telemetry():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        yield


def _train(callbacks, *, lr=0.05, rounds=20):
    task = decent.tasks.LeastSquares(num_nodes=8, dim=4, seed=0)
    comm = decent.SimCommunicator(decent.topology.ring(8))
    return train(decent.DSGD(lr=lr), task, comm, rounds=rounds, eval_every=5, callbacks=callbacks)


def _accumulator(run_dir) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _metrics(result: RunResult) -> list[str]:
    return sorted({k for row in result.records for k in row if k != "round"})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real 20-round D-SGD run logged to both sinks."""
    root = tmp_path_factory.mktemp("sinks")
    tb = TensorBoardSink(root / "tb", run_name="dsgd ring(8)", config=CONFIG)
    ml = MLflowSink(root / "mlruns", experiment="unit", run_name="dsgd-ring", config=CONFIG)
    result = _train([tb, ml])
    return result, tb, ml, root


def test_tensorboard_scalars_equal_the_records_per_step(trained):
    result, tb, _, _ = trained
    assert result.status == "finished"
    assert tb.run_dir is not None and tb.run_dir.name == "dsgd_ring_8_"
    acc = _accumulator(tb.run_dir)
    assert sorted(acc.Tags()["scalars"]) == _metrics(result)
    for key in _metrics(result):
        rounds, values = result.history(key)  # train/loss starts at round 5, not 0
        events = acc.Scalars(key)
        assert [e.step for e in events] == rounds
        # TensorBoard's scalar summaries hold float32
        assert [e.value for e in events] == [float(np.float32(v)) for v in values], key


def test_tensorboard_config_text_and_hparams(trained):
    result, tb, _, _ = trained
    acc = _accumulator(tb.run_dir)
    (text_event,) = acc.Tensors("config/text_summary")
    text = tensor_util.make_ndarray(text_event.tensor_proto).item().decode()
    assert json.loads(text) == CONFIG  # leading indentation is markdown's code block
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    assert start.hparams["algorithm.lr"].number_value == 0.05
    assert start.hparams["algorithm.kind"].string_value == "dsgd"
    assert start.hparams["decent.status"].string_value == "finished"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]
    ).experiment
    assert {m.name.tag for m in experiment.metric_infos} == set(_metrics(result))


def test_mlflow_metrics_params_and_status_read_back(trained):
    result, _, ml, root = trained
    client = MlflowClient(str(root / "mlruns"))
    run = client.get_run(ml.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "dsgd-ring"
    assert client.get_experiment(run.info.experiment_id).name == "unit"
    assert run.data.params == {
        k: (v if isinstance(v, str) else json.dumps(v)) for k, v in flatten(CONFIG).items()
    }
    assert json.loads(run.data.tags["decent.config"]) == CONFIG
    assert run.data.tags["decent.num_nodes"] == "8" and run.data.tags["decent.status"] == "finished"
    renamed = json.loads(run.data.tags["decent.metric_names"])
    assert renamed["eval/loss_at_mean"] == "eval/loss@mean"
    assert set(ml.metric_names) == set(_metrics(result))
    for key in _metrics(result):
        history = client.get_metric_history(ml.run_id, mlflow_metric_name(key))
        got = sorted((m.step, m.value) for m in history)
        assert got == list(zip(*result.history(key), strict=True)), key  # float64, exact


class _StopAt(Callback):
    def __init__(self, t: int) -> None:
        self.t = t

    def on_round(self, t: int) -> None:
        if t == self.t:
            raise KeyboardInterrupt


def test_diverged_and_interrupted_runs_end_failed_and_killed(tmp_path):
    tb = TensorBoardSink(tmp_path / "tb", run_name="div")
    ml = MLflowSink(tmp_path / "ml", run_name="div")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)
        diverged = _train([tb, ml], lr=1e4, rounds=200)
    assert diverged.status == "diverged"
    client = MlflowClient(str(tmp_path / "ml"))
    assert ml.run_id is not None  # set when the run started
    run = client.get_run(ml.run_id)
    assert run.info.status == MLFLOW_STATUS["diverged"] == "FAILED"
    assert run.data.tags["decent.message"] == diverged.message
    rounds = [int(r["round"]) for r in diverged.records]
    history = client.get_metric_history(ml.run_id, "eval/loss_at_mean")
    assert sorted(m.step for m in history) == rounds
    assert [e.step for e in _accumulator(tb.run_dir).Scalars("eval/loss@mean")] == rounds
    assert tb._writer is None  # closed

    tb2 = TensorBoardSink(tmp_path / "tb", run_name="stop")
    ml2 = MLflowSink(tmp_path / "ml", run_name="stop")
    with pytest.raises(KeyboardInterrupt):
        _train([tb2, ml2, _StopAt(7)])
    assert ml2.run_id is not None
    assert client.get_run(ml2.run_id).info.status == "KILLED"
    assert [e.step for e in _accumulator(tb2.run_dir).Scalars("eval/loss@mean")] == [0, 5]
    # both runs share the experiment "decent" (the default)
    assert client.get_run(ml2.run_id).info.experiment_id == run.info.experiment_id


def _manual_run(sink: Callback, value: float) -> None:
    info = RunInfo("dsgd", "least_squares", "ring", 4, 2, rounds=1, eval_every=1, seed=3)
    sink.on_start(info)
    sink.on_eval(0, {"eval/loss@mean": value})
    sink.on_end(
        RunResult(
            records=[{"round": 0.0, "eval/loss@mean": value}],
            status="finished",
            rounds_completed=1,
            info=info,
        )
    )


def test_rerun_with_same_name_gets_its_own_directory_and_defaults(tmp_path):
    first, second = TensorBoardSink(tmp_path), TensorBoardSink(tmp_path)
    _manual_run(first, 1.0)
    _manual_run(second, 2.0)
    assert first.run_dir == tmp_path / "dsgd_ring_n4_seed3"
    assert second.run_dir == tmp_path / "dsgd_ring_n4_seed3-1"
    assert [e.value for e in _accumulator(second.run_dir).Scalars("eval/loss@mean")] == [2.0]
    ml = MLflowSink(f"file:{tmp_path / 'ml'}")  # a file: URI works like a path
    _manual_run(ml, 1.5)
    assert ml.run_id is not None
    run = MlflowClient(f"file:{tmp_path / 'ml'}").get_run(ml.run_id)
    assert run.info.run_name == "dsgd_ring_n4_seed3"
    assert run.data.params["seed"] == "3" and run.data.params["task"] == "least_squares"


def test_mlflow_metric_names_keep_decent_names_readable():
    assert mlflow_metric_name("eval/subopt@node_max") == "eval/subopt_at_node_max"
    for name in ("comm/bytes", "consensus/dist2", "time/wall_s", "algorithm.lr", "grad_evals"):
        assert mlflow_metric_name(name) == name


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_mlflow_metric_names_pass_mlflows_own_validation(name):
    from mlflow.utils.validation import _validate_metric_name, _validate_param_name

    mapped = mlflow_metric_name(name)
    _validate_metric_name(mapped)
    _validate_param_name(mapped)
    assert mlflow_metric_name(mapped) == mapped  # idempotent


def test_missing_extras_name_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'decent\[tensorboard\]'"):
        TensorBoardSink(tmp_path)
    with pytest.raises(MissingDependencyError, match=r"pip install 'decent\[mlflow\]'"):
        make_sinks(mlflow=tmp_path)
    assert make_sinks() == []
    from decent.cli import app

    res = CliRunner().invoke(
        app,
        [
            "run",
            str(ROOT / "configs/dsgd.toml"),
            "--out",
            str(tmp_path / "r"),
            "--mlflow",
            str(tmp_path / "ml"),
            "--no-progress",
        ],
    )
    assert res.exit_code == 2 and "decent[mlflow]" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "r" / "decent.sqlite").exists()


def test_bad_arguments_are_results_errors(tmp_path):
    with pytest.raises(ResultsError, match="log_dir"):
        TensorBoardSink(3)  # type: ignore[arg-type]
    with pytest.raises(ResultsError, match="tracking_uri"):
        MLflowSink("")
    with pytest.raises(ResultsError, match="experiment"):
        MLflowSink(tmp_path, experiment=" ")
    with pytest.raises(ResultsError, match="config must be a dict"):
        TensorBoardSink(tmp_path, config=[1, 2])  # type: ignore[arg-type]


def test_cli_run_writes_readable_tensorboard_and_mlflow(tmp_path):
    from decent.cli import app

    out, tb, ml = tmp_path / "res", tmp_path / "tb", tmp_path / "ml"
    res = CliRunner().invoke(
        app,
        [
            "run",
            str(ROOT / "configs/dsgd.toml"),
            "--set",
            "rounds=10",
            "--out",
            str(out),
            "--tensorboard",
            str(tb),
            "--mlflow",
            str(ml),
            "--no-progress",
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    stored = Store(out).records()
    (study,) = set(stored["study"])
    (run_dir,) = [p for p in (tb / study).iterdir() if p.is_dir()]  # DIR/study/label
    acc = _accumulator(run_dir)
    assert len(set(stored["run_id"])) == 1
    assert set(acc.Tags()["scalars"]) == set(stored["metric"])
    for metric, rows in stored.groupby("metric"):
        rows = rows.sort_values("round")
        events = acc.Scalars(metric)
        assert [e.step for e in events] == [int(r) for r in rows["round"]]
        assert np.allclose([e.value for e in events], rows["value"], rtol=1e-6, atol=1e-30)
    client = MlflowClient(str(ml))
    (experiment,) = [e for e in client.search_experiments() if e.name == study]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["rounds"] == "10" and run.data.params["algorithm.kind"] == "dsgd"
    history = client.get_metric_history(run.info.run_id, "eval/loss_at_mean")
    want = stored[stored["metric"] == "eval/loss@mean"].sort_values("round")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == list(
        zip(want["round"].astype(int), want["value"], strict=True)
    )


def test_sweep_logs_every_run(tmp_path):
    from decent.config import load_config
    from decent.run import run_sweep

    path = tmp_path / "s.toml"
    path.write_text(
        'study = "sw"\nrounds = 6\neval_every = 3\nper_node_eval = false\n'
        '[topology]\nkind = "ring"\nnum_nodes = 4\n[algorithm]\nkind = "dsgd"\nlr = 0.05\n'
        '[task]\nkind = "least_squares"\ndim = 2\n[sweep]\nseeds = [0, 1]\n'
    )
    summary = run_sweep(
        load_config(path),
        tmp_path / "res",
        workers=1,
        progress=False,
        tensorboard=tmp_path / "tb",
        mlflow=tmp_path / "ml",
    )
    assert summary.count("finished") == 2
    dirs = sorted(p.name for p in (tmp_path / "tb" / "sw").iterdir())
    assert len(dirs) == 2 and dirs[0].endswith("seed=0") and dirs[1].endswith("seed=1")
    for d in dirs:
        assert [
            e.step for e in _accumulator(tmp_path / "tb" / "sw" / d).Scalars("eval/loss@mean")
        ] == [
            0,
            3,
            6,
        ]
    client = MlflowClient(str(tmp_path / "ml"))
    (experiment,) = [e for e in client.search_experiments() if e.name == "sw"]
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1"]
    assert all(r.info.status == "FINISHED" for r in runs)
