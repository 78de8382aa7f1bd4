"""The dataset contract: every item is ``(image, target, index)``; and the two stores behind it.

:class:`IndexedDataset` (:func:`with_index`) adds the index to any ``(image, target, ...)``
dataset: torchvision's, lightly's ``LightlyDataset``, yours. The built-in data sets keep their pixels in one of two plain stores, which the GPU-resident path reads without
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

__all__ = ["ArrayImageDataset", "FileImageDataset", "IndexedDataset", "with_index"]


class IndexedDataset(Dataset):
    """Wraps a ``(image, target, ...)`` dataset so items become ``(image, target, index)``.

    AND addresses its memory bank by the sample index, so every training dataset must return it.
    Targets are carried only for monitoring (kNN accuracy, neighbourhood consistency); training
    never reads them. Elements after the target (the file name of lightly's ``LightlyDataset``)
    are dropped; an item that is not a tuple is the image itself (target -1).

    Args:
        base: Any map-style dataset (``len`` and ``base[i]``) returning ``(image, target, ...)``.
        targets: The integer class of every item, length ``len(base)``; when None, read from
            ``base.targets`` (torchvision) or ``base.dataset.targets`` (``LightlyDataset``), else
            unknown.
        classes: Class names, index = class id; when None, read the same way, else ``"0"``,
            ``"1"``, ... up to the largest target.
        transform: Applied to the image of every item (after ``base``'s own transform, if any).

    Attributes:
        targets: LongTensor of shape (N,), or None when unknown.
        num_classes: ``len(classes)``.
    """

    def __init__(
        self,
        base: Any,
        targets: Sequence[int] | torch.Tensor | np.ndarray | None = None,
        classes: Sequence[str] | None = None,
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        self.base = base
        self.transform = transform
        known = _attribute(base, "targets") if targets is None else targets
        if known is not None and not isinstance(known, torch.Tensor):
            known = np.asarray(known)
        self.targets = None if known is None else torch.as_tensor(known, dtype=torch.long).reshape(-1)
        if self.targets is not None and len(self.targets) != len(base):
            raise ValueError(f"targets: expected {len(base)} targets, got {len(self.targets)}")
        if classes is None:
            classes = _attribute(base, "classes")
        if classes is None:
            known_any = self.targets is not None and len(self.targets) > 0
            classes = [str(c) for c in range(int(self.targets.max()) + 1)] if known_any else []  # type: ignore[union-attr]
        self.classes = list(classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        item = self.base[index]
        image, target = (item[0], item[1]) if isinstance(item, tuple) and len(item) >= 2 else (item, -1)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(target), index


def with_index(dataset: Any, transform: Callable[[Any], Any] | None = None) -> IndexedDataset:
    """Makes any ``(image, target, ...)`` data set AND-ready: items ``(image, target, index)``.

    For torchvision data sets (``ImageFolder``, ``CIFAR10``, ...) and lightly's
    ``LightlyDataset`` (whose ``(image, target, filename)`` loses the file name). The targets
    (``.targets``) come along for monitoring: ``ANDModule(..., labels=wrapped.targets)``.

    Args:
        dataset: A map-style data set whose items start with ``(image, target)``.
        transform: Applied to every image after the data set's own transform.

    Returns:
        An :class:`IndexedDataset` over ``dataset``.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> wrapped = with_index(TensorDataset(torch.zeros(5, 3, 8, 8), torch.tensor([0, 1, 0, 1, 1])))
        >>> image, target, index = wrapped[3]
        >>> target, index, wrapped.targets  # a TensorDataset has no .targets attribute
        (1, 3, None)
    """
    return IndexedDataset(dataset, transform=transform)


def _attribute(base: Any, name: str) -> Any:
    """``base.<name>``, or ``base.dataset.<name>`` (lightly's ``LightlyDataset`` keeps its folder there)."""
    for owner in (base, getattr(base, "dataset", None)):
        value = getattr(owner, name, None)
        if value is not None and not callable(value):
            return value
    return None


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
