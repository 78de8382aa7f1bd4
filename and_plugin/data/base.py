"""The dataset contract: every item is ``(image, target, index)``; and the two stores behind it.

:class:`IndexedDataset` adds the index to any ``(image, target)`` dataset. The built-in data sets
keep their pixels in one of two plain stores, which the GPU-resident path reads without
decoding item by item: :class:`ArrayImageDataset` (an in-memory uint8 array, e.g. what
torchvision's CIFAR/SVHN/MNIST readers return) and :class:`FileImageDataset` (image paths, e.g.
the samples of torchvision's ``ImageFolder``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["ArrayImageDataset", "FileImageDataset", "IndexedDataset"]


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


class ArrayImageDataset(Dataset):
    """In-memory uint8 images → ``(PIL image, target)``.

    Args:
        images: uint8 array of shape (N, H, W) (grey, mode "L") or (N, H, W, 3) (mode "RGB").
        targets: Integer class of every image, length N.
    """

    def __init__(self, images: np.ndarray, targets: Sequence[int]) -> None:
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(f"images: expected uint8 (N, H, W[, 3]), got {images.dtype} {images.shape}")
        self.images = images
        self.targets = [int(t) for t in targets]

    def select(self, indices: Sequence[int] | np.ndarray) -> ArrayImageDataset:
        """The items at ``indices``, in that order."""
        keep = np.asarray(indices, dtype=np.int64)
        return ArrayImageDataset(self.images[keep], [self.targets[i] for i in keep])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]), self.targets[index]


def read_image(path: str, mode: str) -> Image.Image:
    """Opens and decodes one image file, converted to ``mode``.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: If it is not an image, or is truncated or corrupt; the message names the file
            (PIL's "image file is truncated" does not).
    """
    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except FileNotFoundError:
        raise
    except OSError as error:  # PIL: UnidentifiedImageError, "image file is truncated", broken data stream
        message = str(error)
        raise ValueError(message if str(path) in message else f"image file {str(path)!r}: {message}") from None


class FileImageDataset(Dataset):
    """Image files read lazily → ``(PIL image, target)``, like torchvision's ``ImageFolder``.

    Args:
        paths: One image path per item.
        targets: Integer class of every item, same length.
        mode: PIL mode every image is converted to ("RGB" by default).
    """

    def __init__(self, paths: Sequence[str], targets: Sequence[int], mode: str = "RGB") -> None:
        if len(paths) != len(targets):
            raise ValueError(f"paths/targets: lengths differ ({len(paths)} vs {len(targets)})")
        self.paths = list(paths)
        self.targets = [int(t) for t in targets]
        self.mode = mode

    def select(self, indices: Sequence[int] | np.ndarray) -> FileImageDataset:
        """The items at ``indices``, in that order."""
        return FileImageDataset([self.paths[i] for i in indices], [self.targets[i] for i in indices], self.mode)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return read_image(self.paths[index], self.mode), self.targets[index]
