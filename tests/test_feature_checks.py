"""Features that are not unit vectors, or not finite, are refused at every entry of the loss.

Eq 7 assumes L2-normalised features: a backbone that forgot to normalise (norm 50) trains at an
effective temperature 50 times too low and writes the bank with the wrong EMA weight, and NaN
features spread through the bank. The checks cost one norm per step and no host sync on CUDA;
bf16 / fp16 rows normalised in low precision pass.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_dataset
from torch import nn

from and_plugin import ANDLoss, ANDMethod, EntropyCurriculum, MemoryBank, NeighbourhoodLoss, Trainer, load_config
from and_plugin import neighbourhood_loss
from and_plugin.config import MethodConfig

NOT_UNIT = r"^features must be L2-normalised rows \(norm 1 ± 0.02\), got norms in \[{}\]; normalise them, e\.g\. " \
           r"torch\.nn\.functional\.normalize\(features, dim=1\)$"
NOT_FINITE = r"^{} must be finite, got NaN or inf in 1 of 4 rows \(the network diverged or an input holds NaN\); " \
             r"check optim\.lr and the data$"


def unit(b: int = 4, d: int = 8, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(b, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def with_nan(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[2, 3] = float("nan")
    return x


def test_neighbourhood_loss_refuses_unnormalised_and_nan_features():
    bank, idx = MemoryBank(20, 8), torch.tensor([0, 5, 9, 11])
    loss = NeighbourhoodLoss(0.1)
    with pytest.raises(ValueError, match=NOT_UNIT.format("50, 50")):
        loss(50 * unit(), idx, bank)
    with pytest.raises(ValueError, match=NOT_FINITE.format("features")):
        loss(with_nan(unit()), idx, bank)
    with pytest.raises(ValueError, match=NOT_UNIT.format("50, 50")):
        neighbourhood_loss(50 * unit(), bank.bank, idx.view(-1, 1))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_features_normalised_in_low_precision_pass(dtype):
    bank, idx = MemoryBank(20, 128), torch.tensor([0, 5, 9, 11])
    features = F.normalize((3 * torch.randn(4, 128)).to(dtype), dim=1)
    assert torch.isfinite(NeighbourhoodLoss(0.1)(features.float(), idx, bank))


def test_the_method_refuses_them_for_every_view_and_every_criterion():
    idx = torch.tensor([0, 3, 7, 11])
    for loss_name in ("neighbourhood", "ntxent"):
        method = ANDMethod(20, 8, MethodConfig(rounds=2, loss=loss_name))
        method.start_round(0)
        with pytest.raises(ValueError, match=NOT_UNIT.format("50, 50")):
            method.loss([unit(), 50 * unit(seed=1)], idx)
        with pytest.raises(ValueError, match=NOT_FINITE.format("features")):
            method.loss(with_nan(unit()), idx)


def test_pml_loss_normalises_embeddings_but_refuses_nan():
    idx = torch.tensor([0, 5, 9, 11])
    with pytest.raises(ValueError, match=NOT_FINITE.format("embeddings")):
        ANDLoss(0.1, memory_bank=MemoryBank(20, 8))(with_nan(unit()), idx)
    # PML's convention: embeddings of any length (CosineSimilarity normalises them), and the owned
    # bank receives the unit vectors, so its EMA weight is η whatever their length.
    banks = []
    for scale in (1.0, 50.0):
        bank = MemoryBank(20, 8, memory_momentum=0.5)
        x = (scale * unit()).requires_grad_()
        ANDLoss(0.1, EntropyCurriculum(rounds=1), memory_bank=bank)(x, idx).backward()
        banks.append(bank.bank.clone())
    assert torch.allclose(banks[0], banks[1], atol=1e-6)


class Unnormalised(nn.Module):
    """A backbone whose author forgot F.normalize."""

    embedding_dim = 16

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 50 * self.net(x)


def test_the_trainer_stops_at_the_first_step(tmp_path):
    config = load_config(None, [f"run.output_dir={tmp_path}", "run.device=cpu", "run.progress=false",
                                "optim.epochs_per_round=1", "method.rounds=1", "data.batch_size=32",
                                "model.embedding_dim=16"])
    with pytest.raises(ValueError, match=r"^features must be L2-normalised rows \(norm 1 ± 0.02\), got norms in "):
        Trainer(config, Unnormalised(), tiny_dataset()).fit()
