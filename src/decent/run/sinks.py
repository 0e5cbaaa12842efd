"""Optional sinks: stream a run's records into TensorBoard event files or MLflow.

The results store (:class:`decent.results.Store`) stays the record of truth; these engine
callbacks copy every evaluation into the tools users already have. Both are extras::

    pip install 'decent[tensorboard]'     # TensorBoardSink (torch.utils.tensorboard)
    pip install 'decent[mlflow]'          # MLflowSink (mlflow-skinny, no server needed)

Example::

    from decent.run.sinks import MLflowSink, TensorBoardSink

    result = decent.train(
        algorithm, task, comm, rounds=200,
        callbacks=[TensorBoardSink("tb"), MLflowSink("mlruns", experiment="ring-vs-torus")],
    )

Nothing here imports ``tensorboard`` or ``mlflow`` at module import time; a sink imports its
tool when constructed and raises :class:`~decent.results.MissingDependencyError` naming the
extra to install when it is missing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from decent._names import shown
from decent.engine import Callback, RunInfo, RunResult
from decent.results import MissingDependencyError, ResultsError, flatten

MLFLOW_STATUS = {"finished": "FINISHED", "diverged": "FAILED", "interrupted": "KILLED"}
"""decent's run status -> MLflow's run status."""

_MLFLOW_BAD_CHARS = re.compile(r"[^\w/.\- ]")
_RUN_DIR_BAD_CHARS = re.compile(r"[^\w.,=+@/-]")
_MLFLOW_BATCH = 100  # MLflow accepts at most 100 params (1000 metrics) per log_batch call
_MAX_PART = 100  # bytes of one directory name (file systems allow 255; -k suffixes need room)
_MLFLOW_DATABASES = ("sqlite", "postgresql", "mysql", "mssql")


def _require(module: str, extra: str, who: str) -> Any:
    """Import ``module`` or raise a :class:`MissingDependencyError` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(
            f"{who} needs the optional dependency '{extra}' ({err}); "
            f"install it with: pip install 'decent[{extra}]'"
        ) from err


def mlflow_metric_name(name: str) -> str:
    """Map a decent metric (or config) name to a key MLflow accepts.

    MLflow keys may contain only letters, digits, ``_ - . /`` and spaces (``:`` too, but not
    on Windows), and must be normalized paths. The mapping:

    - ``@`` (decent's "aggregated over nodes by") becomes ``_at_``;
    - every other character outside that set (``:`` included) becomes ``_``;
    - empty ``/`` segments are dropped, and a segment that is ``.`` or starts with ``..`` gets
      a ``_`` prefix; an empty name becomes ``_``.

    decent's own names (``eval/loss@mean``, ``comm/bytes``, ``algorithm.lr``) only meet the
    first rule; names MLflow already accepts are returned unchanged.

    Example:
        >>> mlflow_metric_name("eval/loss@mean")
        'eval/loss_at_mean'
        >>> mlflow_metric_name("comm/bytes")
        'comm/bytes'
    """
    text = _MLFLOW_BAD_CHARS.sub("_", name.replace("@", "_at_"))
    parts = [p for p in text.split("/") if p]
    parts = ["_" + p if p == "." or p.startswith("..") else p for p in parts]
    return "/".join(parts) or "_"


def _run_dir_name(name: str) -> str:
    """A directory name for a run: ``/`` keeps nesting, spaces and other odd characters -> _.

    A part longer than ``_MAX_PART`` bytes (file systems refuse names over 255) is cut to its
    first 80 characters plus ``-`` and 12 hex digits of its SHA-256, so long names that
    differ stay apart.
    """
    parts = [_RUN_DIR_BAD_CHARS.sub("_", p) for p in name.split("/") if p not in ("", ".", "..")]
    parts = [_short_part(p) for p in parts]
    return "/".join(parts) or "run"


def _short_part(part: str) -> str:
    if len(part.encode()) <= _MAX_PART:
        return part
    digest = hashlib.sha256(part.encode()).hexdigest()[:12]
    head = part[:80].encode()[:80].decode(errors="ignore")
    return f"{head}-{digest}"


def _default_run_name(info: RunInfo) -> str:
    return f"{info.algorithm}_{info.topology}_n{info.num_nodes}_seed{info.seed}"


_INFO = ("algorithm", "task", "topology", "num_nodes", "dim", "rounds", "eval_every", "seed")


def _info_params(info: RunInfo) -> dict[str, Any]:
    return {k: getattr(info, k) for k in _INFO}


