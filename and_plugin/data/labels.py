"""Reading a data set's integer classes, for monitoring only (training never reads labels)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset


def targets_of(dataset: Dataset) -> Tensor | None:
    """The ``targets`` attribute of a data set as a LongTensor (N,), or None when it has none."""
    targets = getattr(dataset, "targets", None)
    return None if targets is None else torch.as_tensor(targets, dtype=torch.long)


__all__ = ["targets_of"]
