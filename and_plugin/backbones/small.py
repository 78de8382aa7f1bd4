"""A tiny 3-stage CNN for the CPU quickstart and tests on small (grey) images.

=======  ===============================================  ===================
stage    layers                                           output at 28x28
=======  ===============================================  ===================
conv1    Conv 3x3/1, pad 1, w → BN → ReLU → MaxPool 2/2   w x 14 x 14
conv2    Conv 3x3/1, pad 1, 2w → BN → ReLU → MaxPool 2/2  2w x 7 x 7
conv3    Conv 3x3/1, pad 1, 4w → BN → ReLU → MaxPool 2/2  4w x 3 x 3
fc       AdaptiveAvgPool(1) → Flatten → Linear(4w → d)    d
=======  ===============================================  ===================

w = ``width`` (32 by default: about 0.1 M parameters). The adaptive pool makes any input of
at least 8x8 work (8x8 → 1x1 after conv3).

Example:
    >>> import torch
    >>> from and_plugin.backbones.small import small_cnn
    >>> net = small_cnn(in_channels=1).eval()
    >>> net(torch.randn(2, 1, 28, 28)).shape
    torch.Size([2, 128])
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ..registry import BACKBONES
from .alexnet import conv_stage
from .base import Backbone, check_positive_int


@BACKBONES.register("small_cnn")
def small_cnn(embedding_dim: int = 128, in_channels: int = 3, width: int = 32) -> Backbone:
    """Three ``Conv 3x3 → BN → ReLU → MaxPool 2`` stages, then pool + Linear.

    Args:
        embedding_dim: Size d of the output embedding.
        in_channels: Image channels (1 for grey images).
        width: Channels w of conv1; conv2 and conv3 have 2w and 4w.

    Returns:
        A :class:`Backbone` mapping (B, in_channels, H, W), H, W >= 8, to unit vectors
        (B, embedding_dim); stage outputs conv1 (B, w, H/2, W/2), conv2 (B, 2w, H/4, W/4),
        conv3 (B, 4w, H/8, W/8) (floored).

    Raises:
        ValueError: If ``embedding_dim``, ``in_channels`` or ``width`` is < 1.
    """
    check_positive_int("embedding_dim", embedding_dim)
    check_positive_int("in_channels", in_channels)
    check_positive_int("width", width)
    stages = OrderedDict(
        conv1=conv_stage(in_channels, width, 3, padding=1, pool=nn.MaxPool2d(2)),
        conv2=conv_stage(width, 2 * width, 3, padding=1, pool=nn.MaxPool2d(2)),
        conv3=conv_stage(2 * width, 4 * width, 3, padding=1, pool=nn.MaxPool2d(2)),
        fc=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(4 * width, embedding_dim)),
    )
    return Backbone(stages, embedding_dim)


__all__ = ["small_cnn"]
