"""Registered dataset builders: every one returns an :class:`IndexedDataset` of PIL images.

Each builder has the signature ``fn(root, split, transform=None, download=False, **kw)`` and is
registered in :data:`and_plugin.registry.DATASETS`:

========================  =====================================================================
name                      on-disk format read
========================  =====================================================================
``cifar10``/``cifar100``  torchvision's python-pickle batches (``cifar-10-batches-py/``,
                          ``cifar-100-python/``) or a JPEG tree ``root/<split>/<class>/*.jpg``
``svhn``                  torchvision's ``{train,test,extra}_32x32.mat``
``imagenet``              ``root/{train,val}/<wnid>/*.JPEG`` (the ``ImageFolder`` layout)
``cub200``                the official ``CUB_200_2011/`` text files and ``images/``
``stanford_dogs``         the official ``Images/<breed>/*.jpg`` with ``{train,test}_list.mat``
``fashion_mnist``         the original gzipped (or plain) IDX files
``image_folder``          any ``root[/<split>]/<class>/*``
``digits``                scikit-learn's bundled 8x8 digits (no files, no download)
========================  =====================================================================

Common keywords: ``subset`` (keep a deterministic, class-balanced ``subset`` items, for smoke
runs). A missing or malformed directory raises ``FileNotFoundError``/``ValueError`` naming the
dataset, the file that was expected and where. ``download=True`` is passed through to torchvision
where torchvision can download the set (CIFAR, SVHN, Fashion-MNIST); it is only used when the
files are not already there.

Example:
    >>> from and_plugin.registry import DATASETS
    >>> ds = DATASETS.build("digits", root=None, split="test")
    >>> len(ds), ds.num_classes
    (397, 10)
    >>> image, target, index = ds[5]
    >>> image.size, image.mode, index
    ((8, 8), 'L', 5)
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from and_plugin.data.base import IndexedDataset
from and_plugin.registry import DATASETS

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR100_CLASSES",
    "DATASET_INFO",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DEFAULT_ROOT",
    "ArrayImageDataset",
    "DatasetInfo",
    "FileImageDataset",
    "build_dataset",
    "dataset_info",
    "default_root",
    "subset_indices",
]

Transform = Callable[[Any], Any]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup",
    "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house",
    "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man",
    "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy",
    "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal",
    "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar",
    "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
#: Where Debian's ``dataset-fashion-mnist`` package installs the IDX files.
FASHION_MNIST_DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
#: The image file endings folder layouts accept (torchvision's ``IMG_EXTENSIONS``).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_DATA_DIR_HINT = "pass --data-dir (the builder's root)"


# --------------------------------------------------------------------------------------------
# Dataset information
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a registered dataset.

    Attributes:
        name: Registered name.
        num_classes: Number of classes (None for ``image_folder``: it depends on the folder).
        image_size: Side of the network input produced by ``preset`` (after crops/resizes).
        native_size: Side of the stored images (None when they vary).
        channels: 3 for colour, 1 for grey.
        preset: The default transform preset name (see ``and_plugin.data.transforms``).
        train_size: Number of training images of the full set (None when unknown).
        test_size: Number of test images of the full set (None when unknown).
        downloadable: Whether ``download=True`` can fetch it (through torchvision).
    """

    name: str
    num_classes: int | None
    image_size: int
    native_size: int | None
    channels: int
    preset: str
    train_size: int | None
    test_size: int | None
    downloadable: bool = False


DATASET_INFO: dict[str, DatasetInfo] = {
    i.name: i
    for i in (
        DatasetInfo("cifar10", 10, 32, 32, 3, "cifar", 50_000, 10_000, True),
        # The reference normalises CIFAR-100 with the CIFAR-10 statistics (see transforms.py).
        DatasetInfo("cifar100", 100, 32, 32, 3, "cifar", 50_000, 10_000, True),
        DatasetInfo("svhn", 10, 32, 32, 3, "svhn", 73_257, 26_032, True),
        DatasetInfo("imagenet", 1000, 224, None, 3, "imagenet", 1_281_167, 50_000),
        DatasetInfo("cub200", 200, 224, None, 3, "imagenet", 5_994, 5_794),
        DatasetInfo("stanford_dogs", 120, 224, None, 3, "imagenet", 12_000, 8_580),
        DatasetInfo("fashion_mnist", 10, 28, 28, 1, "fashion_mnist", 60_000, 10_000, True),
        DatasetInfo("image_folder", None, 224, None, 3, "imagenet", None, None),
        DatasetInfo("digits", 10, 16, 8, 1, "digits", 1_400, 397),
    )
}


def dataset_info(name: str) -> DatasetInfo:
    """Static facts about a registered dataset (default preset, classes, sizes).

    Raises:
        ValueError: Naming the unknown dataset and listing the known ones.
    """
    try:
        return DATASET_INFO[name]
    except KeyError:
        raise ValueError(f"dataset_info: unknown dataset {name!r}; known: {', '.join(sorted(DATASET_INFO))}") from None


