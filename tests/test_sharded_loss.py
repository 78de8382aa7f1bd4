"""The sharded bank equals the replicated one: loss, gradients and writes (gloo, W ∈ {1, 2, 4}).

Every rank builds the same seeded bank, round state and global batch; the sharded loss of its
slice of the batch must equal Eq 7 against the whole bank computed locally by the plain
reference, and its gradients too (for an arbitrary upstream gradient, so that the reduce-scatter
of the backward is checked, not only the mean). Uneven shards (N = 37) and an uneven batch
split are part of it.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from conftest import free_port

from and_plugin import ANDMethod, MemoryBank, NeighbourhoodLoss, RoundState, neighbourhood_loss
from and_plugin.config import MethodConfig
from and_plugin.distributed import all_gather_cat
from and_plugin.sharded import RowPartition, ShardedMemoryBank, ShardedNeighbourhoodLoss

N, DIM, BATCH = 37, 8, 11


def _round_state(k: int) -> RoundState:
    generator = torch.Generator().manual_seed(k)
    neighbours = torch.randint(0, N, (N, k), generator=generator)
    anchors = torch.rand(N, generator=generator) < 0.5
    return RoundState(1, anchors, neighbours, torch.rand(N, generator=generator))


def _slice(rank: int, world: int) -> slice:
    bounds = torch.linspace(0, BATCH, world + 1).round().long().tolist()  # uneven when W ∤ B
    return slice(bounds[rank], bounds[rank + 1])


def _check_rank(rank: int, world: int, dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(7)
    whole = MemoryBank(N, DIM, seed=3, dtype=dtype)
    sharded = ShardedMemoryBank(N, DIM, seed=3, dtype=dtype)
    part = RowPartition(N, world, rank)
    assert sharded.bank.shape == (part.count, DIM)
    assert torch.equal(sharded.bank, whole.bank[part.start : part.stop])  # same initial rows
    indices = torch.randint(0, N, (BATCH,), generator=generator)
    indices[3] = indices[0]  # a repeated index within the global batch
    features = F.normalize(torch.randn(BATCH, DIM, generator=generator), dim=1)
    upstream = torch.randn(BATCH, generator=generator)
    mine = _slice(rank, world)
    criterion = ShardedNeighbourhoodLoss(temperature=0.07)
    with pytest.raises(ValueError, match="^bank: a ShardedMemoryBank holds this rank's rows only; use "):
        NeighbourhoodLoss(temperature=0.07)(features[:2], indices[:2], sharded)  # a loss of the shard alone
    for state in (None, _round_state(1), _round_state(3)):
        positives, mask = (indices.view(-1, 1), None) if state is None else state.positives(indices)
        x = features.clone().requires_grad_()
        expected = neighbourhood_loss(x, whole.bank.float(), positives, mask, 0.07, reduction="none")
        (expected * upstream).sum().backward()
        local = features[mine].clone().requires_grad_()
        got = criterion(local, indices[mine], sharded, state, reduction="none")
        (got * upstream[mine]).sum().backward()
        torch.testing.assert_close(got, expected[mine].detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(local.grad, x.grad[mine], rtol=1e-5, atol=1e-5)
        mean = criterion(features[mine], indices[mine], sharded, state)  # the default reduction
        torch.testing.assert_close(mean, expected[mine].mean().detach(), rtol=1e-5, atol=1e-5)
    bad = indices.clone()
    bad[0] = N  # in rank 0's slice: every rank raises, since all check the gathered batch
    with pytest.raises(ValueError, match=rf"indices must lie in \[0, {N}\)"):
        criterion(features[mine], bad[mine], sharded)
    written = torch.zeros(part.count, dtype=torch.bool)
    whole.update(indices[mine], features[mine])  # replicated: the gathered batch on every rank
    sharded.update(indices[mine], features[mine], written=written)
    assert torch.equal(all_gather_cat(sharded.bank), whole.bank)  # bit for bit
    assert torch.equal(written, torch.isin(torch.arange(part.start, part.stop), indices))
    torch.testing.assert_close(sharded.row_sum(), whole.bank.float().sum(0))
    assert torch.equal(sharded.rows(indices), whole.bank[indices].float())


def _worker(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        for dtype in (torch.float32, torch.float16):
            _check_rank(rank, world, dtype)
        # ANDMethod builds the sharded loss with the settings the replicated one would take.
        method = ANDMethod(N, DIM, MethodConfig(bank_layout="sharded", loss_kwargs={"temperature": 0.5}))
        assert isinstance(method.criterion, ShardedNeighbourhoodLoss) and method.criterion.temperature == 0.5
        with pytest.raises(ValueError, match="^method.miner: the 'neighbourhood' loss takes no miner"):
            ANDMethod(N, DIM, MethodConfig(bank_layout="sharded", miner="and"))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.parametrize("world", [1, 2, 4])
def test_sharded_loss_gradients_and_writes_equal_the_whole_bank(world):
    mp.spawn(_worker, args=(world, free_port()), nprocs=world, join=True)


def test_a_sharded_bank_outside_torch_distributed_says_what_to_run():
    with pytest.raises(ValueError, match=r"^method.bank_layout='sharded' needs torch.distributed: start the run "
                                         r"with `torchrun --nproc_per_node=W"):
        ShardedMemoryBank(10, 4)


def test_the_initial_rows_of_a_shard_are_the_replicated_bank_rows():
    whole = MemoryBank(1001, 8, seed=5).bank
    for world in (1, 3, 4):
        rows = [ShardedMemoryBank(1001, 8, seed=5, partition=RowPartition(1001, world, r)).bank for r in range(world)]
        assert torch.equal(torch.cat(rows), whole)


@pytest.mark.parametrize("overrides, message", [
    (["method.bank_layout=sharded", "method.loss=contrastive"],
     "method.loss must be 'neighbourhood' with method.bank_layout='sharded' (PML losses and miners read the whole "
     "bank), got 'contrastive'"),
    (["method.bank_layout=sharded", "method.discovery=faiss"],
     "method.discovery must be 'exact' with method.bank_layout='sharded' (faiss searches an index of the whole "
     "bank), got 'faiss'"),
    (["method.discovery_kwargs={nprobe: 4}"],
     "method.discovery_kwargs must be empty with method.discovery='exact' (the keys are faiss's), got {'nprobe': 4}"),
    (["method.bank_layout=shard"], "method.bank_layout must be one of ['replicated', 'sharded'], got 'shard'"),
    (["method.bank_layout=sharded", "method.temperature=0.001"],
     "method.temperature must be >= 0.003 with method.bank_layout='sharded' (the shards' sums are combined in "
     "float64), got 0.001"),
])
def test_settings_a_sharded_bank_cannot_honour_are_refused_when_the_config_is_read(overrides, message):
    from and_plugin import ConfigError, load_config

    with pytest.raises(ConfigError) as error:
        load_config(None, overrides)
    assert str(error.value) == message
