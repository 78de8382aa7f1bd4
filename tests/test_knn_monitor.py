"""KNNMonitor under a real pl.Trainer: the batch layouts users pass, and data-parallel runs.

Evaluation loaders may yield ``(images, targets)`` (torchvision), ``(images, targets, indices)``
(our data sets) or ``(images, targets, filenames)`` (lightly's ``LightlyDataset``); the bank's
kNN needs the indices and says so in one line. Under ``strategy="ddp"`` every rank reports the
same numbers, also with BatchNorm (whose running statistics differ per rank after a step), and
Lightning has nothing to warn about ``sync_dist``.
"""

from __future__ import annotations

import os
import warnings

import pytest
import pytorch_lightning as pl
import torch
import torch.multiprocessing as mp
from conftest import free_port, join_as_launched_rank, tiny_backbone, tiny_dataset
from lightly.data import LightlyDataset
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import v2 as T

from and_plugin import load_config
from and_plugin.backbones.base import Backbone
from and_plugin.data.base import IndexedDataset
from and_plugin.lightning import ANDModule, KNNMonitor

BATCH = 32


def config(output_dir, *extra):
    return load_config(None, [
        f"run.output_dir={output_dir}", "run.device=cpu", "run.progress=false", "run.threads=1",
        "optim.epochs_per_round=1", "method.rounds=1", f"data.batch_size={BATCH}", "model.embedding_dim=16", *extra,
    ])


def fit(module, loader, callbacks, **kwargs) -> pl.Trainer:
    options = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False)
    options.update(kwargs)
    trainer = pl.Trainer(max_epochs=module.total_epochs, callbacks=list(callbacks), **options)
    trainer.fit(module, loader)
    return trainer


def pairs(data) -> TensorDataset:
    """The same images as ``(image, target)`` items, as torchvision data sets yield them."""
    return TensorDataset(torch.stack([data[i][0] for i in range(len(data))]), torch.as_tensor(data.targets))


def test_two_tuple_loaders_work_without_the_bank(tmp_path):
    data = tiny_dataset()
    module = ANDModule(tiny_backbone(), len(data), config(tmp_path))
    plain = DataLoader(pairs(data), batch_size=64)
    monitor = KNNMonitor(plain, plain, num_classes=4, k=10, bank=False)
    fit(module, DataLoader(data, batch_size=BATCH, shuffle=True), [monitor])
    assert [(r["epoch"], r["round"]) for r in monitor.history] == [(0, 0), (1, 1)]
    assert all(0.0 <= r["knn"] <= 1.0 and "knn_bank" not in r for r in monitor.history)


def test_the_bank_knn_names_what_the_loader_lacks(tmp_path):
    data = tiny_dataset()
    module = ANDModule(tiny_backbone(), len(data), config(tmp_path))
    monitor = KNNMonitor(DataLoader(pairs(data), batch_size=64), DataLoader(data, batch_size=64), num_classes=4)
    message = (r"^KNNMonitor: train_loader yields \(images, targets\) batches; the bank's kNN \(bank=True\) needs "
               r"\(images, targets, indices\) with the dataset indices of the bank rows: wrap the data set in "
               r"and_plugin\.data\.IndexedDataset, or pass bank=False$")
    with pytest.raises(ValueError, match=message):
        fit(module, DataLoader(data, batch_size=BATCH), [monitor])
    monitor = KNNMonitor(DataLoader(data, batch_size=64), DataLoader([1, 2, 3], batch_size=2), num_classes=4)
    with pytest.raises(ValueError, match=r"^KNNMonitor: test_loader must yield \(images, targets\) or "
                                         r"\(images, targets, indices\) batches, got a Tensor$"):
        fit(module, DataLoader(data, batch_size=BATCH), [monitor])


def test_lightly_dataset_on_disk(tmp_path):
    """lightly's LightlyDataset yields (image, target, filename): fine for kNN, not for the bank."""
    data = tiny_dataset(n=24)
    for i in range(len(data)):
        folder = tmp_path / "images" / f"class{int(data.targets[i])}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (data[i][0].clamp(-2, 2) * 60 + 128).to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    to_tensor = T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True)])
    lightly_data = LightlyDataset(str(tmp_path / "images"), transform=to_tensor)
    assert isinstance(lightly_data[0][2], str)
    loader = DataLoader(lightly_data, batch_size=8)
    module = ANDModule(tiny_backbone(), len(data), config(tmp_path))
    monitor = KNNMonitor(loader, loader, num_classes=4, k=5, bank=False)
    fit(module, DataLoader(data, batch_size=8, shuffle=True), [monitor])
    assert len(monitor.history) == 2 and 0.0 <= monitor.history[-1]["knn"] <= 1.0
    monitor = KNNMonitor(loader, loader, num_classes=4, k=5)
    with pytest.raises(ValueError, match=r"^KNNMonitor: train_loader's third batch item must be the dataset "
                                         r"indices \(an integer tensor\) for the bank's kNN \(bank=True\), got "
                                         r"tuple of str \(.class0/000.png., ...\); .*or pass bank=False$"):
        fit(ANDModule(tiny_backbone(), len(data), config(tmp_path)), DataLoader(data, batch_size=8), [monitor])


# ------------------------------------------------------------------------ DDP


def bn_backbone(embedding_dim: int = 16) -> Backbone:
    """tiny_backbone with BatchNorm: after a step every rank holds its own running statistics."""
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten())
    return Backbone({"conv1": conv, "fc": nn.Linear(32, embedding_dim)}, embedding_dim)


def shuffled_labels(n: int = 100):
    """Random labels: kNN predictions then hinge on the exact features, so any drift shows."""
    data = tiny_dataset(n=n)
    labels = torch.randperm(n, generator=torch.Generator().manual_seed(1)) % 4
    return IndexedDataset(TensorDataset(data.base.tensors[0], labels), labels, data.classes)



def _ddp_worker(rank: int, world: int, port: int, output_dir: str) -> None:
    join_as_launched_rank(rank, world, port)
    torch.set_num_threads(1)
    data = shuffled_labels()
    module = ANDModule(bn_backbone(), len(data), config(output_dir, "optim.epochs_per_round=2"))
    evaluation = DataLoader(data, batch_size=50)
    monitor = KNNMonitor(evaluation, evaluation, num_classes=4, k=5, every_n_epochs=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = fit(module, DataLoader(data, batch_size=BATCH // world, shuffle=True), [monitor],
                      devices=world, strategy="ddp")
    assert trainer.world_size == world
    running = [b.clone() for n, b in module.backbone.named_buffers() if n.endswith("running_mean")]
    torch.save({"history": monitor.history, "warnings": [str(w.message) for w in caught],
                "logged": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("knn")},
                "running_mean": running}, os.path.join(output_dir, f"rank{rank}.pt"))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


@pytest.mark.distributed
def test_ddp_ranks_report_the_same_numbers_with_batchnorm(tmp_path):
    mp.spawn(_ddp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    # The condition under test: each rank's BatchNorm statistics are its own after the last step.
    assert not torch.equal(ranks[0]["running_mean"][0], ranks[1]["running_mean"][0])
    assert len(ranks[0]["history"]) == 4
    assert ranks[0]["history"] == ranks[1]["history"]
    assert ranks[0]["logged"] == ranks[1]["logged"] and set(ranks[0]["logged"]) == {"knn", "knn_bank"}
    for rank in ranks:
        assert not [w for w in rank["warnings"] if "sync_dist" in w], rank["warnings"]
