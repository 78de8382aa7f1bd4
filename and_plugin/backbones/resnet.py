"""ResNet backbones (He et al., 2016) with named stages ``conv1`` ... ``conv5`` and ``fc``.

Built from ``torchvision.models.resnet*`` (``weights=None``) and cut into the paper's stage
names (conv2_x ... conv5_x of He et al. are torchvision's ``layer1`` ... ``layer4``):

=======  ============================================  =============  ==============
stage    modules                                       CIFAR, 32x32   ImageNet, 224
=======  ============================================  =============  ==============
conv1    stem (see below)                              64 x 32 x 32   64 x 56 x 56
conv2    ``layer1``                                    C x 32 x 32    C x 56 x 56
conv3    ``layer2``                                    2C x 16 x 16   2C x 28 x 28
conv4    ``layer3``                                    4C x 8 x 8     4C x 14 x 14
conv5    ``layer4``                                    8C x 4 x 4     8C x 7 x 7
fc       AdaptiveAvgPool(1) → Flatten → Linear(8C→d)   d              d
=======  ============================================  =============  ==============

C = 64 for ResNet18 (basic blocks) and 256 for ResNet50/101 (bottlenecks, expansion 4).

Stems:

* CIFAR (``resnet*_cifar``): Conv 3x3, stride 1, pad 1, 64 → BN → ReLU, and **no max-pool**, as
  in the reference AND / NPID CIFAR code. Using the ImageNet stem on 32x32 images (4x
  downsampling before ``layer1``) is the most common cause of failed reproductions.
* ImageNet (``resnet18`` / ``resnet50`` / ``resnet101``): torchvision's Conv 7x7, stride 2,
  pad 3, 64 → BN → ReLU → MaxPool 3x3/2 (4x downsampling).

``forward`` L2-normalises the ``fc`` output (done by
:class:`~and_plugin.backbones.base.Backbone`).

Example:
    >>> import torch
    >>> from and_plugin.backbones.resnet import resnet18_cifar
    >>> net = resnet18_cifar().eval()
    >>> net.forward_layers(torch.randn(2, 3, 32, 32), ["conv1"])["conv1"].shape
    torch.Size([2, 64, 32, 32])
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from torch import nn
from torchvision import models
from torchvision.models import ResNet

from ..registry import BACKBONES
from .base import Backbone, check_positive_int


def resnet_backbone(
    arch: Callable[..., ResNet],
    embedding_dim: int = 128,
    cifar_stem: bool = False,
    in_channels: int = 3,
    **kwargs: Any,
) -> Backbone:
    """Cuts a torchvision ResNet into ``conv1`` ... ``conv5`` + ``fc`` stages.

    Args:
        arch: A torchvision ResNet constructor, e.g. ``torchvision.models.resnet18``.
        embedding_dim: Size d of the output embedding.
        cifar_stem: Use the 3x3 stride-1 stem without max-pool (for 32x32 images) instead of the
            ImageNet 7x7 stride-2 stem with max-pool.
        in_channels: Image channels (3 for RGB, 1 for grey images such as Fashion-MNIST).
        **kwargs: Passed to ``arch`` (e.g. ``zero_init_residual=True``, ``norm_layer``); never
            ``weights`` or ``num_classes``.

    Returns:
        A :class:`Backbone` mapping (B, in_channels, H, W) to unit vectors (B, embedding_dim).

    Raises:
        ValueError: If ``embedding_dim`` or ``in_channels`` is < 1, or ``kwargs`` holds
            ``weights`` / ``num_classes``.
    """
    check_positive_int("embedding_dim", embedding_dim)
    check_positive_int("in_channels", in_channels)
    for reserved in ("weights", "num_classes"):
        if reserved in kwargs:
            raise ValueError(
                f"{reserved} is not accepted here (got {kwargs[reserved]!r}): backbones are built "
                "untrained (weights=None) and end in Linear → embedding_dim"
            )
    net = arch(weights=None, **kwargs)
    if cifar_stem:
        conv = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        stem = nn.Sequential(conv, net.bn1, net.relu)
    else:
        conv = net.conv1
        if in_channels != conv.in_channels:
            conv = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        stem = nn.Sequential(conv, net.bn1, net.relu, net.maxpool)
    feature_dim = net.fc.in_features
    stages = OrderedDict(
        conv1=stem,
        conv2=net.layer1,
        conv3=net.layer2,
        conv4=net.layer3,
        conv5=net.layer4,
        fc=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(feature_dim, embedding_dim)),
    )
    return Backbone(stages, embedding_dim)


def _register_resnet(depth: int, cifar_stem: bool) -> Callable[..., Backbone]:
    """Registers ``resnet{depth}[_cifar]``: torchvision's ``resnet{depth}`` cut by :func:`resnet_backbone`."""
    arch = getattr(models, f"resnet{depth}")
    name = f"resnet{depth}_cifar" if cifar_stem else f"resnet{depth}"
    stem, side = ("the CIFAR stem (3x3 stride 1, no max-pool)", 32) if cifar_stem else (
        "the ImageNet stem (7x7/2 + max-pool)", 224)

    def factory(embedding_dim: int = 128, in_channels: int = 3, **kwargs: Any) -> Backbone:
        return resnet_backbone(arch, embedding_dim, cifar_stem=cifar_stem, in_channels=in_channels, **kwargs)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"""torchvision ``resnet{depth}`` with {stem}.

    Args:
        embedding_dim: Size d of the output embedding.
        in_channels: Image channels (1 for grey images).
        **kwargs: Passed to ``torchvision.models.resnet{depth}``.

    Returns:
        A :class:`Backbone` mapping (B, in_channels, {side}, {side}) to unit vectors (B, embedding_dim).
    """
    return BACKBONES.register(name)(factory)


resnet18_cifar = _register_resnet(18, cifar_stem=True)
resnet18 = _register_resnet(18, cifar_stem=False)
resnet50_cifar = _register_resnet(50, cifar_stem=True)
resnet50 = _register_resnet(50, cifar_stem=False)
resnet101_cifar = _register_resnet(101, cifar_stem=True)
resnet101 = _register_resnet(101, cifar_stem=False)


__all__ = [
    "resnet18",
    "resnet18_cifar",
    "resnet50",
    "resnet50_cifar",
    "resnet101",
    "resnet101_cifar",
    "resnet_backbone",
]
