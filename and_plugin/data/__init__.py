"""Datasets that return ``(image, target, index)`` and the AND/NPID augmentation presets.

Importing this package registers every dataset builder in :data:`and_plugin.registry.DATASETS`:
``cifar10``, ``cifar100``, ``svhn``, ``imagenet``, ``cub200``, ``stanford_dogs``,
``fashion_mnist``, ``image_folder``, ``digits`` (embedded in scikit-learn, no download) and
``synthetic`` (generated gratings for smoke runs).

Example:
    >>> from and_plugin.data import build_dataset, build_transform, dataset_info
    >>> info = dataset_info("digits")
    >>> ds = build_dataset("digits", split="train", transform=build_transform(info.preset, train=True))
    >>> image, target, index = ds[0]
    >>> tuple(image.shape), index
    ((1, 16, 16), 0)
"""

from and_plugin.data.base import IndexedDataset
from and_plugin.data.datasets import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    DATASET_INFO,
    FASHION_MNIST_CLASSES,
    ArrayImageDataset,
    DatasetInfo,
    FileImageDataset,
    build_dataset,
    dataset_info,
    default_root,
    subset_indices,
)
from and_plugin.data.synthetic import synthetic_dataset, synthetic_images
from and_plugin.data.transforms import (
    CIFAR10_NORMALIZE,
    IMAGENET_NORMALIZE,
    TRANSFORM_PRESETS,
    TransformPreset,
    available_presets,
    build_transform,
)

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_NORMALIZE",
    "CIFAR100_CLASSES",
    "DATASET_INFO",
    "FASHION_MNIST_CLASSES",
    "IMAGENET_NORMALIZE",
    "TRANSFORM_PRESETS",
    "ArrayImageDataset",
    "DatasetInfo",
    "FileImageDataset",
    "IndexedDataset",
    "TransformPreset",
    "available_presets",
    "build_dataset",
    "build_transform",
    "dataset_info",
    "default_root",
    "subset_indices",
    "synthetic_dataset",
    "synthetic_images",
]
