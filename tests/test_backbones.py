"""Tests of ``and_plugin.backbones``: shapes, named stages, stems, registry, bad input."""

from __future__ import annotations

import doctest
from collections import OrderedDict
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from and_plugin import backbones
from and_plugin.backbones import (
    BACKBONES,
    Backbone,
    alexnet,
    base,
    build_backbone,
    generic,
    resnet,
    small,
    wrap_backbone,
)

CONV5 = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc")

# name → (input side, expected shape of every stage output for a batch of 2 RGB images)
EXPECTED: dict[str, tuple[int, dict[str, tuple[int, ...]]]] = {
    "alexnet_cifar": (
        32,
        {
            "conv1": (96, 16, 16),
            "conv2": (256, 8, 8),
            "conv3": (384, 8, 8),
            "conv4": (384, 8, 8),
            "conv5": (256, 4, 4),
            "fc": (128,),
        },
    ),
    "alexnet_imagenet": (
        224,
        {
            "conv1": (96, 27, 27),
            "conv2": (256, 13, 13),
            "conv3": (384, 13, 13),
            "conv4": (384, 13, 13),
            "conv5": (256, 6, 6),
            "fc": (128,),
        },
    ),
    "resnet18_cifar": (
        32,
        {
            "conv1": (64, 32, 32),
            "conv2": (64, 32, 32),
            "conv3": (128, 16, 16),
            "conv4": (256, 8, 8),
            "conv5": (512, 4, 4),
            "fc": (128,),
        },
    ),
    "resnet50_cifar": (
        32,
        {
            "conv1": (64, 32, 32),
            "conv2": (256, 32, 32),
            "conv3": (512, 16, 16),
            "conv4": (1024, 8, 8),
            "conv5": (2048, 4, 4),
            "fc": (128,),
        },
    ),
    "resnet101_cifar": (
        32,
        {
            "conv1": (64, 32, 32),
            "conv2": (256, 32, 32),
            "conv3": (512, 16, 16),
            "conv4": (1024, 8, 8),
            "conv5": (2048, 4, 4),
            "fc": (128,),
        },
    ),
    "resnet18": (
        224,
        {
            "conv1": (64, 56, 56),
            "conv2": (64, 56, 56),
            "conv3": (128, 28, 28),
            "conv4": (256, 14, 14),
            "conv5": (512, 7, 7),
            "fc": (128,),
        },
    ),
    "resnet50": (
        224,
        {
            "conv1": (64, 56, 56),
            "conv2": (256, 56, 56),
            "conv3": (512, 28, 28),
            "conv4": (1024, 14, 14),
            "conv5": (2048, 7, 7),
            "fc": (128,),
        },
    ),
    "resnet101": (
        224,
        {
            "conv1": (64, 56, 56),
            "conv2": (256, 56, 56),
            "conv3": (512, 28, 28),
            "conv4": (1024, 14, 14),
            "conv5": (2048, 7, 7),
            "fc": (128,),
        },
    ),
    "small_cnn": (
        32,
        {"conv1": (32, 16, 16), "conv2": (64, 8, 8), "conv3": (128, 4, 4), "fc": (128,)},
    ),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One intra-op thread: on a small, shared CPU box 2+ OpenMP threads spin and run 5x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def user_name() -> Iterator[str]:
    """A registry name for a user's backbone, removed again after the test."""
    name = "test_backbones_user_net"
    yield name
    BACKBONES._entries.pop(name, None)  # keep the shared registry clean for other tests


def assert_unit_rows(z: torch.Tensor, batch: int, dim: int = 128) -> None:
    assert z.shape == (batch, dim)
    assert torch.isfinite(z).all()
    torch.testing.assert_close(z.norm(dim=1), torch.ones(batch), atol=1e-5, rtol=0)


def test_every_builtin_is_registered_on_import() -> None:
    assert set(EXPECTED) <= set(BACKBONES.names())
    assert {"Backbone", "build_backbone", "wrap_backbone", "BACKBONES"} <= set(backbones.__all__)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_shapes_stages_and_unit_norm(name: str) -> None:
    side, shapes = EXPECTED[name]
    net = build_backbone(name).eval()
    assert isinstance(net, Backbone)
    assert net.layer_names == tuple(shapes)
    assert net.embedding_dim == 128
    # stage shapes at the nominal size; batch 1 keeps the 224x224 ResNet101 / AlexNet cheap on CPU
    batch = 1 if side == 224 else 2
    x = torch.randn(batch, 3, side, side)
    with torch.no_grad():
        outs = net.forward_layers(x, net.layer_names)
    assert {k: tuple(v.shape[1:]) for k, v in outs.items()} == shapes
    assert not torch.allclose(outs["fc"].norm(dim=1), torch.ones(batch))  # fc itself is raw
    # forward(): unit vectors equal to the normalised fc output (on 2 x 64x64 for the 224x224 nets)
    fc = outs["fc"]
    if side == 224:
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            fc = net.forward_layers(x, ["fc"])["fc"]
    with torch.no_grad():
        z = net(x)
    assert_unit_rows(z, x.shape[0])
    torch.testing.assert_close(z, torch.nn.functional.normalize(fc, dim=1))


def test_alexnet_stages_are_conv_bn_relu_pool() -> None:
    net = build_backbone("alexnet_cifar", hidden_dim=16)
    for name in CONV5[:-1]:
        kinds = [type(m) for m in net.stages[name]]
        assert kinds[:3] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU], name
    pooled = {name for name in CONV5[:-1] if isinstance(net.stages[name][-1], nn.MaxPool2d)}
    assert pooled == {"conv1", "conv2", "conv5"}
    conv1 = net.stages["conv1"][0]
    assert (conv1.in_channels, conv1.out_channels, conv1.kernel_size, conv1.stride) == (3, 96, (5, 5), (1, 1))
    imagenet_conv1 = build_backbone("alexnet_imagenet", hidden_dim=16).stages["conv1"][0]
    assert (imagenet_conv1.out_channels, imagenet_conv1.kernel_size, imagenet_conv1.stride) == (96, (11, 11), (4, 4))


