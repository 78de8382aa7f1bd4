"""Collapse detection: the bank's spread and the loss against a uniform softmax, at epoch ends.

A collapse is reproduced for real: lightly's ``SimCLRTransform`` and a small conv net with a
plain linear head, on the synthetic images, drive every feature to the same direction (the
bank's mean cosine climbs past 0.95 and the loss sits at log N − log 2); the same net with
lightly's ``SimCLRProjectionHead`` and the quick-start run on digits do not warn.
"""

from __future__ import annotations

import json
import math
import warnings

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from torch import nn
from torch.utils.data import DataLoader

from and_plugin import ConfigError, MemoryBank, NeighbourhoodLoss, Trainer, load_config
from and_plugin.build import build_run
from and_plugin.collapse import CollapseCheck, CollapseWarning, bank_mean_cosine, uniform_loss
from and_plugin.curriculum import RoundState
from and_plugin.data import build_dataset
from and_plugin.lightning import ANDModule, CollapseMonitor


def test_bank_mean_cosine_is_the_mean_over_pairs():
    bank = F.normalize(torch.randn(7, 3, dtype=torch.float64) + torch.tensor([2.0, 0, 0], dtype=torch.float64), dim=1)
    cosines = bank @ bank.T
    by_hand = (cosines.sum() - cosines.diagonal().sum()) / (7 * 6)
    assert float(bank_mean_cosine(bank)) == pytest.approx(float(by_hand), abs=1e-6)
    same = F.normalize(torch.ones(5, 3), dim=1)
    assert float(bank_mean_cosine(same)) == pytest.approx(1.0, abs=1e-6)
    opposite = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert float(bank_mean_cosine(opposite)) == pytest.approx(-1.0)


def test_uniform_loss_is_eq7_of_a_collapsed_bank():
    n, k = 10, 2
    state = RoundState(1, torch.arange(n) < 4, torch.stack([(torch.arange(n) + j) % n for j in (1, 2)], dim=1),
                       torch.zeros(n))
    assert uniform_loss(n) == pytest.approx(math.log(10))
    assert uniform_loss(n, state) == pytest.approx(math.log(10) - 0.4 * math.log(1 + k))
    bank = MemoryBank(n, 4)
    bank.fill(torch.ones(n, 4))  # every row the same: every p_ij = 1/N
    features = F.normalize(torch.ones(n, 4), dim=1)
    loss = NeighbourhoodLoss(0.1)(features, torch.arange(n), bank, state)
    assert float(loss) == pytest.approx(uniform_loss(n, state), abs=1e-5)