def _check_config(config: Mapping[str, Any] | None, who: str) -> dict[str, Any] | None:
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise ResultsError(
            f"{who}: config must be a dict (e.g. ExperimentConfig.run_dict()), got "
            f"{type(config).__name__}; pass config=cfg.run_dict() or leave it out"
        )
    return dict(config)


def _scalar(value: Any) -> int | float | str | bool:
    """A value TensorBoard's hparams accept (None and lists become text)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value)


class TensorBoardSink(Callback):
    """Write every evaluation's metrics as TensorBoard scalars, one event directory per run.

    Each run gets ``log_dir/run_name`` (a ``torch.utils.tensorboard.SummaryWriter``; if that
    directory already holds files, ``-1``, ``-2``, ... is appended so reruns never mix). At
    every evaluation round ``t`` each metric ``m`` is written as
    ``add_scalar(m, value, global_step=t)``, with decent's metric names unchanged as tags.
    The config is written once as text (tag ``config``, a JSON block), and at the end an
    HParams summary (the flattened config as hyperparameters, the final metrics' tags as its
    metrics) so TensorBoard's HParams tab compares runs. Events are flushed after every
    evaluation and the writer is closed at the end, also when the run diverged or was
    interrupted.

    Args:
        log_dir: root directory of the event files (``tensorboard --logdir log_dir``).
        run_name: the run's subdirectory (default ``{algorithm}_{topology}_n{n}_seed{seed}``);
            ``/`` nests, other characters outside ``[A-Za-z0-9_.,=+@-]`` become ``_``, and a
            part over 100 bytes is cut to 80 characters plus a hash of the whole.
        config: the resolved config (``ExperimentConfig.run_dict()``); default: the fields of
            the engine's :class:`~decent.engine.RunInfo`.

    Raises:
        MissingDependencyError: when ``tensorboard`` is not installed.
        ResultsError: when ``log_dir`` or ``config`` has the wrong type.

    Attributes:
        run_dir: the directory of the last run started (``None`` before ``on_start``).
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        *,
        run_name: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(log_dir, (str, os.PathLike)) or not str(log_dir):
            raise ResultsError(
                f"TensorBoardSink: log_dir must be a directory path, got {log_dir!r}; "
                "pass e.g. TensorBoardSink('runs/tb')"
            )
        self._tb = _require("torch.utils.tensorboard", "tensorboard", "TensorBoardSink")
        self.log_dir = Path(log_dir)
        # made now, so that an unwritable or mistyped path fails before training starts
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.run_name = run_name
        self.config = _check_config(config, "TensorBoardSink")
        self.run_dir: Path | None = None
        self._writer: Any = None
        self._config: dict[str, Any] = {}

    def _unique_dir(self, name: str) -> Path:
        base = self.log_dir / _run_dir_name(name)
        candidate, k = base, 0
        while True:
            try:
                candidate.mkdir(parents=True, exist_ok=False)
                return candidate
            except FileExistsError:
                if candidate.is_dir() and not any(candidate.iterdir()):
                    return candidate
                k += 1
                candidate = base.with_name(f"{base.name}-{k}")

    def on_start(self, info: RunInfo) -> None:
        self.run_dir = self._unique_dir(self.run_name or _default_run_name(info))
        self._writer = self._tb.SummaryWriter(log_dir=str(self.run_dir))
        self._config = self.config if self.config is not None else _info_params(info)
        text = json.dumps(self._config, indent=2, sort_keys=True, default=str)
        # indent by 4 so TensorBoard's markdown renders it as a code block
        self._writer.add_text("config", "    " + text.replace("\n", "\n    "), global_step=0)

    def on_eval(self, t: int, metrics: dict[str, float]) -> None:
        if self._writer is None:
            return
        for key, value in metrics.items():
            self._writer.add_scalar(key, float(value), global_step=t)
        self._writer.flush()

    def on_end(self, result: RunResult) -> None:
        if self._writer is None:
            return
        try:
            from torch.utils.tensorboard.summary import hparams

            hparam_dict = {k: _scalar(v) for k, v in flatten(self._config).items()}
            hparam_dict["decent.status"] = result.status
            final = {k: v for k, v in result.final.items() if k != "round" and math.isfinite(v)}
            file_writer = self._writer._get_file_writer()
            for summary in hparams(hparam_dict, final):
                file_writer.add_summary(summary)
        finally:
            self._writer.flush()
            self._writer.close()
            self._writer = None


