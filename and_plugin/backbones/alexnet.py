"""AlexNet backbones with readable ``conv1`` ... ``conv5`` and ``fc`` stages.

The AND paper uses AlexNet for all of Tables 1–2, but its reference code ships only ResNets, so
both networks here are rebuilt from the papers. Every conv stage is ``Conv → BatchNorm → ReLU``
(+ max-pool where AlexNet pools), so a linear probe can read any of ``conv1`` ... ``conv5``.
Convolutions have no bias (the BatchNorm that follows has one). Local response normalisation
and the two-GPU channel groups of Krizhevsky et al. (2012) are dropped and replaced by
BatchNorm, as in NPID (Wu et al., 2018) and DeepCluster (Caron et al., 2018).

``alexnet_imagenet`` (input 3x224x224) — Krizhevsky et al. (2012) with BatchNorm, the network
of NPID / DeepCluster:

=======  ====================================================  =================
stage    layers                                                output at 224x224
=======  ====================================================  =================
conv1    Conv 11x11/4, pad 2, 96 → BN → ReLU → MaxPool 3/2     96 x 27 x 27
conv2    Conv 5x5/1, pad 2, 256 → BN → ReLU → MaxPool 3/2      256 x 13 x 13
conv3    Conv 3x3/1, pad 1, 384 → BN → ReLU                    384 x 13 x 13
conv4    Conv 3x3/1, pad 1, 384 → BN → ReLU                    384 x 13 x 13
conv5    Conv 3x3/1, pad 1, 256 → BN → ReLU → MaxPool 3/2      256 x 6 x 6
fc       AdaptiveAvgPool(6) → Flatten (9216) →                 128
         fc6 Linear 4096 → BN1d → ReLU →
         fc7 Linear 4096 → BN1d → ReLU → Linear 128
=======  ====================================================  =================

``alexnet_cifar`` (input 3x32x32) — there is no canonical CIFAR AlexNet (the AND paper does
not give one, and the DeepCluster / rotation-prediction papers evaluate CIFAR with other
networks), so this is our choice, kept as close to the ImageNet net as 32x32 allows: the same
channel widths (96/256/384/384/256 of Krizhevsky / DeepCluster / NPID, not torchvision's
64/192/384/256/256), the same three overlapping 3x3/2 max-pools after conv1, conv2 and conv5
(padded by 1 so each exactly halves the map), and the 5x5 stride-1 conv1/conv2 of AlexNet-style
small-image networks (e.g. Krizhevsky's cuda-convnet CIFAR-10 layers). The ImageNet 11x11/4
stem would shrink a 32x32 image to 8x8 after conv1 and 1x1 after conv5, which leaves nothing
for the conv5 linear probe of Table 1; here conv5 gives 256 x 4 x 4 = 4096 features:

=======  ====================================================  =================
stage    layers                                                output at 32x32
=======  ====================================================  =================
conv1    Conv 5x5/1, pad 2, 96 → BN → ReLU → MaxPool 3/2 p1    96 x 16 x 16
conv2    Conv 5x5/1, pad 2, 256 → BN → ReLU → MaxPool 3/2 p1   256 x 8 x 8
conv3    Conv 3x3/1, pad 1, 384 → BN → ReLU                    384 x 8 x 8
conv4    Conv 3x3/1, pad 1, 384 → BN → ReLU                    384 x 8 x 8
conv5    Conv 3x3/1, pad 1, 256 → BN → ReLU → MaxPool 3/2 p1   256 x 4 x 4
fc       AdaptiveAvgPool(4) → Flatten (4096) →                 128
         fc6 Linear 4096 → BN1d → ReLU →
         fc7 Linear 4096 → BN1d → ReLU → Linear 128
=======  ====================================================  =================

Both heads are "5 conv + 3 fc" like AlexNet; the last Linear replaces the 1000-way classifier
by the ``embedding_dim``-d (128) embedding that :class:`~and_plugin.backbones.base.Backbone`
L2-normalises. fc6/fc7 use BatchNorm instead of dropout (``dropout`` re-enables it); their width
is ``hidden_dim``. The adaptive pool at the start of ``fc`` is the identity at the nominal input
size and only lets other sizes (e.g. 28x28, or 256x256) through.

Example:
    >>> import torch
    >>> from and_plugin.backbones.alexnet import alexnet_cifar
    >>> net = alexnet_cifar().eval()
    >>> net(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 128])
    >>> net.forward_layers(torch.randn(2, 3, 32, 32), ["conv5"])["conv5"].shape
    torch.Size([2, 256, 4, 4])
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from torch import nn

from ..registry import BACKBONES
from .base import Backbone, check_positive_int


def conv_stage(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    pool: nn.Module | None = None,
) -> nn.Sequential:
    """One AlexNet conv stage: ``Conv (no bias) → BatchNorm → ReLU`` (→ ``pool``).

    Args:
        in_channels: Input channels C_in.
        out_channels: Output channels C_out.
        kernel_size: Square kernel size.
        stride: Convolution stride.
        padding: Convolution zero padding.
        pool: Optional pooling module applied last.

    Returns:
        A module mapping (B, C_in, H, W) to (B, C_out, H', W').
    """
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]
    if pool is not None:
        layers.append(pool)
    return nn.Sequential(*layers)


def mlp_head(spatial: int, channels: int, hidden_dim: int, embedding_dim: int, dropout: float = 0.0) -> nn.Sequential:
    """The AlexNet ``fc`` stage: pool → flatten → fc6 → fc7 → Linear(embedding_dim).

    Args:
        spatial: Side of the pooled conv5 map (6 for ImageNet, 4 for CIFAR).
        channels: conv5 channels (256).
        hidden_dim: Width of fc6 and fc7 (4096 in AlexNet).
        embedding_dim: Output size d.
        dropout: Dropout probability before fc6 and fc7 (0 disables it).

    Returns:
        A module mapping (B, channels, H, W) to (B, embedding_dim).
    """
    in_features = channels * spatial * spatial
    layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(spatial), nn.Flatten(1)]
    for fc_in in (in_features, hidden_dim):
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.Linear(fc_in, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(hidden_dim, embedding_dim))
    return nn.Sequential(*layers)


def _init_weights(net: nn.Module) -> None:
    """He-normal init for convolutions, unit/zero BatchNorm, default init for Linear layers."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def _check_common(embedding_dim: int, in_channels: int, hidden_dim: int, dropout: float) -> None:
    check_positive_int("embedding_dim", embedding_dim)
    check_positive_int("in_channels", in_channels)
    check_positive_int("hidden_dim", hidden_dim)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