def build_dataset(name: str, root: str | None = None, split: str = "train", **kwargs: Any) -> IndexedDataset:
    """Builds a registered dataset by name: ``DATASETS.build(name, root=root, split=split, ...)``."""
    return DATASETS.build(name, root=root, split=split, **kwargs)


def default_root(name: str) -> str:
    """The directory used when ``root`` is None: ``$AND_DATA_DIR/<name>``, else
    ``~/.cache/and_plugin/data/<name>`` (``/usr/share/datasets/fashion-mnist`` for Fashion-MNIST).
    """
    if name == "fashion_mnist" and "AND_DATA_DIR" not in os.environ:
        return FASHION_MNIST_DEFAULT_ROOT
    base = os.environ.get("AND_DATA_DIR", os.path.join("~", ".cache", "and_plugin", "data"))
    return os.path.join(os.path.expanduser(base), name)


# --------------------------------------------------------------------------------------------
# Base datasets and helpers
# --------------------------------------------------------------------------------------------


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

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]), self.targets[index]


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

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        with Image.open(self.paths[index]) as image:
            return image.convert(self.mode), self.targets[index]


def subset_indices(targets: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    """Deterministic class-balanced subset: the first items of every class, taken round-robin.

    The i-th item of each class (in dataset order) is taken before the (i+1)-th item of any class;
    the result is sorted, so the subset keeps the dataset's order.

    Args:
        targets: Class of every item, shape (N,).
        n: Number of items to keep (all of them when ``n >= N``).

    Returns:
        int64 indices into the dataset, shape (min(n, N),), ascending.

    Example:
        >>> subset_indices([0, 0, 0, 1, 1, 2], 4).tolist()
        [0, 1, 3, 5]
    """
    targets = np.asarray(targets, dtype=np.int64)
    if n >= len(targets):
        return np.arange(len(targets), dtype=np.int64)
    rank = np.empty(len(targets), dtype=np.int64)
    for c in np.unique(targets):
        members = np.flatnonzero(targets == c)
        rank[members] = np.arange(len(members))
    order = np.lexsort((np.arange(len(targets)), rank))  # by rank within class, then position
    return np.sort(order[:n])


def _check_subset(name: str, subset: int | None) -> None:
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < 1):
        raise ValueError(f"{name}: subset must be a positive int or None, got {subset!r}")


def _finish(
    name: str,
    items: Sequence[Any] | np.ndarray,
    targets: Sequence[int] | np.ndarray,
    classes: Sequence[str],
    make_base: Callable[[Any, list[int]], Dataset],
    transform: Transform | None,
    subset: int | None,
) -> IndexedDataset:
    """Applies ``subset``, checks the targets and wraps everything in an ``IndexedDataset``.

    Args:
        name: Dataset name, for messages.
        items: Images (uint8 array) or paths, one per item.
        targets: Class of each item.
        classes: Class names, index = class id.
        make_base: ``(items, targets) → (image, target) dataset``.
        transform: Applied to each PIL image.
        subset: Keep this many items (class-balanced, deterministic), or all if None.
    """
    _check_subset(name, subset)
    targets_np = np.asarray(targets, dtype=np.int64)
    if len(targets_np) == 0:
        raise ValueError(f"{name}: found no images")
    if targets_np.min() < 0 or targets_np.max() >= len(classes):
        raise ValueError(
            f"{name}: labels must lie in [0, {len(classes) - 1}], found [{targets_np.min()}, {targets_np.max()}]"
        )
    if subset is not None:
        keep = subset_indices(targets_np, subset)
        items = items[keep] if isinstance(items, np.ndarray) else [items[i] for i in keep]
        targets_np = targets_np[keep]
    labels = targets_np.tolist()
    return IndexedDataset(make_base(items, labels), labels, classes, transform)


def _split(
    name: str, split: str, allowed: Sequence[str] = ("train", "test"), aliases: dict[str, str] | None = None
) -> str:
    """Validates ``split`` (after resolving ``aliases``)."""
    resolved = (aliases or {}).get(split, split)
    if resolved not in allowed:
        extra = f" (aliases: {aliases})" if aliases else ""
        raise ValueError(f"{name}: unknown split {split!r}; allowed: {', '.join(allowed)}{extra}")
    return resolved


def _root(name: str, root: str | os.PathLike[str] | None) -> str:
    return os.path.expanduser(os.fspath(root)) if root is not None else default_root(name)


def _not_found(name: str, expected: str, download: str | None) -> FileNotFoundError:
    how = f"{_DATA_DIR_HINT} or download=True" if download is None else f"{_DATA_DIR_HINT}; {download}"
    return FileNotFoundError(f"{name}: expected {expected}; {how}")


