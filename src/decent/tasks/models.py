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
import warnings
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import annotated_types as at
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from decent import _stream
from decent._params import SIZE, Doc
from decent._stack import ReplicaError, check_family, interleave
from decent._types import Batch, Params
from decent.tasks._checks import (
    L2,
    BatchSize,
    PartitionSeed,
    SamplingArg,
    check_float,
    check_int,
)
from decent.tasks._optim import minimize_convex, newton_minimize
from decent.tasks.base import SUBOPTIMALITY, Objective, TaskError
from decent.tasks.data import Dataset, DatasetSplit
from decent.tasks.partition import PARTITIONERS

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(outputs (B, ...), labels (B,)) -> scalar`` mean loss; must be vmappable."""

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


def _check_module(module: nn.Module) -> None:
    for name, sub in module.named_modules():
        is_batchnorm = isinstance(sub, nn.modules.batchnorm._BatchNorm)
        tracks = isinstance(sub, nn.modules.batchnorm._NormBase) and sub.track_running_stats
        if is_batchnorm or tracks:
            raise TaskError(
                f"module layer {name or '<root>'!r} is {type(sub).__name__}, whose batch "
                "statistics/running buffers change during training and couple the samples "
                "of a batch; decentralized functional training needs stateless layers: "
                "replace it with torch.nn.GroupNorm (or LayerNorm)"
            )


def _per_sample(loss: str | LossFn) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Return ``(outputs (B, ...), labels (B,)) -> (B,)`` per-sample losses."""
    if loss == "cross_entropy":
        return lambda out, y: F.cross_entropy(out, y, reduction="none")
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
    if loss == "cross_entropy":
        return (out.argmax(dim=-1) == y).to(out.dtype)
    if loss == "bce":
        logits = out.reshape(out.shape[0], -1)  # (k, B): one logit per sample
        return ((logits > 0).to(torch.int64) == y).to(out.dtype)
    return None


Sampling = Literal["with_replacement", "without_replacement"]
SAMPLINGS: tuple[str, ...] = ("with_replacement", "without_replacement")
Init = Literal["module", "reset"]
INITS: tuple[str, ...] = ("module", "reset")


class TaskWarning(UserWarning):
    """A task that works but probably not as meant (the message says why and what to do)."""