def test_cifar_stem_keeps_resolution_imagenet_stem_downsamples_by_4() -> None:
    cifar = build_backbone("resnet18_cifar").eval()
    imagenet = build_backbone("resnet18").eval()
    assert not any(isinstance(m, nn.MaxPool2d) for m in cifar.stages["conv1"].modules())
    assert cifar.stages["conv1"][0].stride == (1, 1) and cifar.stages["conv1"][0].kernel_size == (3, 3)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert cifar.forward_layers(x, ["conv1"])["conv1"].shape[-2:] == (32, 32)
        assert imagenet.forward_layers(x, ["conv1"])["conv1"].shape[-2:] == (8, 8)


def test_one_channel_inputs() -> None:
    x = torch.randn(2, 1, 28, 28)
    for name, kwargs in [
        ("resnet18_cifar", {}),
        ("small_cnn", {}),
        ("alexnet_cifar", {"hidden_dim": 16}),
        ("resnet18", {}),
    ]:
        net = build_backbone(name, in_channels=1, **kwargs).eval()
        with torch.no_grad():
            assert_unit_rows(net(x), 2)
    net = build_backbone("torchvision:resnet18", in_channels=1, input_size=64).eval()
    with torch.no_grad():
        assert_unit_rows(net(torch.randn(2, 1, 64, 64)), 2)


@pytest.mark.parametrize("side", [8, 28, 32])
def test_small_cnn_input_sizes_and_training_step(side: int) -> None:
    net = build_backbone("small_cnn", in_channels=1, embedding_dim=16)
    z = net(torch.randn(2, 1, side, side))  # train mode: BatchNorm uses batch statistics
    assert_unit_rows(z.detach(), 2, 16)
    z.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_embedding_dim_is_passed_through() -> None:
    for name, kwargs in [("alexnet_cifar", {"hidden_dim": 16}), ("resnet18_cifar", {}), ("small_cnn", {})]:
        net = build_backbone(name, embedding_dim=32, **kwargs).eval()
        with torch.no_grad():
            assert_unit_rows(net(torch.randn(2, 3, 32, 32)), 2, 32)


def test_torchvision_mobilenet_v3_small() -> None:
    net = build_backbone("torchvision:mobilenet_v3_small").eval()
    assert net.layer_names == ("features", "fc")
    assert isinstance(net.stages["fc"], nn.Linear) and net.stages["fc"].in_features == 1024
    with torch.no_grad():
        assert_unit_rows(net(torch.randn(2, 3, 64, 64)), 2)


