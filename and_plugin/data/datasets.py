"""The built-in data sets, read with torchvision's readers, registered with their :class:`DatasetInfo`.

Every builder is ``fn(root, split, transform=None, download=False, subset=None)`` →
:class:`~and_plugin.data.base.IndexedDataset` of ``(PIL image, target, index)``, made by
:func:`~and_plugin.data.builder.register_dataset` from a reader below:

========================  =====================================================================
name                      on-disk format, and who reads it
========================  =====================================================================
``cifar10``/``cifar100``  python-pickle batches (``cifar-10-batches-py/``, ``cifar-100-python/``):
                          torchvision's ``CIFAR10``/``CIFAR100``; or a JPEG tree
                          ``root/<split>/<class>/*.jpg``: torchvision's ``make_dataset``
``svhn``                  ``{train,test,extra}_32x32.mat``: torchvision's ``SVHN``
``imagenet``              ``root/{train,val}/<wnid>/*.JPEG``: torchvision's ``make_dataset``
``image_folder``          any ``root[/<split>]/<class>/*``: torchvision's ``make_dataset``
``fashion_mnist``         the IDX files (gzipped or plain): torchvision's ``read_image_file``
``cub200``                the official ``CUB_200_2011/`` text files (:mod:`.readers`)
``stanford_dogs``         ``Images/<breed>/*.jpg`` with ``{train,test}_list.mat`` (:mod:`.readers`)
``digits``                scikit-learn's bundled 8x8 digits (no files, no download)
========================  =====================================================================

torchvision's dataset classes check fixed MD5 sums; here that check is replaced by a check that
the files exist, so re-packed copies (e.g. Debian's Fashion-MNIST) are read too, and the format
itself is checked instead (sizes, keys, label ranges), with errors that name the data set, the
file and what was expected. ``download=True`` calls torchvision's download where it has one
(CIFAR, SVHN, Fashion-MNIST), only when the files are not already there.

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
import shutil
import struct
import tempfile
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torchvision.datasets as tvd
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from and_plugin.data.base import ArrayImageDataset, FileImageDataset
from and_plugin.data.builder import DATA_DIR_HINT, DatasetInfo, not_found, register_dataset, resolve_root
from and_plugin.data.readers import list_subfolders, read_cub200, read_stanford_dogs

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR100_CLASSES",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DEFAULT_ROOT",
    "digits_split_indices",
]

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
_DIGIT_NAMES = [str(d) for d in range(10)]


# --------------------------------------------------------------------------------------------
# Image folders (torchvision's ImageFolder scan)
# --------------------------------------------------------------------------------------------


def read_image_folder(
    name: str, directory: str, classes: Sequence[str] | None = None
) -> tuple[FileImageDataset, list[int], list[str]]:
    """``directory/<class>/*`` scanned by torchvision's ``make_dataset`` (the ``ImageFolder`` scan).

    Args:
        name: Data set name, for messages.
        directory: The folder holding one sub-folder per class (hidden folders are skipped).
        classes: The official class list: class ids follow it, and every folder must be one of
            them (a subset of the classes may be present). None: the sorted folder names.

    Raises:
        FileNotFoundError: No class folder, or a class folder without image files.
        ValueError: A folder that is not one of ``classes``.
    """
    found = list_subfolders(directory)
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
    class_to_idx = {c: i for i, c in enumerate(classes) if c in found}
    samples = make_dataset(directory, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    counts = Counter(target for _, target in samples)
    empty = [c for c in found if counts[class_to_idx[c]] == 0]
    if empty:
        raise FileNotFoundError(
            f"{name}: no image files ({', '.join(IMG_EXTENSIONS)}) in {len(empty)} class folder(s) of "
            f"{directory}: {', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}"
        )
    paths = [path for path, _ in samples]
    targets = [target for _, target in samples]
    return FileImageDataset(paths, targets), targets, list(classes)


# --------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (torchvision's CIFAR10 / CIFAR100 readers)
# --------------------------------------------------------------------------------------------


_TV_CIFAR10, _TV_CIFAR100 = tvd.CIFAR10, tvd.CIFAR100  # their file lists and meta keys


class _CifarBatch(tvd.CIFAR10):
    """torchvision's CIFAR pickle reader for one batch file, without its MD5 check.

    ``torchvision_cls`` gives the label key ("labels" or "fine_labels", which torchvision picks
    itself); the class names are read from the meta file separately.
    """

    def __init__(self, folder: str, filename: str) -> None:
        self.base_folder = ""  # ``folder`` is the batches folder itself
        self.train_list = [[filename, None]]
        super().__init__(folder, train=True)

    def _check_integrity(self) -> bool:
        return all(os.path.isfile(os.path.join(self.root, f)) for f, _ in self.train_list)

    def _load_meta(self) -> None:
        pass  # see _cifar_classes


def _read_cifar_batch(name: str, path: str) -> tuple[np.ndarray, list[int]]:
    """One pickle batch → images (n, 32, 32, 3) uint8 and labels, through torchvision."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name}: expected the batch file {path} (torchvision format); {DATA_DIR_HINT}")
    try:
        batch = _CifarBatch(os.path.dirname(path), os.path.basename(path))
    except KeyError as err:
        raise ValueError(f"{name}: {path} lacks the key {err} of a CIFAR batch ('data' and the labels)") from err
    except ValueError as err:
        raise ValueError(f"{name}: {path}: 'data' should have shape (n, 3072) ({err})") from err
    except Exception as err:
        raise ValueError(f"{name}: {path} is not a CIFAR python-pickle batch ({err})") from err
    if len(batch.data) != len(batch.targets):
        raise ValueError(
            f"{name}: {path}: 'data' should have shape (n, 3072) with n = {len(batch.targets)} labels, "
            f"got {len(batch.data)} images"
        )
    return np.asarray(batch.data, dtype=np.uint8), [int(t) for t in batch.targets]


def _cifar_classes(name: str, path: str, key: str, official: Sequence[str]) -> list[str]:
    """Class names from the meta file (torchvision's ``_load_meta`` without the MD5 check)."""
    if not os.path.isfile(path):
        return list(official)
    import pickle

    try:
        with open(path, "rb") as f:
            names = pickle.load(f, encoding="latin1").get(key)
    except Exception as err:
        raise ValueError(f"{name}: {path} is not a CIFAR meta file ({err})") from err
    if names is None or len(names) != len(official):
        raise ValueError(f"{name}: {path} should hold {len(official)} names under {key!r}")
    return [str(n) for n in names]


def _cifar(
    name: str, tv_cls: type[tvd.CIFAR10], official: Sequence[str], root: str | None, split: str, download: bool
) -> tuple[object, list[int], list[str]]:
    root = resolve_root(name, root)
    files = [f for f, _ in (tv_cls.train_list if split == "train" else tv_cls.test_list)]
    first = tv_cls.train_list[0][0]
    folder = next((c for c in (os.path.join(root, tv_cls.base_folder), root) if os.path.isfile(os.path.join(c, first))), None)
    if folder is None and os.path.isdir(os.path.join(root, split)):
        return read_image_folder(name, os.path.join(root, split), official)
    if folder is None and download:
        getattr(tvd, tv_cls.__name__)(root, train=split == "train", download=True)  # looked up now: patchable
        folder = os.path.join(root, tv_cls.base_folder)
    if folder is None or not os.path.isfile(os.path.join(folder, first)):
        raise not_found(
            name,
            f"{os.path.join(root, tv_cls.base_folder, first)} (torchvision format) "
            f"or {os.path.join(root, split, '<class>', '*.jpg')} (JPEG folders)",
            None,
        )
    batches = [_read_cifar_batch(name, os.path.join(folder, f)) for f in files]
    images = np.concatenate([b[0] for b in batches])
    labels = [t for b in batches for t in b[1]]
    classes = _cifar_classes(name, os.path.join(folder, tv_cls.meta["filename"]), tv_cls.meta["key"], official)
    return ArrayImageDataset(images, labels), labels, classes


@register_dataset("cifar10", info=DatasetInfo("cifar10", 10, 32, 32, 3, "cifar", 50_000, 10_000, True))
def cifar10(root: str | None, split: str, download: bool) -> tuple[object, list[int], list[str]]:
    """CIFAR-10: 50,000/10,000 32x32 RGB images, 10 classes.

    Reads torchvision's python-pickle batches (``root/cifar-10-batches-py/data_batch_1..5``,
    ``test_batch``, ``batches.meta``; ``root`` may also be that folder itself) or, when those are
    absent, the JPEG tree ``root/<split>/<class>/*.jpg`` (as in ``cifar10-jpeg.tar.gz``). Folder
    names must be CIFAR-10 class names; the ids are the official ones even when only some class
    folders are present.
    """
    return _cifar("cifar10", _TV_CIFAR10, CIFAR10_CLASSES, root, split, download)


# The reference normalises CIFAR-100 with the CIFAR-10 statistics (see transforms.py): preset "cifar".
@register_dataset("cifar100", info=DatasetInfo("cifar100", 100, 32, 32, 3, "cifar", 50_000, 10_000, True))
def cifar100(root: str | None, split: str, download: bool) -> tuple[object, list[int], list[str]]:
    """CIFAR-100 (fine labels): 50,000/10,000 32x32 RGB images, 100 classes.

    Reads ``root/cifar-100-python/{train,test,meta}`` (torchvision format) or the JPEG tree
    ``root/<split>/<class>/*`` with CIFAR-100 fine class names as folder names.
    """
    return _cifar("cifar100", _TV_CIFAR100, CIFAR100_CLASSES, root, split, download)


# --------------------------------------------------------------------------------------------
# SVHN (torchvision's SVHN reader)
# --------------------------------------------------------------------------------------------


class _SvhnMat(tvd.SVHN):
    """torchvision's SVHN reader without its MD5 check."""

    def _check_integrity(self) -> bool:
        return os.path.isfile(os.path.join(self.root, self.filename))


@register_dataset(
    "svhn", info=DatasetInfo("svhn", 10, 32, 32, 3, "svhn", 73_257, 26_032, True), splits=("train", "test", "extra")
)
def svhn(root: str | None, split: str, download: bool) -> tuple[object, list[int], list[str]]:
    """SVHN (cropped digits): 73,257 train / 26,032 test (/ 531,131 extra) 32x32 RGB images.

    Reads torchvision's ``root/{split}_32x32.mat`` (``X``: (32, 32, 3, N) uint8; ``y``: (N, 1)
    with the digit 0 stored as 10, mapped to 0 by torchvision).
    """
    name = "svhn"
    root = resolve_root(name, root)
    path = os.path.join(root, f"{split}_32x32.mat")
    if not os.path.isfile(path) and download:
        tvd.SVHN(root, split=split, download=True)
    if not os.path.isfile(path):
        raise not_found(name, f"{path} (torchvision format: X (32, 32, 3, N) uint8, y (N, 1))", None)
    try:
        mat = _SvhnMat(root, split=split)
    except Exception as err:
        from scipy.io import whosmat

        try:
            found = sorted(v[0] for v in whosmat(path))
        except Exception:
            raise ValueError(f"{name}: {path} is not a readable MATLAB .mat file ({err})") from err
        if not {"X", "y"} <= set(found):
            raise ValueError(f"{name}: {path} must hold the variables 'X' and 'y', found {found}") from None
        raise ValueError(f"{name}: {path}: 'X' should have shape (H, W, 3, N) ({err})") from err
    images = np.ascontiguousarray(np.asarray(mat.data, dtype=np.uint8).transpose(0, 2, 3, 1))  # (N, H, W, 3)
    labels = np.asarray(mat.labels, dtype=np.int64).reshape(-1)
    if images.ndim != 4 or images.shape[3] != 3 or len(images) != len(labels):
        raw = tuple(np.asarray(mat.data).transpose(2, 3, 1, 0).shape)
        raise ValueError(f"{name}: {path}: 'X' should have shape (H, W, 3, N) with N = {len(labels)} labels, got {raw}")
    return ArrayImageDataset(images, labels.tolist()), labels.tolist(), _DIGIT_NAMES


# --------------------------------------------------------------------------------------------
# ImageNet and generic folders
# --------------------------------------------------------------------------------------------


@register_dataset(
    "imagenet",
    info=DatasetInfo("imagenet", 1000, 224, None, 3, "imagenet", 1_281_167, 50_000),
    splits=("train", "val"),
    aliases={"test": "val"},
)
def imagenet(root: str | None, split: str, download: bool) -> tuple[object, list[int], list[str]]:
    """ImageNet (ILSVRC-2012) in the ``ImageFolder`` layout: 1,281,167 train / 50,000 val images.

    Reads ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG``; class ids follow the
    sorted wnids (torchvision's convention). The official validation archive is flat: sort it
    into wnid folders first (e.g. with the widely used ``valprep.sh``). ImageNet needs a
    manual, licensed download.
    """
    name = "imagenet"
    directory = os.path.join(resolve_root(name, root), split)
    manual = "ImageNet cannot be downloaded automatically: get ILSVRC2012 from image-net.org"
    if not os.path.isdir(directory):
        raise not_found(name, f"{os.path.join(directory, '<wnid>', '*.JPEG')} (ImageFolder layout)", manual)
    loose = any(e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS) for e in os.scandir(directory))
    if loose and not list_subfolders(directory):
        raise ValueError(
            f"{name}: {directory} holds images directly; expected {os.path.join(directory, '<wnid>', '*.JPEG')} "
            "(sort the validation images into wnid folders, e.g. with valprep.sh)"
        )
    return read_image_folder(name, directory)


_SPLIT_FOLDERS = {"train", "val", "valid", "validation", "test"}


@register_dataset(
    "image_folder",
    info=DatasetInfo("image_folder", None, 224, None, 3, "imagenet"),
    splits=None,
)
def image_folder(root: str | None, split: str, download: bool) -> tuple[object, list[int], list[str]]:
    """Any ``root/<split>/<class>/*`` or ``root/<class>/*`` tree (torchvision's ``ImageFolder`` scan).

    ``root`` is required. When ``root/<split>`` exists it is read (``"test"`` falls back to
    ``root/val``); when ``root`` has no split folders (train, val, test, ...) ``root`` itself is
    the data set for every split. Class ids follow the sorted folder names.
    """
    name = "image_folder"
    if root is None:
        raise ValueError(f"{name}: root is required (a folder of <class>/<image> sub-folders); {DATA_DIR_HINT}")
    if not os.path.isdir(root):
        raise not_found(
            name, f"a folder {root} holding <class>/<image> or <split>/<class>/<image>", "it has no download"
        )
    candidates = [split] + (["val"] if split == "test" else [])
    found = [c for c in candidates if os.path.isdir(os.path.join(root, c))]
    if found:
        return read_image_folder(name, os.path.join(root, found[0]))
    split_folders = sorted(set(list_subfolders(root)) & _SPLIT_FOLDERS)
    if split_folders:  # a split layout without the requested split: do not read the splits as classes
        raise not_found(
            name,
            f"{os.path.join(root, split)} (found the split folders {', '.join(split_folders)})",
            "it has no download",
        )
    return read_image_folder(name, root)


# --------------------------------------------------------------------------------------------
# CUB-200-2011 and Stanford Dogs (own readers: torchvision has none)
# --------------------------------------------------------------------------------------------


@register_dataset("cub200", info=DatasetInfo("cub200", 200, 224, None, 3, "imagenet", 5_994, 5_794))
def cub200(root: str | None, split: str, download: bool) -> tuple[object, list[int], list[str]]:
    """CUB-200-2011: 5,994 train / 5,794 test bird images, 200 species.

    Reads the official layout (:func:`~and_plugin.data.readers.read_cub200`); ``root`` is
    ``CUB_200_2011/`` or its parent. torchvision has no CUB reader or download.
    """
    paths, targets, classes = read_cub200(resolve_root("cub200", root), split)
    return FileImageDataset(paths, targets), targets, classes


@register_dataset("stanford_dogs", info=DatasetInfo("stanford_dogs", 120, 224, None, 3, "imagenet", 12_000, 8_580))
def stanford_dogs(root: str | None, split: str, download: bool) -> tuple[object, list[int], list[str]]:
    """Stanford Dogs: 12,000 train / 8,580 test images of 120 breeds.

    Reads the official ``Images/`` folders and ``{train,test}_list.mat``
    (:func:`~and_plugin.data.readers.read_stanford_dogs`). torchvision has no reader or download.
    """
    paths, targets, classes = read_stanford_dogs(resolve_root("stanford_dogs", root), split)
    return FileImageDataset(paths, targets), targets, classes


# --------------------------------------------------------------------------------------------
# Fashion-MNIST (torchvision's IDX reader)
# --------------------------------------------------------------------------------------------

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension


def _plain_idx(name: str, directories: Sequence[str], stem: str) -> str | None:
    """The uncompressed IDX file ``stem`` (torchvision reads only those), extracting ``stem.gz`` if needed.

    A ``.gz`` is extracted next to itself when that folder is writable (as torchvision's
    download does), else into ``$AND_DATA_DIR`` / ``~/.cache/and_plugin/data``
    ``/fashion_mnist/extracted``; it is extracted again when the ``.gz`` is newer.
    """
    for d in directories:
        plain, packed = os.path.join(d, stem), os.path.join(d, stem + ".gz")
        if not os.path.isfile(packed):
            if os.path.isfile(plain):
                return plain
            continue
        if os.path.isfile(plain) and os.path.getmtime(plain) >= os.path.getmtime(packed):
            return plain  # extracted already (e.g. by torchvision's download)
        if os.access(d, os.W_OK):
            target = plain
        else:
            cache = os.environ.get("AND_DATA_DIR", os.path.join("~", ".cache", "and_plugin", "data"))
            target = os.path.join(os.path.expanduser(cache), "fashion_mnist", "extracted", stem)
        if not os.path.isfile(target) or os.path.getmtime(target) < os.path.getmtime(packed):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            fd, partial = tempfile.mkstemp(dir=os.path.dirname(target), prefix=f".{stem}.")
            try:
                with gzip.open(packed, "rb") as source, os.fdopen(fd, "wb") as sink:
                    shutil.copyfileobj(source, sink)
                os.replace(partial, target)  # atomic: concurrent jobs never read half a file
            except (OSError, EOFError) as err:
                os.unlink(partial)
                raise ValueError(f"{name}: cannot read {packed} ({err})") from err
        return target
    return None


def _check_idx(name: str, path: str, shown: str, magic: int) -> None:
    """Magic number and size of an IDX file of unsigned bytes (torchvision's reader asserts neither clearly)."""
    ndim = magic & 0xFF
    header = 4 * (1 + ndim)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(header)
    if len(raw) < header:
        raise ValueError(f"{name}: {shown} is too short for an IDX header ({len(raw)} bytes)")
    found, *dims = struct.unpack(f">{1 + ndim}I", raw)
    if found != magic:
        raise ValueError(f"{name}: {shown}: IDX magic number {found}, expected {magic}")
    expected = header + int(np.prod(dims))
    if size != expected:
        raise ValueError(f"{name}: {shown}: {size} bytes, expected {expected} for dimensions {tuple(dims)}")


@register_dataset(
    "fashion_mnist",
    info=DatasetInfo(
        "fashion_mnist", 10, 28, 28, 1, "fashion_mnist", 60_000, 10_000, True, system_root=FASHION_MNIST_DEFAULT_ROOT
    ),
)
def fashion_mnist(root: str | None, split: str, download: bool) -> tuple[object, list[int], list[str]]:
    """Fashion-MNIST: 60,000 train / 10,000 test 28x28 grey images, 10 classes.

    Reads the IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` found in ``root``,
    ``root/FashionMNIST/raw`` (torchvision's download folder) or ``root/raw`` with torchvision's
    ``read_image_file`` / ``read_label_file`` (gzipped files are extracted first). The default
    root is ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``). Magic
    numbers and sizes are checked; no checksum is.
    """
    from torchvision.datasets.mnist import read_image_file, read_label_file

    name = "fashion_mnist"
    root = resolve_root(name, root)
    prefix = "train" if split == "train" else "t10k"
    dirs = [root, os.path.join(root, "FashionMNIST", "raw"), os.path.join(root, "raw")]
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")

    def find(stem: str) -> str | None:
        return next((os.path.join(d, stem + s) for d in dirs for s in (".gz", "") if os.path.isfile(os.path.join(d, stem + s))), None)

    if None in [find(s) for s in stems] and download:
        tvd.FashionMNIST(root, train=split == "train", download=True)
    shown = [find(s) for s in stems]
    if None in shown:
        missing = [s for s, p in zip(stems, shown) if p is None]
        raise not_found(
            name,
            f"{', '.join(os.path.join(root, s + '.gz') for s in missing)} (IDX files; "
            f"`apt-get install dataset-fashion-mnist` puts them in {FASHION_MNIST_DEFAULT_ROOT})",
            None,
        )
    paths = [_plain_idx(name, [os.path.dirname(p)], s) for p, s in zip(shown, stems)]
    for path, label, magic in zip(paths, shown, (IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC)):
        _check_idx(name, path, label, magic)
    images = read_image_file(paths[0]).numpy()
    labels = read_label_file(paths[1]).tolist()
    if len(images) != len(labels):
        raise ValueError(f"{name}: {shown[0]} holds {len(images)} images but {shown[1]} {len(labels)} labels")
    return ArrayImageDataset(images, labels), labels, list(FASHION_MNIST_CLASSES)


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


@register_dataset("digits", info=DatasetInfo("digits", 10, 16, 8, 1, "digits", 1_400, 397))
def digits(root: str | None, split: str, download: bool) -> tuple[object, list[int], list[str]]:
    """scikit-learn's handwritten digits: 1,797 8x8 grey images, 10 classes, no files, no download.

    The 0..16 intensities are scaled to 0..255 (``round(v * 255 / 16)``). The split is a fixed
    stratified 1,400 train / 397 test split (``train_test_split``, ``random_state=0``); items keep
    the scikit-learn order within each split. ``root`` is ignored.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    labels = np.asarray(bunch.target, dtype=np.int64)
    images = np.round(np.asarray(bunch.images) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    keep = digits_split_indices(labels)[split]
    return ArrayImageDataset(images[keep], labels[keep].tolist()), labels[keep].tolist(), _DIGIT_NAMES
