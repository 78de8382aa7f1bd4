"""Backbones: named-stage feature extractors ending in Linear → d and L2 normalisation.

Importing this package registers every built-in backbone in
:data:`and_plugin.registry.BACKBONES`:

* ``alexnet_cifar`` (32x32) and ``alexnet_imagenet`` (224x224): stages conv1..conv5, fc.
* ``resnet18_cifar`` / ``resnet50_cifar`` / ``resnet101_cifar`` (3x3 stride-1 stem, no
  max-pool) and ``resnet18`` / ``resnet50`` / ``resnet101`` (ImageNet stem): conv1..conv5, fc.
* ``small_cnn`` (any input >= 8x8, fast on CPU): conv1..conv3, fc.

:func:`build_backbone` builds any of them by name, and any torchvision classification model
with the ``"torchvision:<name>"`` prefix. :func:`wrap_backbone` adapts a user's own module; a
user's factory registered with ``@BACKBONES.register("my_net")`` is built by name like the
built-in ones.

Example:
    >>> import torch
    >>> from and_plugin.backbones import build_backbone
    >>> net = build_backbone("small_cnn", in_channels=1).eval()
    >>> z = net(torch.randn(2, 1, 28, 28))
    >>> z.shape, torch.allclose(z.norm(dim=1), torch.ones(2))
    (torch.Size([2, 128]), True)
"""

from __future__ import annotations

from typing import Any

from ..registry import BACKBONES
from . import alexnet, generic, resnet, small  # noqa: F401  (imported to register)
from .alexnet import alexnet_cifar, alexnet_imagenet
from .base import Backbone, check_positive_int, count_parameters
from .generic import GlobalAvgPool, torchvision_backbone, torchvision_names, wrap_backbone
from .resnet import (
    resnet18,
    resnet18_cifar,
    resnet50,
    resnet50_cifar,
    resnet101,
    resnet101_cifar,
    resnet_backbone,
)
from .small import small_cnn

#: Prefix of :func:`build_backbone` names that select a torchvision classification model.
TORCHVISION_PREFIX = "torchvision:"


def build_backbone(name: str, /, **kwargs: Any) -> Backbone:
    """Builds a backbone by registered name, or a torchvision model by ``"torchvision:<name>"``.

    Args:
        name: A name registered in ``BACKBONES`` (``BACKBONES.names()``), e.g.
            ``"resnet18_cifar"``, or ``"torchvision:<model>"``, e.g.
            ``"torchvision:mobilenet_v3_small"``.
        **kwargs: Passed to the factory (``embedding_dim``, ``in_channels``, ...).

    Returns:
        The :class:`Backbone`; it maps images (B, C, H, W) to unit vectors (B, embedding_dim).

    Raises:
        KeyError: If ``name`` is neither registered nor a known torchvision model; the message
            lists the known names.
        ValueError: If an argument is out of range (e.g. ``embedding_dim`` < 1).

    Example:
        >>> build_backbone("torchvision:mobilenet_v3_small", embedding_dim=64).embedding_dim
        64
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    if name.startswith(TORCHVISION_PREFIX):
        return torchvision_backbone(name[len(TORCHVISION_PREFIX) :], **kwargs)
    try:
        factory = BACKBONES.get(name)
    except KeyError as err:
        raise KeyError(
            f"{err.args[0]}; or any torchvision classification model as "
            f"'{TORCHVISION_PREFIX}<name>' (e.g. '{TORCHVISION_PREFIX}mobilenet_v3_small')"
        ) from None
    return factory(**kwargs)


__all__ = [
    "BACKBONES",
    "TORCHVISION_PREFIX",
    "Backbone",
    "GlobalAvgPool",
    "alexnet_cifar",
    "alexnet_imagenet",
    "build_backbone",
    "check_positive_int",
    "count_parameters",
    "resnet18",
    "resnet18_cifar",
    "resnet50",
    "resnet50_cifar",
    "resnet101",
    "resnet101_cifar",
    "resnet_backbone",
    "small_cnn",
    "torchvision_backbone",
    "torchvision_names",
    "wrap_backbone",
]