def test_torchvision_squeezenet_conv_head_is_pooled() -> None:
    net = build_backbone("torchvision:squeezenet1_1", embedding_dim=8).eval()
    assert net.stages["fc"].in_features == 512
    with torch.no_grad():
        assert_unit_rows(net(torch.randn(2, 3, 64, 64)), 2, 8)


def test_user_backbone_by_decorator(user_name: str) -> None:
    @BACKBONES.register(user_name)
    def my_net(embedding_dim: int = 128) -> Backbone:
        stages = OrderedDict(
            conv1=nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()),
            fc=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, embedding_dim)),
        )
        return Backbone(stages, embedding_dim)

    net = build_backbone(user_name, embedding_dim=16)
    assert net.layer_names == ("conv1", "fc")
    assert_unit_rows(net(torch.randn(2, 3, 16, 16)).detach(), 2, 16)
    assert net.forward_layers(torch.randn(2, 3, 16, 16), ["conv1"])["conv1"].shape == (2, 8, 16, 16)


def test_wrap_backbone_maps_and_vectors() -> None:
    maps = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU())
    net = wrap_backbone(maps, embedding_dim=16, input_shape=(1, 28, 28))
    assert net.layer_names == ("features", "fc")
    assert_unit_rows(net(torch.randn(2, 1, 28, 28)).detach(), 2, 16)

    vectors = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 20))
    net = wrap_backbone(vectors, feature_dim=20)
    assert_unit_rows(net(torch.randn(2, 3, 8, 8)).detach(), 2)

    inferred = wrap_backbone(vectors, input_shape=(3, 8, 8))
    assert inferred.stages["fc"][-1].in_features == 20
    assert vectors.training  # the shape probe restores the training mode


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(KeyError) as err:
        build_backbone("resnet19_cifar")
    message = str(err.value)
    assert "'resnet19_cifar'" in message
    for known in ("alexnet_cifar", "resnet18_cifar", "small_cnn"):
        assert known in message
    assert "torchvision:" in message
    with pytest.raises(KeyError, match="resnet19_cifar"):
        BACKBONES.build("resnet19_cifar")


def test_unknown_torchvision_name_is_named() -> None:
    with pytest.raises(KeyError) as err:
        build_backbone("torchvision:mobilenet_v3_smal")
    message = str(err.value)
    assert "'mobilenet_v3_smal'" in message
    assert "did you mean mobilenet_v3_small" in message


@pytest.mark.parametrize("name", ["alexnet_cifar", "resnet18_cifar", "small_cnn", "torchvision:mobilenet_v3_small"])
@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_bad_embedding_dim(name: str, bad: object) -> None:
    with pytest.raises(ValueError) as err:
        build_backbone(name, embedding_dim=bad)
    assert str(err.value) == f"embedding_dim must be an integer >= 1, got {bad!r}"


def test_bad_arguments_name_the_parameter() -> None:
    with pytest.raises(ValueError, match=r"in_channels must be an integer >= 1, got 0"):
        build_backbone("resnet18_cifar", in_channels=0)
    with pytest.raises(ValueError, match=r"embedding_dim must be an integer >= 1, got 0"):
        wrap_backbone(nn.Flatten(), feature_dim=12, embedding_dim=0)
    with pytest.raises(ValueError, match=r"embedding_dim must be an integer >= 1, got True"):
        Backbone({"fc": nn.Linear(2, 2)}, embedding_dim=True)
    with pytest.raises(ValueError, match=r"weights is not accepted"):
        build_backbone("resnet18", weights="DEFAULT")
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.5"):
        build_backbone("alexnet_cifar", dropout=1.5)
    with pytest.raises(TypeError, match=r"module must be a torch.nn.Module"):
        wrap_backbone(lambda x: x, feature_dim=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"\(B, F\) or \(B, C, H, W\)"):
        wrap_backbone(nn.Flatten(0), input_shape=(3, 4, 4))
    with pytest.raises(ValueError, match=r"last stage must be named 'fc'"):
        Backbone({"conv1": nn.Identity()}, embedding_dim=4)
    net = build_backbone("small_cnn")
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \['conv5'\]"):
        net.forward_layers(torch.randn(2, 3, 8, 8), ["conv5"])


@pytest.mark.parametrize("module", [base, alexnet, resnet, small, generic, backbones])
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
