"""ANDModule with a sharded bank under Lightning's DDP (2 gloo ranks), as a user would run it.

The module is created before the process group exists (as in every Lightning script) and
builds its sharded bank in ``setup()``. The sharded run must train like the replicated one
(weights and bank equal to float rounding, anchors and neighbours identical), its checkpoints
must hold every rank's rows without any rank holding the whole bank, and ``ckpt_path="last"``
must continue the run.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch
import torch.multiprocessing as mp
from conftest import free_port, join_as_launched_rank, tiny_backbone, tiny_dataset
from pytorch_lightning.callbacks import ModelCheckpoint
from test_lightning import BATCH, config, lightning_trainer
from torch.utils.data import DataLoader

from and_plugin.distributed import all_gather_cat
from and_plugin.lightning import ANDModule

N = 100
WORLD = 2


def _worker(rank: int, port: int, output_dir: str, layout: str, stop_at: int | None, resume: bool) -> None:
    join_as_launched_rank(rank, WORLD, port)
    torch.set_num_threads(1)
    data = tiny_dataset(n=N)
    module = ANDModule(tiny_backbone(), N, config(output_dir, f"method.bank_layout={layout}", "eval.collapse_cosine=null"))
    checkpoints = ModelCheckpoint(dirpath=os.path.join(output_dir, "checkpoints"), save_last=True,
                                  every_n_epochs=1, save_top_k=-1)
    epochs = stop_at or module.total_epochs
    trainer = lightning_trainer(epochs, [checkpoints], accelerator="cpu", devices=WORLD, strategy="ddp",
                                enable_checkpointing=True, default_root_dir=output_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a max_epochs that cuts the plan warns; intended here
        trainer.fit(module, DataLoader(data, batch_size=BATCH // WORLD, shuffle=False),
                    ckpt_path="last" if resume else None)
    bank = module.method.bank.bank
    if module.method.sharded:
        assert bank.shape[0] == module.method.partition.count < N  # this rank's rows only
        bank = all_gather_cat(bank)
    state = module.method.curriculum.state
    if rank == 0:
        torch.save({"bank": bank.clone(), "anchor_mask": state.anchor_mask.clone(),
                    "neighbours": state.neighbours.clone(), "round": module.method.round,
                    "weights": {k: v.clone() for k, v in module.backbone.state_dict().items()}},
                   os.path.join(output_dir, "result.pt"))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _fit(path, layout, stop_at=None, resume=False):
    path.mkdir(exist_ok=True)
    mp.spawn(_worker, args=(free_port(), str(path), layout, stop_at, resume), nprocs=WORLD, join=True)
    return torch.load(path / "result.pt", weights_only=False)


def _same(a, b):
    assert torch.allclose(a["bank"].float(), b["bank"].float(), atol=2e-5)
    for key, value in a["weights"].items():
        assert torch.allclose(value, b["weights"][key], atol=2e-5), key
    assert torch.equal(a["anchor_mask"], b["anchor_mask"])
    assert torch.equal(a["neighbours"], b["neighbours"])
    assert a["round"] == b["round"] == 2


@pytest.mark.distributed
@pytest.mark.slow
def test_a_sharded_ANDModule_trains_like_the_replicated_one_and_resumes_from_last(tmp_path):
    replicated = _fit(tmp_path / "replicated", "replicated")
    sharded = _fit(tmp_path / "sharded", "sharded")
    _same(sharded, replicated)
    saves = sorted((tmp_path / "sharded" / "and_bank").glob("step-*"), key=lambda p: p.stat().st_mtime)
    assert len(saves) == 2  # the last save's rows and the one before (its .ckpt may be the newest on disk)
    newest = next(saves[-1].glob("shards-*"))
    assert sorted(p.name for p in newest.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]  # one per rank

    _fit(tmp_path / "resumed", "sharded", stop_at=3)  # into round 1 (plan: 2 + 2 + 2 epochs)
    resumed = _fit(tmp_path / "resumed", "sharded", resume=True)
    _same(resumed, sharded)


def test_a_sharded_ANDModule_outside_torch_distributed_says_what_to_run(tmp_path):
    module = ANDModule(tiny_backbone(), N, config(tmp_path, "method.bank_layout=sharded"))
    assert module.method is None  # built when the fit starts
    with pytest.raises(ValueError, match="method.bank_layout='sharded' needs torch.distributed: start the run with"):
        lightning_trainer(module.total_epochs).fit(module, DataLoader(tiny_dataset(n=N), batch_size=BATCH))