class MLflowSink(Callback):
    """Log a run to MLflow: the flattened config as params, every metric per round, the status.

    The run is created at the start in ``experiment`` (created if missing) and ended at the
    end with status ``FINISHED`` (decent ``finished``), ``FAILED`` (``diverged``) or ``KILLED``
    (``interrupted``); a process killed outright leaves it ``RUNNING``, as the store leaves its
    run unfinished. Each evaluation round ``t`` logs every metric with ``step=t`` (non-finite
    values included, as MLflow stores them). Metric names MLflow rejects are mapped by
    :func:`mlflow_metric_name` (``eval/loss@mean`` -> ``eval/loss_at_mean``); the mapping of the
    renamed ones is kept in the run's tag ``decent.metric_names`` (JSON, MLflow name -> decent
    name). Params are the flattened config (``decent.results.flatten``: ``algorithm.lr``, ...).

    A tracking URI without a scheme, or with ``file:``, is MLflow's file store (a directory,
    no server). MLflow 3 refuses file stores unless ``MLFLOW_ALLOW_FILE_STORE`` is set; for
    such URIs this sink sets it to ``true`` when it is unset. Database (``sqlite:///...``,
    needs the full ``mlflow`` package) and ``http(s)://`` server URIs are passed through.
    MLflow's usage telemetry (which writes under ``$HOME``) is turned off unless
    ``MLFLOW_DISABLE_TELEMETRY`` is already set.

    Args:
        tracking_uri: e.g. ``"mlruns"``, ``"file:///abs/mlruns"``, ``"http://host:5000"``.
        experiment: the MLflow experiment name (the CLI passes the study).
        run_name: the MLflow run name (default ``{algorithm}_{topology}_n{n}_seed{seed}``).
        config: the resolved config (``ExperimentConfig.run_dict()``); default: the fields of
            the engine's :class:`~decent.engine.RunInfo`.

    Raises:
        MissingDependencyError: when ``mlflow`` (``mlflow-skinny``) is not installed.
        ResultsError: for an empty ``tracking_uri`` or ``experiment``, a URI MLflow cannot
            use (``bogus://x``) or a server that does not answer (checked here once, no
            retries, before any run starts), or a non-dict config; later MLflow errors in
            ``on_start`` are one such line too.

    Attributes:
        run_id: the MLflow run id of the last run started (``None`` before ``on_start``).
        metric_names: decent metric name -> MLflow key, for every metric logged.
    """

    def __init__(
        self,
        tracking_uri: str | os.PathLike[str],
        *,
        experiment: str = "decent",
        run_name: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        uri = os.fspath(tracking_uri) if isinstance(tracking_uri, (str, os.PathLike)) else None
        if not uri:
            raise ResultsError(
                f"MLflowSink: tracking_uri must be a directory or an MLflow URI, got "
                f"{tracking_uri!r}; pass e.g. MLflowSink('mlruns')"
            )
        if not isinstance(experiment, str) or not experiment.strip():
            raise ResultsError(
                f"MLflowSink: experiment must be a non-empty name, got {experiment!r}; "
                "pass e.g. experiment='my-study'"
            )
        # MLflow's usage telemetry writes under $HOME; a run writes only where it is told
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        self._mlflow = _require("mlflow", "mlflow", "MLflowSink")
        self.tracking_uri = uri
        self.experiment = experiment
        self.run_name = run_name
        self.config = _check_config(config, "MLflowSink")
        self.run_id: str | None = None
        self.metric_names: dict[str, str] = {}
        self._client: Any = None
        client = self._new_client()  # a URI MLflow cannot use fails here, before training
        if not self._is_file_store():  # a server: one quick look, no retries, 10 s at most
            quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
            saved = {k: os.environ.get(k) for k in quick}
            os.environ.update({k: v for k, v in quick.items() if saved[k] is None})
            try:
                self._call(client.search_experiments, max_results=1)
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call an MLflow client method; an MLflow error becomes one :class:`ResultsError` line."""
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kwargs)
        except MlflowException as err:
            text = " ".join(str(err.message if hasattr(err, "message") else err).split())
            raise ResultsError(
                f"MLflowSink: the tracking URI {shown(repr(self.tracking_uri))} failed: "
                f"{shown(text[:300])}; start the MLflow server there, or pass a directory "
                "(e.g. --mlflow mlruns)"
            ) from None

    def _new_client(self) -> Any:
        """An ``MlflowClient`` for the URI; one :class:`ResultsError` line if it cannot be."""
        from mlflow.tracking import MlflowClient

        uri = self.tracking_uri
        if self._is_file_store():
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            if not uri.startswith("file:"):
                # MLflow caches stores by URI: a relative path would keep pointing at the
                # directory of the first working directory it was used in
                uri = Path(uri).resolve().as_uri()
        try:
            return MlflowClient(tracking_uri=uri)
        except Exception as err:  # MLflow raises many kinds for a URI it cannot use
            scheme = uri.split(":", 1)[0]
            hint = (
                " (a database URI needs the full MLflow: pip install mlflow)"
                if scheme.split("+")[0] in _MLFLOW_DATABASES
                else ""
            )
            raise ResultsError(
                f"MLflowSink: cannot use the tracking URI {shown(repr(self.tracking_uri))} "
                f"({type(err).__name__}){hint}; pass a directory (e.g. --mlflow mlruns), "
                "file:///abs/dir or http(s)://host:port"
            ) from None

    def _is_file_store(self) -> bool:
        scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", self.tracking_uri)
        # one-letter "schemes" are Windows drive letters
        return scheme is None or len(scheme.group(1)) == 1 or scheme.group(1) == "file"

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        found = self._client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self._client.create_experiment(self.experiment))
        except MlflowException:  # another sweep worker created it first
            found = self._client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return str(found.experiment_id)

    def on_start(self, info: RunInfo) -> None:
        from mlflow.entities import Param, RunTag

        self._client = self._new_client()
        tags = {f"decent.{k}": str(v) for k, v in _info_params(info).items()}
        run = self._call(
            self._client.create_run,
            self._call(self._experiment_id),
            run_name=self.run_name or _default_run_name(info),
            tags=tags,
        )
        self.run_id = str(run.info.run_id)
        self.metric_names = {}
        config = self.config if self.config is not None else _info_params(info)
        params = [
            Param(mlflow_metric_name(k), v if isinstance(v, str) else json.dumps(v))
            for k, v in flatten(config).items()
        ]
        for i in range(0, len(params), _MLFLOW_BATCH):
            self._client.log_batch(self.run_id, params=params[i : i + _MLFLOW_BATCH])
        text = json.dumps(config, sort_keys=True, default=str)
        self._client.log_batch(self.run_id, tags=[RunTag("decent.config", text)])

    def on_eval(self, t: int, metrics: dict[str, float]) -> None:
        if self._client is None or self.run_id is None:
            return
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = []
        for key, value in metrics.items():
            name = self.metric_names.setdefault(key, mlflow_metric_name(key))
            batch.append(Metric(name, float(value), stamp, int(t)))
        for i in range(0, len(batch), _MLFLOW_BATCH):
            self._client.log_batch(self.run_id, metrics=batch[i : i + _MLFLOW_BATCH])

    def on_end(self, result: RunResult) -> None:
        if self._client is None or self.run_id is None:
            return
        try:
            renamed = {v: k for k, v in self.metric_names.items() if k != v}
            if renamed:
                text = json.dumps(renamed, sort_keys=True)
                self._client.set_tag(self.run_id, "decent.metric_names", text)
            self._client.set_tag(self.run_id, "decent.status", result.status)
            if result.message:
                self._client.set_tag(self.run_id, "decent.message", result.message)
        finally:
            self._client.set_terminated(self.run_id, MLFLOW_STATUS.get(result.status, "FAILED"))
            self._client = None


def make_sinks(
    tensorboard: str | os.PathLike[str] | None = None,
    mlflow: str | os.PathLike[str] | None = None,
    *,
    run_name: str | None = None,
    config: Mapping[str, Any] | None = None,
    experiment: str = "decent",
) -> list[Callback]:
    """Build the sinks asked for (the CLI's ``--tensorboard DIR`` and ``--mlflow URI``).

    The TensorBoard run directory is ``tensorboard/experiment/run_name``, so the runs of
    different studies stay apart; MLflow gets ``experiment`` as its experiment.

    Args:
        tensorboard: TensorBoard root directory, or ``None`` for no TensorBoard sink.
        mlflow: MLflow tracking URI, or ``None`` for no MLflow sink.
        run_name: the run's name in both tools.
        config: the resolved config logged with the run.
        experiment: the MLflow experiment (the CLI passes the study name).

    Returns:
        A list of zero, one or two callbacks.

    Raises:
        MissingDependencyError: when a requested tool is not installed.
    """
    sinks: list[Callback] = []
    if mlflow is not None:  # first: a URI MLflow refuses must leave no TensorBoard folder
        sinks.append(MLflowSink(mlflow, experiment=experiment, run_name=run_name, config=config))
    if tensorboard is not None:
        log_dir = Path(tensorboard) / _run_dir_name(experiment)
        sinks.insert(0, TensorBoardSink(log_dir, run_name=run_name, config=config))
    return sinks


__all__ = [
    "MLFLOW_STATUS",
    "MLflowSink",
    "TensorBoardSink",
    "make_sinks",
    "mlflow_metric_name",
]
