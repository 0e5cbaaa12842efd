"""The one way to run a config into the results store.

``decent run``, every sweep worker and every rank of a distributed run call
:func:`run_config`; what differs between the simulator and torch.distributed is only the
communicator factory (and, on ranks, which one records). Building, training, recording,
closing the transport and the outcome are written here once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from decent.config import CommFactory, Experiment, ExperimentConfig, build
from decent.engine import Callback, RunResult, train
from decent.results import Store, run_id_for
from decent.run import faults, resources
from decent.run.recorders import StoreRecorder

HEADLINE = ("eval/subopt@mean", "eval/test_accuracy@mean", "eval/accuracy@mean", "eval/loss@mean")
"""Metrics shown (first present) when a run ends."""


@dataclass(frozen=True)
class RunOutcome:
    """How one run ended.

    Attributes:
        run_id: the run's id in the store.
        label: its human-readable name.
        status: ``finished``, ``diverged``, ``failed``, ``interrupted`` or ``skipped``.
        final: the final metrics.
        message: why it stopped early (or failed).
        result: the engine's :class:`~decent.engine.RunResult` (``None`` when skipped or
            failed before training).
    """

    run_id: str
    label: str
    status: str
    final: dict[str, float] = field(default_factory=dict)
    message: str | None = None
    result: RunResult | None = field(default=None, compare=False, repr=False)

    def headline(self) -> str:
        """``subopt@mean=1.2e-03`` for the first headline metric present, else ``""``."""
        import math

        for key in HEADLINE:
            value = self.final.get(key)
            if value is not None and math.isfinite(value):
                return f"{key.split('/')[-1]}={value:.3e}"
        return ""


def run_label(config: ExperimentConfig) -> str:
    """A short human-readable name of a run: ``dsgd lr=0.05 ring(n=16) least_squares seed=0``."""
    if config.name:
        base = config.name
    else:
        lr = config.algorithm.lr
        lr_text = f"{lr:.3g}" if isinstance(lr, float) else lr.kind
        base = (
            f"{config.algorithm.kind} lr={lr_text} {config.topology.kind}"
            f"(n={config.topology.num_nodes}) {config.task.kind}"
        )
    return f"{base} seed={config.seed}"


def train_experiment(
    experiment: Experiment, callbacks: Sequence[Callback] = (), **kwargs: Any
) -> RunResult:
    """Train a built experiment with its config's rounds, seed and evaluation settings.

    ``kwargs`` go to :func:`decent.engine.train` (e.g. ``compile=True``).
    """
    cfg = experiment.config
    return train(
        experiment.algorithm,
        experiment.task,
        experiment.comm,
        rounds=cfg.rounds,
        seed=cfg.seed,
        eval_every=cfg.eval_every,
        per_node_eval=cfg.per_node_eval,
        divergence_factor=cfg.divergence_factor,
        callbacks=callbacks,
        topology_name=experiment.topology.name,
        **kwargs,
    )


def run_config(
    config: ExperimentConfig,
    store: Store | None,
    *,
    comm_factory: CommFactory | None = None,
    resolved: dict[str, Any] | None = None,
    label: str | None = None,
    force: bool = False,
    callbacks: Sequence[Callback] = (),
    recording: Callable[[], bool] | None = None,
    experiment: Experiment | None = None,
) -> RunOutcome:
    """Build ``config``, train it and record it in ``store``; skip it if already done.

    Args:
        config: one run's config (its ``sweep`` section is ignored).
        store: the results store; ``None`` records nothing.
        comm_factory: makes the communicator from the topology (default: the simulator);
            the distributed runtime passes its transport here.
        resolved: the config as stored (default ``config.run_dict()``; a distributed run
            adds its world size and mode).
        label: the run's name in the store (default :func:`run_label`).
        force: run again even if the store has it finished.
        callbacks: extra engine callbacks (a progress bar, sinks, fault injection).
        recording: whether this process writes the store now (default: always); a rank
            for which it is false stands by and takes over when it turns true (see
            :class:`~decent.run.recorders.StoreRecorder`).
        experiment: ``build(config, comm_factory)`` if already built.

    Returns:
        The :class:`RunOutcome`; ``status == "skipped"`` when the store already had it.

    Raises:
        ConfigError: the config cannot be built (nothing is written then).
        ResourceError: the run cannot fit in memory (checked before anything is allocated).
        KeyboardInterrupt: after the run is marked ``interrupted``.
    """
    resolved = config.run_dict() if resolved is None else resolved
    run_id = run_id_for(config.study, resolved)
    label = label or run_label(config)
    if store is not None and not force and store.is_finished(run_id):
        return RunOutcome(run_id, label, "skipped", store.final_values(run_id))
    if experiment is None:
        resources.check_config(config)
        experiment = build(config, comm_factory)
    comm = experiment.comm
    resources.check(
        experiment.algorithm, experiment.task, comm, per_node_eval=config.per_node_eval
    )
    recorder = None
    if store is not None:
        recorder = StoreRecorder(
            store,
            config.study,
            resolved,
            name=label,
            replace=force,
            extra=comm.metrics,
            active=recording,
        )
    try:
        every = [*([recorder] if recorder else []), *callbacks, *faults.from_env()]
        result = train_experiment(experiment, every)
    except BaseException as err:
        if recorder is not None:
            if isinstance(err, KeyboardInterrupt):
                recorder.abort("interrupted", "interrupted (Ctrl-C or SIGTERM)")
            else:
                recorder.abort("failed", err)
        with contextlib.suppress(Exception):  # the error above is the one to report
            comm.close()
        raise
    comm.close()
    if recorder is not None:
        recorder.close(result)
    return RunOutcome(run_id, label, result.status, result.final, result.message, result)


__all__ = ["HEADLINE", "RunOutcome", "run_config", "run_label", "train_experiment"]
