"""Finite-data tasks: any ``torch.nn.Module`` plus a loss over partitioned data.

:class:`ModuleTask` adapts a module to the functional :class:`~decent.tasks.base.Task`
protocol through ``torch.func.functional_call``: the flat ``(d,)`` parameter vector is split
into views shaped like the module's named parameters, so ``torch.func.vmap`` over a leading
node axis turns every layer into one batched op (``(m, B, f) x (m, f, h)``), and gradients
of all nodes come from one ``vmap(grad_and_value(task.loss))`` call.

Node ``i``'s local objective is the mean loss over its shard ``S_i`` plus an optional ridge
term,

.. math:: f_i(x) = \\frac{1}{|S_i|} \\sum_{j \\in S_i} \\ell(x; z_j) + \\frac{l_2}{2}\\|x\\|^2,
    \\qquad f = \\frac1n \\sum_i f_i,

and a minibatch draws ``batch_size`` indices uniformly with replacement from ``S_i``, so
its gradient is unbiased for ``grad f_i``.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import annotated_types as at
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from decent import _stream
from decent._params import SEED, SIZE, Doc, check_value, checked_args
from decent._stack import ReplicaError, check_family, interleave
from decent._types import Batch, Params
from decent.tasks._checks import L2, BatchSize, Nodes, PartitionSeed, SamplingArg
from decent.tasks._convnet import ConvNet1d
from decent.tasks._optim import minimize_convex, newton_minimize
from decent.tasks.base import SUBOPTIMALITY, Objective, TaskError
from decent.tasks.data import Dataset, DatasetSplit
from decent.tasks.partition import PARTITIONERS

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(outputs (B, ...), labels (B,)) -> scalar`` mean loss; must be vmappable."""

Augment = Callable[
    [tuple[torch.Tensor, torch.Tensor], torch.Generator], tuple[torch.Tensor, torch.Tensor]
]
"""``((x (B, ...), y (B,)), generator) -> (x, y)``: one node's minibatch, augmented."""

_INDEX_STREAM = 0x0DA7_A001
_DISTINCT_STREAM = 0x0DA7_A002

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
}


_CNN_ROWS = 32
"""Rows per slice of the CNN's closed form (:meth:`ModuleTask._cnn_grad_and_loss`): 32 rows
of the study's CNN (batch 32) keep a layer's float32 activations near 2.6 MB; all 256 rows
at once ran 1.3x slower."""

_UNKEYED_RANDOM = (nn.AlphaDropout, nn.FeatureAlphaDropout, nn.RReLU)
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_DROPOUT_STREAM = 0x0DA7_A003
_AUGMENT_STREAM = 0x0DA7_A004
_MASK32 = 0xFFFF_FFFF


def _check_module(module: nn.Module) -> None:
    for name, sub in module.named_modules():
        where = f"module layer {name or '<root>'!r} is {type(sub).__name__}"
        if isinstance(sub, nn.SyncBatchNorm):
            raise TaskError(
                f"{where}, which synchronises statistics across processes; each node keeps "
                "its own statistics here: use torch.nn.BatchNorm1d/2d/3d"
            )
        if isinstance(sub, _UNKEYED_RANDOM):
            raise TaskError(
                f"{where}, a random layer whose draws cannot be keyed by (seed, node, round); "
                "use torch.nn.Dropout (or Dropout1d/2d/3d), which decent keys per node"
            )


