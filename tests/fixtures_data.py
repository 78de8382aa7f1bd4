"""Writers of tiny datasets in the exact on-disk formats the loaders read.

Every image encodes who it is, so a test can check by hand that item i is the right picture:
``solid_rgb(v)`` is a uniform image with channels (v, 255 - v, v // 2) (distinct per channel, so a
wrong channel order shows), ``solid_grey(v)`` a uniform grey one. JPEG is lossy: compare those
values with a tolerance of a few levels.

Each writer returns the labels (or ``(relative path, label)`` pairs) it wrote, in the order the
loader must return them.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def solid_rgb(value: int, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    """A uniform RGB image (H, W, 3) uint8 with channels (v, 255 - v, v // 2)."""
    v = int(value) % 256
    image = np.empty((*size, 3), dtype=np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = v, 255 - v, v // 2
    return image


def solid_grey(value: int, size: tuple[int, int] = (28, 28)) -> np.ndarray:
    """A uniform grey image (H, W) uint8."""
    return np.full(size, int(value) % 256, dtype=np.uint8)


def save_jpeg(path: Path, array: np.ndarray) -> None:
    """Writes ``array`` (H, W[, 3]) uint8 as a JPEG (quality 95), creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="JPEG", quality=95)


# ----------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (torchvision python-pickle batches)
# ----------------------------------------------------------------------------------------------


def _cifar_batch(values: Sequence[int], labels: Sequence[int], label_key: str) -> dict:
    """One batch dict as in the official files: 'data' (n, 3072) uint8 row = R plane, G, B."""
    data = np.stack([solid_rgb(v).transpose(2, 0, 1).reshape(-1) for v in values]).astype(np.uint8)
    return {
        "batch_label": "fixture batch",
        label_key: list(labels),
        "data": data,
        "filenames": [f"img_{v}.png" for v in values],
    }


def _dump(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10_pickle(root: Path, per_batch: int = 2, n_test: int = 4) -> dict[str, list[int]]:
    """Writes ``root/cifar-10-batches-py/`` with 5 train batches of ``per_batch`` images, a test
    batch and ``batches.meta``. Image k of a split has value 10 * k + 1 (see ``solid_rgb``).

    Returns:
        ``{"train": labels, "test": labels}`` in file order.
    """
    folder = root / "cifar-10-batches-py"
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    train: list[int] = []
    for b in range(5):
        labels = [(3 * (b * per_batch + i)) % 10 for i in range(per_batch)]
        values = [10 * (b * per_batch + i) + 1 for i in range(per_batch)]
        _dump(folder / f"data_batch_{b + 1}", _cifar_batch(values, labels, "labels"))
        train += labels
    test = [(7 * i) % 10 for i in range(n_test)]
    _dump(folder / "test_batch", _cifar_batch([10 * i + 1 for i in range(n_test)], test, "labels"))
    _dump(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072})
    return {"train": train, "test": test}


def write_cifar100_pickle(
    root: Path, n_train: int = 6, n_test: int = 3, names: Sequence[str] | None = None
) -> dict[str, list[int]]:
    """Writes ``root/cifar-100-python/{train,test,meta}`` (fine and coarse labels).

    Returns:
        ``{"train": fine labels, "test": fine labels}``.
    """
    folder = root / "cifar-100-python"
    fine_names = list(names) if names is not None else [f"class_{i:03d}" for i in range(100)]
    out = {}
    for split, n, step in (("train", n_train, 37), ("test", n_test, 11)):
        fine = [(step * i + 5) % 100 for i in range(n)]
        batch = _cifar_batch([10 * i + 1 for i in range(n)], fine, "fine_labels")
        batch["coarse_labels"] = [f // 5 for f in fine]
        _dump(folder / split, batch)
        out[split] = fine
    _dump(folder / "meta", {"fine_label_names": fine_names, "coarse_label_names": [f"super_{i}" for i in range(20)]})
    return out


def write_cifar_jpeg(root: Path, split: str, classes: Sequence[str], per_class: int = 2) -> list[str]:
    """Writes ``root/<split>/<class>/0000.jpg ...`` (the cifar10-jpeg.tar.gz layout).

    Image k of class c (classes in the given order) has value 20 * (c * per_class + k) + 10.

    Returns:
        The class folder of every image in ImageFolder order (sorted class names, then files).
    """
    order = []
    for c, cls in enumerate(classes):
        for k in range(per_class):
            save_jpeg(root / split / cls / f"{k:04d}.jpg", solid_rgb(20 * (c * per_class + k) + 10))
    for cls in sorted(classes):
        order += [cls] * per_class
    return order


# ----------------------------------------------------------------------------------------------
# SVHN (torchvision .mat)
# ----------------------------------------------------------------------------------------------


def write_svhn_mat(root: Path, split: str, digits: Sequence[int]) -> None:
    """Writes ``root/<split>_32x32.mat``: X (32, 32, 3, N) uint8, y (N, 1) uint8 with 0 stored as 10.

    Image i has value 10 * i + 3 (see ``solid_rgb``).
    """
    from scipy.io import savemat

    x = np.stack([solid_rgb(10 * i + 3) for i in range(len(digits))], axis=3)
    y = np.array([[10 if d == 0 else d] for d in digits], dtype=np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    savemat(root / f"{split}_32x32.mat", {"X": x, "y": y})


# ----------------------------------------------------------------------------------------------
# ImageNet, generic folders
# ----------------------------------------------------------------------------------------------


def write_class_folders(
    directory: Path, classes: Sequence[str], per_class: int = 2, ext: str = ".JPEG", size: tuple[int, int] = (30, 40)
) -> list[int]:
    """Writes ``directory/<class>/img_<k><ext>`` JPEGs; returns the labels in ImageFolder order."""
    labels = []
    for c, cls in enumerate(sorted(classes)):
        for k in range(per_class):
            save_jpeg(directory / cls / f"img_{k}{ext}", solid_rgb(40 * c + 10 * k + 5, size))
            labels.append(c)
    return labels


def write_imagenet(
    root: Path, wnids: Sequence[str] = ("n01440764", "n01443537", "n01484850"), per_class: int = 2
) -> dict[str, list[int]]:
    """Writes ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG``.

    Returns:
        ``{"train": labels, "val": labels}``.
    """
    return {
        "train": write_class_folders(root / "train", wnids, per_class),
        "val": write_class_folders(root / "val", wnids, 1),
    }


# ----------------------------------------------------------------------------------------------
# CUB-200-2011
# ----------------------------------------------------------------------------------------------

CUB_FIXTURE_CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross")


def write_cub(root: Path, per_class: int = 3) -> dict[str, list[tuple[str, int]]]:
    """Writes ``root/CUB_200_2011/`` in the official layout: images.txt, train_test_split.txt,
    image_class_labels.txt, classes.txt (1-based ids) and images/<class>/<file>.jpg.

    Within each class the first image is a test image, the others are training images.

    Returns:
        ``{"train": [(relative path, 0-based label)], "test": [...]}`` in image-id order.
    """
    folder = root / "CUB_200_2011"
    lines = {"images.txt": [], "train_test_split.txt": [], "image_class_labels.txt": [], "classes.txt": []}
    out: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    image_id = 0
    for c, cls in enumerate(CUB_FIXTURE_CLASSES):
        lines["classes.txt"].append(f"{c + 1} {cls}")
        species = cls.split(".", 1)[1]
        for k in range(per_class):
            image_id += 1
            rel = f"{cls}/{species}_{image_id:04d}_{100 + k}.jpg"
            save_jpeg(folder / "images" / rel, solid_rgb(15 * image_id, (24, 36)))
            is_train = int(k > 0)
            lines["images.txt"].append(f"{image_id} {rel}")
            lines["train_test_split.txt"].append(f"{image_id} {is_train}")
            lines["image_class_labels.txt"].append(f"{image_id} {c + 1}")
            out["train" if is_train else "test"].append((rel, c))
    for name, content in lines.items():
        (folder / name).write_text("\n".join(content) + "\n")
    return out


# ----------------------------------------------------------------------------------------------
# Stanford Dogs
# ----------------------------------------------------------------------------------------------

DOGS_FIXTURE_BREEDS = ("n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02085936-Maltese_dog")


def _cell(strings: Sequence[str]) -> np.ndarray:
    """A MATLAB cell column (N, 1) of 1x1 char arrays, as in the official lists."""
    cell = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        cell[i, 0] = np.array([s])
    return cell


def write_stanford_dogs(root: Path, n_train: int = 2, n_test: int = 1) -> dict[str, list[tuple[str, int]]]:
    """Writes ``root/Images/<breed>/<wnid>_<k>.jpg`` and ``root/{train,test}_list.mat`` with the
    official variables ``file_list`` and ``annotation_list`` (cells of strings) and ``labels``
    ((N, 1) double, 1-based, numbered by sorted breed folder).

    Returns:
        ``{"train": [(path relative to Images/, 0-based label)], "test": [...]}`` in list order.
    """
    from scipy.io import savemat

    out: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    k = 0
    for c, breed in enumerate(sorted(DOGS_FIXTURE_BREEDS)):
        wnid = breed.split("-", 1)[0]
        for split, n in (("train", n_train), ("test", n_test)):
            for _ in range(n):
                k += 1
                rel = f"{breed}/{wnid}_{1000 + k}.jpg"
                save_jpeg(root / "Images" / rel, solid_rgb(12 * k, (20, 26)))
                out[split].append((rel, c))
    for split, entries in out.items():
        files = [rel for rel, _ in entries]
        savemat(
            root / f"{split}_list.mat",
            {
                "file_list": _cell(files),
                "annotation_list": _cell([f[: -len(".jpg")] for f in files]),
                "labels": np.array([[c + 1] for _, c in entries], dtype=np.float64),
            },
        )
    return out


# ----------------------------------------------------------------------------------------------
# Fashion-MNIST (IDX)
# ----------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """Encodes a uint8 array as IDX: magic 0x0800 | ndim (2051 images, 2049 labels), dims, data."""
    header = struct.pack(f">{1 + array.ndim}I", 0x0800 | array.ndim, *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_fashion_mnist(root: Path, n_train: int = 12, n_test: int = 5, gz: bool = True) -> dict[str, list[int]]:
    """Writes ``root/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.

    Image i of a split is uniform grey with value 7 * i + 2.

    Returns:
        ``{"train": labels, "test": labels}``.
    """
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        labels = np.array([(3 * i + 1) % 10 for i in range(n)], dtype=np.uint8)
        images = np.stack([solid_grey(7 * i + 2) for i in range(n)])
        for stem, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
            data = idx_bytes(array)
            if gz:
                with gzip.open(root / f"{stem}.gz", "wb") as f:
                    f.write(data)
            else:
                (root / stem).write_bytes(data)
        out[split] = labels.tolist()
    return out


def fixture_files(root: Path) -> list[str]:
    """All files under ``root``, relative and sorted (for debugging failing tests)."""
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