def test_check_warns_once_after_patience_and_names_the_numbers():
    same = F.normalize(torch.ones(50, 4), dim=1)
    spread = F.normalize(torch.randn(50, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    check = CollapseCheck(0.95, patience=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = [check.update(bank, f"round 0, epoch {i + 1}", 3.92, math.log(50))
                   for i, bank in enumerate([same, spread, same, same, same])]
    assert [r.get("collapse_warning") is not None for r in records] == [False, False, False, True, False]
    assert len(caught) == 1 and caught[0].category is CollapseWarning
    assert str(caught[0].message) == (
        "features collapsed in round 0, epoch 4: the memory bank's mean cosine is 1.000 (>= 0.95 for 2 epochs) and "
        "the loss 3.920 is 1.002 x the 3.912 of a uniform softmax; every image maps to nearly the same feature. Try a "
        "projection head with BatchNorm (e.g. lightly's SimCLRProjectionHead) after the backbone, a lower optim.lr, "
        "or milder augmentation (eval.collapse_cosine=null turns this check off)")
    quiet = CollapseCheck(0.95, patience=1)  # a loss well below the uniform value: the net still discriminates
    assert [quiet.update(same, f"round 0, epoch {e}", 2.0, math.log(50)).get("collapse_warning") for e in (1, 2)] \
        == [None, None]


def test_a_compact_bank_that_spreads_out_does_not_warn():
    """A bank filled from an untrained network (method.round0=random) starts compact and spreads."""
    direction = F.normalize(torch.ones(1, 16), dim=1)
    noise = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
    banks = [F.normalize(direction + s * noise, dim=1) for s in (0.01, 0.02, 0.03, 0.04, 0.05)]
    cosines = [float(bank_mean_cosine(b)) for b in banks]
    assert all(c >= 0.95 for c in cosines) and all(b < a - 0.002 for a, b in zip(cosines, cosines[1:]))
    check = CollapseCheck(0.95, patience=2)
    records = [check.update(b, f"round 1, epoch {e + 1}", math.log(200), math.log(200)) for e, b in enumerate(banks)]
    assert not any("collapse_warning" in r for r in records)
    flat = CollapseCheck(0.95, patience=2)  # the same compact bank that stays: collapsed
    assert "collapse_warning" in [flat.update(banks[0], "e", math.log(200), math.log(200)) for _ in range(3)][-1]


def test_config_key():
    assert load_config(None, []).eval.collapse_cosine == 0.95
    assert load_config(None, ["eval.collapse_cosine=null"]).eval.collapse_cosine is None
    with pytest.raises(ConfigError, match=r"eval.collapse_cosine must be null or a number in \(0, 1\], got 1.5"):
        load_config(None, ["eval.collapse_cosine=1.5"])


# ------------------------------------------------------- real runs: a collapse and healthy runs


class SmallNet(nn.Module):
    """Two conv layers with BatchNorm and a head: a plain Linear, or lightly's SimCLRProjectionHead."""

    embedding_dim = 64

    def __init__(self, head: str, normalize: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(32, 64) if head == "linear" else SimCLRProjectionHead(32, 64, 64)
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(self.backbone(x))
        return F.normalize(features, dim=1) if self.normalize else features


def simclr_images(n: int = 512):
    transform = SimCLRTransform(input_size=32, normalize={"mean": [0.5] * 3, "std": [0.25] * 3})
    return build_dataset("synthetic", split="train", transform=transform, train_size=n)


def simclr_config(tmp_path, *extra):
    return load_config(None, [
        "optim.epochs_per_round=4", "method.rounds=1", "data.batch_size=64", "optim.lr_schedule=constant",
        "model.embedding_dim=64", "run.device=cpu", "run.threads=1", "run.progress=false",
        f"run.output_dir={tmp_path}", *extra,
    ])


def collapse_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, CollapseWarning)]


def test_trainer_warns_on_a_real_collapse(tmp_path):
    trainer = Trainer(simclr_config(tmp_path), SmallNet("linear"), simclr_images())
    with pytest.warns(CollapseWarning, match=r"^features collapsed in round 1, epoch \d: the memory bank's mean "
                                             r"cosine is 0\.9\d\d .*SimCLRProjectionHead"):
        trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(epochs) == 8 and all("bank_cosine" in r for r in epochs)
    warned = [r for r in epochs if "collapse_warning" in r]
    assert len(warned) == 1 and warned[0]["bank_cosine"] >= 0.95
    assert warned[0]["loss"] >= 0.95 * (math.log(512) - math.log(2))  # round 1: every sample an anchor, k = 1


def test_lightning_module_warns_on_the_same_collapse_and_can_turn_it_off(tmp_path):
    data = simclr_images()

    def fit(*extra):
        module = ANDModule(SmallNet("linear", normalize=False), len(data), simclr_config(tmp_path, *extra))
        trainer = pl.Trainer(max_epochs=module.total_epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                             enable_checkpointing=False, enable_model_summary=False)
        torch.manual_seed(0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(module, DataLoader(data, batch_size=64, shuffle=True))
        monitors = [c for c in trainer.callbacks if isinstance(c, CollapseMonitor)]
        return collapse_warnings(caught), monitors, trainer

    caught, monitors, trainer = fit()
    assert len(caught) == 1 and caught[0].startswith("features collapsed in round 1, epoch ")
    (monitor,) = monitors
    assert monitor.check.warned == caught[0] and len(monitor.history) == 8
    assert float(trainer.callback_metrics["bank_cosine"]) >= 0.95
    caught, monitors, trainer = fit("eval.collapse_cosine=null", "optim.epochs_per_round=1")  # the check is off
    assert caught == [] and monitors == [] and "bank_cosine" not in trainer.callback_metrics


def test_a_projection_head_with_batchnorm_does_not_warn(tmp_path):
    trainer = Trainer(simclr_config(tmp_path), SmallNet("projection"), simclr_images())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit()
    assert collapse_warnings(caught) == []
    assert max(r["bank_cosine"] for r in trainer.history if r["kind"] == "epoch") < 0.5


def test_the_quickstart_run_does_not_warn(tmp_path):
    """Seed 2 of the digits quick start: its bank passes the highest measured peak (cosine 0.93, epoch 4)."""
    config = load_config(None, [
        "model.backbone=small_cnn", "data.dataset=digits", "data.batch_size=64", "data.gpu_resident=true",
        "method.temperature=0.1", "method.memory_momentum=0.5", "method.neighbours=1", "method.rounds=1",
        "optim.lr_schedule=constant", "optim.epochs_per_round=6", "eval.knn_k=200", "run.seed=2",
        "run.device=cpu", "run.threads=1", "run.progress=false", f"run.output_dir={tmp_path}",
    ])
    parts = build_run(config)
    trainer = Trainer(config, parts.model, parts.train_set, parts.eval_train_set, parts.test_set)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(stop_after_epochs=6)
    assert collapse_warnings(caught) == []
    assert max(r["bank_cosine"] for r in trainer.history) > 0.9  # the peak was there, and passed