def _list_classes(directory: str) -> list[str]:
    """Sorted names of the sub-directories of ``directory`` (hidden ones skipped)."""
    return sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))


def _scan_folder(name: str, directory: str, class_to_idx: dict[str, int]) -> tuple[list[str], list[int]]:
    """``ImageFolder``'s scan: sorted image files of each class folder, classes in index order.

    Returns:
        The paths and their class ids.

    Raises:
        FileNotFoundError: When a class folder holds no image file.
    """
    paths: list[str] = []
    targets: list[int] = []
    empty: list[str] = []
    for cls, idx in sorted(class_to_idx.items(), key=lambda kv: kv[1]):
        folder = os.path.join(directory, cls)
        if not os.path.isdir(folder):
            continue
        files = sorted(
            os.path.join(dirpath, f)
            for dirpath, _, filenames in os.walk(folder, followlinks=True)
            for f in filenames
            if f.lower().endswith(IMG_EXTENSIONS)
        )
        if not files:
            empty.append(cls)
        paths += files
        targets += [idx] * len(files)
    if empty:
        raise FileNotFoundError(
            f"{name}: no image files ({', '.join(IMG_EXTENSIONS)}) in {len(empty)} class folder(s) of "
            f"{directory}: {', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}"
        )
    return paths, targets


def _folder_dataset(
    name: str,
    directory: str,
    transform: Transform | None,
    subset: int | None,
    classes: Sequence[str] | None = None,
) -> IndexedDataset:
    """Reads ``directory/<class>/*``; class ids follow ``classes`` or the sorted folder names.

    Args:
        name: Dataset name, for messages.
        directory: The folder holding one sub-folder per class.
        transform: Applied to each PIL image.
        subset: See ``_finish``.
        classes: The official class list; every folder must be one of them (folders may be a
            subset, the ids stay the official ones). None: sorted folder names.
    """
    found = _list_classes(directory)
    if not found:
        raise FileNotFoundError(f"{name}: expected class folders <class>/<image> in {directory}, found none")
    if classes is None:
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise ValueError(
                f"{name}: {directory} holds folders that are not {name} classes: {', '.join(unknown[:10])}; "
                f"expected folder names among: {', '.join(classes[:10])}{' ...' if len(classes) > 10 else ''}"
            )
    class_to_idx = {c: i for i, c in enumerate(classes)}
    paths, targets = _scan_folder(name, directory, class_to_idx)
    return _finish(name, paths, targets, classes, FileImageDataset, transform, subset)


# --------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CifarFormat:
    name: str
    base_folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    meta_key: str
    label_key: str
    classes: tuple[str, ...]
    torchvision_cls: str


_CIFAR = {
    "cifar10": _CifarFormat(
        "cifar10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
        "batches.meta", "label_names", "labels", CIFAR10_CLASSES, "CIFAR10",
    ),
    "cifar100": _CifarFormat(
        "cifar100", "cifar-100-python", ("train",), ("test",), "meta", "fine_label_names", "fine_labels",
        CIFAR100_CLASSES, "CIFAR100",
    ),
}  # fmt: skip


def _cifar_pickle_dir(fmt: _CifarFormat, root: str) -> str | None:
    """The folder holding the pickle batches: ``root/<base_folder>`` or ``root`` itself."""
    for candidate in (os.path.join(root, fmt.base_folder), root):
        if os.path.isfile(os.path.join(candidate, fmt.train_files[0])):
            return candidate
    return None