@dataclass(frozen=True)
class AlexNetLayout:
    """What differs between the two AlexNets (the module docstring's two tables).

    Attributes:
        conv1_kernel: conv1's square kernel (5 for 32x32 inputs, 11 for 224x224).
        conv1_stride: conv1's stride (1 / 4).
        pool_padding: Padding of the three 3x3/2 max-pools (1: each exactly halves the map / 0).
        fc_spatial: Side of the conv5 map the ``fc`` stage pools to (4 / 6).
    """

    conv1_kernel: int
    conv1_stride: int
    pool_padding: int
    fc_spatial: int


ALEXNET_LAYOUTS = {
    "cifar": AlexNetLayout(conv1_kernel=5, conv1_stride=1, pool_padding=1, fc_spatial=4),
    "imagenet": AlexNetLayout(conv1_kernel=11, conv1_stride=4, pool_padding=0, fc_spatial=6),
}


def alexnet_backbone(
    layout: AlexNetLayout, embedding_dim: int = 128, in_channels: int = 3, hidden_dim: int = 4096, dropout: float = 0.0
) -> Backbone:
    """The 5 conv + 3 fc AlexNet with BatchNorm, in one of the :data:`ALEXNET_LAYOUTS`.

    Args:
        layout: conv1 and pooling geometry.
        embedding_dim: Size d of the output embedding.
        in_channels: Image channels (3 for RGB, 1 for grey images).
        hidden_dim: Width of fc6 and fc7.
        dropout: Dropout before fc6/fc7 (0 = none; BatchNorm regularises instead).

    Returns:
        A :class:`Backbone` mapping (B, in_channels, H, W) to unit vectors (B, embedding_dim).

    Raises:
        ValueError: If an integer argument is < 1 or ``dropout`` is outside [0, 1).
    """
    _check_common(embedding_dim, in_channels, hidden_dim, dropout)

    def pool() -> nn.Module:
        return nn.MaxPool2d(kernel_size=3, stride=2, padding=layout.pool_padding)

    stages = OrderedDict(
        conv1=conv_stage(in_channels, 96, layout.conv1_kernel, stride=layout.conv1_stride, padding=2, pool=pool()),
        conv2=conv_stage(96, 256, 5, padding=2, pool=pool()),
        conv3=conv_stage(256, 384, 3, padding=1),
        conv4=conv_stage(384, 384, 3, padding=1),
        conv5=conv_stage(384, 256, 3, padding=1, pool=pool()),
        fc=mlp_head(layout.fc_spatial, 256, hidden_dim, embedding_dim, dropout),
    )
    net = Backbone(stages, embedding_dim)
    _init_weights(net)
    return net


@BACKBONES.register("alexnet_cifar")
def alexnet_cifar(
    embedding_dim: int = 128, in_channels: int = 3, hidden_dim: int = 4096, dropout: float = 0.0
) -> Backbone:
    """AlexNet for 32x32 images (CIFAR-10/100, SVHN); the network of the paper's Table 1.

    :func:`alexnet_backbone` in the ``cifar`` layout. conv stage outputs at 32x32: conv1
    (B, 96, 16, 16), conv2 (B, 256, 8, 8), conv3 (B, 384, 8, 8), conv4 (B, 384, 8, 8), conv5
    (B, 256, 4, 4). Arguments as :func:`alexnet_backbone`.
    """
    return alexnet_backbone(ALEXNET_LAYOUTS["cifar"], embedding_dim, in_channels, hidden_dim, dropout)


@BACKBONES.register("alexnet_imagenet")
def alexnet_imagenet(
    embedding_dim: int = 128, in_channels: int = 3, hidden_dim: int = 4096, dropout: float = 0.0
) -> Backbone:
    """AlexNet (Krizhevsky et al., 2012) with BatchNorm, as in NPID; the network of Table 2.

    :func:`alexnet_backbone` in the ``imagenet`` layout. conv stage outputs at 224x224: conv1
    (B, 96, 27, 27), conv2 (B, 256, 13, 13), conv3 (B, 384, 13, 13), conv4 (B, 384, 13, 13),
    conv5 (B, 256, 6, 6). Arguments as :func:`alexnet_backbone`.
    """
    return alexnet_backbone(ALEXNET_LAYOUTS["imagenet"], embedding_dim, in_channels, hidden_dim, dropout)


__all__ = ["ALEXNET_LAYOUTS", "AlexNetLayout", "alexnet_backbone", "alexnet_cifar", "alexnet_imagenet", "conv_stage", "mlp_head"]
