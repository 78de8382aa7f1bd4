"""Tests of ``and_plugin.data.datasets`` on tiny fixtures written in each dataset's real format.

Every fixture image encodes its position (see ``tests/fixtures_data.py``), so the checks below are
values a person can recompute by hand: item i is ``(image i, label i, i)``.
"""

from __future__ import annotations

import doctest
import gzip
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import and_plugin.data.datasets as datasets_module
from and_plugin.data import (
    CIFAR10_CLASSES,
    IndexedDataset,
    build_dataset,
    build_transform,
    dataset_info,
    subset_indices,
)
from and_plugin.registry import DATASETS

try:  # pytest's default "prepend" import mode puts tests/ on sys.path; importlib mode needs the package path
    import fixtures_data as fx
except ImportError:  # pragma: no cover
    from tests import fixtures_data as fx

REGISTERED = (
    "cifar10",
    "cifar100",
    "svhn",
    "imagenet",
    "cub200",
    "stanford_dogs",
    "fashion_mnist",
    "image_folder",
    "digits",
    "synthetic",
)
SHARED_CIFAR_TAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def rgb_at(image: Image.Image) -> tuple[int, int, int]:
    """The centre pixel of a PIL RGB image."""
    return image.getpixel((image.width // 2, image.height // 2))


def assert_close_rgb(image: Image.Image, value: int, tol: int = 0) -> None:
    """``image`` is ``fx.solid_rgb(value)`` (within ``tol`` levels, for JPEG)."""
    expected = fx.solid_rgb(value)[0, 0].tolist()
    got = list(rgb_at(image))
    assert all(abs(g - e) <= tol for g, e in zip(got, expected)), (got, expected)


def assert_items(ds: IndexedDataset, labels: list[int]) -> None:
    """Lengths, (image, target, index) items with index == position, and the targets."""
    assert isinstance(ds, IndexedDataset)
    assert len(ds) == len(labels)
    assert ds.targets.dtype == torch.long and ds.targets.tolist() == list(labels)
    for i in range(len(ds)):
        image, target, index = ds[i]
        assert isinstance(image, Image.Image)
        assert (target, index) == (labels[i], i)


# ----------------------------------------------------------------------------------------------
# Registry and information
# ----------------------------------------------------------------------------------------------


def test_every_dataset_is_registered_with_info() -> None:
    for name in REGISTERED:
        assert name in DATASETS
        info = dataset_info(name)
        assert info.name == name and info.preset in ("cifar", "svhn", "imagenet", "fashion_mnist", "digits")
    assert set(REGISTERED) <= set(DATASETS.names())
    assert dataset_info("cifar100").num_classes == 100 and dataset_info("stanford_dogs").num_classes == 120
    assert dataset_info("cub200").train_size == 5994 and dataset_info("cub200").test_size == 5794


def test_dataset_info_unknown_name_lists_known() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*cifar10.*digits"):
        dataset_info("mnist")


def test_module_doctests() -> None:
    result = doctest.testmod(datasets_module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


# ----------------------------------------------------------------------------------------------
# subset
# ----------------------------------------------------------------------------------------------


def test_subset_indices_round_robin_by_class() -> None:
    # class 0 at 0,1,2; class 1 at 3,4; class 2 at 5: ranks 0 → {0, 3, 5}, then rank 1 → 1 first.
    assert subset_indices([0, 0, 0, 1, 1, 2], 4).tolist() == [0, 1, 3, 5]
    assert subset_indices([0, 0, 0, 1, 1, 2], 10).tolist() == [0, 1, 2, 3, 4, 5]
    assert subset_indices([2, 2, 1, 1], 2).tolist() == [0, 2]


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_bad_subset_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="digits: subset must be a positive int"):
        build_dataset("digits", split="train", subset=bad)


def test_unknown_split_is_rejected() -> None:
    with pytest.raises(ValueError, match="digits: unknown split 'validation'; allowed: train, test"):
        build_dataset("digits", split="validation")


# ----------------------------------------------------------------------------------------------
# digits (real, bundled with scikit-learn)
# ----------------------------------------------------------------------------------------------


def test_digits_split_sizes_stratified_and_deterministic() -> None:
    train = build_dataset("digits", split="train")
    test = build_dataset("digits", split="test")
    assert (len(train), len(test)) == (1400, 397)
    assert train.num_classes == 10 and train.classes == [str(d) for d in range(10)]
    # stratified: every class holds its share (sklearn's 1,797 digits have 174–183 per class)
    assert train.targets.bincount().min() >= 135 and test.targets.bincount().min() >= 38
    split = datasets_module.digits_split_indices(
        np.asarray(__import__("sklearn.datasets").datasets.load_digits().target)
    )
    assert len(np.intersect1d(split["train"], split["test"])) == 0
    assert len(np.union1d(split["train"], split["test"])) == 1797
    again = build_dataset("digits", split="test")
    assert torch.equal(again.targets, test.targets)


def test_digits_items_are_8x8_grey_scaled_to_255() -> None:
    from sklearn.datasets import load_digits

    ds = build_dataset("digits", split="train")
    image, target, index = ds[0]
    assert (image.size, image.mode, index) == ((8, 8), "L", 0)
    first = int(datasets_module.digits_split_indices(load_digits().target)["train"][0])
    raw = load_digits().images[first]
    assert np.array_equal(np.asarray(image), np.round(raw * 255 / 16).astype(np.uint8))
    assert target == int(load_digits().target[first])


def test_digits_subset_is_balanced_and_reindexed() -> None:
    ds = build_dataset("digits", split="train", subset=30)
    assert len(ds) == 30 and ds.targets.bincount().tolist() == [3] * 10
    assert [ds[i][2] for i in range(30)] == list(range(30))


def test_digits_with_preset_transform_through_a_dataloader() -> None:
    info = dataset_info("digits")
    ds = build_dataset("digits", split="train", subset=8, transform=build_transform(info.preset, train=True))
    images, targets, indices = next(iter(DataLoader(ds, batch_size=8)))
    assert images.shape == (8, info.channels, info.image_size, info.image_size)
    assert indices.tolist() == list(range(8)) and torch.equal(targets, ds.targets)


# ----------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100
# ----------------------------------------------------------------------------------------------


def test_cifar10_pickle_batches(tmp_path: Path) -> None:
    labels = fx.write_cifar10_pickle(tmp_path, per_batch=2, n_test=4)
    train = build_dataset("cifar10", root=str(tmp_path), split="train")
    assert_items(train, labels["train"])
    assert train.classes == list(CIFAR10_CLASSES)
    for i in range(len(train)):  # exact pixels, channel order included: value 10 * i + 1
        assert_close_rgb(train[i][0], 10 * i + 1)
    assert train[0][0].size == (32, 32) and train[0][0].mode == "RGB"
    test = build_dataset("cifar10", root=str(tmp_path), split="test")
    assert_items(test, labels["test"])
    # root may also be the batches folder itself
    assert len(build_dataset("cifar10", root=str(tmp_path / "cifar-10-batches-py"), split="test")) == 4


def test_cifar10_pickle_subset(tmp_path: Path) -> None:
    labels = fx.write_cifar10_pickle(tmp_path, per_batch=4)  # 20 images, labels 3k mod 10: two per class
    ds = build_dataset("cifar10", root=str(tmp_path), split="train", subset=10)
    keep = subset_indices(labels["train"], 10)
    assert_items(ds, [labels["train"][k] for k in keep])
    assert sorted(ds.targets.tolist()) == list(range(10))
    assert_close_rgb(ds[3][0], 10 * int(keep[3]) + 1)


def test_cifar100_pickle_fine_labels(tmp_path: Path) -> None:
    labels = fx.write_cifar100_pickle(tmp_path)
    train = build_dataset("cifar100", root=str(tmp_path), split="train")
    assert_items(train, labels["train"])
    assert train.num_classes == 100 and train.classes[0] == "class_000"
    assert_close_rgb(train[2][0], 21)
    assert_items(build_dataset("cifar100", root=str(tmp_path), split="test"), labels["test"])


def test_cifar_missing_directory_message(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        build_dataset("cifar10", root=str(tmp_path / "nowhere"), split="train")
    message = str(err.value)
    assert message.startswith("cifar10: expected ")
    assert os.path.join("nowhere", "cifar-10-batches-py", "data_batch_1") in message
    assert "torchvision format" in message and "<class>" in message and "*.jpg" in message
    assert "--data-dir" in message and "download=True" in message
    with pytest.raises(FileNotFoundError, match="cifar100: expected .*cifar-100-python.*train"):
        build_dataset("cifar100", root=str(tmp_path), split="train")


def test_cifar_malformed_batches(tmp_path: Path) -> None:
    fx.write_cifar10_pickle(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="cifar10: expected the batch file .*data_batch_3"):
        build_dataset("cifar10", root=str(tmp_path), split="train")
    (folder / "data_batch_3").write_bytes(b"this is not a pickle")
    with pytest.raises(ValueError, match="cifar10: .*data_batch_3 is not a CIFAR python-pickle batch"):
        build_dataset("cifar10", root=str(tmp_path), split="train")
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, f)
    with pytest.raises(ValueError, match=r"cifar10: .*test_batch: 'data' should have shape \(n, 3072\)"):
        build_dataset("cifar10", root=str(tmp_path), split="test")
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((1, 3072), np.uint8), "labels": [12]}, f)
    with pytest.raises(ValueError, match=r"cifar10: labels must lie in \[0, 9\]"):
        build_dataset("cifar10", root=str(tmp_path), split="test")


