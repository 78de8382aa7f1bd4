"""Data-parallel AND equals single-process AND: 2 gloo processes x B/2 == 1 process x B.

The global batch is split into contiguous per-rank shards (GlobalBatchSampler), DDP averages the
gradients of the two half-batch means (= the full-batch mean), and the memory bank applies the
all-gathered updates of the whole global batch on every rank. With a backbone without BatchNorm
(BatchNorm statistics are per rank; use run.sync_batchnorm on GPUs) the weights, the bank, the
neighbourhoods and the loss trajectory are the single-process ones up to float rounding.
"""

from __future__ import annotations

import json
import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import free_port, tiny_backbone, tiny_dataset

from and_plugin import Trainer, load_config
from and_plugin.checkpoint import load_checkpoint
from and_plugin.distributed import all_gather_cat, broadcast_object

N = 100  # the last global batch (4) splits 2 + 2
BATCH = 32


def _config(output_dir, *extra):
    return load_config(None, [
        f"run.output_dir={output_dir}", "run.device=cpu", "run.progress=false", "run.threads=1",
        "run.deterministic=true", f"data.batch_size={BATCH}", "model.embedding_dim=16",
        "optim.round0_epochs=2", "optim.epochs_per_round=1", "method.rounds=2",  # plan (0,2) (1,1) (2,1)
        "eval.every_epochs=1", "eval.knn_k=10", *extra,  # a mid-round eval: rank 0 only, the others wait
    ])


def _snapshot(trainer: Trainer) -> dict:
    state = trainer.curriculum.state
    return {
        "bank": trainer.bank.bank.clone(),
        "model": {k: v.clone() for k, v in trainer.model.state_dict().items()},
        "losses": [h["loss"] for h in trainer.history],
        "anchor_mask": state.anchor_mask.clone(),
        "neighbours": state.neighbours.clone(),
        "knn": [r.get("knn") for r in trainer.round_records],
    }


def _worker(rank: int, world: int, port: int, output_dir: str, result_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        # the helpers the trainer relies on, checked in passing
        gathered = all_gather_cat(torch.full((rank + 1, 2), float(rank)))
        assert gathered.tolist() == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
        assert broadcast_object({"from": rank}) == {"from": 0}
        data = tiny_dataset(n=N)
        trainer = Trainer(_config(output_dir), tiny_backbone(), data, data, data)
        assert isinstance(trainer.train_model, torch.nn.parallel.DistributedDataParallel)
        # Rank 1 starts late, as a loaded node would: rank 0 has begun writing the run directory
        # by then, and rank 1 must still join the same new run (not refuse it, nor resume alone).
        time.sleep(3.0 * rank)
        trainer.fit()
        torch.save(_snapshot(trainer), os.path.join(result_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()



@pytest.mark.distributed
def test_two_ranks_with_half_batches_match_one_rank_with_the_full_batch(tmp_path):
    data = tiny_dataset(n=N)
    single = Trainer(_config(tmp_path / "single"), tiny_backbone(), data, data, data)
    single.fit()
    expected = _snapshot(single)

    mp.spawn(_worker, args=(2, free_port(), str(tmp_path / "ddp"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]

    # every rank holds the same bank and the same weights, bit for bit
    assert torch.equal(ranks[0]["bank"], ranks[1]["bank"])
    for key, value in ranks[0]["model"].items():
        assert torch.equal(value, ranks[1]["model"][key]), key
    got = ranks[0]
    # ... and they are the single-process ones
    assert torch.allclose(got["bank"], expected["bank"], atol=1e-5, rtol=0)
    for key, value in expected["model"].items():
        assert torch.allclose(got["model"][key], value, atol=1e-5, rtol=0), key
    assert len(got["losses"]) == len(expected["losses"]) == 4
    assert got["losses"] == pytest.approx(expected["losses"], abs=1e-5, rel=0)
    assert ranks[1]["losses"] == got["losses"]  # the loss of the global batch on every rank
    # the neighbourhood rounds found the same anchors and neighbours
    assert torch.equal(got["anchor_mask"], expected["anchor_mask"])
    assert torch.equal(got["neighbours"], expected["neighbours"])
    assert got["knn"] == pytest.approx(expected["knn"], abs=1e-6)
    assert ranks[1]["knn"] == [None, None, None]  # evaluation runs on rank 0 only

    # rank 0 alone wrote the metrics (one line per epoch, not per rank) and the checkpoint
    lines = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [(l["round"], l["epoch"]) for l in lines] == [(0, 0), (0, 1), (1, 0), (2, 0)]
    assert "knn" in lines[0]  # the every_epochs evaluation after epoch 1 of round 0
    checkpoint = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    assert torch.equal(checkpoint["memory_bank"]["bank"], got["bank"])
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir() if not p.name.startswith(".")) == [
        "checkpoint.pt", "config.yaml", "metrics.jsonl",
    ]
