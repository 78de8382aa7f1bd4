"""A deterministic, tiny, class-structured image set for smoke runs (no files, no download).

Every class ``c`` is a sinusoidal grating with its own orientation, spatial frequency and
colour; every image of the class draws a random phase, a small contrast change and pixel noise.
Images are returned as PIL images (mode "RGB" or "L"), so the normal transform presets
(``cifar``, ``imagenet``, ...) apply unchanged. The same ``seed`` gives the same pixels on every
machine; train and test share the class patterns but not the images.

It is registered as ``synthetic`` in :data:`and_plugin.registry.DATASETS`; ``recipes/*.py
--smoke`` swaps it in for the recipe's real data set, at the recipe's image size and channels.

Example:
    >>> from and_plugin.data import build_dataset
    >>> ds = build_dataset("synthetic", split="train", image_size=24, num_classes=4, train_size=8)
    >>> image, target, index = ds[5]
    >>> image.size, image.mode, target, index, ds.num_classes
    ((24, 24), 'RGB', 1, 5, 4)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from and_plugin._validation import check_int_at_least
from and_plugin.data.base import ArrayImageDataset
from and_plugin.data.builder import DatasetInfo, register_dataset

__all__ = ["SYNTHETIC_TEST_SIZE", "SYNTHETIC_TRAIN_SIZE", "synthetic_dataset", "synthetic_images"]

#: Default number of training / test images.
SYNTHETIC_TRAIN_SIZE = 64
SYNTHETIC_TEST_SIZE = 32
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # spreads class orientations/frequencies evenly for any C


def _check_int(name: str, value: Any, minimum: int) -> int:
    check_int_at_least(f"synthetic: {name}", int(value) if isinstance(value, np.integer) else value, minimum)
    return int(value)


def synthetic_images(
    count: int,
    image_size: int = 32,
    channels: int = 3,
    num_classes: int = 10,
    seed: int = 0,
    split_offset: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The pixels and labels of the synthetic set.

    Image ``i`` has class ``i % num_classes``. Class ``c`` is the grating
    ``0.5 + 0.3 · a · sin(2π f_c (x cos θ_c + y sin θ_c) + φ) · colour_c`` with θ_c = π·frac(c·g),
    f_c = 1 + 4·frac(7·c·g) cycles per image (g the golden ratio conjugate), per-image phase φ,
    contrast a ∈ [0.8, 1.2] and Gaussian noise of std 0.05, clipped to [0, 1] and stored as uint8.

    Args:
        count: Number of images N.
        image_size: Side S of the square images.
        channels: 3 (RGB) or 1 (grey).
        num_classes: Number of classes C.
        seed: Seed of the class patterns and the images.
        split_offset: 0 for train, 1 for test: another stream of images from the same classes.

    Returns:
        ``(images, labels)``: uint8 of shape (N, S, S, 3) or (N, S, S), and int64 of shape (N,).
    """
    count = _check_int("count", count, 1)
    size = _check_int("image_size", image_size, 1)
    num_classes = _check_int("num_classes", num_classes, 1)
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ValueError(f"synthetic: channels must be 1 or 3, got {channels!r}")
    classes = np.arange(num_classes)
    angle = np.pi * ((classes * _GOLDEN) % 1.0)
    frequency = 1.0 + 4.0 * ((7 * classes * _GOLDEN) % 1.0)
    colour = np.random.default_rng(seed).uniform(0.3, 1.0, size=(num_classes, channels))
    rng = np.random.default_rng([seed, 1 + split_offset])
    labels = np.arange(count, dtype=np.int64) % num_classes
    phase = rng.uniform(0.0, 2.0 * np.pi, size=count)
    contrast = rng.uniform(0.8, 1.2, size=count)
    grid = (np.arange(size, dtype=np.float64) + 0.5) / size
    y, x = np.meshgrid(grid, grid, indexing="ij")  # (S, S)
    along = x[None] * np.cos(angle[labels])[:, None, None] + y[None] * np.sin(angle[labels])[:, None, None]
    wave = np.sin(2.0 * np.pi * frequency[labels][:, None, None] * along + phase[:, None, None])  # (N, S, S)
    pixels = 0.5 + 0.3 * (contrast[:, None, None] * wave)[..., None] * colour[labels][:, None, None, :]
    pixels = pixels + rng.normal(0.0, 0.05, size=pixels.shape)
    images = np.round(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)  # (N, S, S, channels)
    return (images if channels == 3 else images[..., 0]), labels


@register_dataset(
    "synthetic", info=DatasetInfo("synthetic", 10, 32, 32, 3, "cifar", SYNTHETIC_TRAIN_SIZE, SYNTHETIC_TEST_SIZE)
)
def synthetic_dataset(
    root: str | None,
    split: str,
    download: bool,
    image_size: int = 32,
    channels: int = 3,
    num_classes: int = 10,
    train_size: int = SYNTHETIC_TRAIN_SIZE,
    test_size: int = SYNTHETIC_TEST_SIZE,
    seed: int = 0,
) -> tuple[ArrayImageDataset, list[int], list[str]]:
    """A tiny deterministic class-structured image set (see :func:`synthetic_images`); ``root`` is ignored.

    Args:
        image_size: Side of the square images (32 for CIFAR-like, 224 for ImageNet-like recipes).
        channels: 3 (PIL mode "RGB") or 1 (mode "L").
        num_classes: Number of classes.
        train_size: Number of training images.
        test_size: Number of test images.
        seed: Seed of the patterns and the images.

    Raises:
        ValueError: Naming the bad argument, its value and what is allowed.
    """
    count = train_size if split == "train" else test_size
    _check_int(f"{split}_size", count, 1)
    images, labels = synthetic_images(count, image_size, channels, num_classes, seed, 0 if split == "train" else 1)
    targets = labels.tolist()
    return ArrayImageDataset(images, targets), targets, [f"class{c}" for c in range(int(num_classes))]
