"""Datasets that return ``(image, target, index)`` and the AND/NPID augmentation presets.

Importing this package registers every dataset builder in :data:`and_plugin.registry.DATASETS`
(with its :class:`DatasetInfo`): ``cifar10``, ``cifar100``, ``svhn``, ``imagenet``, ``cub200``,
``stanford_dogs``, ``fashion_mnist``, ``image_folder``, ``digits`` (embedded in scikit-learn, no
download) and ``synthetic`` (generated gratings for smoke runs); and every preset in
:data:`and_plugin.registry.PRESETS` (with its :class:`PresetInfo`): ``cifar``, ``svhn``,
``imagenet``, ``fashion_mnist``, ``digits``.

Modules: :mod:`.base` (the item contract and the two pixel stores), :mod:`.builder` (how a data
set is registered: :class:`DatasetInfo`, :func:`register_dataset`), :mod:`.datasets` (the
built-in sets on torchvision's readers), :mod:`.readers` (CUB-200 and Stanford Dogs, which
torchvision cannot read), :mod:`.transforms` (the presets), :mod:`.synthetic`, :mod:`.gpu`.

Example:
    >>> from and_plugin.data import build_dataset, build_transform, dataset_info
    >>> info = dataset_info("digits")
    >>> ds = build_dataset("digits", split="train", transform=build_transform(info.preset, train=True))
    >>> image, target, index = ds[0]
    >>> tuple(image.shape), index
    ((1, 16, 16), 0)
"""

from and_plugin.data.base import ArrayImageDataset, FileImageDataset, IndexedDataset, with_index
from and_plugin.data.builder import (
    DatasetInfo,
    build_dataset,
    dataset_info,
    dataset_keywords,
    default_root,
    register_dataset,
    subset_indices,
)
from and_plugin.data.datasets import CIFAR10_CLASSES, CIFAR100_CLASSES, FASHION_MNIST_CLASSES
from and_plugin.data.synthetic import synthetic_dataset, synthetic_images
from and_plugin.data.transforms import (
    CIFAR10_NORMALIZE,
    IMAGENET_NORMALIZE,
    PresetInfo,
    available_presets,
    build_transform,
    get_preset,
    to_tensor_and_normalize,
)

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_NORMALIZE",
    "CIFAR100_CLASSES",
    "FASHION_MNIST_CLASSES",
    "IMAGENET_NORMALIZE",
    "ArrayImageDataset",
    "DatasetInfo",
    "FileImageDataset",
    "IndexedDataset",
    "PresetInfo",
    "available_presets",
    "build_dataset",
    "build_transform",
    "dataset_info",
    "dataset_keywords",
    "default_root",
    "get_preset",
    "register_dataset",
    "subset_indices",
    "synthetic_dataset",
    "synthetic_images",
    "to_tensor_and_normalize",
    "with_index",
]
