"""Networks of the deep-learning study (issue 29): MNIST-1D and a 1-D CNN with GroupNorm,
and a character-level transformer on the Python standard library's source files.

MNIST-1D (Greydanus 2020) is generated here with the ``mnist1d`` package's
``make_dataset`` (never its ``get_dataset``, which downloads): 40-sample sequences of ten
digit templates, padded, shifted, sheared, scaled and noised. GroupNorm replaces BatchNorm
because BatchNorm fails under heterogeneous data (Hsieh et al. 2020), so the model is
stateless and every node's gradient depends on its own minibatch only.

The text task (:func:`char_lm`) reads files as bytes (a 256-symbol vocabulary, no
tokenizer), cuts them into windows of ``context`` bytes with the next byte of every position
as its target, and gives each node the windows of its own files: the standard library ships
with every Python, so nothing is downloaded (the numbers depend on the Python version).
"""

from __future__ import annotations

import functools
import math
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import annotated_types as at
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from decent._params import SEED, SIZE, SIZE_MAX, Doc, checked_args
from decent.tasks._checks import BatchSize, Nodes, PartitionSeed, TaskError, TestFraction
from decent.tasks._convnet import ConvNet1d
from decent.tasks.data import Dataset, DatasetNotFoundError, DatasetSplit, from_numpy
from decent.tasks.models import ModuleTask, _task
from decent.tasks.partition import by_group, dirichlet, iid


