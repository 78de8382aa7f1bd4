"""Readers for the two official layouts torchvision has no reader for: CUB-200-2011 and Stanford Dogs.

Each returns the image paths of a split, their 0-based labels and the class names, and raises
``FileNotFoundError`` / ``ValueError`` naming the data set and the file that is missing or
malformed. :mod:`and_plugin.data.datasets` registers them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from and_plugin.data.builder import not_found

__all__ = ["list_subfolders", "loadmat", "read_cub200", "read_stanford_dogs"]

CUB_FILES = ("images.txt", "train_test_split.txt", "image_class_labels.txt", "classes.txt")
CUB_MANUAL = "download CUB_200_2011.tgz from the Caltech data site (torchvision cannot) and extract it there"
DOGS_MANUAL = "download images.tar and lists.tar from vision.stanford.edu/aditya86/ImageNetDogs (torchvision cannot)"


def list_subfolders(directory: str) -> list[str]:
    """Sorted names of the sub-directories of ``directory`` (hidden ones skipped)."""
    return sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))


def loadmat(name: str, path: str, variables: Sequence[str] | None = None) -> dict[str, Any]:
    """``scipy.io.loadmat`` with the data set named in the error."""
    from scipy.io import loadmat as scipy_loadmat  # lazy: scipy is only needed for .mat files

    try:
        return scipy_loadmat(path, variable_names=list(variables) if variables else None)
    except Exception as err:
        raise ValueError(f"{name}: {path} is not a readable MATLAB .mat file ({err})") from err


# --------------------------------------------------------------------------------------------
# CUB-200-2011
# --------------------------------------------------------------------------------------------


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


def read_cub200(root: str, split: str, name: str = "cub200") -> tuple[list[str], list[int], list[str]]:
    """The official ``CUB_200_2011/`` layout → (image paths, 0-based labels, class names) of a split.

    Reads ``images.txt`` (id, relative path), ``train_test_split.txt`` (id, 1 = train),
    ``image_class_labels.txt`` (id, 1-based class), ``classes.txt`` (class id, name) and checks
    that ``images/<class>/<file>.jpg`` exist; ``root`` is ``CUB_200_2011/`` or its parent. Items
    follow the image ids.

    Args:
        root: The data directory.
        split: "train" or "test".
        name: Data set name, for messages.
    """
    folder = next((c for c in (os.path.join(root, "CUB_200_2011"), root)
                   if os.path.isfile(os.path.join(c, "images.txt"))), None)
    if folder is None:
        raise not_found(
            name, f"{os.path.join(root, 'CUB_200_2011', 'images.txt')} (official CUB_200_2011 layout)", CUB_MANUAL
        )
    missing = [f for f in CUB_FILES if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise not_found(
            name, f"{', '.join(os.path.join(folder, f) for f in missing)} (official CUB_200_2011 layout)", CUB_MANUAL
        )
    images, is_train, labels, class_names = (_read_id_table(name, os.path.join(folder, f)) for f in CUB_FILES)
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
    return paths, [int(labels[i]) - 1 for i in ids], classes


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


def _dogs_list(name: str, root: str, split: str) -> tuple[list[str], list[int]]:
    """``{split}_list.mat`` → relative image paths and 0-based labels."""
    candidates = [os.path.join(root, f"{split}_list.mat"), os.path.join(root, "lists", f"{split}_list.mat")]
    path = next((c for c in candidates if os.path.isfile(c)), None)
    if path is None:
        raise not_found(name, f"{candidates[0]} (from the official lists.tar)", DOGS_MANUAL)
    mat = loadmat(name, path, ("file_list", "labels"))
    if "file_list" not in mat or "labels" not in mat:
        raise ValueError(f"{name}: {path} must hold 'file_list' and 'labels' (official lists.tar format)")
    files = _mat_strings(mat["file_list"])
    labels = np.asarray(mat["labels"]).reshape(-1).astype(np.int64)
    if len(files) != len(labels):
        raise ValueError(f"{name}: {path}: {len(files)} files but {len(labels)} labels")
    if len(labels) and labels.min() < 1:
        raise ValueError(f"{name}: {path}: labels are 1-based, found {labels.min()}")
    return files, (labels - 1).tolist()


def read_stanford_dogs(root: str, split: str, name: str = "stanford_dogs") -> tuple[list[str], list[int], list[str]]:
    """The official Stanford Dogs layout → (image paths, 0-based labels, breed folder names) of a split.

    Reads ``Images/<wnid>-<breed>/*.jpg`` (images.tar) and ``{train,test}_list.mat`` (lists.tar;
    in ``root`` or ``root/lists``) whose ``file_list`` holds paths relative to ``Images/`` and
    ``labels`` the 1-based class, numbered in the sorted order of the breed folders (checked).

    Args:
        root: The data directory.
        split: "train" or "test".
        name: Data set name, for messages.
    """
    images_dir = os.path.join(root, "Images")
    if not os.path.isdir(images_dir):
        raise not_found(
            name, f"{os.path.join(images_dir, '<breed>', '*.jpg')} (official images.tar layout)", DOGS_MANUAL
        )
    files, targets = _dogs_list(name, root, split)
    classes = list_subfolders(images_dir)
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
    return paths, targets, classes