def _load_pickle(fmt: _CifarFormat, path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except Exception as err:
        raise ValueError(f"{fmt.name}: {path} is not a CIFAR python-pickle batch ({err})") from err
    if not isinstance(entry, dict):
        raise ValueError(f"{fmt.name}: {path} should unpickle to a dict, got {type(entry).__name__}")  # noqa: TRY004
    return entry


def _read_cifar_batch(fmt: _CifarFormat, path: str) -> tuple[np.ndarray, list[int]]:
    """One pickle batch → images (n, 32, 32, 3) uint8 and labels."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{fmt.name}: expected the batch file {path} (torchvision format); {_DATA_DIR_HINT}")
    entry = _load_pickle(fmt, path)
    if "data" not in entry or fmt.label_key not in entry:
        raise ValueError(f"{fmt.name}: {path} lacks the keys 'data' and {fmt.label_key!r} (has {sorted(entry)})")
    data = np.asarray(entry["data"], dtype=np.uint8)
    labels = [int(x) for x in entry[fmt.label_key]]
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != len(labels):
        raise ValueError(
            f"{fmt.name}: {path}: 'data' should have shape (n, 3072) with n = {len(labels)} labels, got {data.shape}"
        )
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _cifar_classes(fmt: _CifarFormat, folder: str) -> list[str]:
    """Class names from the meta file when present, else the official list."""
    path = os.path.join(folder, fmt.meta_file)
    if not os.path.isfile(path):
        return list(fmt.classes)
    names = _load_pickle(fmt, path).get(fmt.meta_key)
    if names is None or len(names) != len(fmt.classes):
        raise ValueError(f"{fmt.name}: {path} should hold {len(fmt.classes)} names under {fmt.meta_key!r}")
    return [str(n) for n in names]


def _cifar_download(fmt: _CifarFormat, root: str, split: str) -> None:
    import torchvision.datasets as tvd

    getattr(tvd, fmt.torchvision_cls)(root, train=split == "train", download=True)


def _cifar(
    fmt: _CifarFormat,
    root: str | None,
    split: str,
    transform: Transform | None,
    download: bool,
    subset: int | None,
) -> IndexedDataset:
    split = _split(fmt.name, split)
    root = _root(fmt.name, root)
    folder = _cifar_pickle_dir(fmt, root)
    if folder is None and os.path.isdir(os.path.join(root, split)):
        return _folder_dataset(fmt.name, os.path.join(root, split), transform, subset, classes=fmt.classes)
    if folder is None and download:
        _cifar_download(fmt, root, split)
        folder = _cifar_pickle_dir(fmt, root)
    if folder is None:
        raise _not_found(
            fmt.name,
            f"{os.path.join(root, fmt.base_folder, fmt.train_files[0])} (torchvision format) "
            f"or {os.path.join(root, split, '<class>', '*.jpg')} (JPEG folders)",
            None,
        )
    batches = [
        _read_cifar_batch(fmt, os.path.join(folder, f))
        for f in (fmt.train_files if split == "train" else fmt.test_files)
    ]
    images = np.concatenate([b[0] for b in batches])
    labels = [t for b in batches for t in b[1]]
    return _finish(fmt.name, images, labels, _cifar_classes(fmt, folder), ArrayImageDataset, transform, subset)


@DATASETS.register("cifar10")
def cifar10(
    root: str | None,
    split: str,
    transform: Transform | None = None,
    download: bool = False,
    subset: int | None = None,
) -> IndexedDataset:
    """CIFAR-10: 50,000/10,000 32x32 RGB images, 10 classes.

    Reads torchvision's python-pickle batches (``root/cifar-10-batches-py/data_batch_1..5``,
    ``test_batch``, ``batches.meta``; ``root`` may also be that folder itself) or, when those are
    absent, the JPEG tree ``root/<split>/<class>/*.jpg`` (as in ``cifar10-jpeg.tar.gz``). Folder
    names must be CIFAR-10 class names; the ids are the official ones even when only some class
    folders are present.

    Args:
        root: Data directory (None: ``default_root("cifar10")``).
        split: "train" or "test".
        transform: Applied to each PIL RGB image.
        download: Fetch the pickle batches with torchvision when nothing is found.
        subset: Keep this many items (class-balanced, deterministic).

    Returns:
        Items ``(PIL image 32x32 RGB, target, index)``.
    """
    return _cifar(_CIFAR["cifar10"], root, split, transform, download, subset)


@DATASETS.register("cifar100")
def cifar100(
    root: str | None,
    split: str,
    transform: Transform | None = None,
    download: bool = False,
    subset: int | None = None,
) -> IndexedDataset:
    """CIFAR-100 (fine labels): 50,000/10,000 32x32 RGB images, 100 classes.

    Reads ``root/cifar-100-python/{train,test,meta}`` (torchvision format) or the JPEG tree
    ``root/<split>/<class>/*`` with CIFAR-100 fine class names as folder names.

    Args:
        root: Data directory (None: ``default_root("cifar100")``).
        split: "train" or "test".
        transform: Applied to each PIL RGB image.
        download: Fetch the pickle files with torchvision when nothing is found.
        subset: Keep this many items (class-balanced, deterministic).

    Returns:
        Items ``(PIL image 32x32 RGB, target, index)``.
    """
    return _cifar(_CIFAR["cifar100"], root, split, transform, download, subset)


# --------------------------------------------------------------------------------------------
# SVHN
# --------------------------------------------------------------------------------------------


def _loadmat(name: str, path: str, variables: Sequence[str] | None = None) -> dict[str, Any]:
    """``scipy.io.loadmat`` with the dataset named in the error."""
    from scipy.io import loadmat  # lazy: scipy is only needed for SVHN and Stanford Dogs

    try:
        return loadmat(path, variable_names=list(variables) if variables else None)
    except Exception as err:
        raise ValueError(f"{name}: {path} is not a readable MATLAB .mat file ({err})") from err


@DATASETS.register("svhn")
def svhn(
    root: str | None,
    split: str,
    transform: Transform | None = None,
    download: bool = False,
    subset: int | None = None,
) -> IndexedDataset:
    """SVHN (cropped digits): 73,257 train / 26,032 test (/ 531,131 extra) 32x32 RGB images.

    Reads torchvision's ``root/{split}_32x32.mat`` (``X``: (32, 32, 3, N) uint8; ``y``: (N, 1)
    with the digit 0 stored as 10, mapped to 0 here as torchvision does).

    Args:
        root: Data directory (None: ``default_root("svhn")``).
        split: "train", "test" or "extra".
        transform: Applied to each PIL RGB image.
        download: Fetch the .mat file with torchvision when it is missing.
        subset: Keep this many items (class-balanced, deterministic).

    Returns:
        Items ``(PIL image 32x32 RGB, target 0..9, index)``.
    """
    name = "svhn"
    split = _split(name, split, ("train", "test", "extra"))
    root = _root(name, root)
    path = os.path.join(root, f"{split}_32x32.mat")
    if not os.path.isfile(path) and download:
        import torchvision.datasets as tvd

        tvd.SVHN(root, split=split, download=True)
    if not os.path.isfile(path):
        raise _not_found(name, f"{path} (torchvision format: X (32, 32, 3, N) uint8, y (N, 1))", None)
    mat = _loadmat(name, path, ("X", "y"))
    if "X" not in mat or "y" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{name}: {path} must hold the variables 'X' and 'y', found {found}")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y):
        raise ValueError(f"{name}: {path}: 'X' should have shape (H, W, 3, N) with N = {len(y)} labels, got {x.shape}")
    if len(y) and (y.min() < 0 or y.max() > 10):
        raise ValueError(f"{name}: {path}: labels must lie in 1..10 (10 = digit 0), found [{y.min()}, {y.max()}]")
    images = np.ascontiguousarray(x.transpose(3, 0, 1, 2).astype(np.uint8, copy=False))
    labels = np.where(y == 10, 0, y)
    return _finish(name, images, labels, [str(d) for d in range(10)], ArrayImageDataset, transform, subset)


# --------------------------------------------------------------------------------------------
# ImageNet and generic folders
# --------------------------------------------------------------------------------------------


def _has_loose_images(directory: str) -> bool:
    return any(e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS) for e in os.scandir(directory))


@DATASETS.register("imagenet")
def imagenet(
    root: str | None,
    split: str,
    transform: Transform | None = None,
    download: bool = False,
    subset: int | None = None,
) -> IndexedDataset:
    """ImageNet (ILSVRC-2012) in the ``ImageFolder`` layout: 1,281,167 train / 50,000 val images.

    Reads ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG``; class ids follow the
    sorted wnids (torchvision's convention). The official validation archive is flat: sort it
    into wnid folders first (e.g. with the widely used ``valprep.sh``).

    Args:
        root: Data directory (None: ``default_root("imagenet")``).
        split: "train", or "test"/"val" (the validation set, the paper's test set).
        transform: Applied to each PIL RGB image.
        download: Not supported (ImageNet needs a manual, licensed download).
        subset: Keep this many items (class-balanced, deterministic).

    Returns:
        Items ``(PIL RGB image of any size, target, index)``.
    """
    name = "imagenet"
    split = _split(name, split, ("train", "val"), {"test": "val"})
    root = _root(name, root)
    directory = os.path.join(root, split)
    manual = "ImageNet cannot be downloaded automatically: get ILSVRC2012 from image-net.org"
    if not os.path.isdir(directory):
        raise _not_found(name, f"{os.path.join(directory, '<wnid>', '*.JPEG')} (ImageFolder layout)", manual)
    if _has_loose_images(directory) and not _list_classes(directory):
        raise ValueError(
            f"{name}: {directory} holds images directly; expected {os.path.join(directory, '<wnid>', '*.JPEG')} "
            "(sort the validation images into wnid folders, e.g. with valprep.sh)"
        )
    return _folder_dataset(name, directory, transform, subset)


_SPLIT_FOLDERS = {"train", "val", "valid", "validation", "test"}


@DATASETS.register("image_folder")
def image_folder(
    root: str | None,
    split: str,
    transform: Transform | None = None,
    download: bool = False,
    subset: int | None = None,
) -> IndexedDataset:
    """Any ``root/<split>/<class>/*`` or ``root/<class>/*`` tree (torchvision ``ImageFolder``).

    When ``root/<split>`` exists it is read (``"test"`` falls back to ``root/val``); when ``root``
    has no split folders (train, val, test, ...) ``root`` itself is the dataset for every split.
    Class ids follow the sorted folder names.

    Args:
        root: The folder (required).
        split: Sub-folder name to read when present ("train", "test", "val", ...).
        transform: Applied to each PIL RGB image.
        download: Not supported.
        subset: Keep this many items (class-balanced, deterministic).

    Returns:
        Items ``(PIL RGB image, target, index)``.
    """
    name = "image_folder"
    if root is None:
        raise ValueError(f"{name}: root is required (a folder of <class>/<image> sub-folders); {_DATA_DIR_HINT}")
    root = _root(name, root)
    if not os.path.isdir(root):
        raise _not_found(
            name, f"a folder {root} holding <class>/<image> or <split>/<class>/<image>", "it has no download"
        )
    candidates = [split] + (["val"] if split == "test" else [])
    found = [c for c in candidates if os.path.isdir(os.path.join(root, c))]
    if found:
        return _folder_dataset(name, os.path.join(root, found[0]), transform, subset)
    split_folders = sorted(set(_list_classes(root)) & _SPLIT_FOLDERS)
    if split_folders:  # a split layout without the requested split: do not read the splits as classes
        raise _not_found(
            name,
            f"{os.path.join(root, split)} (found the split folders {', '.join(split_folders)})",
            "it has no download",
        )
    return _folder_dataset(name, root, transform, subset)


# --------------------------------------------------------------------------------------------
# CUB-200-2011
# --------------------------------------------------------------------------------------------

_CUB_FILES = ("images.txt", "train_test_split.txt", "image_class_labels.txt", "classes.txt")


def _read_id_table(name: str, path: str) -> dict[int, str]:
    """A CUB ``<id> <value>`` text file → {id: value}."""
    table: dict[int, str] = {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            if len(parts) != 2 or not parts[0].isdigit():
                raise ValueError(f"{name}: {path} line {line_no}: expected '<id> <value>', got {line.strip()!r}")
            table[int(parts[0])] = parts[1].strip()
    return table


def _cub_dir(root: str) -> str | None:
    for candidate in (os.path.join(root, "CUB_200_2011"), root):
        if os.path.isfile(os.path.join(candidate, "images.txt")):
            return candidate
    return None


@DATASETS.register("cub200")
def cub200(
    root: str | None,
    split: str,
    transform: Transform | None = None,
    download: bool = False,
    subset: int | None = None,
) -> IndexedDataset:
    """CUB-200-2011: 5,994 train / 5,794 test bird images, 200 species.

    Reads the official layout: ``images.txt`` (id, relative path), ``train_test_split.txt`` (id,
    1 = train), ``image_class_labels.txt`` (id, 1-based class), ``classes.txt`` (class id, name)
    and ``images/<class>/<file>.jpg``; ``root`` is ``CUB_200_2011/`` or its parent. Items follow
    the image ids.

    Args:
        root: Data directory (None: ``default_root("cub200")``).
        split: "train" or "test".
        transform: Applied to each PIL RGB image.
        download: Not supported (torchvision has no CUB loader).
        subset: Keep this many items (class-balanced, deterministic).

    Returns:
        Items ``(PIL RGB image, target 0..199, index)``.
    """
    name = "cub200"
    split = _split(name, split)
    root = _root(name, root)
    folder = _cub_dir(root)
    manual = "download CUB_200_2011.tgz from the Caltech data site (torchvision cannot) and extract it there"
    if folder is None:
        raise _not_found(
            name, f"{os.path.join(root, 'CUB_200_2011', 'images.txt')} (official CUB_200_2011 layout)", manual
        )
    missing = [f for f in _CUB_FILES if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise _not_found(
            name, f"{', '.join(os.path.join(folder, f) for f in missing)} (official CUB_200_2011 layout)", manual
        )
    images, is_train, labels, class_names = (_read_id_table(name, os.path.join(folder, f)) for f in _CUB_FILES)
    if not (images.keys() == is_train.keys() == labels.keys()):
        raise ValueError(
            f"{name}: images.txt, train_test_split.txt and image_class_labels.txt list different image ids in {folder}"
        )
    classes = [class_names[i] for i in sorted(class_names)]
    if sorted(class_names) != list(range(1, len(classes) + 1)):
        raise ValueError(f"{name}: {os.path.join(folder, 'classes.txt')} should number the classes 1..{len(classes)}")
    wanted = "1" if split == "train" else "0"
    ids = [i for i in sorted(images) if is_train[i] == wanted]
    paths = [os.path.join(folder, "images", images[i]) for i in ids]
    absent = [p for p in paths if not os.path.isfile(p)]
    if absent:
        raise FileNotFoundError(f"{name}: {len(absent)} image(s) listed in images.txt are missing, e.g. {absent[0]}")
    targets = [int(labels[i]) - 1 for i in ids]
    return _finish(name, paths, targets, classes, FileImageDataset, transform, subset)


# --------------------------------------------------------------------------------------------
# Stanford Dogs
# --------------------------------------------------------------------------------------------


def _mat_strings(cell: np.ndarray) -> list[str]:
    """A MATLAB cell array of strings as loaded by scipy ((N, 1) objects of (1,) str arrays) → list."""

    def first_str(x: Any) -> str:
        while isinstance(x, np.ndarray):
            if x.size == 0:
                return ""
            x = x.reshape(-1)[0]
        return str(x)

    return [first_str(x) for x in np.asarray(cell, dtype=object).reshape(-1)]


def _dogs_list(name: str, root: str, split: str, manual: str) -> tuple[list[str], list[int]]:
    """``{split}_list.mat`` → relative image paths and 0-based labels."""
    candidates = [os.path.join(root, f"{split}_list.mat"), os.path.join(root, "lists", f"{split}_list.mat")]
    path = next((c for c in candidates if os.path.isfile(c)), None)
    if path is None:
        raise _not_found(name, f"{candidates[0]} (from the official lists.tar)", manual)
    mat = _loadmat(name, path, ("file_list", "labels"))
    if "file_list" not in mat or "labels" not in mat:
        raise ValueError(f"{name}: {path} must hold 'file_list' and 'labels' (official lists.tar format)")
    files = _mat_strings(mat["file_list"])
    labels = np.asarray(mat["labels"]).reshape(-1).astype(np.int64)
    if len(files) != len(labels):
        raise ValueError(f"{name}: {path}: {len(files)} files but {len(labels)} labels")
    if len(labels) and labels.min() < 1:
        raise ValueError(f"{name}: {path}: labels are 1-based, found {labels.min()}")
    return files, (labels - 1).tolist()


@DATASETS.register("stanford_dogs")
def stanford_dogs(
    root: str | None,
    split: str,
    transform: Transform | None = None,
    download: bool = False,
    subset: int | None = None,
) -> IndexedDataset:
    """Stanford Dogs: 12,000 train / 8,580 test images of 120 breeds.

    Reads the official layout: ``Images/<wnid>-<breed>/*.jpg`` (images.tar) and
    ``{train,test}_list.mat`` (lists.tar; in ``root`` or ``root/lists``) whose ``file_list``
    holds paths relative to ``Images/`` and ``labels`` the 1-based class, numbered in the sorted
    order of the breed folders (checked).

    Args:
        root: Data directory (None: ``default_root("stanford_dogs")``).
        split: "train" or "test".
        transform: Applied to each PIL RGB image.
        download: Not supported (torchvision has no Stanford Dogs loader).
        subset: Keep this many items (class-balanced, deterministic).

    Returns:
        Items ``(PIL RGB image, target 0..119, index)``.
    """
    name = "stanford_dogs"
    split = _split(name, split)
    root = _root(name, root)
    manual = "download images.tar and lists.tar from vision.stanford.edu/aditya86/ImageNetDogs (torchvision cannot)"
    images_dir = os.path.join(root, "Images")
    if not os.path.isdir(images_dir):
        raise _not_found(name, f"{os.path.join(images_dir, '<breed>', '*.jpg')} (official images.tar layout)", manual)
    files, targets = _dogs_list(name, root, split, manual)
    classes = _list_classes(images_dir)
    for f, t in zip(files, targets):
        folder = f.replace("\\", "/").split("/")[0]
        if t >= len(classes) or classes[t] != folder:
            raise ValueError(
                f"{name}: {split}_list.mat gives {f!r} the label {t + 1}, but the {t + 1}-th sorted folder of "
                f"{images_dir} is {classes[t] if t < len(classes) else '(none)'!r}"
            )
    paths = [os.path.join(images_dir, f) for f in files]
    absent = [p for p in paths if not os.path.isfile(p)]
    if absent:
        raise FileNotFoundError(
            f"{name}: {len(absent)} image(s) listed in {split}_list.mat are missing, e.g. {absent[0]}"
        )
    return _finish(name, paths, targets, classes, FileImageDataset, transform, subset)


# --------------------------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------------------------

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension


def _find_idx(directories: Sequence[str], stem: str) -> str | None:
    for d in directories:
        for suffix in (".gz", ""):
            path = os.path.join(d, stem + suffix)
            if os.path.isfile(path):
                return path
    return None


def _read_bytes(path: str) -> bytes:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return f.read()


def read_idx(path: str, magic: int, name: str = "fashion_mnist") -> np.ndarray:
    """Parses an IDX file of unsigned bytes (plain or gzipped), checking magic number and size.

    Args:
        path: The file.
        magic: 2051 for images (N, rows, cols), 2049 for labels (N,).
        name: Dataset name, for messages.

    Returns:
        uint8 array of shape (N, rows, cols) or (N,).

    Raises:
        ValueError: On a wrong magic number, a truncated/oversized file or a bad gzip stream.
    """
    try:
        raw = _read_bytes(path)
    except (OSError, EOFError) as err:
        raise ValueError(f"{name}: cannot read {path} ({err})") from err
    ndim = magic & 0xFF
    header = 4 * (1 + ndim)
    if len(raw) < header:
        raise ValueError(f"{name}: {path} is too short for an IDX header ({len(raw)} bytes)")
    found, *dims = struct.unpack(f">{1 + ndim}I", raw[:header])
    if found != magic:
        raise ValueError(f"{name}: {path}: IDX magic number {found}, expected {magic}")
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise ValueError(f"{name}: {path}: {len(raw)} bytes, expected {expected} for dimensions {tuple(dims)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


@DATASETS.register("fashion_mnist")
def fashion_mnist(
    root: str | None,
    split: str,
    transform: Transform | None = None,
    download: bool = False,
    subset: int | None = None,
) -> IndexedDataset:
    """Fashion-MNIST: 60,000 train / 10,000 test 28x28 grey images, 10 classes.

    Parses the original IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` found in
    ``root``, ``root/FashionMNIST/raw`` (torchvision's download folder) or ``root/raw``. The
    default root is ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).
    Magic numbers and sizes are checked; no checksum is.

    Args:
        root: Data directory (None: the Debian location).
        split: "train" or "test".
        transform: Applied to each PIL "L" image.
        download: Fetch the files with torchvision when they are missing.
        subset: Keep this many items (class-balanced, deterministic).

    Returns:
        Items ``(PIL image 28x28 mode "L", target, index)``.
    """
    name = "fashion_mnist"
    split = _split(name, split)
    root = _root(name, root)
    prefix = "train" if split == "train" else "t10k"
    dirs = [root, os.path.join(root, "FashionMNIST", "raw"), os.path.join(root, "raw")]
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    paths = [_find_idx(dirs, s) for s in stems]
    if None in paths and download:
        import torchvision.datasets as tvd

        tvd.FashionMNIST(root, train=split == "train", download=True)
        paths = [_find_idx(dirs, s) for s in stems]
    if None in paths:
        missing = [s for s, p in zip(stems, paths) if p is None]
        raise _not_found(
            name,
            f"{', '.join(os.path.join(root, s + '.gz') for s in missing)} (IDX files; "
            f"`apt-get install dataset-fashion-mnist` puts them in {FASHION_MNIST_DEFAULT_ROOT})",
            None,
        )
    images = read_idx(paths[0], IDX_IMAGES_MAGIC, name)
    labels = read_idx(paths[1], IDX_LABELS_MAGIC, name)
    if len(images) != len(labels):
        raise ValueError(f"{name}: {paths[0]} holds {len(images)} images but {paths[1]} {len(labels)} labels")
    return _finish(name, images, labels, FASHION_MNIST_CLASSES, ArrayImageDataset, transform, subset)


# --------------------------------------------------------------------------------------------
# scikit-learn digits (embedded)
# --------------------------------------------------------------------------------------------

DIGITS_TRAIN_SIZE = 1400
DIGITS_TEST_SIZE = 397
DIGITS_SPLIT_SEED = 0


def digits_split_indices(labels: np.ndarray, seed: int = DIGITS_SPLIT_SEED) -> dict[str, np.ndarray]:
    """The fixed stratified 1,400 / 397 split of the 1,797 digits.

    Args:
        labels: The digit of each of the 1,797 images, shape (1797,).
        seed: ``random_state`` of scikit-learn's ``train_test_split``.

    Returns:
        ``{"train": (1400,), "test": (397,)}`` ascending int64 indices.
    """
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        np.arange(len(labels)), train_size=DIGITS_TRAIN_SIZE, test_size=DIGITS_TEST_SIZE,
        stratify=labels, random_state=seed,
    )  # fmt: skip
    return {"train": np.sort(train).astype(np.int64), "test": np.sort(test).astype(np.int64)}


@DATASETS.register("digits")
def digits(
    root: str | None = None,
    split: str = "train",
    transform: Transform | None = None,
    download: bool = False,
    subset: int | None = None,
) -> IndexedDataset:
    """scikit-learn's handwritten digits: 1,797 8x8 grey images, 10 classes, no download needed.

    The 0..16 intensities are scaled to 0..255 (``round(v * 255 / 16)``). The split is a fixed
    stratified 1,400 train / 397 test split (``train_test_split``, ``random_state=0``); items keep
    the scikit-learn order within each split.

    Args:
        root: Ignored (the data ships with scikit-learn).
        split: "train" or "test".
        transform: Applied to each PIL "L" image.
        download: Ignored.
        subset: Keep this many items (class-balanced, deterministic).

    Returns:
        Items ``(PIL image 8x8 mode "L", target 0..9, index)``.
    """
    from sklearn.datasets import load_digits

    name = "digits"
    split = _split(name, split)
    bunch = load_digits()
    labels = np.asarray(bunch.target, dtype=np.int64)
    images = np.round(np.asarray(bunch.images) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    keep = digits_split_indices(labels)[split]
    return _finish(name, images[keep], labels[keep], [str(d) for d in range(10)], ArrayImageDataset, transform, subset)
