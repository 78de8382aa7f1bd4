"""ANDModule as a lightly / Lightning user runs it, and the mistakes that must not train quietly.

First a user script as the how-to writes it: image files on disk, lightly's ``LightlyDataset``
and ``SimCLRTransform``, a backbone with lightly's ``SimCLRProjectionHead``, an unmodified
``pl.Trainer``. Then one test per mistake that used to give a result that looked right: an
``(image, label)`` data set, LightlyDataset's file names in the index's place, labels that repeat
in the index's place, ``max_epochs`` shorter than the round plan, ``num_samples`` larger than the
data set, rows the sampler never visits, a mid-epoch checkpoint, ``strategy="ddp_spawn"``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import tiny_backbone, tiny_dataset
from lightly.data import LightlyDataset
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, SubsetRandomSampler, default_collate
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2 as T

from and_plugin import load_config
from and_plugin.data import with_index
from and_plugin.lightning import CHECKPOINT_KEY, ANDModule

CLASSES, PER_CLASS, SIZE = 4, 12, 16  # 48 PNG files of 16 x 16 pixels


def image_folder(root: Path) -> Path:
    """One sub-folder per class; every image is its class's colour plus noise."""
    rng = np.random.default_rng(0)
    colours = rng.integers(40, 216, size=(CLASSES, 3))
    for c in range(CLASSES):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            pixels = np.clip(colours[c] + rng.normal(0, 30, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def settings(*extra: str):
    """Plan [(0, 1), (1, 1), (2, 1)]: round 0, then two rounds of one epoch."""
    return load_config(None, ["optim.epochs_per_round=1", "method.rounds=2", "model.embedding_dim=16", *extra])


def simclr_backbone() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         SimCLRProjectionHead(input_dim=16, hidden_dim=32, output_dim=16))


def fit(module: ANDModule, loader: DataLoader, max_epochs: int | None = None, **kwargs) -> pl.Trainer:
    options = {"accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
               "enable_progress_bar": False, "enable_model_summary": False}
    options.update(kwargs)
    trainer = pl.Trainer(max_epochs=module.total_epochs if max_epochs is None else max_epochs, **options)
    trainer.fit(module, loader)
    return trainer


# ------------------------------------------------------------- the user's script


def test_a_lightly_user_script_trains_and(tmp_path):
    folder = image_folder(tmp_path / "images")
    transform = SimCLRTransform(input_size=SIZE, gaussian_blur=0.0)
    dataset = with_index(LightlyDataset(input_dir=str(folder), transform=transform))
    views, target, index = dataset[13]
    assert len(views) == 2 and tuple(views[0].shape) == (3, SIZE, SIZE) and (target, index) == (1, 13)

    model = ANDModule(simclr_backbone(), num_samples=len(dataset), config=settings(), embedding_dim=16,
                      labels=dataset.targets)
    start = model.method.bank.bank.clone()
    fit(model, DataLoader(dataset, batch_size=16, shuffle=True, drop_last=True))

    state = model.method.curriculum.state
    assert model.method.round == state.round == 2 and state.num_anchors == 48  # S = R/R of N at round R
    assert model.method.rows_written == 48
    bank = model.method.bank.bank
    assert not torch.allclose(bank, start) and torch.allclose(bank.norm(dim=1), torch.ones(48), atol=1e-5)


# ------------------------------------------------------- the index the bank reads


def test_an_image_label_data_set_is_refused_and_trains_wrapped(tmp_path):
    folder = image_folder(tmp_path / "images")
    dataset = ImageFolder(str(folder), transform=T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True)]))
    module = ANDModule(simclr_backbone(), len(dataset), settings(), embedding_dim=16)
    loader = DataLoader(dataset, batch_size=16, shuffle=True, drop_last=True)
    with pytest.raises(ValueError, match=r"^training data: item 1 must end with its index 1 \(the memory bank row\), "
                                         r"got 0; wrap the data set: and_plugin\.data\.with_index\(dataset\)"):
        fit(module, loader)

    wrapped = with_index(dataset)
    assert wrapped.classes == dataset.classes and wrapped.targets.tolist() == dataset.targets
    module = ANDModule(simclr_backbone(), len(wrapped), settings(), embedding_dim=16, labels=wrapped.targets)
    fit(module, DataLoader(wrapped, batch_size=16, shuffle=True, drop_last=True))
    assert module.method.round == 2 and module.method.rows_written == 48


def test_lightly_dataset_file_names_are_refused_naming_the_fix(tmp_path):
    dataset = LightlyDataset(input_dir=str(image_folder(tmp_path / "images")), transform=SimCLRTransform(SIZE))
    module = ANDModule(simclr_backbone(), len(dataset), settings(), embedding_dim=16)
    with pytest.raises(ValueError, match=r"^training data: item 0 must end with its index 0 .*got 'class0/000.png' "
                                         r"\(LightlyDataset items end with the file name\); wrap the data set"):
        fit(module, DataLoader(dataset, batch_size=16))