def test_cifar10_jpeg_folders_keep_official_ids(tmp_path: Path) -> None:
    order = fx.write_cifar_jpeg(tmp_path, "train", ["ship", "cat"], per_class=2)
    ds = build_dataset("cifar10", root=str(tmp_path), split="train")
    assert order == ["cat", "cat", "ship", "ship"]
    assert_items(ds, [3, 3, 8, 8])  # cat = 3, ship = 8 in the official order
    assert ds.num_classes == 10 and ds.classes == list(CIFAR10_CLASSES)
    # cat was written second: its images have values 20 * (2 + k) + 10 = 50, 70
    assert_close_rgb(ds[0][0], 50, tol=4)
    assert_close_rgb(ds[3][0], 30, tol=4)
    with pytest.raises(FileNotFoundError, match="cifar10: expected"):
        build_dataset("cifar10", root=str(tmp_path), split="test")


def test_cifar_jpeg_unknown_class_folder(tmp_path: Path) -> None:
    fx.write_cifar_jpeg(tmp_path, "train", ["cat", "zebra"], per_class=1)
    with pytest.raises(ValueError, match="cifar10: .* folders that are not cifar10 classes: zebra"):
        build_dataset("cifar10", root=str(tmp_path), split="train")


def test_cifar_jpeg_empty_class_folder(tmp_path: Path) -> None:
    (tmp_path / "test" / "dog").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="cifar10: no image files .* dog"):
        build_dataset("cifar10", root=str(tmp_path), split="test")


