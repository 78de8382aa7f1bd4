"""Tests of ``and_plugin.data.transforms``: the composed stages carry the reference parameters."""

from __future__ import annotations

import doctest
import pickle

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2 as T

import and_plugin.data.transforms as transforms_module
from and_plugin.data.transforms import available_presets, build_transform, get_preset

PRESETS = ("cifar", "svhn", "imagenet", "fashion_mnist", "digits")
FLIPS = (T.RandomHorizontalFlip, T.RandomVerticalFlip)


def stage_types(transform) -> list[type]:
    return [type(s) for s in transform.transforms]


def only(transform, kind: type):
    found = [s for s in transform.transforms if isinstance(s, kind)]
    assert len(found) == 1, f"expected one {kind.__name__} in {transform}"
    return found[0]


def input_image(preset: str, size: tuple[int, int] = (40, 50), value: int = 128) -> Image.Image:
    mode = "RGB" if get_preset(preset).channels == 3 else "L"
    return Image.new(mode, size, (value,) * 3 if mode == "RGB" else value)


def test_presets_are_registered() -> None:
    assert available_presets() == sorted(PRESETS)


def test_unknown_preset_lists_allowed() -> None:
    with pytest.raises(
        ValueError, match="unknown preset 'cifar10'; allowed: cifar, digits, fashion_mnist, imagenet, svhn"
    ):
        build_transform("cifar10", train=True)


def test_wrong_normalisation_length() -> None:
    with pytest.raises(ValueError, match=r"'fashion_mnist': mean needs 1 value\(s\)"):
        build_transform("fashion_mnist", train=True, mean=(0.5, 0.5, 0.5))


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("train", [True, False])
def test_output_is_plain_float_tensor_of_preset_shape(preset: str, train: bool) -> None:
    spec = get_preset(preset)
    out = build_transform(preset, train=train)(input_image(preset))
    assert type(out) is torch.Tensor and out.dtype == torch.float32
    assert out.shape == (spec.channels, spec.input_size, spec.input_size)


@pytest.mark.parametrize("preset", PRESETS)
def test_pipelines_pickle_for_dataloader_workers(preset: str) -> None:
    for train in (True, False):
        clone = pickle.loads(pickle.dumps(build_transform(preset, train=train)))
        assert clone(input_image(preset)).shape[0] == get_preset(preset).channels


@pytest.mark.parametrize("preset", ["cifar", "svhn"])
def test_cifar_train_matches_reference(preset: str) -> None:
    """RandomResizedCrop(32, 0.2–1, 3/4–4/3) → ColorJitter(0.4 x4) always → RandomGrayscale(0.2); no flip."""
    t = build_transform(preset, train=True)
    assert stage_types(t) == [
        T.RandomResizedCrop, T.ColorJitter, T.RandomGrayscale, T.ToImage, T.ToDtype, T.Normalize, T.ToPureTensor,
    ]  # fmt: skip
    crop = only(t, T.RandomResizedCrop)
    assert crop.size == (32, 32) and crop.scale == (0.2, 1.0)
    assert crop.ratio == pytest.approx((3 / 4, 4 / 3))
    jitter = only(t, T.ColorJitter)  # a bare ColorJitter: applied to every image, no RandomApply
    for factor in ("brightness", "contrast", "saturation"):
        assert getattr(jitter, factor) == pytest.approx((0.6, 1.4))
    assert jitter.hue == pytest.approx((-0.4, 0.4))
    assert only(t, T.RandomGrayscale).p == 0.2
    assert not any(isinstance(s, (*FLIPS, T.RandomApply)) for s in t.transforms)


def test_normalisation_values() -> None:
    cifar = only(build_transform("cifar", train=True), T.Normalize)
    assert cifar.mean == pytest.approx([0.4914, 0.4822, 0.4465]) and cifar.std == pytest.approx(
        [0.2023, 0.1994, 0.2010]
    )
    svhn = only(build_transform("svhn", train=False), T.Normalize)
    assert svhn.mean == pytest.approx([0.4377, 0.4438, 0.4728]) and svhn.std == pytest.approx([0.1201, 0.1231, 0.1052])
    imagenet = only(build_transform("imagenet", train=True), T.Normalize)
    assert imagenet.mean == pytest.approx([0.485, 0.456, 0.406]) and imagenet.std == pytest.approx(
        [0.229, 0.224, 0.225]
    )
    fashion = only(build_transform("fashion_mnist", train=True), T.Normalize)
    assert fashion.mean == pytest.approx([0.2860]) and fashion.std == pytest.approx([0.3530])
    custom = only(build_transform("cifar", train=False, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)), T.Normalize)
    assert custom.mean == [0.5, 0.5, 0.5] and custom.std == [0.25, 0.25, 0.25]


