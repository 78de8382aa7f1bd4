"""Shared fixtures: a tiny synthetic indexed data set and a tiny backbone for trainer tests, the
../shared folder, and the accuracy harness (a script, not a package module)."""

from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path

import pytest
import torch
from slurm_utils import cluster  # noqa: F401  (the fixture that skips when no SLURM cluster is up)
from torch import nn
from torch.utils.data import TensorDataset

from and_plugin.backbones.base import Backbone
from and_plugin.data.base import IndexedDataset

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def tiny_dataset(n: int = 96, classes: int = 4, seed: int = 0) -> IndexedDataset:
    """n random 3x8x8 'images' in ``classes`` classes, each class a shifted Gaussian blob."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    centres = torch.randn(classes, 3, 8, 8, generator=generator)
    images = centres[labels] + 0.5 * torch.randn(n, 3, 8, 8, generator=generator)
    return IndexedDataset(TensorDataset(images, labels), labels, [f"c{i}" for i in range(classes)])


def tiny_backbone(embedding_dim: int = 16, seed: int = 0) -> Backbone:
    """conv → pool → fc; no BatchNorm, so data-parallel runs match single-process ones exactly."""
    torch.manual_seed(seed)
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    return Backbone({"conv1": conv, "fc": nn.Linear(32, embedding_dim)}, embedding_dim)


def free_port() -> int:
    """A free TCP port on the loopback address, for a gloo process group's rendezvous."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def join_as_launched_rank(rank: int, world: int, port: int) -> None:
    """Sets what torchrun / SLURM set for one process, so Lightning joins the processes already
    started instead of launching its own."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0")


@pytest.fixture
def shared_dir() -> Path:
    """The ../shared folder beside the checkout; skips when absent."""
    if not SHARED.is_dir():
        pytest.skip(f"../shared is absent ({SHARED}); this test reads the real data kept there")
    return SHARED


@pytest.fixture(scope="session")
def harness():
    """``benchmarks/accuracy.py`` imported as a module."""
    spec = importlib.util.spec_from_file_location("accuracy_harness", REPO / "benchmarks" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
