"""ModuleTask with running statistics, dropout and augmentation, against independent
computations: each node's own ``nn.Module`` run alone in float64, masks from the keys,
evaluation with averaged buffers, replica batches and placements."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import vector_to_parameters

from decent import _stream
from decent.algorithms import DSGD
from decent.comm import SimCommunicator
from decent.engine import GradientOracle, train, train_replicas
from decent.tasks import Dataset, ModuleTask, TaskError, iid, random_classification
from decent.tasks.models import KeyedDropout, dropout_keep
from decent.topology import ring

DT = torch.float64
N = 4


@pytest.fixture(scope="module")
def data() -> Dataset:
    return random_classification(160, 6, 3, seed=0).to(dtype=DT)


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _state_of(module: nn.Module) -> torch.Tensor:
    bn = module[1]  # type: ignore[index]
    return torch.cat(
        [bn.running_mean, bn.running_var, bn.num_batches_tracked.to(DT).reshape(1)]
    ).detach()


def test_batchnorm_under_vmap_equals_each_node_alone(data: Dataset) -> None:
    task = ModuleTask(_bn_net(), data, iid(data.labels, N, seed=0), batch_size=10)
    assert task.buffer_dim == 8 + 8 + 1 and not task.stochastic
    oracle = GradientOracle(task)
    gen = torch.Generator().manual_seed(1)
    params = task.init_params(0) + 0.3 * torch.randn(N, task.dim, generator=gen, dtype=DT)
    alone = [_bn_net().to(DT).train() for _ in range(N)]  # each node's module, run by hand
    nodes = torch.arange(N)
    for t in range(1, 4):
        batch = task.sample(nodes, t, seed=0)
        grads, losses = oracle(params, batch)
        for i, module in enumerate(alone):
            vector_to_parameters(params[i].clone(), module.parameters())
            module.zero_grad()
            loss = F.cross_entropy(module(batch[0][i]), batch[1][i])
            loss.backward()
            g = torch.cat([p.grad.reshape(-1) for p in module.parameters()])  # type: ignore[union-attr]
            torch.testing.assert_close(grads[i], g, rtol=0, atol=1e-12)
            assert abs(float(losses[i]) - float(loss.detach())) < 1e-12
            assert oracle.buffers is not None
            torch.testing.assert_close(oracle.buffers[i], _state_of(module), rtol=0, atol=1e-12)
        params = params - 0.1 * grads
    # the statistics are the nodes' own: they differ between nodes
    assert oracle.buffers is not None
    assert not torch.allclose(oracle.buffers[0], oracle.buffers[1])


def test_evaluation_uses_the_averaged_buffers(data: Dataset) -> None:
    task = ModuleTask(_bn_net(), data, iid(data.labels, N, seed=0), batch_size=10)
    res = train(
        DSGD(lr=0.1), task, SimCommunicator(ring(N)), rounds=6, eval_every=6, per_node_eval="every"
    )
    buffers, x = res.extra["buffers"], res.output
    assert buffers.shape == (N, task.buffer_dim) and x is not None

    def shard_loss(params: torch.Tensor, state: torch.Tensor) -> float:
        """f = (1/n) sum_i mean loss on S_i of an eval-mode module holding these values."""
        module = _bn_net().to(DT)
        vector_to_parameters(params.clone(), module.parameters())
        bn = module[1]  # type: ignore[index]
        bn.running_mean.copy_(state[:8])
        bn.running_var.copy_(state[8:16])
        module.eval()
        with torch.no_grad():
            parts = [
                F.cross_entropy(module(data.features[s]), data.labels[s]) for s in task.partition
            ]
        return float(torch.stack(parts).mean())

    final = res.records[-1]
    at_mean = shard_loss(x.mean(0), buffers.mean(0))
    assert final["eval/loss@mean"] == pytest.approx(at_mean, rel=1e-12, abs=1e-12)
    per_node = [shard_loss(x[i], buffers[i]) for i in range(N)]
    assert final["eval/loss@node_max"] == pytest.approx(max(per_node), rel=1e-12, abs=1e-12)
    # with the start's statistics instead the value differs: the buffers are used
    assert abs(shard_loss(x.mean(0), task.init_buffers()) - at_mean) > 1e-6


def _dropout_net(p: float = 0.5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Dropout(p), nn.Linear(32, 3))


def test_dropout_is_keyed_by_seed_node_and_round_whatever_the_placement(data: Dataset) -> None:
    task = ModuleTask(_dropout_net(), data, iid(data.labels, 8, seed=0), batch_size=10)
    assert task.stochastic and task.buffer_dim == 0
    params = task.init_params(0)
    full = task.sample(torch.arange(8), 3, seed=7)
    alone = task.sample(torch.tensor([5]), 3, seed=7)
    assert int(full[-1][5]) == int(alone[-1][0])  # the key of (seed 7, node 5, round 3)
    assert len(set(full[-1].tolist())) == 8  # every node its own
    # node 5's gradient: the same held with 7 others or alone
    oracle = GradientOracle(task)
    g_full, _ = oracle(params.expand(8, -1).clone(), full)
    g_alone, _ = GradientOracle(task)(params[None].clone(), alone)
    torch.testing.assert_close(g_full[5], g_alone[0], rtol=0, atol=1e-12)
    # reproducible, and another round or seed gives another mask
    assert torch.equal(task.sample(torch.arange(8), 3, seed=7)[-1], full[-1])
    assert not torch.equal(task.sample(torch.arange(8), 4, seed=7)[-1], full[-1])
    assert not torch.equal(task.sample(torch.arange(8), 3, seed=8)[-1], full[-1])


def test_dropout_output_is_the_masked_hidden_layer_scaled(data: Dataset) -> None:
    p = 0.3
    task = ModuleTask(_dropout_net(p), data, iid(data.labels, 2, seed=0), batch_size=12)
    params = task.init_params(0)
    batch = task.sample(torch.arange(2), 1, seed=0)
    x, key = batch[0][1], batch[-1][1]
    out, _ = task.train_forward(params, x, key=key)
    lin1, lin2 = task.module[0], task.module[3]  # type: ignore[index]
    named = task.unflatten(params)
    hidden = torch.relu(x @ named["0.weight"].T + named["0.bias"])
    keep = dropout_keep(key, 0x9E3779B9, hidden.shape, p)  # the first dropout layer's salt
    expected = (hidden * keep / (1 - p)) @ named["3.weight"].T + named["3.bias"]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert isinstance(lin1, nn.Linear) and isinstance(lin2, nn.Linear)
    # evaluation is the eval-mode module: no dropout
    module = copy.deepcopy(task.module)
    vector_to_parameters(params.clone(), module.parameters())
    with torch.no_grad():
        torch.testing.assert_close(task.forward(params, x), module.eval()(x), rtol=0, atol=0)


def test_keyed_masks_keep_one_minus_p_and_drop_channels() -> None:
    key = torch.tensor(123456789)
    keep = dropout_keep(key, 17, (400, 250), 0.25)
    frac = float(keep.to(DT).mean())
    assert abs(frac - 0.75) < 4 * (0.25 * 0.75 / 1e5) ** 0.5  # 4 standard errors
    layer = KeyedDropout(0.5, channels=True, salt=3).train()
    layer.key.fill_(99)  # type: ignore[operator]
    y = layer(torch.ones(4, 6, 5, dtype=DT))
    per_channel = y.amax(dim=2) == y.amin(dim=2)  # a channel is kept or dropped whole
    assert bool(per_channel.all()) and 0 < float((y[:, :, 0] == 0).to(DT).mean()) < 1
    assert torch.equal(layer.eval()(torch.ones(2, 6, 5)), torch.ones(2, 6, 5))


def _noise(batch: tuple[torch.Tensor, torch.Tensor], gen: torch.Generator):
    x, y = batch
    return x + torch.randn(x.shape, generator=gen, dtype=x.dtype), y


def test_augmentation_is_a_function_of_seed_node_and_round(data: Dataset) -> None:
    part = iid(data.labels, 6, seed=0)
    plain = ModuleTask(nn.Linear(6, 3), data, part, batch_size=5)
    task = ModuleTask(nn.Linear(6, 3), data, part, batch_size=5, augment=_noise)
    full = task.sample(torch.arange(6), 2, seed=3)
    alone = task.sample(torch.tensor([4]), 2, seed=3)
    assert torch.equal(full[0][4], alone[0][0])
    assert torch.equal(full[0], task.sample(torch.arange(6), 2, seed=3)[0])
    raw = plain.sample(torch.arange(6), 2, seed=3)
    noise = full[0] - raw[0]
    assert torch.equal(full[1], raw[1]) and 0.5 < float(noise.std()) < 1.5
    assert not torch.equal(full[0], task.sample(torch.arange(6), 3, seed=3)[0])
    bad = ModuleTask(
        nn.Linear(6, 3), data, part, batch_size=5, augment=lambda b, g: (b[0][:2], b[1])
    )
    with pytest.raises(TaskError, match="augment must return"):
        bad.sample(torch.arange(6), 1, seed=0)


def test_replica_batch_with_batchnorm_dropout_and_augmentation_is_bit_for_bit(
    data: Dataset,
) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3)
    )
    task = ModuleTask(net, data, iid(data.labels, N, seed=0), batch_size=8, augment=_noise)
    algorithms, seeds = [DSGD(lr=0.05), DSGD(lr=0.1), DSGD(lr=0.05)], [0, 1, 2]
    batched = train_replicas(
        algorithms,
        [task] * 3,
        SimCommunicator(ring(N)),
        rounds=5,
        seeds=seeds,
        eval_every=5,
        per_node_eval="every",
    )
    for algo, seed, got in zip(algorithms, seeds, batched, strict=True):
        alone = train(
            algo,
            task,
            SimCommunicator(ring(N)),
            rounds=5,
            seed=seed,
            eval_every=5,
            per_node_eval="every",
        )
        assert got.output is not None and alone.output is not None
        assert torch.equal(got.output, alone.output)
        assert torch.equal(got.extra["buffers"], alone.extra["buffers"])
        for key in ("eval/loss@mean", "eval/accuracy@node_min"):
            assert got.records[-1][key] == alone.records[-1][key]


def test_private_training_refuses_running_statistics(data: Dataset) -> None:
    from decent.engine.privacy import Privacy

    task = ModuleTask(_bn_net(), data, iid(data.labels, N, seed=0))
    with pytest.raises(ValueError, match="GroupNorm"):
        train(
            DSGD(lr=0.1),
            task,
            SimCommunicator(ring(N)),
            rounds=2,
            privacy=Privacy(clip=1.0, noise_multiplier=1.0),
        )


def test_keys_are_the_streams_keys(data: Dataset) -> None:
    """The dropout key of (seed, node, t) is the low 32 bits of the library's keyed hash,
    so any process computes it from the three numbers alone."""
    task = ModuleTask(_dropout_net(), data, iid(data.labels, 3, seed=0))
    keys = task.sample(torch.arange(3), 5, seed=11)[-1]
    stream = 0x0DA7_A003
    assert keys.tolist() == [_stream.key(11, stream, 5, i) & 0xFFFFFFFF for i in range(3)]