def _mix32(h: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (Wellons' lowbias32) in int64 arithmetic that cannot overflow:
    operands stay below ``2^32`` and both multipliers below ``2^31``."""
    h = h ^ (h >> 16)
    h = (h * 0x21F0AAAD) & _MASK32
    h = h ^ (h >> 15)
    h = (h * 0x735A2D97) & _MASK32
    return h ^ (h >> 15)


def dropout_keep(key: torch.Tensor, salt: int, shape: Sequence[int], p: float) -> torch.Tensor:
    """The keep mask of a keyed dropout layer: ``True`` with probability ``1 - p``.

    Element ``j`` (row-major in ``shape``) is kept when the top 24 bits of
    ``mix(mix(key ^ salt) ^ j)`` are at least ``round(p * 2^24)``, with ``mix`` a 32-bit
    integer hash. ``key`` is a row's 32-bit key (a pure function of ``(seed, node, t)``),
    ``salt`` the layer's; so the mask is the same wherever the node is held, and it works
    under ``torch.func.vmap`` (pure tensor arithmetic, no generator).
    """
    numel = 1
    for size in shape:
        numel *= int(size)
    index = torch.arange(numel, dtype=torch.int64, device=key.device).view(tuple(shape))
    bits = _mix32(_mix32((key ^ salt) & _MASK32) ^ index)
    return (bits >> 8) >= round(p * (1 << 24))


class KeyedDropout(nn.Module):
    """Dropout whose mask is a function of a per-row key, not of a global generator.

    :class:`ModuleTask` puts one in place of every ``torch.nn.Dropout`` (``Dropout1d/2d/3d``
    drop whole channels) of its training copy of the module and passes each node's key of
    the round as the buffer ``key``, so node ``i``'s mask at round ``t`` depends only on
    ``(seed, i, t)`` and the layer: the same in the simulator, on any rank and in any
    replica batch. ``output = input * keep / (1 - p)`` (see :func:`dropout_keep`); the
    identity in ``eval()`` mode.
    """

    def __init__(self, p: float, channels: bool, salt: int) -> None:
        super().__init__()
        self.p = float(p)
        self.channels = channels
        self.salt = salt & _MASK32
        self.register_buffer("key", torch.zeros((), dtype=torch.int64), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p >= 1.0:
            return x * 0.0
        shape = tuple(x.shape[:2]) + (1,) * (x.ndim - 2) if self.channels else tuple(x.shape)
        keep = dropout_keep(self.key, self.salt, shape, self.p)  # type: ignore[arg-type]
        return x * (keep.to(x.dtype) * (1.0 / (1.0 - self.p)))


def _training_copy(module: nn.Module) -> tuple[nn.Module, list[str]]:
    """A deep copy in ``train()`` mode with keyed dropout; the paths of its dropout layers."""
    twin = copy.deepcopy(module).train()
    paths: list[str] = []
    for name, sub in list(twin.named_modules()):
        if isinstance(sub, _DROPOUTS) and name:
            parent_name, _, attr = name.rpartition(".")
            parent = twin.get_submodule(parent_name) if parent_name else twin
            salt = (len(paths) + 1) * 0x9E3779B9
            channels = not isinstance(sub, nn.Dropout)
            setattr(parent, attr, KeyedDropout(sub.p, channels, salt).train())
            paths.append(name)
        elif isinstance(sub, _DROPOUTS):
            raise TaskError(
                "module is itself a Dropout layer; wrap it in a model (e.g. torch.nn.Sequential)"
            )
    return twin, paths


def _state_buffer_names(module: nn.Module) -> list[str]:
    """Buffers that training changes: the running statistics of normalisation layers."""
    names = []
    for prefix, sub in module.named_modules():
        if isinstance(sub, nn.modules.batchnorm._NormBase) and sub.track_running_stats:
            for bname, buf in sub.named_buffers(recurse=False):
                if buf is not None:
                    names.append(f"{prefix}.{bname}" if prefix else bname)
    return names


def _cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy ``(B,)``: of logits ``(B, C)`` and labels ``(B,)``, or, for
    sequence targets ``y (B, L)`` and logits ``(B, L, C)``, each sample's mean over its ``L``
    positions (token-level cross-entropy; every window has the same ``L``, so the mean over
    samples is the mean over tokens)."""
    if y.ndim == 2:
        return F.cross_entropy(out.transpose(1, 2), y, reduction="none").mean(dim=1)
    return F.cross_entropy(out, y, reduction="none")


def _per_sample(loss: str | LossFn) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Return ``(outputs (B, ...), labels (B,)) -> (B,)`` per-sample losses."""
    if loss == "cross_entropy":
        return _cross_entropy
    if loss == "bce":

        def bce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            logits = out.reshape(out.shape[0])
            return F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype), reduction="none")

        return bce
    if callable(loss):
        fn = loss
        return torch.func.vmap(lambda o, y: fn(o[None], y[None]))
    raise TaskError(
        f"loss must be 'cross_entropy', 'bce' or a callable (outputs, labels) -> scalar, "
        f"got {loss!r}"
    )


def _correct(loss: str | LossFn, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
    if loss == "cross_entropy":  # sequence targets: the share of positions right per sample
        right = (out.argmax(dim=-1) == y).to(out.dtype)
        return right.mean(dim=-1) if y.ndim == 2 else right
    if loss == "bce":
        logits = out.reshape(out.shape[0], -1)  # (k, B): one logit per sample
        return ((logits > 0).to(torch.int64) == y).to(out.dtype)
    return None


class TaskWarning(UserWarning):
    """A task that works but probably not as meant (the message says why and what to do)."""


class ModuleTask:
    """A ``torch.nn.Module`` and a loss over data partitioned across nodes.

    Batches are tuples ``(x (m, B, f), y (m, B))``, or ``y (m, B, L)`` for a dataset of
    sequence targets (see :meth:`sample` for what else they may carry). The module is deep-copied and cast to the dataset's dtype. Training uses a
    ``train()``-mode copy, evaluation an ``eval()``-mode one, so the simulator trains what
    the ranks train:

    * **Running statistics** (BatchNorm and other layers that track them): each node
      normalises with its own minibatch's statistics and keeps its own running statistics,
      a row of ``buffer_dim`` values per node that the gradient oracle carries from round
      to round (:meth:`init_buffers`, :meth:`loss_and_buffers`). Evaluation of the network
      average uses the nodes' average buffers, evaluation of node ``i`` its own
      (:meth:`evaluate` with ``buffers``).
    * **Dropout** (``nn.Dropout``, ``Dropout1d/2d/3d``) is replaced by
      :class:`KeyedDropout`: node ``i``'s mask at round ``t`` is a function of
      ``(seed, i, t)`` and the layer only, so a run is reproducible and the same wherever a
      node is held (any number of nodes per process, any replica batch). Random layers
      that cannot be keyed (``AlphaDropout``, ``RReLU``) are rejected.
    * **Augmentation**: ``augment(batch, generator)`` maps one node's minibatch
      ``(x (B, ...), y (B,))`` to an augmented one of the same shapes, drawing from
      ``generator``, seeded from ``(seed, node, t)``. It is called once per node and round
      (a Python call per node: keep it to batched tensor ops).

    Other buffers are constants.

    Args:
        module: the model; its parameters define ``d`` and the flattening order
            (``named_parameters()``).
        dataset: training data; ``dataset.features`` are the module's inputs.
        partition: ``n`` index tensors into ``dataset``, node ``i``'s shard ``S_i``; none may
            be empty. Shards may overlap (each node still weighs its own shard equally).
        loss: ``"cross_entropy"`` (logits ``(B, C)``; for sequence targets ``(B, L)``
            logits ``(B, L, C)``, the loss and accuracy of a sample being its mean over the
            ``L`` positions), ``"bce"`` (one logit per sample) or a callable
            ``(outputs, labels) -> scalar`` mean loss.
        batch_size: samples per node per round.
        sampling: ``"with_replacement"`` (default): ``batch_size`` indices drawn uniformly
            from the shard, independently; ``"without_replacement"``: ``min(batch_size,
            |S_i|)`` distinct indices of the shard each round (a node with fewer samples
            than ``batch_size`` uses all of them). Either way a pure function of
            ``(seed, node, t)``.
        init: the common start point: ``"module"`` (default) keeps the module's parameters
            as you built or initialised them, for every seed; ``"reset"`` re-initialises
            the module under ``torch.manual_seed(seed)`` (``reset_parameters()`` of every
            submodule), so each seed starts elsewhere.
        test: optional held-out dataset for ``test_loss`` / ``test_accuracy``.
        seed: default seed (kept for reference; ``sample`` and ``init_params`` take theirs).
        optimum: known ``f*`` if any.
        l2: ridge coefficient added to every node's loss.
        name: task name; default ``"<dataset>_<module class>"``.
        device: where data lives and batches are produced; default the dataset's device.
        augment: optional ``(batch, generator) -> batch`` for one node's ``(x, y)`` (see
            above).
        closed_form: give the batched closed-form gradients of :attr:`grad_and_loss` where
            the module has them (default); ``False``: always ``vmap(grad(loss))`` (equal to
            rounding; for results made that way to reproduce bit for bit).

    Attributes:
        buffer_dim: values per node of the running statistics (``0``: a stateless model).
        stochastic: whether the model has dropout (batches then carry a key per row).

    Raises:
        TaskError: for ``SyncBatchNorm`` or an unkeyable random layer, an empty or
            out-of-range shard, or a bad argument.
    """

    @checked_args("ModuleTask", TaskError)
    def __init__(
        self,
        module: nn.Module,
        dataset: Dataset,
        partition: Sequence[torch.Tensor | np.ndarray | Sequence[int]],
        *,
        loss: str | LossFn = "cross_entropy",
        batch_size: BatchSize = 32,
        sampling: SamplingArg = "with_replacement",
        init: Literal["module", "reset"] = "module",
        test: Dataset | None = None,
        seed: PartitionSeed = 0,
        optimum: float | None = None,
        l2: L2 = 0.0,
        name: str | None = None,
        device: torch.device | str | None = None,
        augment: Augment | None = None,
        closed_form: bool = True,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise TaskError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if not isinstance(dataset, Dataset):
            raise TaskError(
                f"dataset must be a decent.tasks.Dataset, got {type(dataset).__name__}; "
                "wrap arrays with decent.tasks.from_numpy(X, y)"
            )
        _check_module(module)
        self._per_sample_loss = _per_sample(loss)
        self._loss_kind = loss
        self.batch_size = batch_size
        self.sampling = sampling
        self.init = init
        self.seed = seed
        self.l2 = float(l2)
        self.dtype: torch.dtype = dataset.features.dtype
        self.device = torch.device(device) if device is not None else dataset.features.device
        self.name = name or f"{dataset.name}_{type(module).__name__.lower()}"
        self.optimum: float | None = optimum

        if augment is not None and not callable(augment):
            raise TaskError(
                f"augment must be a callable (batch, generator) -> batch, got {augment!r}"
            )
        self.augment = augment
        self.module = copy.deepcopy(module).to(dtype=self.dtype, device=self.device).eval()
        named = list(self.module.named_parameters())
        if not named:
            raise TaskError("module has no parameters; nothing to train")
        self._names = [n for n, _ in named]
        self._shapes = [tuple(p.shape) for _, p in named]
        self._numels = [p.numel() for _, p in named]
        self.dim = int(sum(self._numels))
        self._set_buffers()
        self._mlp_plan = self._plan_mlp()
        self.closed_form = closed_form

        self.train = dataset.to(device=self.device)
        self.test = test.to(dtype=self.dtype, device=self.device) if test is not None else None
        self.eval_size = len(self.train) + (len(self.test) if self.test is not None else 0)
        self._build_partition(partition)
        self._cnn_plan = self._plan_cnn()

    # ---------------------------------------------------------------- set-up

    def _build_partition(self, partition: Sequence[Any]) -> None:
        if isinstance(partition, torch.Tensor) or not isinstance(partition, Sequence):
            raise TaskError(
                "partition must be a list of per-node index arrays, e.g. "
                "decent.tasks.partition.iid(dataset.labels, num_nodes, seed=0)"
            )
        n_data = len(self.train)
        shards = [torch.as_tensor(np.asarray(s), dtype=torch.int64).reshape(-1) for s in partition]
        if not shards:
            raise TaskError("partition is empty; it needs one index array per node")
        for i, s in enumerate(shards):
            if s.numel() == 0:
                raise TaskError(
                    f"partition[{i}] is empty; every node needs data (use min_size=1 in "
                    "dirichlet or fewer nodes)"
                )
            if int(s.min()) < 0 or int(s.max()) >= n_data:
                raise TaskError(
                    f"partition[{i}] has indices outside [0, {n_data}) "
                    f"(range [{int(s.min())}, {int(s.max())}]); index the training set"
                )
        self.num_nodes = len(shards)
        self.partition: list[torch.Tensor] = shards
        lengths = torch.tensor([s.numel() for s in shards], dtype=torch.int64)
        table = torch.zeros(self.num_nodes, int(lengths.max()), dtype=torch.int64)
        for i, s in enumerate(shards):  # set-up only; sampling is a single gather
            table[i, : s.numel()] = s
        self._lengths = lengths.to(self.device)
        self._table = table.to(self.device)
        short = int(lengths.argmin())
        if self.sampling == "with_replacement" and int(lengths[short]) < self.batch_size:
            warnings.warn(
                f"node {short} holds {int(lengths[short])} samples, fewer than batch_size="
                f"{self.batch_size}: its minibatches repeat samples; pass sampling="
                "'without_replacement' to use each node's min(batch_size, shard) distinct "
                "samples instead",
                TaskWarning,
                stacklevel=4,  # past __init__ and its argument check
            )
        # w_j = (1/n) sum_i [j in S_i] / |S_i|, so f = sum_j w_j l_j + ridge.
        weights = torch.zeros(n_data, dtype=torch.float64)
        for s in shards:
            weights.index_add_(0, s, torch.full((s.numel(),), 1.0 / s.numel(), dtype=torch.float64))
        self._weights = (weights / self.num_nodes).to(dtype=self.dtype, device=self.device)

    def _set_buffers(self) -> None:
        """Split the module's buffers into per-node state and constants; build the training copy."""
        self._train_module, self._dropout_paths = _training_copy(self.module)
        self.stochastic = bool(self._dropout_paths)
        state = _state_buffer_names(self.module)
        named = dict(self.module.named_buffers())
        self._state_names = state
        self._state_shapes = [tuple(named[n].shape) for n in state]
        self._state_numels = [named[n].numel() for n in state]
        self._state_dtypes = [named[n].dtype for n in state]
        self.buffer_dim = int(sum(self._state_numels))
        self._buffers = {n: b.detach() for n, b in named.items() if n not in state}
        self._buffers0 = (
            torch.cat([named[n].detach().reshape(-1).to(self.dtype) for n in state])
            if state
            else torch.zeros(0, dtype=self.dtype, device=self.device)
        )

    # ---------------------------------------------------------------- functional model

    def unflatten(self, params: Params) -> dict[str, torch.Tensor]:
        """Split a flat ``(d,)`` vector into views shaped like the named parameters."""
        chunks = torch.split(params, self._numels)
        return {n: c.view(s) for n, c, s in zip(self._names, chunks, self._shapes, strict=True)}

    def flatten(self, module: nn.Module | None = None) -> Params:
        """Concatenate a module's parameters (default: the task's own) into ``(d,)``."""
        mod = module if module is not None else self.module
        return torch.cat([p.detach().reshape(-1) for p in mod.parameters()]).to(self.dtype)

    def init_buffers(self) -> torch.Tensor:
        """The running statistics every node starts with, flat ``(buffer_dim,)`` (the module's)."""
        return self._buffers0.clone()

    def _buffer_dict(self, buffers: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Constants plus the per-node state of a flat ``(buffer_dim,)`` row (fresh tensors)."""
        flat = self._buffers0 if buffers is None else buffers
        out = dict(self._buffers)
        for name, chunk, shape, dtype in zip(
            self._state_names,
            torch.split(flat, self._state_numels),
            self._state_shapes,
            self._state_dtypes,
            strict=True,
        ):
            out[name] = chunk.reshape(shape).to(dtype, copy=True)
        return out

    def forward(
        self, params: Params, x: torch.Tensor, buffers: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Evaluation outputs for inputs ``x (B, f)`` at flat parameters ``params (d,)``.

        The ``eval()``-mode model: dropout off, normalisation by the running statistics of
        ``buffers`` (a flat ``(buffer_dim,)`` row; default :meth:`init_buffers`).
        """
        return torch.func.functional_call(
            self.module, (self.unflatten(params), self._buffer_dict(buffers)), (x,)
        )

    def train_forward(
        self,
        params: Params | dict[str, torch.Tensor],
        x: torch.Tensor,
        buffers: torch.Tensor | None = None,
        key: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training outputs and the updated running statistics ``(outputs, buffers (b,))``.

        The ``train()``-mode model: normalisation by the minibatch's statistics, running
        statistics updated from ``buffers`` (default :meth:`init_buffers`), dropout keyed by
        ``key`` (a row's 32-bit key; ``0`` when ``None``). ``params`` flat ``(d,)`` or
        already split by name (:meth:`unflatten`).
        """
        values = self._buffer_dict(buffers)
        if key is not None:
            for path in self._dropout_paths:
                values[f"{path}.key"] = key
        named = params if isinstance(params, dict) else self.unflatten(params)
        out = torch.func.functional_call(self._train_module, (named, values), (x,))
        if not self._state_names:
            return out, self._buffers0
        new = torch.cat([values[n].reshape(-1).to(self.dtype) for n in self._state_names])
        return out, new

    def init_params(self, seed: int) -> Params:
        """The start point ``(d,)``: the module's own parameters, or a re-initialisation.

        With ``init="module"`` the parameters the module was given (``seed`` unused); with
        ``init="reset"`` the module re-initialised under ``torch.manual_seed(seed)`` (the
        global RNG state is restored afterwards).
        """
        check_value("ModuleTask", "seed", int, (SEED,), seed, TaskError)
        if self.init == "module":
            return self.flatten()
        fresh = copy.deepcopy(self.module)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for sub in fresh.modules():
                reset = getattr(sub, "reset_parameters", None)
                if callable(reset):
                    reset()
        return self.flatten(fresh)

    def loss(self, params: Params, batch: Batch) -> torch.Tensor:
        """Mean loss of one node's minibatch ``(x (B, f), y (B,)[, w (B,)][, key])`` plus the ridge.

        Without replacement a batch carries weights ``w`` (``1 / |batch|`` for the samples
        drawn, ``0`` for the padding of a node with fewer samples than ``batch_size``); a
        model with dropout, the row's key last. The training-mode model at the initial
        running statistics (:meth:`init_buffers`); the round loop uses
        :meth:`loss_and_buffers`, which carries each node's own.
        """
        return self.loss_and_buffers(params, self._buffers0, batch)[0]

    def loss_and_buffers(
        self, params: Params, buffers: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, new buffers (b,))`` of one node's minibatch: :meth:`loss` at the node's
        running statistics ``buffers``, and the statistics after the forward pass.

        Pure and vmappable: ``vmap(grad_and_value(task.loss_and_buffers, has_aux=True))``
        gives every node's gradient, loss and new statistics in one call.
        """
        named = self.unflatten(params)
        key = batch[-1] if self.stochastic else None
        fields = len(batch) - (1 if self.stochastic else 0)
        x, y = batch[0], batch[1]
        out, new = self.train_forward(named, x, buffers, key)
        per_sample = self._per_sample_loss(out, y)
        value = (per_sample * batch[2]).sum() if fields == 3 else per_sample.mean()
        if self.l2 > 0:
            ridge = torch.stack([p.square().sum() for p in named.values()]).sum()
            value = value + 0.5 * self.l2 * ridge
        return value, new.detach()

    @property
    def grad_and_loss(
        self,
    ) -> Callable[[torch.Tensor, Batch], tuple[torch.Tensor, torch.Tensor]] | None:
        """Closed-form minibatch gradients for a biased ``nn.Linear`` (logistic and softmax
        regression), an MLP of them (see :meth:`_plan_mlp`) or a 1-D CNN (see
        :meth:`_plan_cnn`) with the ``"bce"`` or ``"cross_entropy"`` loss, else ``None``
        (the engine then uses ``vmap(grad(loss))``; see :class:`decent.engine.GradientOracle`).
        Also ``None`` with ``closed_form=False``.
        """
        if not self.closed_form or self._loss_kind not in ("bce", "cross_entropy"):
            return None
        if self.train.labels.ndim != 1:  # sequence targets: vmap(grad(loss))
            return None
        if self._mlp_plan is not None:
            return self._mlp_grad_and_loss
        if self._cnn_plan is not None:
            return self._cnn_grad_and_loss
        return None

    def _offsets(self) -> dict[str, int]:
        """Where each named parameter starts in a ``(d,)`` row (the closed forms' plans)."""
        return dict(zip(self._names, np.cumsum([0, *self._numels]).tolist(), strict=False))

    def _with_ridge(
        self, params: torch.Tensor, grads: torch.Tensor, losses: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A closed form's rows with the ridge ``l2 / 2 ||x||^2`` added, when ``l2 > 0``."""
        if self.l2 > 0:
            grads.add_(params * self.l2)
            losses = losses + 0.5 * self.l2 * params.square().sum(dim=1)
        return grads, losses

    def _plan_mlp(self) -> list[tuple[str, int, int, int, int]] | None:
        """The layers of a lone biased ``nn.Linear``, or of an ``nn.Sequential`` of them and
        ReLU, Tanh, Sigmoid or Identity activations ending in a linear layer, as
        ``(kind, weight offset, out, in, bias offset)``; ``None`` for any other module (or
        one with dropout or running statistics)."""
        lone = isinstance(self.module, nn.Linear)
        if not (lone or isinstance(self.module, nn.Sequential)):
            return None
        if self.stochastic or self.buffer_dim:
            return None
        offsets = self._offsets()
        plan: list[tuple[str, int, int, int, int]] = []
        layers = [("", self.module)] if lone else list(self.module.named_children())
        for name, sub in layers:
            prefix = f"{name}." if name else ""
            if isinstance(sub, nn.Linear) and sub.bias is not None:
                w0, b0 = offsets[f"{prefix}weight"], offsets[f"{prefix}bias"]
                plan.append(("linear", w0, sub.out_features, sub.in_features, b0))
            elif isinstance(sub, (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Identity)):
                plan.append((type(sub).__name__.lower(), 0, 0, 0, 0))
            else:
                return None
        if not plan or plan[-1][0] != "linear":
            return None
        return plan

    def _mlp_grad_and_loss(
        self, params: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every row's minibatch loss and gradient for an MLP, batched over rows without autograd.

        Forward ``z_l = h_{l-1} W_l^T + b_l`` (one ``baddbmm`` over the ``m`` rows, the
        weights read in place from ``params``), ``h_l = act(z_l)``; the residual ``r`` of
        the logits (:meth:`_losses_and_residual`); backward
        ``grad W_l = delta_l^T h_{l-1}`` and ``grad b_l = sum_j delta_l`` written by
        ``bmm(out=...)`` straight into the rows of the ``(m, d)`` result, and
        ``delta_{l-1} = (delta_l W_l) * act'(z_{l-1})``. The one ``(m, d)`` allocation is
        the result: no per-sample layout copies and no concatenation.
        """
        plan = self._mlp_plan
        assert plan is not None
        x = batch[0]
        m = x.shape[0]
        grads = torch.empty(m, self.dim, dtype=params.dtype, device=params.device)

        def weight(step: tuple[str, int, int, int, int], of: torch.Tensor) -> torch.Tensor:
            _, w0, out, inp, _ = step
            return of[:, w0 : w0 + out * inp].view(m, out, inp)

        h, saved = x, []
        for step in plan:
            saved.append(h)
            kind, _, out, _, b0 = step
            if kind == "linear":
                bias = params[:, b0 : b0 + out].unsqueeze(1)
                h = torch.baddbmm(bias, h, weight(step, params).transpose(1, 2))
            elif kind != "identity":
                h = getattr(torch, kind)(h)  # torch.relu, torch.tanh or torch.sigmoid
        losses, delta = self._losses_and_residual(h, batch)  # h: the logits (m, B, C)
        first = next(i for i, step in enumerate(plan) if step[0] == "linear")
        for i in range(len(plan) - 1, -1, -1):
            step, inp = plan[i], saved[i]
            kind, _, out, _, b0 = step
            if kind == "linear":
                if len(plan) > 1:
                    torch.bmm(delta.transpose(1, 2), inp, out=weight(step, grads))
                else:  # a lone Linear keeps its product off the strided view (other bits)
                    weight(step, grads).copy_(torch.bmm(delta.transpose(1, 2), inp))
                torch.sum(delta, dim=1, out=grads[:, b0 : b0 + out])
                if i > first:
                    delta = torch.bmm(delta, weight(step, params))
            elif kind == "relu":
                delta = delta.masked_fill_(inp <= 0, 0.0)
            elif kind == "tanh":  # saved[i + 1] holds the activation's output
                delta = delta * (1.0 - saved[i + 1] * saved[i + 1])
            elif kind == "sigmoid":
                delta = delta * (saved[i + 1] * (1.0 - saved[i + 1]))
        return self._with_ridge(params, grads, losses)

    def _plan_cnn(self) -> tuple[list[tuple[Any, ...]], tuple[int, int, int, int]] | None:
        """The layers of a :class:`~decent.tasks.nets.ConvNet1d` (its ``features`` an
        ``nn.Sequential`` of ``Conv1d``, affine ``GroupNorm`` and ``ReLU`` in any order,
        then the mean over length and a biased linear head) on ``(B, length)`` inputs, as
        ``("conv", weight offset, out, in, kernel, stride, padding, bias offset or -1)``,
        ``("norm", weight offset, channels, groups, eps, bias offset)`` and ``("relu",)``
        steps and the head's ``(weight offset, out, in, bias offset)``; ``None`` for any
        other module or input shape (a subclass, a dilated, grouped or non-zero-padded
        convolution, dropout, running statistics)."""
        module = self.module
        if type(module) is not ConvNet1d or self.stochastic or self.buffer_dim:
            return None
        features, head = module.features, module.head
        if not isinstance(features, nn.Sequential) or self.train.features.ndim != 2:
            return None
        if not isinstance(head, nn.Linear) or head.bias is None:
            return None
        offsets = self._offsets()
        channels, length = 1, int(self.train.features.shape[1])
        plan: list[tuple[Any, ...]] = []
        for name, sub in features.named_children():
            prefix = f"features.{name}."
            if isinstance(sub, nn.Conv1d):
                plain = sub.dilation == (1,) and sub.groups == 1 and sub.padding_mode == "zeros"
                if not plain or isinstance(sub.padding, str) or sub.in_channels != channels:
                    return None
                (k,), (s,), (p,) = sub.kernel_size, sub.stride, sub.padding
                length = (length + 2 * p - k) // s + 1
                if length < 1:
                    return None
                b0 = offsets[f"{prefix}bias"] if sub.bias is not None else -1
                plan.append(
                    ("conv", offsets[f"{prefix}weight"], sub.out_channels, channels, k, s, p, b0)
                )
                channels = sub.out_channels
            elif isinstance(sub, nn.GroupNorm) and sub.affine and sub.num_channels == channels:
                w0, b0 = offsets[f"{prefix}weight"], offsets[f"{prefix}bias"]
                plan.append(("norm", w0, channels, sub.num_groups, float(sub.eps), b0))
            elif isinstance(sub, nn.ReLU):
                plan.append(("relu",))
            else:
                return None
        if not plan or plan[0][0] != "conv" or head.in_features != channels:
            return None
        return plan, (offsets["head.weight"], head.out_features, channels, offsets["head.bias"])

    def _cnn_grad_and_loss(
        self, params: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every row's minibatch loss and gradient for a 1-D CNN (:meth:`_plan_cnn`),
        batched over rows without autograd.

        Activations are laid out ``h (m, C, L, B)``, the batch innermost, so that every
        elementwise pass, reduction and copy runs along rows of ``B`` contiguous values. A
        convolution is one product per row, ``z = W cols(h) + b`` (``baddbmm``), with
        ``W (m, C', C k)`` read in place from ``params`` and ``cols(h) (m, C k, L' B)`` the
        padded input's windows (``unfold``, copied once). GroupNorm is
        ``y = a (h - mu) + beta``, ``a = gamma / sigma``, with each sample's and group's
        ``mu`` and ``sigma^2`` over its ``(C / G, L)`` values (two passes); ReLU; the mean
        over ``L``; the linear head. Backward: ``grad W = delta cols^T`` and
        ``grad b = sum delta`` written by ``bmm(out=...)`` into the rows of the ``(m, d)``
        result; the input's gradient ``W^T delta`` summed onto the padded input as ``k``
        strided adds (col2im, no ``fold``); through GroupNorm, with ``g = gamma dy`` and
        ``xhat = (h - mu) / sigma``, ``dh = (g - mean(g) - xhat mean(g xhat)) / sigma``
        written as ``a dy + p (h - mu) + q`` from each channel's and sample's sums of ``dy``
        and ``dy (h - mu)`` over ``L``; ReLU passes the gradient where its output is
        positive (autograd's rule).
        """
        m = params.shape[0]
        grads = torch.empty(m, self.dim, dtype=params.dtype, device=params.device)
        losses = torch.cat(  # rows in slices: a slice's activations stay in cache
            [
                self._cnn_rows(params[r : r + _CNN_ROWS], batch, r, grads[r : r + _CNN_ROWS])
                for r in range(0, m, _CNN_ROWS)
            ]
        )
        return self._with_ridge(params, grads, losses)

    def _cnn_rows(
        self, params: torch.Tensor, batch: Batch, first: int, grads: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`_cnn_grad_and_loss` for the rows ``first, ...`` of ``batch`` at ``params``
        (as many): writes their gradients into ``grads``, returns their losses."""
        cnn = self._cnn_plan
        assert cnn is not None
        plan, (hw0, classes, width, hb0) = cnn
        m = params.shape[0]
        batch = tuple(field[first : first + m] for field in batch)
        x = batch[0]
        size = x.shape[1]

        def rows(of: torch.Tensor, start: int, *shape: int) -> torch.Tensor:
            return of[:, start : start + int(np.prod(shape))].view(m, *shape)

        h = x.transpose(1, 2).unsqueeze(1)  # (m, 1, L, B)
        saved: list[Any] = []  # per step: what its backward reads
        for step in plan:
            if step[0] == "conv":
                _, w0, out, inp, k, s, p, b0 = step
                length = h.shape[2]
                windows = F.pad(h, (0, 0, p, p)).unfold(2, k, s)  # (m, C, L', B, k), a view
                short = windows.shape[2]
                cols = windows.permute(0, 1, 4, 2, 3).reshape(m, inp * k, short * size)
                weight = rows(params, w0, out, inp * k)
                if b0 >= 0:
                    z = torch.baddbmm(rows(params, b0, out, 1), weight, cols)
                else:
                    z = torch.bmm(weight, cols)
                saved.append((cols, length))
                h = z.view(m, out, short, size)
            elif step[0] == "norm":
                _, w0, c, g, eps, b0 = step
                length = h.shape[2]
                grouped = h.view(m, g, c // g * length, size)
                centered = grouped - grouped.mean(dim=2, keepdim=True)  # h - mu
                var = torch.linalg.vecdot(centered, centered, dim=2)  # (m, G, B)
                rstd = var.div_(c // g * length).add_(eps).rsqrt_().view(m, g, 1, 1, size)
                centered = centered.view(m, g, c // g, length, size)
                a = rows(params, w0, g, c // g, 1, 1) * rstd  # (m, G, C / G, 1, B)
                saved.append((centered, rstd, a))
                h = torch.addcmul(rows(params, b0, g, c // g, 1, 1), centered, a)
                h = h.view(m, c, length, size)
            else:
                h = torch.relu_(h)
                saved.append(h)
        length = h.shape[2]
        pooled = h.mean(dim=2).transpose(1, 2)  # (m, B, C)
        head = rows(params, hw0, classes, width)
        logits = torch.baddbmm(rows(params, hb0, 1, classes), pooled, head.transpose(1, 2))
        losses, delta = self._losses_and_residual(logits, batch)  # (m, B, classes)

        torch.bmm(delta.transpose(1, 2), pooled, out=rows(grads, hw0, classes, width))
        torch.sum(delta, dim=1, out=grads[:, hb0 : hb0 + classes])
        dpooled = torch.bmm(head.transpose(1, 2), delta.transpose(1, 2)).div_(length)
        dh = dpooled.unsqueeze(2).expand(h.shape)  # (m, C, L, B)
        for i in range(len(plan) - 1, -1, -1):
            step = plan[i]
            if step[0] == "relu":  # autograd's rule: the gradient where the output is > 0
                dh = torch.ops.aten.threshold_backward(dh, saved[i], 0.0)
            elif step[0] == "norm":
                _, w0, c, g, eps, b0 = step
                centered, rstd, a = saved[i]  # (m, G, C / G, L, B), (m, G, 1, 1, B), a
                dy = dh.view(centered.shape)
                s1 = dy.sum(dim=3)  # (m, G, C / G, B): each channel's and sample's sum of dy
                s2 = (dy * centered).sum(dim=3).mul_(rstd.squeeze(3))  # and of dy xhat
                torch.sum(s2, dim=3, out=rows(grads, w0, g, c // g))
                torch.sum(s1, dim=3, out=rows(grads, b0, g, c // g))
                gamma = rows(params, w0, g, c // g, 1)
                scale = 1.0 / (c // g * dy.shape[3])
                mean_g = (gamma * s1).sum(dim=2, keepdim=True).mul_(scale)  # (m, G, 1, B)
                mean_gx = (gamma * s2).sum(dim=2, keepdim=True).mul_(scale)
                slope = (rstd * rstd).mul_(mean_gx.unsqueeze(3)).neg_()  # (m, G, 1, 1, B)
                offset = (rstd * mean_g.unsqueeze(3)).neg_()
                dx = torch.addcmul(offset, centered, slope).addcmul_(dy, a)
                dh = dx.view(m, c, -1, size)
            else:
                _, w0, out, inp, k, s, p, b0 = step
                cols, length = saved[i]
                short = dh.shape[2]
                dz = dh.reshape(m, out, short * size)
                torch.bmm(dz, cols.transpose(1, 2), out=rows(grads, w0, out, inp * k))
                if b0 >= 0:
                    torch.sum(dz, dim=2, out=grads[:, b0 : b0 + out])
                if i == 0:  # the data's gradient is not needed
                    break
                weight = rows(params, w0, out, inp * k)
                dcols = torch.bmm(weight.transpose(1, 2), dz).view(m, inp, k, short, size)
                dpad = dz.new_zeros(m, inp, length + 2 * p, size)
                for j in range(k):  # col2im: window j of output l read input l s + j
                    dpad[:, :, j : j + s * (short - 1) + 1 : s].add_(dcols[:, :, j])
                dh = dpad[:, :, p : p + length]
        return losses

    def _losses_and_residual(
        self, z: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every row's minibatch loss ``(m,)`` and the loss's gradient in the logits ``z``.

        The residual ``(m, B, C)`` is ``c_j (sigmoid(z_j) - y_j)`` (BCE, ``C = 1``) or
        ``c_j (softmax(z_j) - onehot(y_j))``, with per-sample weights ``c`` (``1 / B``, or
        the batch's ``w`` without replacement).
        """
        y = batch[1]
        m, size = z.shape[0], z.shape[1]
        if self._loss_kind == "bce":
            logit, target = z.squeeze(2), y.to(z.dtype)
            per_sample = F.binary_cross_entropy_with_logits(logit, target, reduction="none")
            residual = torch.sigmoid(logit).sub_(target).unsqueeze(2)  # (m, B, 1)
        else:
            logp = torch.log_softmax(z, dim=2)
            per_sample = -logp.gather(2, y.unsqueeze(2)).squeeze(2)
            residual = logp.exp_()
            residual.scatter_add_(
                2, y.unsqueeze(2), torch.full((m, size, 1), -1.0, dtype=z.dtype, device=z.device)
            )
        if len(batch) == 3:
            coef = batch[2]
            return (per_sample * coef).sum(dim=1), residual.mul_(coef.unsqueeze(2))
        return per_sample.mean(dim=1), residual.div_(size)

    def sample(self, nodes: torch.Tensor, t: int, seed: int) -> Batch:
        """Draw each node's minibatch from its shard (see ``sampling``).

        Returns ``(x (m, B, f), y (m, B))`` with replacement, ``(x, y, w (m, B'))`` without
        (``B' = min(batch_size, max_i |S_i|)``), augmented by ``augment`` if given, and with
        each row's dropout key ``(m,)`` (int64, 32 bits) appended for a model with dropout;
        row ``r`` depends only on ``(seed, nodes[r], t)``.
        """
        nodes = nodes.to(device=self.device, dtype=torch.int64)
        local, weights = self._positions(nodes, t, seed)
        return self._finish(self._gather(nodes, local, weights), nodes, t, [seed])

    def _finish(self, batch: Batch, nodes: torch.Tensor, t: int, seeds: Sequence[int]) -> Batch:
        """Augment and key a gathered batch whose row ``r * R + k`` is ``(nodes[r], seeds[k])``."""
        if self.augment is None and not self.stochastic:
            return batch
        ids = [int(i) for i in nodes.tolist()]
        if self.augment is not None:
            batch = self._augmented(batch, ids, t, seeds)
        if self.stochastic:
            per_seed = _stream.keys(list(seeds), _DROPOUT_STREAM, t, ids)  # seed-major
            keys = torch.tensor(per_seed, dtype=torch.int64).view(len(seeds), len(ids))
            batch = (*batch, (keys.T.reshape(-1) & _MASK32).to(self.device))
        return batch

    def _augmented(self, batch: Batch, ids: list[int], t: int, seeds: Sequence[int]) -> Batch:
        x, y = batch[0], batch[1]
        seeds = list(seeds)
        gens = _stream.keys(seeds, _AUGMENT_STREAM, t, ids)  # seed-major
        generator = torch.Generator(device=self.device)
        xs, ys = [], []
        for row in range(x.shape[0]):
            node, k = divmod(row, len(seeds))
            generator.manual_seed(gens[k * len(ids) + node])
            out = self.augment((x[row], y[row]), generator)  # type: ignore[misc]
            if (
                not isinstance(out, tuple)
                or len(out) != 2
                or out[0].shape != x[row].shape
                or out[1].shape != y[row].shape
            ):
                raise TaskError(
                    "augment must return (x, y) with the shapes it was given, "
                    f"{tuple(x[row].shape)} and {tuple(y[row].shape)}"
                )
            xs.append(out[0].to(x.dtype))
            ys.append(out[1].to(y.dtype))
        return (torch.stack(xs), torch.stack(ys), *batch[2:])

    def _positions(
        self, nodes: torch.Tensor, t: int, seed: int | Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Shard positions ``(m, B)`` of each row's minibatch, and its weights without replacement.

        A sequence of ``R`` seeds draws a replica batch: ``(m * R, B)`` node-major rows, row
        ``r * R + k`` being what ``seed[k]`` alone gives row ``r`` (every step is per row).
        """
        lengths = self._lengths[nodes]
        if self.sampling == "with_replacement":
            local = _stream.integers(
                seed, _INDEX_STREAM, t, nodes, self.batch_size, self.num_nodes, lengths
            )
            return local, None
        # min(B, |S_i|) distinct positions per node: the smallest of random keys
        width = self._table.shape[1]
        keys = _stream.uniform(seed, _DISTINCT_STREAM, t, nodes, width, self.num_nodes)
        if keys.shape[0] != lengths.shape[0]:  # node-major replica rows
            lengths = lengths.repeat_interleave(keys.shape[0] // lengths.shape[0])
        keys.masked_fill_(torch.arange(width, device=self.device) >= lengths[:, None], 2.0)
        take = min(self.batch_size, width)
        local = keys.topk(take, dim=1, largest=False, sorted=True).indices  # (m, take)
        valid = local < lengths[:, None]
        weights = valid.to(self.dtype) / valid.sum(dim=1, keepdim=True).to(self.dtype)
        return torch.where(valid, local, torch.zeros_like(local)), weights

    def _gather(
        self, nodes: torch.Tensor, local: torch.Tensor, weights: torch.Tensor | None
    ) -> Batch:
        # One flat gather from the padded (n, max_len) table: no per-node work.
        index = self._table.view(-1)[nodes[:, None] * self._table.shape[1] + local]  # (m, B)
        flat = index.view(-1)  # index_select: 3-4x faster than advanced indexing here
        features = self.train.features
        x = features.index_select(0, flat).view(*index.shape, *features.shape[1:])
        labels = self.train.labels  # (N,) or sequence targets (N, L)
        y = labels.index_select(0, flat).view(*index.shape, *labels.shape[1:])
        return (x, y) if weights is None else (x, y, weights)

    @classmethod
    def replica_sampler(
        cls, tasks: Sequence[ModuleTask], seeds: Sequence[int], nodes: torch.Tensor
    ) -> Callable[[int], Batch]:
        """All replicas' minibatches, node-major: per-seed positions, one gather for all rows.

        Replicas of a dataset task share the data, the partition and the model; they differ
        in the training seed (minibatch draws, start point).
        """
        check_family(
            tasks,
            ("name", "num_nodes", "batch_size", "sampling", "l2", "dtype", "augment", "buffer_dim"),
        )
        first = tasks[0]
        for other in tasks[1:]:
            same = other is first or (
                torch.equal(other._table, first._table)
                and torch.equal(other._lengths, first._lengths)
                and torch.equal(other.train.features, first.train.features)
            )
            if not same:
                raise ReplicaError(
                    f"replicas of {first.name} must share the data and its partition"
                )
        nodes = nodes.to(device=first.device, dtype=torch.int64)
        rows = interleave([nodes] * len(tasks))

        every_seed = list(seeds)

        def sample(t: int) -> Batch:  # every seed's positions in one draw, node-major
            local, weights = first._positions(nodes, t, every_seed)
            return first._finish(first._gather(rows, local, weights), nodes, t, every_seed)

        return sample

    # ---------------------------------------------------------------- evaluation

    def _outputs_losses(
        self,
        params: torch.Tensor,
        data: Dataset,
        chunk_models: int,
        chunk_rows: int,
        buffers: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-sample losses ``(k, N)`` and correctness ``(k, N)`` (or ``None``)."""
        losses, corrects = [], []
        per_model = torch.func.vmap(self.forward, in_dims=(0, None, 0))
        if buffers is None:
            buffers = self._buffers0.expand(params.shape[0], -1)
        for m0 in range(0, params.shape[0], chunk_models):
            p = params[m0 : m0 + chunk_models]
            b = buffers[m0 : m0 + chunk_models]
            row_l, row_c = [], []
            for r0 in range(0, len(data), chunk_rows):
                x = data.features[r0 : r0 + chunk_rows]
                y = data.labels[r0 : r0 + chunk_rows]
                out = per_model(p, x, b)  # (k, B, ...)
                row_l.append(torch.func.vmap(self._per_sample_loss, in_dims=(0, None))(out, y))
                c = _correct(self._loss_kind, out, y)
                if c is not None:
                    row_c.append(c)
            losses.append(torch.cat(row_l, dim=1))
            if row_c:
                corrects.append(torch.cat(row_c, dim=1))
        return torch.cat(losses), (torch.cat(corrects) if corrects else None)

    @torch.no_grad()
    def evaluate(
        self,
        params: torch.Tensor,
        *,
        buffers: torch.Tensor | None = None,
        chunk_models: int = 32,
        chunk_rows: int = 8192,
    ) -> dict[str, torch.Tensor]:
        """Global objective and accuracy for ``k`` models ``(k, d)``.

        ``"loss"`` is ``f = (1/n) sum_i f_i`` (node-weighted); ``"accuracy"`` is weighted
        the same way, i.e. the mean over nodes of each node's shard accuracy.
        ``"test_loss"`` / ``"test_accuracy"`` are plain means over the test set.
        The models run in ``eval()`` mode with running statistics ``buffers``
        (``(k, buffer_dim)``, one row per model; default :meth:`init_buffers` for all).
        Models and rows are processed in chunks to bound memory.
        """
        if params.ndim != 2 or params.shape[1] != self.dim:
            raise TaskError(
                f"evaluate expects (k, {self.dim}) parameters, got {tuple(params.shape)}; "
                "stack models with torch.stack or add a leading axis with x[None]"
            )
        params = params.to(device=self.device, dtype=self.dtype)
        if buffers is not None:
            if buffers.shape != (params.shape[0], self.buffer_dim):
                raise TaskError(
                    f"evaluate expects buffers of shape ({params.shape[0]}, {self.buffer_dim}) "
                    f"(one row of running statistics per model), got {tuple(buffers.shape)}"
                )
            buffers = buffers.to(device=self.device, dtype=self.dtype)
        ridge = 0.5 * self.l2 * params.square().sum(dim=1)
        losses, correct = self._outputs_losses(
            params, self.train, chunk_models, chunk_rows, buffers
        )
        out = {"loss": losses @ self._weights + ridge}
        if correct is not None:
            out["accuracy"] = correct @ self._weights
        if self.test is not None:
            t_losses, t_correct = self._outputs_losses(
                params, self.test, chunk_models, chunk_rows, buffers
            )
            out["test_loss"] = t_losses.mean(dim=1) + ridge
            if t_correct is not None:
                out["test_accuracy"] = t_correct.mean(dim=1)
        return out

    @property
    def judged_by(self) -> Objective:
        """The suboptimality where ``f*`` is known (convex models), else the held-out
        accuracy (or loss) where there is a test split, else the training objective ``f(x̄)``."""
        if self.optimum is not None:
            return SUBOPTIMALITY
        classifies = self._loss_kind in ("bce", "cross_entropy")
        if self.test is not None and classifies:
            return Objective("eval/test_accuracy@mean", "test accuracy", lower_is_better=False)
        if self.test is not None:
            return Objective("eval/test_loss@mean", "test loss")
        return Objective("eval/loss@mean", "f(x̄)", True, "eval/loss@node_max")

    def objective(self, params: Params) -> torch.Tensor:
        """The global objective ``f`` at one ``(d,)`` point, differentiable (full batch)."""
        out = self.forward(params, self.train.features)
        value = self._per_sample_loss(out, self.train.labels) @ self._weights
        return value + 0.5 * self.l2 * params.square().sum()

    def compute_optimum(self) -> float:
        """Minimize ``f`` in float64 to near machine precision and set ``optimum``.

        Linear models (a single ``torch.nn.Linear`` with ``"cross_entropy"`` or ``"bce"``)
        use Newton's method with the closed-form Hessian
        ``H = sum_j w_j (diag(p_j) - p_j p_j^T) (x) [x_j; 1][x_j; 1]^T + l2 I``; other modules
        use autograd Newton for ``d <= 2048`` and L-BFGS with a strong-Wolfe line search
        above. Only meaningful for convex objectives (linear models with ``l2 > 0``).

        Returns:
            ``f*`` as measured by ``evaluate(...)["loss"]``; also sets ``x_star``.
        """
        task64 = self if self.dtype == torch.float64 else self._as_float64()
        x0 = torch.zeros(self.dim, dtype=torch.float64, device=self.device)
        hessian = task64._linear_hessian()
        if hessian is not None:
            x_opt = newton_minimize(
                task64.objective, x0, grad=torch.func.grad(task64.objective), hessian=hessian
            )
        else:
            x_opt = minimize_convex(task64.objective, x0)
        self.x_star: torch.Tensor = x_opt.to(self.dtype)
        self.optimum = float(task64.evaluate(x_opt[None])["loss"][0])
        return self.optimum

    def _linear_hessian(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """Closed-form Hessian of ``objective`` for a lone ``nn.Linear``, else ``None``."""
        lin = self.module
        if not isinstance(lin, nn.Linear) or lin.bias is None:
            return None
        if self._loss_kind not in ("cross_entropy", "bce"):
            return None
        classes, feats = lin.out_features, lin.in_features
        x = self.train.features
        ones = torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
        x1 = torch.cat([x, ones], dim=1)  # (N, f + 1), last column multiplies the bias
        w = self._weights
        # Flat index of (class c, column k) in the parameter vector [W (C, f), b (C,)].
        c = torch.arange(classes, device=x.device)[:, None]
        k = torch.arange(feats + 1, device=x.device)[None, :]
        perm = torch.where(k < feats, c * feats + k, classes * feats + c).reshape(-1)
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        kind = self._loss_kind

        def hessian(params: torch.Tensor) -> torch.Tensor:
            z = self.forward(params, x)  # (N, C)
            if kind == "bce":
                p = torch.sigmoid(z)
                a = (p * (1.0 - p))[:, :, None]  # (N, 1, 1)
            else:
                p = torch.softmax(z, dim=1)
                a = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # (N, C, C)
            # H~[c, k, d, l] = sum_j w_j a_j[c, d] x1_j[k] x1_j[l]
            g = (w[:, None, None] * a)[:, :, :, None] * x1[:, None, None, :]  # (N, C, C, F)
            h_tilde = torch.einsum("jk,jcdl->ckdl", x1, g).reshape(perm.numel(), perm.numel())
            h = torch.empty_like(h_tilde)
            h[perm[:, None], perm[None, :]] = h_tilde
            return h + self.l2 * eye

        return hessian

    def _as_float64(self) -> ModuleTask:
        twin = copy.copy(self)
        twin.dtype = torch.float64
        twin.module = copy.deepcopy(self.module).to(torch.float64)
        twin._set_buffers()
        twin.train = self.train.to(dtype=torch.float64)
        twin.test = self.test.to(dtype=torch.float64) if self.test is not None else None
        twin._weights = self._weights.to(torch.float64)
        return twin


# -------------------------------------------------------------------- builders


def _task(
    dataset: Dataset | DatasetSplit,
    test: Dataset | None,
    args: tuple[Any, ...],
    build: Callable[[Dataset], tuple[nn.Module, str, str]],
    compute_optimum: bool = False,
    closed_form: bool = True,
) -> ModuleTask:
    """The builders' common part: ``args`` are their shared arguments in signature order,
    ``build(train)`` gives the module (built without moving the global RNG), the loss and
    the name's suffix. ``init="reset"``: each seed starts from its own initialisation.
    ``compute_optimum``: compute ``f*`` when ``l2 > 0``; ``closed_form``: as
    :class:`ModuleTask`'s."""
    num_nodes, partition, alpha, classes_per_node, batch_size, l2, seed, sampling = args
    train = dataset.train if isinstance(dataset, DatasetSplit) else dataset
    if test is None and isinstance(dataset, DatasetSplit):
        test = dataset.test
    n = num_nodes
    with torch.random.fork_rng(devices=[]):
        module, loss, suffix = build(train)
    if isinstance(partition, str):
        extra = {"iid": (), "dirichlet": (alpha,), "shards": (classes_per_node,)}.get(partition)
        if extra is None:
            raise TaskError(
                f"partition must be one of {sorted(PARTITIONERS)} or a list of index arrays, "
                f"got {partition!r}"
            )
        partition = PARTITIONERS[partition](train.labels, n, *extra, seed=seed)
    elif len(partition) != n:
        raise TaskError(
            f"partition has {len(partition)} index arrays but num_nodes={n}; "
            "pass one array per node"
        )
    task = ModuleTask(
        module,
        train,
        partition,
        loss=loss,
        batch_size=batch_size,
        sampling=sampling,
        init="reset",
        test=test,
        seed=seed,
        l2=l2,
        name=f"{train.name}_{suffix}",
        closed_form=closed_form,
    )
    if compute_optimum and task.l2 > 0:
        task.compute_optimum()
    return task


@checked_args("logistic_regression", TaskError)
def logistic_regression(
    dataset: Dataset | DatasetSplit,
    num_nodes: Nodes,
    partition: str | Sequence[Any] = "iid",
    *,
    alpha: float = 0.5,
    classes_per_node: int = 1,
    batch_size: BatchSize = 32,
    l2: Annotated[
        float, at.Interval(ge=0.0, le=1e6), Doc("Ridge coefficient (> 0: f* is computed).")
    ] = 1e-4,
    test: Dataset | None = None,
    seed: PartitionSeed = 0,
    compute_optimum: bool = True,
    sampling: SamplingArg = "with_replacement",
) -> ModuleTask:
    """Binary logistic regression, a ``Linear(f, 1)`` with the logistic (BCE) loss.

    The parameter vector is ``[w (f), b]``. With ``l2 > 0`` the objective is strongly
    convex and ``optimum`` is computed by Newton's method in float64.

    Args:
        dataset: a two-class dataset, or a ``DatasetSplit`` (its test part is used).
        compute_optimum: compute ``f*`` (only when ``l2 > 0``).
        others: as :func:`mlp`.

    Raises:
        TaskError: for a dataset that is not binary (use ``Dataset.binarize`` or
            :func:`softmax_regression`) or a bad argument.
    """
    train = dataset.train if isinstance(dataset, DatasetSplit) else dataset
    if train.num_classes != 2:
        raise TaskError(
            f"logistic_regression needs a two-class dataset, {train.name!r} has "
            f"{train.num_classes} classes; use softmax_regression or dataset.binarize(...)"
        )

    def build(train: Dataset) -> tuple[nn.Module, str, str]:
        return nn.Linear(train.num_features, 1), "bce", "logreg"

    args = (num_nodes, partition, alpha, classes_per_node, batch_size, l2, seed, sampling)
    return _task(dataset, test, args, build, compute_optimum)


@checked_args("softmax_regression", TaskError)
def softmax_regression(
    dataset: Dataset | DatasetSplit,
    num_nodes: Nodes,
    partition: str | Sequence[Any] = "iid",
    *,
    alpha: float = 0.5,
    classes_per_node: int = 2,
    batch_size: BatchSize = 32,
    l2: Annotated[
        float, at.Interval(ge=0.0, le=1e6), Doc("Ridge coefficient (> 0: f* is computed).")
    ] = 1e-4,
    test: Dataset | None = None,
    seed: PartitionSeed = 0,
    compute_optimum: bool = True,
    sampling: SamplingArg = "with_replacement",
) -> ModuleTask:
    """Multinomial logistic regression, a ``Linear(f, C)`` with cross-entropy.

    With ``l2 > 0`` the objective is strongly convex and ``optimum`` is computed in float64
    (Newton for ``d <= 2048``, L-BFGS with strong-Wolfe line search above).

    Args:
        compute_optimum: compute ``f*`` (only when ``l2 > 0``).
        others: as :func:`mlp`.
    """

    def build(train: Dataset) -> tuple[nn.Module, str, str]:
        return nn.Linear(train.num_features, train.num_classes), "cross_entropy", "softmax"

    args = (num_nodes, partition, alpha, classes_per_node, batch_size, l2, seed, sampling)
    return _task(dataset, test, args, build, compute_optimum)


@checked_args("mlp", TaskError)
def mlp(
    dataset: Dataset | DatasetSplit,
    num_nodes: Nodes,
    partition: str | Sequence[Any] = "iid",
    *,
    hidden: Annotated[Sequence[Annotated[int, SIZE]], Doc("Widths of the hidden layers.")] = (64,),
    activation: Annotated[
        Literal["relu", "tanh", "sigmoid", "gelu", "silu", "elu"], Doc("Hidden activation.")
    ] = "relu",
    alpha: float = 0.5,
    classes_per_node: int = 2,
    batch_size: BatchSize = 32,
    l2: L2 = 0.0,
    test: Dataset | None = None,
    seed: PartitionSeed = 0,
    sampling: SamplingArg = "with_replacement",
) -> ModuleTask:
    """A multilayer perceptron ``f -> hidden... -> C`` with cross-entropy (non-convex).

    Args:
        dataset: a dataset or a ``DatasetSplit`` (its test part is used).
        partition: ``"iid"``, ``"dirichlet"``, ``"shards"`` or a list of index arrays.
        hidden: widths of the hidden layers (may be empty: softmax regression).
        alpha: Dirichlet concentration (for ``"dirichlet"``).
        classes_per_node: shards per node (for ``"shards"``).
        test: held-out set (overrides a split's test part).
        others: as declared in the signature; ``sampling`` as :class:`ModuleTask`.
    """

    def build(train: Dataset) -> tuple[nn.Module, str, str]:
        sizes = [train.num_features, *hidden, train.num_classes]
        layers: list[nn.Module] = []
        for fan_in, width in itertools.pairwise(sizes):
            layers += [nn.Linear(fan_in, width), _ACTIVATIONS[activation]()]
        return nn.Sequential(*layers[:-1]), "cross_entropy", "mlp" + "-".join(map(str, sizes))

    args = (num_nodes, partition, alpha, classes_per_node, batch_size, l2, seed, sampling)
    return _task(dataset, test, args, build)


__all__ = [
    "Augment",
    "KeyedDropout",
    "LossFn",
    "ModuleTask",
    "TaskWarning",
    "dropout_keep",
    "logistic_regression",
    "mlp",
    "softmax_regression",
]
