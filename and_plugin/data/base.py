"""The dataset contract: every item is ``(image, target, index)``."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset


class IndexedDataset(Dataset):
    """Wraps a ``(image, target)`` dataset so items become ``(image, target, index)``.

    AND addresses its memory bank by the sample index, so every training dataset must return it.
    Targets are carried only for monitoring (kNN accuracy, neighbourhood consistency); training
    never reads them.

    Args:
        base: Any map-style dataset returning ``(image, target)``.
        targets: The integer class of every item, length ``len(base)``.
        classes: Class names, index = class id.
        transform: Applied to the image of every item (after ``base``'s own transform, if any).

    Attributes:
        targets: LongTensor of shape (N,).
        num_classes: ``len(classes)``.
    """

    def __init__(
        self,
        base: Dataset,
        targets: Sequence[int] | torch.Tensor,
        classes: Sequence[str],
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        self.base = base
        self.targets = torch.as_tensor(list(targets) if not isinstance(targets, torch.Tensor) else targets, dtype=torch.long)
        self.classes = list(classes)
        self.transform = transform
        if len(self.targets) != len(base):  # type: ignore[arg-type]
            raise ValueError(f"targets: expected {len(base)} targets, got {len(self.targets)}")  # type: ignore[arg-type]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        image, target = self.base[index][:2]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(target), index
