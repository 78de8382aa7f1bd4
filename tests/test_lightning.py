"""ANDModule under a real, unmodified pytorch_lightning Trainer (CPU, fp32).

The Lightning module and our Trainer run the same ANDMethod: with the same seed and the same
batches they produce the same loss at every step and the same bank. Lightning checkpoints carry
the bank and the round, so a resumed fit continues the round it stopped in; under
strategy="ddp" (2 gloo processes) every rank holds one identical bank.
"""

from __future__ import annotations

import os

import pytest
import pytorch_lightning as pl
import torch
import torch.multiprocessing as mp
from conftest import free_port, join_as_launched_rank, tiny_backbone, tiny_dataset
from lightly.transforms.multi_view_transform import MultiViewTransform
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader
from torchvision.transforms import v2 as T

from and_plugin import Trainer, load_config
from and_plugin.data.base import IndexedDataset
from and_plugin.lightning import CHECKPOINT_KEY, ANDModule, KNNMonitor
from and_plugin.sampling import GlobalBatchSampler

BATCH = 32


def config(tmp_path, *extra):
    return load_config(None, [
        f"run.output_dir={tmp_path}", "run.device=cpu", "run.progress=false", "run.threads=1",
        "run.deterministic=true", "optim.epochs_per_round=2", "method.rounds=2", f"data.batch_size={BATCH}",
        "model.embedding_dim=16", *extra,
    ])


def lightning_trainer(max_epochs, callbacks=(), **kwargs) -> pl.Trainer:
    options = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False)
    options.update(kwargs)
    return pl.Trainer(max_epochs=max_epochs, callbacks=list(callbacks), **options)


class TrainerBatches(pl.Callback):
    """Feeds Lightning the batches our Trainer draws: the sampler epoch is round * 100000 + epoch."""

    def __init__(self, sampler: GlobalBatchSampler) -> None:
        self.sampler = sampler

    def on_train_epoch_start(self, trainer, pl_module):
        round_index, epoch, _ = pl_module.round_position(trainer.current_epoch)
        self.sampler.set_epoch(round_index * 100_000 + epoch)