@pytest.mark.skipif(
    not SHARED_CIFAR_TAR.is_file(), reason=f"real data absent: {SHARED_CIFAR_TAR} (../shared beside the repo)"
)
def test_real_cifar10_jpeg_two_classes(tmp_path: Path) -> None:
    """Extracts 100 train and 50 test images of airplane and cat from the real archive."""
    wanted = {("train", "airplane"): 100, ("train", "cat"): 100, ("test", "airplane"): 50, ("test", "cat"): 50}
    taken = dict.fromkeys(wanted, 0)
    with tarfile.open(SHARED_CIFAR_TAR, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            key = tuple(parts[:2])
            if member.isfile() and len(parts) == 3 and key in wanted and taken[key] < wanted[key]:
                tar.extract(member, tmp_path, filter="data")
                taken[key] += 1
            if taken == wanted:
                break
    assert taken == wanted
    train = build_dataset("cifar10", root=str(tmp_path), split="train")
    assert len(train) == 200 and train.targets.bincount(minlength=10).tolist() == [100, 0, 0, 100] + [0] * 6
    image, target, index = train[150]
    assert (image.size, image.mode, target, index) == ((32, 32), "RGB", 3, 150)
    test = build_dataset("cifar10", root=str(tmp_path), split="test", transform=build_transform("cifar", train=False))
    images, targets, indices = next(iter(DataLoader(test, batch_size=100)))
    assert images.shape == (100, 3, 32, 32) and indices.tolist() == list(range(100))
    assert targets.tolist() == [0] * 50 + [3] * 50
    assert abs(images.mean().item()) < 1.0  # normalised with CIFAR statistics: roughly centred


# ----------------------------------------------------------------------------------------------
# SVHN
# ----------------------------------------------------------------------------------------------


def test_svhn_mat_maps_10_to_0(tmp_path: Path) -> None:
    digits = [1, 0, 9, 0, 5]
    fx.write_svhn_mat(tmp_path, "train", digits)
    ds = build_dataset("svhn", root=str(tmp_path), split="train")
    assert_items(ds, digits)
    assert ds.classes == [str(d) for d in range(10)]
    for i in range(len(digits)):
        assert_close_rgb(ds[i][0], 10 * i + 3)
    assert ds[0][0].size == (32, 32)
    with pytest.raises(FileNotFoundError) as err:
        build_dataset("svhn", root=str(tmp_path), split="test")
    assert (
        "svhn: expected" in str(err.value) and "test_32x32.mat" in str(err.value) and "download=True" in str(err.value)
    )


def test_svhn_malformed_mat(tmp_path: Path) -> None:
    from scipy.io import savemat

    savemat(tmp_path / "train_32x32.mat", {"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.ones((3, 1), np.uint8)})
    with pytest.raises(ValueError, match=r"svhn: .*'X' should have shape \(H, W, 3, N\) with N = 3"):
        build_dataset("svhn", root=str(tmp_path), split="train")
    savemat(tmp_path / "test_32x32.mat", {"images": np.zeros((2, 2), np.uint8)})
    with pytest.raises(ValueError, match="svhn: .*must hold the variables 'X' and 'y'"):
        build_dataset("svhn", root=str(tmp_path), split="test")
    (tmp_path / "extra_32x32.mat").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="svhn: .*not a readable MATLAB .mat file"):
        build_dataset("svhn", root=str(tmp_path), split="extra")


# ----------------------------------------------------------------------------------------------
# ImageNet and generic folders
# ----------------------------------------------------------------------------------------------


def test_imagenet_folders_and_val_alias(tmp_path: Path) -> None:
    labels = fx.write_imagenet(tmp_path)
    train = build_dataset("imagenet", root=str(tmp_path), split="train")
    assert_items(train, labels["train"])
    assert train.classes == ["n01440764", "n01443537", "n01484850"]
    assert train[0][0].size == (40, 30) and train[0][0].mode == "RGB"
    assert_close_rgb(train[3][0], 40 * 1 + 10 * 1 + 5, tol=4)
    for split in ("val", "test"):
        assert_items(build_dataset("imagenet", root=str(tmp_path), split=split), labels["val"])


def test_imagenet_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        build_dataset("imagenet", root=str(tmp_path), split="train")
    assert "imagenet: expected" in str(err.value) and os.path.join("train", "<wnid>", "*.JPEG") in str(err.value)
    assert "cannot be downloaded automatically" in str(err.value)
    fx.save_jpeg(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG", fx.solid_rgb(1))
    with pytest.raises(ValueError, match="imagenet: .*val holds images directly.*valprep"):
        build_dataset("imagenet", root=str(tmp_path), split="val")


def test_image_folder_with_and_without_split(tmp_path: Path) -> None:
    labels = fx.write_class_folders(tmp_path / "flat", ["b_dog", "a_cat"], per_class=2, ext=".png")
    ds = build_dataset("image_folder", root=str(tmp_path / "flat"), split="train")
    assert_items(ds, labels)
    assert ds.classes == ["a_cat", "b_dog"]
    fx.write_class_folders(tmp_path / "split" / "train", ["x", "y", "z"], per_class=1)
    fx.write_class_folders(tmp_path / "split" / "val", ["x", "y", "z"], per_class=2)
    assert len(build_dataset("image_folder", root=str(tmp_path / "split"), split="train")) == 3
    assert len(build_dataset("image_folder", root=str(tmp_path / "split"), split="test")) == 6  # test → val
    with pytest.raises(
        FileNotFoundError, match="image_folder: expected .*extra \\(found the split folders train, val\\)"
    ):
        build_dataset("image_folder", root=str(tmp_path / "split"), split="extra")
    with pytest.raises(ValueError, match="image_folder: root is required"):
        build_dataset("image_folder", root=None, split="train")
    with pytest.raises(FileNotFoundError, match="image_folder: expected a folder .*missing"):
        build_dataset("image_folder", root=str(tmp_path / "missing"), split="train")
    (tmp_path / "no_classes").mkdir()
    with pytest.raises(FileNotFoundError, match="image_folder: expected class folders"):
        build_dataset("image_folder", root=str(tmp_path / "no_classes"), split="train")


# ----------------------------------------------------------------------------------------------
# CUB-200-2011
# ----------------------------------------------------------------------------------------------


def test_cub200_official_layout(tmp_path: Path) -> None:
    expected = fx.write_cub(tmp_path, per_class=3)
    for split in ("train", "test"):
        for root in (tmp_path, tmp_path / "CUB_200_2011"):
            ds = build_dataset("cub200", root=str(root), split=split)
            assert_items(ds, [label for _, label in expected[split]])
            assert ds.classes == list(fx.CUB_FIXTURE_CLASSES)
    train = build_dataset("cub200", root=str(tmp_path), split="train")
    assert len(train) == 6 and train[0][0].size == (36, 24)
    assert_close_rgb(train[0][0], 15 * 2, tol=4)  # image id 2 is the first training image


def test_cub200_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        build_dataset("cub200", root=str(tmp_path), split="train")
    assert "cub200: expected" in str(err.value) and os.path.join("CUB_200_2011", "images.txt") in str(err.value)
    fx.write_cub(tmp_path)
    (tmp_path / "CUB_200_2011" / "train_test_split.txt").unlink()
    with pytest.raises(FileNotFoundError, match="cub200: expected .*train_test_split.txt"):
        build_dataset("cub200", root=str(tmp_path), split="train")
    fx.write_cub(tmp_path)
    (tmp_path / "CUB_200_2011" / "images.txt").write_text("1 a.jpg\nnot a line\n")
    with pytest.raises(ValueError, match="cub200: .*images.txt line 2: expected '<id> <value>'"):
        build_dataset("cub200", root=str(tmp_path), split="train")
    expected = fx.write_cub(tmp_path)
    (tmp_path / "CUB_200_2011" / "images" / expected["test"][1][0]).unlink()
    with pytest.raises(FileNotFoundError, match="cub200: 1 image.* listed in images.txt are missing"):
        build_dataset("cub200", root=str(tmp_path), split="test")


# ----------------------------------------------------------------------------------------------
# Stanford Dogs
# ----------------------------------------------------------------------------------------------


def test_stanford_dogs_official_layout(tmp_path: Path) -> None:
    expected = fx.write_stanford_dogs(tmp_path, n_train=2, n_test=1)
    for split in ("train", "test"):
        ds = build_dataset("stanford_dogs", root=str(tmp_path), split=split)
        assert_items(ds, [label for _, label in expected[split]])
        assert ds.classes == sorted(fx.DOGS_FIXTURE_BREEDS)
    test = build_dataset("stanford_dogs", root=str(tmp_path), split="test")
    assert test[1][0].size == (26, 20)
    assert_close_rgb(test[1][0], 12 * 6, tol=4)  # the 6th image written is breed 1's test image
    # the lists may also sit in root/lists
    (tmp_path / "lists").mkdir()
    (tmp_path / "train_list.mat").rename(tmp_path / "lists" / "train_list.mat")
    assert len(build_dataset("stanford_dogs", root=str(tmp_path), split="train")) == 6


def test_stanford_dogs_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="stanford_dogs: expected .*Images.*images.tar"):
        build_dataset("stanford_dogs", root=str(tmp_path), split="train")
    fx.write_stanford_dogs(tmp_path)
    (tmp_path / "test_list.mat").unlink()
    with pytest.raises(FileNotFoundError, match="stanford_dogs: expected .*test_list.mat.*lists.tar"):
        build_dataset("stanford_dogs", root=str(tmp_path), split="test")
    # labels numbered against a different folder order are caught
    from scipy.io import loadmat, savemat

    mat = loadmat(tmp_path / "train_list.mat")
    mat["labels"] = mat["labels"][::-1]
    savemat(tmp_path / "train_list.mat", {k: v for k, v in mat.items() if not k.startswith("__")})
    with pytest.raises(
        ValueError, match="stanford_dogs: train_list.mat gives .* the label 3, but the 3-th sorted folder"
    ):
        build_dataset("stanford_dogs", root=str(tmp_path), split="train")


# ----------------------------------------------------------------------------------------------
# Fashion-MNIST
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx(tmp_path: Path, gz: bool) -> None:
    labels = fx.write_fashion_mnist(tmp_path, n_train=12, n_test=5, gz=gz)
    train = build_dataset("fashion_mnist", root=str(tmp_path), split="train")
    assert_items(train, labels["train"])
    assert train.classes[0] == "T-shirt/top" and train.num_classes == 10
    image = train[4][0]
    assert (image.size, image.mode) == ((28, 28), "L") and image.getpixel((3, 3)) == 7 * 4 + 2
    assert_items(build_dataset("fashion_mnist", root=str(tmp_path), split="test"), labels["test"])


def test_fashion_mnist_torchvision_raw_folder(tmp_path: Path) -> None:
    labels = fx.write_fashion_mnist(tmp_path / "FashionMNIST" / "raw", n_train=3, n_test=2)
    assert_items(build_dataset("fashion_mnist", root=str(tmp_path), split="test"), labels["test"])


def test_fashion_mnist_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        build_dataset("fashion_mnist", root=str(tmp_path), split="train")
    message = str(err.value)
    assert "fashion_mnist: expected" in message and "train-images-idx3-ubyte.gz" in message
    assert "dataset-fashion-mnist" in message and "download=True" in message
    fx.write_fashion_mnist(tmp_path, n_train=4, n_test=2)
    # wrong magic number: an image file written where the labels belong
    images = gzip.decompress((tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes())
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(images)
    with pytest.raises(
        ValueError, match="fashion_mnist: .*t10k-labels-idx1-ubyte.gz: IDX magic number 2051, expected 2049"
    ):
        build_dataset("fashion_mnist", root=str(tmp_path), split="test")
    # truncated image file
    data = gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(data[:-10])
    with pytest.raises(ValueError, match=r"fashion_mnist: .*bytes, expected 3152 for dimensions \(4, 28, 28\)"):
        build_dataset("fashion_mnist", root=str(tmp_path), split="train")
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="fashion_mnist: cannot read"):
        build_dataset("fashion_mnist", root=str(tmp_path), split="train")


@pytest.mark.skipif(
    not FASHION_DEBIAN.is_dir(), reason=f"real data absent: {FASHION_DEBIAN} (apt-get install dataset-fashion-mnist)"
)
def test_real_fashion_mnist_from_debian_package() -> None:
    train = build_dataset("fashion_mnist", root=None, split="train")
    test = build_dataset("fashion_mnist", root=None, split="test", subset=100)
    assert len(train) == 60_000 and train.targets.bincount().tolist() == [6000] * 10
    assert len(test) == 100 and test.targets.bincount().tolist() == [10] * 10
    image, _, index = test[99]
    assert (image.size, image.mode, index) == ((28, 28), "L", 99)


# ----------------------------------------------------------------------------------------------
# download=True passes through to torchvision (faked here: no network in tests)
# ----------------------------------------------------------------------------------------------


def test_download_passes_through_to_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets as tvd

    calls: list[tuple[str, dict]] = []

    def fake(name: str, writer):
        def download(root: str, **kwargs) -> None:
            calls.append((name, {"root": root, **kwargs}))
            writer(Path(root))

        return download

    monkeypatch.setattr(tvd, "CIFAR10", fake("CIFAR10", fx.write_cifar10_pickle))
    monkeypatch.setattr(tvd, "SVHN", fake("SVHN", lambda root: fx.write_svhn_mat(root, "test", [0, 1])))
    monkeypatch.setattr(
        tvd, "FashionMNIST", fake("FashionMNIST", lambda r: fx.write_fashion_mnist(r / "FashionMNIST" / "raw"))
    )
    assert len(build_dataset("cifar10", root=str(tmp_path / "c"), split="test", download=True)) == 4
    assert build_dataset("svhn", root=str(tmp_path / "s"), split="test", download=True).targets.tolist() == [0, 1]
    assert len(build_dataset("fashion_mnist", root=str(tmp_path / "f"), split="train", download=True)) == 12
    assert calls == [
        ("CIFAR10", {"root": str(tmp_path / "c"), "train": False, "download": True}),
        ("SVHN", {"root": str(tmp_path / "s"), "split": "test", "download": True}),
        ("FashionMNIST", {"root": str(tmp_path / "f"), "train": True, "download": True}),
    ]
    # present files are never downloaded again
    build_dataset("cifar10", root=str(tmp_path / "c"), split="train", download=True)
    assert len(calls) == 3
