"""The character-level language-modelling task: windows, the file split, the token-level
loss against torch's cross-entropy, vmapped gradients against autograd, and config."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from decent.config import build_task, validate
from decent.tasks import TaskError
from decent.tasks.data import DatasetNotFoundError
from decent.tasks.nets import (
    BYTES,
    CharTransformer,
    char_lm,
    char_windows,
    read_texts,
    stdlib_sources,
)

SMALL: dict[str, Any] = {"context": 8, "width": 8, "layers": 2, "heads": 2, "batch_size": 4}


def _write_files(folder: Path, count: int = 9, size: int = 90) -> tuple[str, ...]:
    """``count`` files of different text (file ``i`` repeats its own pattern)."""
    paths = []
    for i in range(count):
        path = folder / f"f{i:02d}.txt"
        line = f"def f{i}(x):\n    return x * {i} + {i * i}  # file {i}\n"
        path.write_bytes((line * (size // len(line) + 1)).encode()[: size + 7 * i])
        paths.append(str(path))
    return tuple(paths)


def test_char_windows_are_the_next_byte_targets_of_non_overlapping_spans():
    texts = [
        torch.frombuffer(bytearray(t), dtype=torch.uint8)
        for t in (b"0123456789", b"abcdefg", b"xy", b"ABCDEFGHIJ")
    ]
    split = char_windows(texts, 3, names=["a", "b", "c", "d"], test_every=3)
    train, test = split.data
    assert train is not None and test is not None
    as_text = lambda rows: ["".join(map(chr, r)) for r in rows.long().tolist()]  # noqa: E731
    # text 0 and 3 are held out; text 2 is too short for one window of 3 + 1 bytes
    assert as_text(train.features) == ["abc", "def"]
    assert as_text(train.labels) == ["bcd", "efg"]
    assert as_text(test.features) == ["012", "345", "678", "ABC", "DEF", "GHI"]
    assert as_text(test.labels) == ["123", "456", "789", "BCD", "EFG", "HIJ"]
    assert split.sources.tolist() == [0, 0] and split.files == ("b",)  # c gave no window
    assert train.num_classes == BYTES


def test_loss_and_evaluation_equal_torch_cross_entropy_on_the_module_logits(tmp_path):
    task = char_lm(3, files=_write_files(tmp_path), test_every=4, **SMALL)
    params = task.init_params(5)
    net = CharTransformer(8, 2, 2, 8).double()  # an independent copy with the same weights
    torch.nn.utils.vector_to_parameters(params, net.parameters())
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, BYTES, (5, 8), generator=gen)
    y = torch.randint(0, BYTES, (5, 8), generator=gen)
    net.requires_grad_(False)
    logits = net(x)  # (5, 8, 256)
    expected = F.cross_entropy(logits.reshape(-1, BYTES), y.reshape(-1))
    got = task.loss(params, (x.double(), y))
    assert abs(float(got) - float(expected)) < 1e-12
    # evaluation: test loss in nats per byte and next-byte accuracy over every test token
    test = task.test
    assert test is not None
    out = net(test.features.long())
    ev = task.evaluate(params[None])
    want = F.cross_entropy(out.reshape(-1, BYTES), test.labels.reshape(-1))
    assert abs(float(ev["test_loss"][0]) - float(want)) < 1e-12
    right = (out.argmax(-1) == test.labels).double().mean()
    assert abs(float(ev["test_accuracy"][0]) - float(right)) < 1e-12
    # the training objective weighs the nodes' shards equally (each shard's mean)
    train_out = net(task.train.features.long())
    per_window = F.cross_entropy(
        train_out.transpose(1, 2), task.train.labels, reduction="none"
    ).mean(1)
    f = sum(per_window[s].mean() for s in task.partition) / task.num_nodes
    assert abs(float(ev["loss"][0]) - float(f)) < 1e-12


def test_vmapped_gradients_equal_autograd_node_by_node(tmp_path):
    task = char_lm(3, files=_write_files(tmp_path), test_every=4, **SMALL)
    nodes = torch.arange(3)
    params = torch.stack([task.init_params(s) for s in range(3)])
    batch = task.sample(nodes, 7, seed=1)
    assert batch[0].shape == (3, 4, 8) and batch[1].shape == (3, 4, 8)
    grads, losses = torch.func.vmap(torch.func.grad_and_value(task.loss))(params, batch)
    for i in range(3):
        p = params[i].clone().requires_grad_(True)
        loss = task.loss(p, (batch[0][i], batch[1][i]))
        (g,) = torch.autograd.grad(loss, p)
        np.testing.assert_allclose(grads[i].numpy(), g.numpy(), rtol=0, atol=1e-12)
        assert abs(float(losses[i]) - float(loss.detach())) < 1e-12


def test_the_file_split_is_deterministic_and_each_node_holds_its_own_files(tmp_path):
    files = _write_files(tmp_path, count=12)
    a = char_lm(4, files=files, test_every=0, seed=3, **SMALL)
    b = char_lm(4, files=files, test_every=0, seed=3, **SMALL)
    assert all(torch.equal(p, q) for p, q in zip(a.partition, b.partition, strict=True))
    assert torch.equal(a.train.features, b.train.features)
    # by_file: every window once, and no file on two nodes
    from decent.tasks.nets import _text_windows

    sources = _text_windows(tuple(files), None, None, 8, 0, torch.float64).sources
    owners = [set(sources[p].tolist()) for p in a.partition]
    assert sum(len(o) for o in owners) == len(set().union(*owners)) == 12
    assert torch.equal(torch.cat(a.partition).sort().values, torch.arange(len(a.train)))
    # the minibatches are a function of (seed, node, t)
    assert all(
        torch.equal(u, v)
        for u, v in zip(
            a.sample(torch.arange(4), 2, 9), b.sample(torch.arange(4), 2, 9), strict=True
        )
    )
    # dirichlet over files and iid are deterministic too, and differ from by_file
    for kind in ("dirichlet", "iid"):
        c = char_lm(4, files=files, test_every=0, seed=3, partition=kind, alpha=0.3, **SMALL)
        d = char_lm(4, files=files, test_every=0, seed=3, partition=kind, alpha=0.3, **SMALL)
        assert all(torch.equal(p, q) for p, q in zip(c.partition, d.partition, strict=True))
        assert any(not torch.equal(p, q) for p, q in zip(c.partition, a.partition, strict=True))


def test_standard_library_default_is_sorted_and_read_as_bytes():
    paths = stdlib_sources()
    assert paths == sorted(paths) and all(p.suffix == ".py" for p in paths) and len(paths) > 20
    task = char_lm(2, max_files=6, max_chars=300, test_every=3, **SMALL)
    first = read_texts(paths[:1], 300)[0]
    # file 0 is held out: the test set starts with its first window
    assert task.test is not None
    assert torch.equal(task.test.features[0].long(), first[:8].long())
    assert task.dim == sum(p.numel() for p in CharTransformer(8, 2, 2, 8).parameters())


def test_bad_input_is_one_line_naming_the_field(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"files: '.*nope.txt' is not a file"):
        char_lm(2, files=(str(tmp_path / "nope.txt"),), **SMALL)
    files = _write_files(tmp_path, count=3)
    with pytest.raises(TaskError, match=r"num_nodes=5 needs at least 5 groups"):
        char_lm(5, files=files, test_every=0, **SMALL)
    with pytest.raises(TaskError, match=r"heads must divide width"):
        char_lm(2, files=files, **{**SMALL, "heads": 3})
    with pytest.raises(TaskError, match=r"context=500: no training file"):
        char_lm(2, files=files, **{**SMALL, "context": 500})


def test_config_kind_char_lm_builds_the_task(tmp_path):
    files = _write_files(tmp_path, count=6)
    raw: dict[str, Any] = {
        "study": "t",
        "rounds": 2,
        "topology": {"kind": "ring", "num_nodes": 3},
        "algorithm": {"kind": "dsgd", "lr": 0.01, "transforms": [{"kind": "adamw"}]},
        "task": {"kind": "char_lm", "files": list(files), "test_every": 3, **SMALL},
    }
    cfg = validate(raw, "test")
    task: Any = build_task(cfg.task, 3, "float64")
    assert task.num_nodes == 3 and task.train.labels.shape[1] == 8
    assert math.isclose(
        float(task.evaluate(task.init_params(0)[None])["test_loss"][0]),
        math.log(BYTES),
        rel_tol=0.2,
    )
    with pytest.raises(Exception, match=r"task.*context"):
        validate({**raw, "task": {**raw["task"], "context": 0}}, "test")
