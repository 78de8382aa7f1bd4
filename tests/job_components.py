"""Components a SLURM test job imports (``submit(..., imports=[<this file>])``).

They show the ``imports`` route for a user's own registered backbone and data set, and give the
data-parallel job a set-up where 2 processes x B/2 must equal 1 process x B: a backbone without
BatchNorm (per-rank statistics) and a data set without random augmentation.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from and_plugin.backbones.base import Backbone
from and_plugin.data.base import IndexedDataset
from and_plugin.data import DatasetInfo
from and_plugin.registry import BACKBONES, DATASETS

BLOBS = 100  # the last global batch of 32 has 4 images: 2 per rank
CLASSES = 4


@BACKBONES.register("tiny_nobn", force=True)
def tiny_nobn(embedding_dim: int = 16, in_channels: int = 3) -> Backbone:
    """conv → ReLU → pool → fc: no BatchNorm, so data-parallel runs match single-process ones."""
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    return Backbone({"conv1": conv, "fc": nn.Linear(32, embedding_dim)}, embedding_dim)


@DATASETS.register("tiny_blobs", force=True, info=DatasetInfo("tiny_blobs", CLASSES, 8, 8, 3, "cifar", BLOBS, BLOBS))
def tiny_blobs(root=None, split="train", transform=None, download=False, subset=None) -> IndexedDataset:
    """100 3x8x8 tensors in 4 Gaussian-blob classes, the same for both splits; ignores ``transform``."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(BLOBS) % CLASSES
    centres = torch.randn(CLASSES, 3, 8, 8, generator=generator)
    images = centres[labels] + 0.5 * torch.randn(BLOBS, 3, 8, 8, generator=generator)
    return IndexedDataset(TensorDataset(images, labels), labels, [f"c{i}" for i in range(CLASSES)])


@BACKBONES.register("fails_on_rank1", force=True)
def fails_on_rank1(embedding_dim: int = 16, in_channels: int = 3) -> Backbone:
    """tiny_nobn on rank 0; raises on rank 1 (a failure on one process of a data-parallel job)."""
    import os

    if os.environ.get("RANK") == "1":
        raise RuntimeError("rank 1 cannot build its backbone (test)")
    return tiny_nobn(embedding_dim, in_channels)