class ModuleTask:
    """A ``torch.nn.Module`` and a loss over data partitioned across nodes.

    Batches are tuples ``(x (m, B, f), y (m, B))``. The module is deep-copied, cast to the
    dataset's dtype and put in ``eval()`` mode (dropout off: the loss must be a
    deterministic function of ``(params, batch)``). Non-trainable buffers that never change
    are passed as constants; layers with running statistics are rejected.

    Args:
        module: the model; its parameters define ``d`` and the flattening order
            (``named_parameters()``).
        dataset: training data; ``dataset.features`` are the module's inputs.
        partition: ``n`` index tensors into ``dataset``, node ``i``'s shard ``S_i``; none may
            be empty. Shards may overlap (each node still weighs its own shard equally).
        loss: ``"cross_entropy"`` (logits ``(B, C)``), ``"bce"`` (one logit per sample) or a
            callable ``(outputs, labels) -> scalar`` mean loss.
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

    Raises:
        TaskError: for BatchNorm-like layers, an empty or out-of-range shard, or a bad
            argument.
    """

    def __init__(
        self,
        module: nn.Module,
        dataset: Dataset,
        partition: Sequence[torch.Tensor | np.ndarray | Sequence[int]],
        *,
        loss: str | LossFn = "cross_entropy",
        batch_size: int = 32,
        sampling: Sampling = "with_replacement",
        init: Init = "module",
        test: Dataset | None = None,
        seed: int = 0,
        optimum: float | None = None,
        l2: float = 0.0,
        name: str | None = None,
        device: torch.device | str | None = None,
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
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        if sampling not in SAMPLINGS:
            raise TaskError(f"sampling must be one of {list(SAMPLINGS)}, got {sampling!r}")
        if init not in INITS:
            raise TaskError(
                f"init must be 'module' (keep the module's parameters) or 'reset' "
                f"(re-initialise under the seed), got {init!r}"
            )
        self.sampling: Sampling = sampling
        self.init: Init = init
        self.seed = check_int("seed", seed, minimum=0)
        self.l2 = check_float("l2", l2, minimum=0.0)
        self.dtype: torch.dtype = dataset.features.dtype
        self.device = torch.device(device) if device is not None else dataset.features.device
        self.name = name or f"{dataset.name}_{type(module).__name__.lower()}"
        self.optimum: float | None = optimum

        self.module = copy.deepcopy(module).to(dtype=self.dtype, device=self.device).eval()
        named = list(self.module.named_parameters())
        if not named:
            raise TaskError("module has no parameters; nothing to train")
        self._names = [n for n, _ in named]
        self._shapes = [tuple(p.shape) for _, p in named]
        self._numels = [p.numel() for _, p in named]
        self.dim = int(sum(self._numels))
        self._buffers = {n: b.detach() for n, b in self.module.named_buffers()}

        self.train = dataset.to(device=self.device)
        self.test = test.to(dtype=self.dtype, device=self.device) if test is not None else None
        self.eval_size = len(self.train) + (len(self.test) if self.test is not None else 0)
        self._build_partition(partition)

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
                stacklevel=3,
            )
        # w_j = (1/n) sum_i [j in S_i] / |S_i|, so f = sum_j w_j l_j + ridge.
        weights = torch.zeros(n_data, dtype=torch.float64)
        for s in shards:
            weights.index_add_(0, s, torch.full((s.numel(),), 1.0 / s.numel(), dtype=torch.float64))
        self._weights = (weights / self.num_nodes).to(dtype=self.dtype, device=self.device)

    # ---------------------------------------------------------------- functional model

    def unflatten(self, params: Params) -> dict[str, torch.Tensor]:
        """Split a flat ``(d,)`` vector into views shaped like the named parameters."""
        chunks = torch.split(params, self._numels)
        return {n: c.view(s) for n, c, s in zip(self._names, chunks, self._shapes, strict=True)}

    def flatten(self, module: nn.Module | None = None) -> Params:
        """Concatenate a module's parameters (default: the task's own) into ``(d,)``."""
        mod = module if module is not None else self.module
        return torch.cat([p.detach().reshape(-1) for p in mod.parameters()]).to(self.dtype)

    def forward(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """Model outputs for inputs ``x (B, f)`` at flat parameters ``params (d,)``."""
        return torch.func.functional_call(
            self.module, (self.unflatten(params), self._buffers), (x,)
        )

    def init_params(self, seed: int) -> Params:
        """The start point ``(d,)``: the module's own parameters, or a re-initialisation.

        With ``init="module"`` the parameters the module was given (``seed`` unused); with
        ``init="reset"`` the module re-initialised under ``torch.manual_seed(seed)`` (the
        global RNG state is restored afterwards).
        """
        seed = check_int("seed", seed, minimum=0)
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
        """Mean loss of one node's minibatch ``(x (B, f), y (B,)[, w (B,)])`` plus the ridge.

        Without replacement a batch carries weights ``w`` (``1 / |batch|`` for the samples
        drawn, ``0`` for the padding of a node with fewer samples than ``batch_size``).
        """
        x, y = batch[0], batch[1]
        per_sample = self._per_sample_loss(self.forward(params, x), y)
        value = (per_sample * batch[2]).sum() if len(batch) == 3 else per_sample.mean()
        if self.l2 > 0:
            value = value + 0.5 * self.l2 * params.square().sum()
        return value

    @property
    def grad_and_loss(
        self,
    ) -> Callable[[torch.Tensor, Batch], tuple[torch.Tensor, torch.Tensor]] | None:
        """Closed-form minibatch gradients for a lone ``nn.Linear`` with bias and the
        ``"bce"`` or ``"cross_entropy"`` loss (logistic and softmax regression), else ``None``
        (the engine then uses ``vmap(grad(loss))``; see :class:`decent.engine.GradientOracle`).
        """
        lin = self.module
        linear = isinstance(lin, nn.Linear) and lin.bias is not None
        if not linear or self._loss_kind not in ("bce", "cross_entropy"):
            return None
        return self._linear_grad_and_loss

    def _linear_grad_and_loss(
        self, params: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every row's minibatch loss and gradient, ``(m, d)`` and ``(m,)``, without autograd.

        With logits ``z = x W^T + b`` (``(m, B, C)``) and per-sample weights ``c`` (``1 / B``,
        or the batch's ``w`` without replacement), the residual ``r`` is
        ``sigmoid(z) - y`` (BCE, ``C = 1``) or ``softmax(z) - onehot(y)``; then
        ``grad W = sum_j c_j r_j x_j^T``, ``grad b = sum_j c_j r_j``, plus ``l2 * params``.
        """
        x, y = batch[0], batch[1]
        m, size = x.shape[0], x.shape[1]
        lin = self.module
        assert isinstance(lin, nn.Linear)
        classes, feats = lin.out_features, lin.in_features
        weight = params[:, : classes * feats].view(m, classes, feats)
        bias = params[:, classes * feats :]
        z = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))  # (m, B, C)
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
            losses = (per_sample * coef).sum(dim=1)
            residual.mul_(coef.unsqueeze(2))
        else:
            losses = per_sample.mean(dim=1)
            residual.div_(size)
        grad_w = torch.bmm(residual.transpose(1, 2), x)  # (m, C, f); not out= a strided view
        grads = torch.cat([grad_w.view(m, classes * feats), residual.sum(dim=1)], dim=1)
        if self.l2 > 0:
            grads.add_(params * self.l2)
            losses = losses + 0.5 * self.l2 * params.square().sum(dim=1)
        return grads, losses

    def sample(self, nodes: torch.Tensor, t: int, seed: int) -> Batch:
        """Draw each node's minibatch from its shard (see ``sampling``).

        Returns ``(x (m, B, f), y (m, B))`` with replacement, ``(x, y, w (m, B'))`` without
        (``B' = min(batch_size, max_i |S_i|)``); row ``r`` depends only on
        ``(seed, nodes[r], t)``.
        """
        nodes = nodes.to(device=self.device, dtype=torch.int64)
        local, weights = self._positions(nodes, t, seed)
        return self._gather(nodes, local, weights)

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
        y = self.train.labels.index_select(0, flat).view(index.shape)
        return (x, y) if weights is None else (x, y, weights)

    @classmethod
    def replica_sampler(
        cls, tasks: Sequence[ModuleTask], seeds: Sequence[int], nodes: torch.Tensor
    ) -> Callable[[int], Batch]:
        """All replicas' minibatches, node-major: per-seed positions, one gather for all rows.

        Replicas of a dataset task share the data, the partition and the model; they differ
        in the training seed (minibatch draws, start point).
        """
        check_family(tasks, ("name", "num_nodes", "batch_size", "sampling", "l2", "dtype"))
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
            return first._gather(rows, local, weights)

        return sample

    # ---------------------------------------------------------------- evaluation

    def _outputs_losses(
        self, params: torch.Tensor, data: Dataset, chunk_models: int, chunk_rows: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-sample losses ``(k, N)`` and correctness ``(k, N)`` (or ``None``)."""
        losses, corrects = [], []
        per_model = torch.func.vmap(self.forward, in_dims=(0, None))
        for m0 in range(0, params.shape[0], chunk_models):
            p = params[m0 : m0 + chunk_models]
            row_l, row_c = [], []
            for r0 in range(0, len(data), chunk_rows):
                x = data.features[r0 : r0 + chunk_rows]
                y = data.labels[r0 : r0 + chunk_rows]
                out = per_model(p, x)  # (k, B, ...)
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
        self, params: torch.Tensor, *, chunk_models: int = 32, chunk_rows: int = 8192
    ) -> dict[str, torch.Tensor]:
        """Global objective and accuracy for ``k`` models ``(k, d)``.

        ``"loss"`` is ``f = (1/n) sum_i f_i`` (node-weighted); ``"accuracy"`` is weighted
        the same way, i.e. the mean over nodes of each node's shard accuracy.
        ``"test_loss"`` / ``"test_accuracy"`` are plain means over the test set.
        Models and rows are processed in chunks to bound memory.
        """
        if params.ndim != 2 or params.shape[1] != self.dim:
            raise TaskError(
                f"evaluate expects (k, {self.dim}) parameters, got {tuple(params.shape)}; "
                "stack models with torch.stack or add a leading axis with x[None]"
            )
        params = params.to(device=self.device, dtype=self.dtype)
        ridge = 0.5 * self.l2 * params.square().sum(dim=1)
        losses, correct = self._outputs_losses(params, self.train, chunk_models, chunk_rows)
        out = {"loss": losses @ self._weights + ridge}
        if correct is not None:
            out["accuracy"] = correct @ self._weights
        if self.test is not None:
            t_losses, t_correct = self._outputs_losses(params, self.test, chunk_models, chunk_rows)
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
        twin._buffers = {n: b.detach() for n, b in twin.module.named_buffers()}
        twin.train = self.train.to(dtype=torch.float64)
        twin.test = self.test.to(dtype=torch.float64) if self.test is not None else None
        twin._weights = self._weights.to(torch.float64)
        return twin


# -------------------------------------------------------------------- builders


def _resolve(
    dataset: Dataset | DatasetSplit, test: Dataset | None
) -> tuple[Dataset, Dataset | None]:
    if isinstance(dataset, DatasetSplit):
        return dataset.train, test if test is not None else dataset.test
    return dataset, test


def _make_partition(
    train: Dataset,
    num_nodes: int,
    partition: str | Sequence[Any],
    alpha: float,
    classes_per_node: int,
    seed: int,
) -> Sequence[Any]:
    if not isinstance(partition, str):
        if len(partition) != num_nodes:
            raise TaskError(
                f"partition has {len(partition)} index arrays but num_nodes={num_nodes}; "
                "pass one array per node"
            )
        return partition
    if partition == "iid":
        return PARTITIONERS["iid"](train.labels, num_nodes, seed=seed)
    if partition == "dirichlet":
        return PARTITIONERS["dirichlet"](train.labels, num_nodes, alpha, seed=seed)
    if partition == "shards":
        return PARTITIONERS["shards"](train.labels, num_nodes, classes_per_node, seed=seed)
    raise TaskError(
        f"partition must be one of {sorted(PARTITIONERS)} or a list of index arrays, "
        f"got {partition!r}"
    )


def _linear_task(
    train: Dataset,
    test: Dataset | None,
    num_nodes: int,
    partition: str | Sequence[Any],
    alpha: float,
    classes_per_node: int,
    batch_size: int,
    l2: float,
    seed: int,
    compute_optimum: bool,
    *,
    out_features: int,
    loss: str,
    suffix: str,
    sampling: Sampling = "with_replacement",
) -> ModuleTask:
    """A ``Linear(f, out_features)`` task; its convex optimum is computed when ``l2 > 0``."""
    n = check_int("num_nodes", num_nodes, minimum=1)
    part = _make_partition(train, n, partition, alpha, classes_per_node, seed)
    with torch.random.fork_rng(devices=[]):  # construction must not move the global RNG
        module = nn.Linear(train.num_features, out_features)
    task = ModuleTask(
        module,
        train,
        part,
        loss=loss,
        batch_size=batch_size,
        sampling=sampling,
        init="reset",  # the module above is a placeholder: each seed starts fresh
        test=test,
        seed=seed,
        l2=l2,
        name=f"{train.name}_{suffix}",
    )
    if compute_optimum and task.l2 > 0:
        task.compute_optimum()
    return task


def logistic_regression(
    dataset: Dataset | DatasetSplit,
    num_nodes: int,
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
        num_nodes: ``n``.
        partition: ``"iid"``, ``"dirichlet"``, ``"shards"`` or a list of index arrays.
        alpha: Dirichlet concentration (for ``"dirichlet"``).
        classes_per_node: shards per node (for ``"shards"``).
        batch_size: samples per node per round.
        l2: ridge coefficient.
        test: held-out set (overrides a split's test part).
        seed: seed of the partition.
        compute_optimum: compute ``f*`` (only when ``l2 > 0``).
        sampling: ``"with_replacement"`` or ``"without_replacement"`` (see
            :class:`ModuleTask`).

    Raises:
        TaskError: for a dataset that is not binary (use ``Dataset.binarize`` or
            :func:`softmax_regression`) or a bad argument.
    """
    train, test = _resolve(dataset, test)
    if train.num_classes != 2:
        raise TaskError(
            f"logistic_regression needs a two-class dataset, {train.name!r} has "
            f"{train.num_classes} classes; use softmax_regression or dataset.binarize(...)"
        )
    return _linear_task(
        train,
        test,
        num_nodes,
        partition,
        alpha,
        classes_per_node,
        batch_size,
        l2,
        seed,
        compute_optimum,
        out_features=1,
        loss="bce",
        suffix="logreg",
        sampling=sampling,
    )


def softmax_regression(
    dataset: Dataset | DatasetSplit,
    num_nodes: int,
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
        dataset: a dataset or a ``DatasetSplit``.
        num_nodes: ``n``.
        partition: ``"iid"``, ``"dirichlet"``, ``"shards"`` or a list of index arrays.
        alpha: Dirichlet concentration (for ``"dirichlet"``).
        classes_per_node: shards per node (for ``"shards"``).
        batch_size: samples per node per round.
        l2: ridge coefficient.
        test: held-out set (overrides a split's test part).
        seed: seed of the partition.
        compute_optimum: compute ``f*`` (only when ``l2 > 0``).
        sampling: ``"with_replacement"`` or ``"without_replacement"`` (see
            :class:`ModuleTask`).
    """
    train, test = _resolve(dataset, test)
    return _linear_task(
        train,
        test,
        num_nodes,
        partition,
        alpha,
        classes_per_node,
        batch_size,
        l2,
        seed,
        compute_optimum,
        out_features=train.num_classes,
        loss="cross_entropy",
        suffix="softmax",
        sampling=sampling,
    )


def mlp(
    dataset: Dataset | DatasetSplit,
    num_nodes: int,
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
        dataset: a dataset or a ``DatasetSplit``.
        num_nodes: ``n``.
        partition: ``"iid"``, ``"dirichlet"``, ``"shards"`` or a list of index arrays.
        hidden: widths of the hidden layers (may be empty: softmax regression).
        activation: one of ``relu``, ``tanh``, ``sigmoid``, ``gelu``, ``silu``, ``elu``.
        alpha: Dirichlet concentration (for ``"dirichlet"``).
        classes_per_node: shards per node (for ``"shards"``).
        batch_size: samples per node per round.
        l2: ridge coefficient.
        test: held-out set (overrides a split's test part).
        seed: seed of the partition.
        sampling: ``"with_replacement"`` or ``"without_replacement"`` (see
            :class:`ModuleTask`).
    """
    train, test = _resolve(dataset, test)
    if activation not in _ACTIVATIONS:
        raise TaskError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    widths = [check_int(f"hidden[{i}]", h, minimum=1) for i, h in enumerate(hidden)]
    n = check_int("num_nodes", num_nodes, minimum=1)
    layers: list[nn.Module] = []
    fan_in = train.num_features
    with torch.random.fork_rng(devices=[]):
        for width in widths:
            layers += [nn.Linear(fan_in, width), _ACTIVATIONS[activation]()]
            fan_in = width
        layers.append(nn.Linear(fan_in, train.num_classes))
    part = _make_partition(train, n, partition, alpha, classes_per_node, seed)
    shape = "-".join(str(w) for w in [train.num_features, *widths, train.num_classes])
    return ModuleTask(
        nn.Sequential(*layers),
        train,
        part,
        loss="cross_entropy",
        batch_size=batch_size,
        sampling=sampling,
        init="reset",  # each seed starts from its own initialisation
        test=test,
        seed=seed,
        l2=l2,
        name=f"{train.name}_mlp{shape}",
    )


__all__ = [
    "INITS",
    "SAMPLINGS",
    "LossFn",
    "ModuleTask",
    "TaskWarning",
    "logistic_regression",
    "mlp",
    "softmax_regression",
]