@functools.lru_cache(maxsize=2)
def _mnist1d_arrays(num_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    args.train_split = 1.0  # decent splits below, so test and train follow its seed
    data = make_dataset(args)
    x = np.concatenate([data["x"], data["x_test"]]) if len(data["x_test"]) else data["x"]
    y = np.concatenate([data["y"], data["y_test"]]) if len(data["y_test"]) else data["y"]
    return x, y


@checked_args("mnist1d", TaskError)
def mnist1d(
    *,
    num_samples: Annotated[
        int, at.Interval(ge=10, le=SIZE_MAX), Doc("Samples generated (train and test together).")
    ] = 40_000,
    test_fraction: TestFraction = 0.2,
    seed: Annotated[int, SEED, Doc("Seed of the generator and of the split.")] = 0,
    dtype: torch.dtype = torch.float64,
) -> DatasetSplit:
    """Generate MNIST-1D: ``num_samples`` sequences of 40 values, 10 classes.

    Features are standardized with the training split's statistics (one mean and scale per
    position, as for every other dataset of :mod:`decent.tasks`).

    Raises:
        TaskError: ``num_samples`` below 10 or a bad ``test_fraction``.
    """
    x, y = _mnist1d_arrays(num_samples, seed)
    data = from_numpy(x, y, name="mnist1d", num_classes=10, dtype=dtype)
    return data.train_test_split(test_fraction, seed=seed, standardize=True)


@checked_args("cnn1d", TaskError)
def cnn1d(
    data: DatasetSplit,
    num_nodes: Nodes,
    *,
    partition: str | Sequence[Any] = "dirichlet",
    alpha: float = 0.5,
    classes_per_node: int = 1,
    channels: Annotated[int, SIZE, Doc("Channels of every convolution.")] = 16,
    groups: Annotated[int, SIZE, Doc("GroupNorm groups (must divide channels).")] = 4,
    batch_size: BatchSize = 32,
    seed: PartitionSeed = 0,
    autograd: Annotated[
        bool,
        Doc(
            "Take gradients by vmap(grad(loss)) instead of the batched closed form (equal to "
            "rounding; results made before the closed form reproduce bit for bit only so)."
        ),
    ] = False,
) -> ModuleTask:
    """A 1-D CNN (:class:`ConvNet1d`) with cross-entropy, GroupNorm, no buffers.

    ``data`` is split over ``num_nodes`` nodes as :func:`~decent.tasks.mlp` splits it
    (``"iid"``, ``"dirichlet"`` with concentration ``alpha``, ``"shards"`` with
    ``classes_per_node``, or one index array per node); each training seed starts from its
    own initialisation (``init="reset"``). Gradients come from a batched closed form
    (:meth:`ModuleTask._cnn_grad_and_loss`), or with ``autograd=True`` from
    ``vmap(grad(loss))`` as before it existed.

    Raises:
        TaskError: ``groups`` does not divide ``channels``, an unknown partition, or a bad
            size.
    """
    c = channels
    if c % groups:
        raise TaskError(f"groups must divide channels, got groups={groups}, channels={c}")

    def build(train: Dataset) -> tuple[nn.Module, str, str]:
        return ConvNet1d(c, groups, train.num_classes), "cross_entropy", f"cnn{c}"

    args = (num_nodes, partition, alpha, classes_per_node, batch_size, 0.0, seed)
    return _task(data, None, (*args, "with_replacement"), build, closed_form=not autograd)


# --------------------------------------------------------------------------- text

BYTES = 256
"""The byte vocabulary of the text task: a symbol is a byte of the file as stored."""


class CausalBlock(nn.Module):
    """A pre-norm transformer block: ``h + attn(LN(h))``, then ``h + mlp(LN(h))``.

    Causal multi-head self-attention written with plain matmuls (``torch.func.vmap``
    batches them over nodes; torch's fused attention kernels fall back to a loop there),
    a GELU MLP of width ``4 * width``, no dropout.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width)
        self.out = nn.Linear(4 * width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        batch, length, width = h.shape
        head = width // self.heads
        qkv = self.qkv(self.norm1(h)).reshape(batch, length, 3, self.heads, head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, L, head) each
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(head))
        future = torch.ones(length, length, dtype=torch.bool, device=h.device).triu(1)
        attn = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        mixed = (attn @ v).transpose(1, 2).reshape(batch, length, width)
        h = h + self.proj(mixed)
        return h + self.out(F.gelu(self.fc(self.norm2(h))))


class CharTransformer(nn.Module):
    """A small causal transformer over bytes: token and learned position embeddings,
    ``layers`` :class:`CausalBlock` s, a final LayerNorm and a linear head.

    Input ``(B, L)`` symbol codes (integers, or floats holding integers: datasets are
    floating), ``L <= context``; output ``(B, L, vocab)`` next-symbol logits. Shared by the
    simulator's :func:`char_lm` and ``examples/ddp_charlm.py`` on real ranks.

    Example:
        >>> net = CharTransformer(width=16, layers=1, heads=2, context=8)
        >>> net(torch.zeros(3, 5, dtype=torch.long)).shape
        torch.Size([3, 5, 256])
    """

    def __init__(
        self,
        width: int = 64,
        layers: int = 2,
        heads: int = 4,
        context: int = 64,
        vocab: int = BYTES,
    ) -> None:
        super().__init__()
        if width % heads:
            raise TaskError(f"heads must divide width, got heads={heads}, width={width}")
        self.embed = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.blocks = nn.Sequential(*(CausalBlock(width, heads) for _ in range(layers)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[-1]
        h = self.embed(tokens.long()) + self.pos.weight[:length]
        return self.head(self.norm(self.blocks(h)))


def stdlib_sources() -> list[Path]:
    """The Python standard library's top-level ``.py`` files
    (``sysconfig.get_paths()["stdlib"]``), sorted by name."""
    return sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))


@checked_args("read_texts", TaskError)
def read_texts(
    paths: Sequence[str | Path],
    max_chars: Annotated[int | None, at.Ge(2), Doc("Bytes read per file.")] = None,
) -> list[torch.Tensor]:
    """Each file's bytes as a ``uint8`` tensor (its first ``max_chars`` bytes if given).

    Raises:
        DatasetNotFoundError: a path that is not a readable file (the message names it).
    """
    cap = max_chars
    out = []
    for path in paths:
        file = Path(path)
        if not file.is_file():
            raise DatasetNotFoundError(f"files: {str(path)!r} is not a file; give text files")
        raw = file.read_bytes()[:cap]
        out.append(
            torch.frombuffer(bytearray(raw), dtype=torch.uint8)
            if raw
            else torch.zeros(0, dtype=torch.uint8)
        )
    return out


class TextWindows(NamedTuple):
    """Windows of text as a dataset, and the file every training window came from."""

    data: DatasetSplit
    """Features ``(N, L)``: byte codes as floats; labels ``(N, L)``: the next byte of each."""
    sources: torch.Tensor
    """``(N_train,)`` int64: the training file (index into ``files``) of each window."""
    files: tuple[str, ...]
    """The training files' names, in the order of ``sources``."""


@checked_args("char_windows", TaskError)
def char_windows(
    texts: Sequence[torch.Tensor],
    context: Annotated[int, SIZE, Doc("Window length L.")],
    *,
    names: Sequence[str] | None = None,
    test_every: Annotated[int, at.Ge(0), Doc("Hold out every this many texts.")] = 10,
    dtype: torch.dtype = torch.float64,
) -> TextWindows:
    """Cut texts into non-overlapping windows of ``context`` bytes with next-byte targets.

    Text ``c`` (of length ``n``) gives windows ``c[s : s + L]`` with targets
    ``c[s + 1 : s + L + 1]`` for ``s = 0, L, 2L, ...`` while ``s + L + 1 <= n``
    (``L = context``); a text shorter than ``L + 1`` bytes gives none. Texts ``0,
    test_every, 2 test_every, ...`` are held out whole as the test set (unseen modules, not
    unseen windows of seen ones); ``test_every = 0`` holds none out.

    Raises:
        TaskError: no training window, or no test window when one is asked for.
    """
    names = list(names) if names is not None else [f"text{i}" for i in range(len(texts))]
    parts: dict[bool, list[tuple[torch.Tensor, int]]] = {True: [], False: []}
    train_names: list[str] = []
    for i, codes in enumerate(texts):
        count = (codes.numel() - 1) // context
        if count <= 0:
            continue
        body = codes[: count * context + 1].long()
        idx = torch.arange(count)[:, None] * context + torch.arange(context + 1)
        held = test_every > 0 and i % test_every == 0
        if not held:
            train_names.append(names[i])
        parts[held].append((body[idx], len(train_names) - 1))
    if not parts[False]:
        raise TaskError(
            f"context={context}: no training file has more than {context} bytes; give longer "
            "files, more files, or a shorter context"
        )
    if test_every and not parts[True]:
        raise TaskError(
            f"test_every={test_every}: the held-out files (0, {test_every}, ...) give no window of "
            f"{context + 1} bytes; give more files, or test_every=0 for no test set"
        )

    def dataset(chunks: list[tuple[torch.Tensor, int]], name: str) -> Dataset:
        w = torch.cat([c for c, _ in chunks])
        return Dataset(w[:, :-1].to(dtype), w[:, 1:].contiguous(), BYTES, name)

    train = dataset(parts[False], "text")
    test = dataset(parts[True], "text") if parts[True] else None
    sources = torch.cat([torch.full((c.shape[0],), f, dtype=torch.int64) for c, f in parts[False]])
    return TextWindows(DatasetSplit(train, test), sources, tuple(train_names))


@functools.lru_cache(maxsize=4)
def _text_windows(
    files: tuple[str, ...],
    max_files: int | None,
    max_chars: int | None,
    context: int,
    test_every: int,
    dtype: torch.dtype,
) -> TextWindows:
    paths: list[Path] = [Path(f) for f in files] if files else stdlib_sources()
    if not paths:
        raise TaskError("files: the standard library has no .py files here; give files")
    if max_files is not None and max_files < len(paths):  # evenly spaced, first and last kept
        keep = np.unique(np.round(np.linspace(0, len(paths) - 1, max_files)).astype(np.int64))
        paths = [paths[int(i)] for i in keep]
    texts = read_texts(paths, max_chars)
    return char_windows(
        texts, context, names=[p.name for p in paths], test_every=test_every, dtype=dtype
    )


@checked_args("char_lm", TaskError)
def char_lm(
    num_nodes: Nodes,
    *,
    files: Annotated[
        tuple[str, ...],
        Doc(
            "Text files to train on, in this order (empty: the standard library's top-level .py files, sorted)."
        ),
    ] = (),
    max_files: Annotated[
        int | None, SIZE, Doc("Use this many files, evenly spaced in the list (None: all).")
    ] = None,
    max_chars: Annotated[
        int | None,
        at.Interval(ge=2, le=1 << 30),
        Doc("Use each file's first this many bytes (None: all)."),
    ] = None,
    context: Annotated[int, at.Interval(ge=1, le=4096), Doc("Window length L in bytes.")] = 32,
    width: Annotated[int, SIZE, Doc("Transformer width (embedding size).")] = 32,
    layers: Annotated[int, SIZE, Doc("Transformer blocks.")] = 2,
    heads: Annotated[int, SIZE, Doc("Attention heads (must divide width).")] = 2,
    partition: Annotated[
        Literal["by_file", "dirichlet", "iid"],
        Doc("by_file: each node its own files; dirichlet: files as classes, skew alpha; iid."),
    ] = "by_file",
    alpha: Annotated[
        float,
        at.Interval(gt=0.0, le=1e3),
        Doc("Dirichlet concentration over files (partition = dirichlet)."),
    ] = 0.5,
    test_every: Annotated[
        int,
        at.Interval(ge=0, le=1 << 20),
        Doc("Hold out files 0, k, 2k, ... as the test set (0: none)."),
    ] = 10,
    batch_size: BatchSize = 16,
    seed: PartitionSeed = 0,
    dtype: torch.dtype = torch.float64,
) -> ModuleTask:
    """Character-level language modelling: a causal byte-level transformer on text files.

    The model is :class:`CharTransformer`.

    The files (default: the standard library's top-level ``.py`` files, sorted by name) are
    read as bytes and cut by :func:`char_windows` into ``(N, L)`` windows with ``(N, L)``
    next-byte targets; the loss is the token-level cross-entropy in nats per byte (bits per
    character: divide by ``ln 2``), the accuracy the share of next bytes predicted right.
    Every seed starts from its own initialisation (``init="reset"``).

    Heterogeneity comes from the files, not from labels: ``"by_file"`` gives every node the
    windows of its own files (:func:`~decent.tasks.partition.by_group`, sizes balanced),
    the natural non-iid split of text; ``"dirichlet"`` maps the label-skew split onto text
    by taking each window's *file* as its class: every file's windows are spread over the
    nodes in proportions drawn from ``Dir(alpha)``, so ``alpha = 0.1`` puts most of a file
    on one node (close to ``"by_file"``) and ``alpha = 100`` is close to ``"iid"``.

    Raises:
        TaskError: a file that cannot be read, too little text for ``context`` or for the
            nodes, ``heads`` not dividing ``width``, or a bad size.

    Example:
        >>> task = char_lm(4, max_files=12, max_chars=400, context=16, width=16, layers=1,
        ...                test_every=6, dtype=torch.float32)
        >>> task.train.features.shape[1], task.train.labels.shape[1], task.num_nodes
        (16, 16, 4)
    """
    if width % heads:
        raise TaskError(f"heads must divide width, got heads={heads}, width={width}")
    files = tuple(str(f) for f in files)
    text = _text_windows(files, max_files, max_chars, context, test_every, dtype)
    if partition == "by_file":
        shards = by_group(text.sources, num_nodes, seed=seed)
    elif partition == "dirichlet":
        shards = dirichlet(text.sources, num_nodes, alpha, seed=seed)
    else:
        shards = iid(text.sources, num_nodes, seed=seed)
    with torch.random.fork_rng(devices=[]):
        module = CharTransformer(width, layers, heads, context)
    train, test = text.data
    return ModuleTask(
        module,
        train,
        shards,
        loss="cross_entropy",
        batch_size=batch_size,
        init="reset",
        test=test,
        seed=seed,
        name=f"text_chartransformer{width}x{layers}",
    )


__all__ = [
    "BYTES",
    "CausalBlock",
    "CharTransformer",
    "ConvNet1d",
    "TextWindows",
    "char_lm",
    "char_windows",
    "cnn1d",
    "mnist1d",
    "read_texts",
    "stdlib_sources",
]
