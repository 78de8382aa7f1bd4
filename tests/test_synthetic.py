"""The registered ``synthetic`` data set: deterministic, class-structured PIL images."""

import numpy as np
import pytest

from and_plugin.data import build_dataset, build_transform, dataset_info, synthetic_images


def test_items_are_pil_images_of_the_asked_size_mode_and_classes():
    ds = build_dataset("synthetic", split="train", image_size=20, channels=1, num_classes=5, train_size=12)
    image, target, index = ds[7]
    assert (image.size, image.mode, target, index) == ((20, 20), "L", 2, 7)  # class = index % 5
    assert len(ds) == 12 and ds.num_classes == 5
    assert ds.targets.tolist() == [i % 5 for i in range(12)]
    rgb = build_dataset("synthetic", split="test")
    assert (len(rgb), rgb[0][0].size, rgb[0][0].mode) == (32, (32, 32), "RGB")
    assert dataset_info("synthetic").preset == "cifar"


def test_deterministic_and_train_differs_from_test():
    a, la = synthetic_images(6, 8, 3, 3, seed=1)
    b, lb = synthetic_images(6, 8, 3, 3, seed=1)
    c, _ = synthetic_images(6, 8, 3, 3, seed=1, split_offset=1)
    assert a.shape == (6, 8, 8, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)


def test_classes_are_separable_by_raw_pixel_nearest_neighbour():
    train, train_labels = synthetic_images(40, 16, 3, 4)
    test, test_labels = synthetic_images(20, 16, 3, 4, split_offset=1)
    x = train.reshape(40, -1).astype(np.float64)
    q = test.reshape(20, -1).astype(np.float64)
    nearest = ((q[:, None, :] - x[None]) ** 2).sum(-1).argmin(1)
    assert (train_labels[nearest] == test_labels).mean() >= 0.9


def test_transform_presets_apply_and_subset_is_balanced():
    ds = build_dataset("synthetic", split="train", transform=build_transform("imagenet", train=False),
                       image_size=48, subset=20)
    assert tuple(ds[0][0].shape) == (3, 224, 224)
    assert np.bincount(ds.targets.numpy()).tolist() == [2] * 10


@pytest.mark.parametrize("kwargs, message", [
    ({"channels": 2}, "channels must be 1 or 3, got 2"),
    ({"image_size": 0}, "image_size must be an integer >= 1, got 0"),
    ({"train_size": 0}, "train_size must be an integer >= 1, got 0"),
])
def test_bad_arguments_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_dataset("synthetic", split="train", **kwargs)