class StepLosses(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


class Recording(torch.nn.Module):
    """Calls the real criterion and records each step's loss (our Trainer has no per-step hook)."""

    def __init__(self, criterion) -> None:
        super().__init__()
        self.criterion = criterion
        self.losses: list[float] = []

    def forward(self, *args, **kwargs):
        loss = self.criterion(*args, **kwargs)
        self.losses.append(float(loss.detach()))
        return loss


def trainer_batches(data, cfg):
    sampler = GlobalBatchSampler(len(data), BATCH, 0, 1, shuffle=True, seed=cfg.run.seed)
    return DataLoader(data, batch_sampler=sampler), TrainerBatches(sampler)


def test_lightning_matches_our_trainer_step_by_step(tmp_path):
    data = tiny_dataset()
    cfg = config(tmp_path / "ours")
    ours = Trainer(cfg, tiny_backbone(), data)
    recording = Recording(ours.method.criterion)
    ours.method.criterion = recording
    ours.fit()

    module = ANDModule(tiny_backbone(), len(data), config(tmp_path / "pl"), normalize=False)
    loader, batches = trainer_batches(data, cfg)
    losses = StepLosses()
    lightning_trainer(module.total_epochs, [batches, losses]).fit(module, loader)

    assert module.total_epochs == 6 and len(losses.losses) == len(recording.losses) == 6 * 3
    assert losses.losses == pytest.approx(recording.losses, abs=1e-5, rel=0)
    assert torch.allclose(module.method.bank.bank, ours.bank.bank, atol=1e-5, rtol=0)
    assert module.method.round == ours.method.round == 2
    assert torch.equal(module.method.curriculum.state.anchor_mask, ours.curriculum.state.anchor_mask)
    assert torch.equal(module.method.curriculum.state.neighbours, ours.curriculum.state.neighbours)
    for key, value in ours.model.state_dict().items():
        assert torch.allclose(module.backbone.state_dict()[key], value, atol=1e-5, rtol=0), key


def test_lightning_resume_continues_the_round(tmp_path):
    data = tiny_dataset()
    cfg = config(tmp_path)
    straight = ANDModule(tiny_backbone(), len(data), cfg)
    loader, batches = trainer_batches(data, cfg)
    lightning_trainer(straight.total_epochs, [batches]).fit(straight, loader)

    first = ANDModule(tiny_backbone(), len(data), cfg)
    loader, batches = trainer_batches(data, cfg)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    with pytest.warns(UserWarning, match=r"max_epochs=3\) is shorter than AND's 6-epoch plan"):  # stops in round 1
        lightning_trainer(3, [batches, checkpoints], enable_checkpointing=True).fit(first, loader)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)[CHECKPOINT_KEY]
    assert saved["round"] == 1 and saved["curriculum"]["state"]["round"] == 1

    class FirstEpoch(pl.Callback):
        seen = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if self.seen is None:
                state = pl_module.method.curriculum.state
                self.seen = (trainer.current_epoch, pl_module.method.round, state.anchor_mask.clone())

    resumed = ANDModule(tiny_backbone(seed=123), len(data), cfg)
    loader, batches = trainer_batches(data, cfg)
    first_epoch = FirstEpoch()
    lightning_trainer(resumed.total_epochs, [batches, first_epoch]).fit(
        resumed, loader, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    epoch, round_index, anchors = first_epoch.seen
    assert (epoch, round_index) == (3, 1)  # round 1's second epoch, no new discovery
    assert torch.equal(anchors, saved["curriculum"]["state"]["anchor_mask"])
    assert torch.allclose(resumed.method.bank.bank, straight.method.bank.bank, atol=1e-6, rtol=0)
    assert torch.equal(resumed.method.curriculum.state.anchor_mask, straight.method.curriculum.state.anchor_mask)
    for key, value in straight.backbone.state_dict().items():
        assert torch.allclose(resumed.backbone.state_dict()[key], value, atol=1e-6, rtol=0), key


def two_view_data(n: int = 96):
    base = tiny_dataset(n=n)
    views = MultiViewTransform([T.RandomResizedCrop(8, scale=(0.5, 1.0)), T.RandomHorizontalFlip(1.0)])
    return IndexedDataset(base, base.targets, base.classes, transform=views)


def test_two_view_training_and_knn_monitor(tmp_path):
    data = two_view_data()
    images, _, _ = data[0]
    assert isinstance(images, list) and len(images) == 2
    torch.manual_seed(0)
    module = ANDModule(tiny_backbone(), len(data), config(tmp_path), labels=data.targets)
    plain = tiny_dataset()
    monitor = KNNMonitor(DataLoader(plain, batch_size=64), DataLoader(plain, batch_size=64), num_classes=4, k=10)
    start = module.method.bank.bank.clone()
    lightning_trainer(module.total_epochs, [monitor]).fit(module, DataLoader(data, batch_size=BATCH, shuffle=True))
    bank = module.method.bank.bank
    assert not torch.allclose(bank, start)
    assert torch.allclose(bank.norm(dim=1), torch.ones(len(data)), atol=1e-5)
    assert [(r["epoch"], r["round"]) for r in monitor.history] == [(1, 0), (3, 1), (5, 2)]  # at round ends
    assert all(0.0 <= r["knn"] <= 1.0 and 0.0 <= r["knn_bank"] <= 1.0 for r in monitor.history)
    assert module.method.curriculum.state.consistency is not None


def test_random_round0_fills_the_bank_from_the_untrained_network(tmp_path):
    data = tiny_dataset()
    module = ANDModule(tiny_backbone(), len(data), config(tmp_path, "method.round0=random"))
    assert module.plan == [(1, 2), (2, 2)]
    untrained = torch.nn.functional.normalize(module(torch.stack([data[i][0] for i in range(len(data))])), dim=1)
    seen = {}

    class AtFirstStep(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.setdefault("bank", pl_module.method.bank.bank.clone())

    lightning_trainer(module.total_epochs, [AtFirstStep()]).fit(module, DataLoader(data, batch_size=BATCH))
    assert torch.allclose(seen["bank"], untrained.detach(), atol=1e-6)
    assert module.method.round == 2


def test_random_round0_refuses_bank_data_that_misses_rows(tmp_path):
    data = tiny_dataset()
    half = torch.utils.data.Subset(data, range(len(data) // 2))  # indices 0..47 of 96 bank rows
    module = ANDModule(tiny_backbone(), len(data), config(tmp_path, "method.round0=random"), bank_init_data=half)
    with pytest.raises(ValueError, match="bank_init_data: its indices cover 48 of the 96 bank rows"):
        lightning_trainer(module.total_epochs).fit(module, DataLoader(data, batch_size=BATCH))


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="lr_schedule must be 'paper' or None, got 'cosine'"):
        ANDModule(tiny_backbone(), 96, config(tmp_path), lr_schedule="cosine")
    with pytest.raises(ValueError, match="bank_update"):
        ANDModule(tiny_backbone(), 96, config(tmp_path), bank_update="last")


# ------------------------------------------------------------------------ DDP



def _ddp_worker(rank: int, world: int, port: int, output_dir: str) -> None:
    join_as_launched_rank(rank, world, port)
    torch.set_num_threads(1)
    data = two_view_data(n=100) if output_dir.endswith("views") else tiny_dataset(n=100)
    module = ANDModule(tiny_backbone(), len(data), config(output_dir))
    trainer = lightning_trainer(module.total_epochs, accelerator="cpu", devices=world, strategy="ddp")
    trainer.fit(module, DataLoader(data, batch_size=BATCH // world, shuffle=True))
    assert trainer.world_size == world and trainer.global_rank == rank
    state = module.method.curriculum.state
    torch.save({"bank": module.method.bank.bank.clone(), "anchor_mask": state.anchor_mask.clone(),
                "neighbours": state.neighbours.clone(), "round": module.method.round,
                "weights": {k: v.clone() for k, v in module.backbone.state_dict().items()}},
               os.path.join(output_dir, f"rank{rank}.pt"))
    # Lightning leaves the gloo group open; torn down at interpreter exit, its threads can abort
    # the process ("terminate called without an active exception"). Close it while both ranks live.
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.parametrize("kind", ["single_view", "views"])
def test_lightning_ddp_keeps_one_bank_on_every_rank(tmp_path, kind):
    output_dir = tmp_path / kind
    output_dir.mkdir()
    start = ANDModule(tiny_backbone(), 100, config(output_dir)).method.bank.bank.clone()
    mp.spawn(_ddp_worker, args=(2, free_port(), str(output_dir)), nprocs=2, join=True)
    ranks = [torch.load(output_dir / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert torch.equal(ranks[0]["bank"], ranks[1]["bank"])
    assert not torch.allclose(ranks[0]["bank"], start)
    assert torch.equal(ranks[0]["anchor_mask"], ranks[1]["anchor_mask"])
    assert torch.equal(ranks[0]["neighbours"], ranks[1]["neighbours"])
    assert ranks[0]["round"] == ranks[1]["round"] == 2
    for key, value in ranks[0]["weights"].items():
        assert torch.equal(value, ranks[1]["weights"][key]), key


def test_the_lightning_example_trains_and_prints(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "lightning_digits.py"
    spec = importlib.util.spec_from_file_location("lightning_digits", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    history = example.main(["--epochs-per-round", "1", "--rounds", "1", "--views", "2"])
    assert [(r["epoch"], r["round"]) for r in history] == [(0, 0), (1, 1)]
    out = capsys.readouterr().out
    assert "1400 images, 2 view(s), plan [(0, 1), (1, 1)]" in out
    assert "the same network untrained: kNN top-1" in out
    assert f"kNN top-1 {100 * history[-1]['knn']:.1f} %" in out