class Stream(IterableDataset):
    """The items of ``dataset`` as a stream: no ``dataset[i]`` to check before the first batch."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __iter__(self):
        return (self.dataset[i] for i in range(len(self.dataset)))


def test_file_names_in_a_batch_are_refused_naming_the_fix(tmp_path):
    dataset = LightlyDataset(input_dir=str(image_folder(tmp_path / "images")), transform=SimCLRTransform(SIZE))
    module = ANDModule(simclr_backbone(), len(dataset), settings(), embedding_dim=16)
    with pytest.raises(ValueError, match=r"^batch\[-1\] must be the dataset indices \(a 1-D integer tensor\), got a "
                                         r"tuple of str \(LightlyDataset items end with the file name\); wrap the "
                                         r"data set: and_plugin\.data\.with_index\(dataset\)"):
        fit(module, DataLoader(Stream(dataset), batch_size=16))


def labels_last(items):
    images, targets, indices = default_collate(items)
    return images, indices, targets


def test_indices_that_repeat_like_labels_are_refused_after_the_first_epoch():
    data = tiny_dataset()  # items end with their index: the collate puts the 4 labels last
    module = ANDModule(tiny_backbone(), len(data), settings())
    with pytest.raises(ValueError, match=r"^batch\[-1\]: the first epoch's batches carried 96 indices but addressed "
                                         r"only 4 of the 96 memory bank rows"):
        fit(module, DataLoader(data, batch_size=32, shuffle=True, collate_fn=labels_last))
    assert module.method.round == 0  # refused before any discovery


# ------------------------------------------------------------ plan and data size


def test_max_epochs_that_ends_before_the_first_discovery_is_refused():
    data = tiny_dataset()
    module = ANDModule(tiny_backbone(), len(data), settings("optim.epochs_per_round=2"))
    with pytest.raises(ValueError, match=r"^pl\.Trainer\(max_epochs=2\) ends before AND's first neighbourhood "
                                         r"discovery at epoch 3 of the 6-epoch plan \[\(0, 2\), \(1, 2\), \(2, 2\)\]"):
        fit(module, DataLoader(data, batch_size=32), max_epochs=2)
    assert module.method.round is None  # nothing trained


def test_max_epochs_shorter_than_the_plan_warns_naming_the_rounds():
    data = tiny_dataset()
    module = ANDModule(tiny_backbone(), len(data), settings("optim.epochs_per_round=2"))
    with pytest.warns(UserWarning, match=r"^pl\.Trainer\(max_epochs=3\) is shorter than AND's 6-epoch plan "
                                         r"\[\(0, 2\), \(1, 2\), \(2, 2\)\]: it runs rounds 0, 1 \(round 1 for 1 of its 2 "
                                         r"epochs\) and never starts round 2"):
        fit(module, DataLoader(data, batch_size=32), max_epochs=3)
    assert module.method.round == 1


def test_num_samples_larger_than_the_data_set_is_refused():
    data = tiny_dataset()
    module = ANDModule(tiny_backbone(), 100, settings())
    with pytest.raises(ValueError, match=r"^num_samples must equal the training data set's length 96 "
                                         r"\(one memory bank row per image\), got 100"):
        fit(module, DataLoader(data, batch_size=32))


def test_rows_the_sampler_never_visits_are_filled_and_reported():
    data = tiny_dataset()
    module = ANDModule(tiny_backbone(), len(data), settings())
    seen = {}

    class AtRoundOne(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 1 and "bank" not in seen:
                images = torch.stack([data[i][0] for i in range(80, 96)])
                seen["bank"] = pl_module.method.bank.bank.clone()
                seen["features"] = pl_module(images).detach()

    sampler = SubsetRandomSampler(range(80))  # rows 80..95 are never visited
    with pytest.warns(UserWarning, match=r"^memory bank: 16 of 96 rows were never written before round 1's "
                                         r"neighbourhood discovery"):
        fit(module, DataLoader(data, batch_size=16, sampler=sampler), callbacks=[AtRoundOne()])
    # the unvisited rows hold the network's features, not the initial random vectors
    assert torch.allclose(seen["bank"][80:], seen["features"], atol=1e-5)
    assert module.method.rows_written == 96


# --------------------------------------------------------------- checkpoints


def test_a_mid_epoch_checkpoint_holds_the_bank_after_its_step(tmp_path):
    data = tiny_dataset()
    module = ANDModule(tiny_backbone(), len(data), settings())
    banks = {}

    class BankAfterSteps(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            banks[trainer.global_step] = pl_module.method.bank.bank.clone()  # after global_step steps

    every_two = ModelCheckpoint(dirpath=tmp_path, filename="{step}", every_n_train_steps=2, save_top_k=-1)
    loader = DataLoader(data, batch_size=32)  # 3 steps an epoch, 9 in all
    fit(module, loader, callbacks=[BankAfterSteps(), every_two], enable_checkpointing=True)
    for step in (2, 4, 6, 8):
        saved = torch.load(tmp_path / f"step={step}.ckpt", weights_only=False)[CHECKPOINT_KEY]
        assert torch.equal(saved["memory_bank"]["bank"], banks[step]), step

    resumed = ANDModule(tiny_backbone(seed=1), len(data), settings())
    first = {}

    class FirstBank(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            first.setdefault("bank", pl_module.method.bank.bank.clone())

    trainer = pl.Trainer(max_epochs=resumed.total_epochs, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[FirstBank()])
    with pytest.warns(UserWarning, match="not resumable"):  # Lightning's own note on mid-epoch resumes
        trainer.fit(resumed, loader, ckpt_path=tmp_path / "step=4.ckpt")
    assert torch.equal(first["bank"], banks[4])


# ------------------------------------------------------------------ strategies


@pytest.mark.distributed
def test_ddp_spawn_is_refused_naming_ddp():
    data = tiny_dataset()
    module = ANDModule(tiny_backbone(), len(data), settings())
    with pytest.raises(Exception, match=r"strategy='ddp_spawn' trains copies of this module in child processes"):
        fit(module, DataLoader(data, batch_size=32), strategy="ddp_spawn", devices=1)