def test_cifar_test_pipeline_is_resize_center_crop_and_checkable_by_hand() -> None:
    t = build_transform("cifar", train=False)
    assert stage_types(t)[:2] == [T.Resize, T.CenterCrop]
    assert only(t, T.Resize).size == [32] and only(t, T.CenterCrop).size == (32, 32)
    out = t(Image.new("RGB", (32, 32), (255, 0, 51)))
    # (v / 255 - mean) / std per channel: (1 - 0.4914) / 0.2023, (0 - 0.4822) / 0.1994, (0.2 - 0.4465) / 0.2010
    expected = torch.tensor([2.5141, -2.4183, -1.2264])
    assert torch.allclose(out[:, 5, 7], expected, atol=1e-3)
    assert torch.equal(out, t(Image.new("RGB", (32, 32), (255, 0, 51))))  # deterministic


def test_imagenet_train_matches_npid_order() -> None:
    """RandomResizedCrop(224, 0.2–1) → flip(0.5) → RandomGrayscale(0.2) → ColorJitter(0.4 x4)."""
    t = build_transform("imagenet", train=True)
    assert stage_types(t) == [
        T.RandomResizedCrop, T.RandomHorizontalFlip, T.RandomGrayscale, T.ColorJitter,
        T.ToImage, T.ToDtype, T.Normalize, T.ToPureTensor,
    ]  # fmt: skip
    crop = only(t, T.RandomResizedCrop)
    assert crop.size == (224, 224) and crop.scale == (0.2, 1.0) and crop.ratio == pytest.approx((3 / 4, 4 / 3))
    assert only(t, T.RandomHorizontalFlip).p == 0.5 and only(t, T.RandomGrayscale).p == 0.2
    assert only(t, T.ColorJitter).brightness == pytest.approx((0.6, 1.4))


def test_imagenet_test_pipeline() -> None:
    t = build_transform("imagenet", train=False)
    assert only(t, T.Resize).size == [256] and only(t, T.CenterCrop).size == (224, 224)
    assert t(Image.new("RGB", (500, 375))).shape == (3, 224, 224)
    small = build_transform("imagenet", train=False, size=112)
    assert only(small, T.Resize).size == [128] and small(Image.new("RGB", (300, 200))).shape == (3, 112, 112)


def test_fashion_mnist_preset_is_crop_only() -> None:
    t = build_transform("fashion_mnist", train=True)
    assert stage_types(t) == [T.RandomResizedCrop, T.ToImage, T.ToDtype, T.Normalize, T.ToPureTensor]
    crop = only(t, T.RandomResizedCrop)
    assert crop.size == (28, 28) and crop.scale == (0.2, 1.0)
    assert t(Image.new("L", (28, 28), 73)).shape == (1, 28, 28)


def test_digits_preset_upsamples_to_16_without_flips() -> None:
    train = build_transform("digits", train=True)
    assert stage_types(train)[:3] == [T.Resize, T.RandomResizedCrop, T.RandomAffine]
    assert only(train, T.RandomResizedCrop).scale == (0.5, 1.0)
    assert only(train, T.RandomAffine).degrees == [-10.0, 10.0]
    assert not any(isinstance(s, FLIPS) for s in train.transforms)
    test = build_transform("digits", train=False)
    out = test(Image.new("L", (8, 8), 255))
    assert out.shape == (1, 16, 16)
    assert torch.allclose(out, torch.full((1, 16, 16), (1.0 - 0.3053) / 0.3759), atol=1e-4)


def test_cifar_grayscale_fires_about_one_time_in_five() -> None:
    """A saturated colour stays coloured under the jitter; only RandomGrayscale makes R = G = B."""
    torch.manual_seed(0)
    t = build_transform("cifar", train=True, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    image = Image.new("RGB", (32, 32), (200, 40, 40))
    grey = 0
    for _ in range(400):
        out = t(image)
        grey += int(torch.allclose(out[0], out[1], atol=1e-6) and torch.allclose(out[1], out[2], atol=1e-6))
    assert 40 <= grey <= 120  # Binomial(400, 0.2): mean 80, sd 8


def test_module_doctests() -> None:
    result = doctest.testmod(transforms_module)
    assert result.failed == 0 and result.attempted > 0
