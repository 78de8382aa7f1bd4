"""Any torchvision classifier, or any user ``nn.Module``, as a :class:`Backbone`.

* :func:`torchvision_backbone` builds a torchvision classification model by name (untrained),
  removes its classifier head and adds ``Linear → embedding_dim``; ``build_backbone`` reaches it
  through the ``"torchvision:<name>"`` prefix.
* :func:`wrap_backbone` turns any module that outputs (B, F) vectors or (B, C, H, W) maps into a
  :class:`Backbone` (global average pool if needed, ``Linear → embedding_dim``, L2 norm).

Both give two stages, ``"features"`` (the model body) and ``"fc"``. To expose more stages (for
layer-wise linear probes), register your own factory instead::

    from and_plugin.backbones import BACKBONES, Backbone

    @BACKBONES.register("my_net")
    def my_net(embedding_dim: int = 128) -> Backbone:
        return Backbone({"conv1": ..., "conv2": ..., "fc": ...}, embedding_dim)

Example:
    >>> import torch
    >>> from torch import nn
    >>> from and_plugin.backbones.generic import wrap_backbone
    >>> body = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU())
    >>> net = wrap_backbone(body, embedding_dim=16, input_shape=(1, 28, 28))
    >>> net(torch.randn(2, 1, 28, 28)).shape
    torch.Size([2, 16])
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torchvision.models
from torch import Tensor, nn

from .base import Backbone, check_positive_int

#: Models whose training-mode output is a tuple of main + auxiliary logits unless disabled.
_AUX_LOGIT_MODELS = ("googlenet", "inception_v3")


class GlobalAvgPool(nn.Module):
    """Global average pooling of feature maps; flat feature vectors pass through unchanged.

    Shapes:
        (B, C, H, W) → (B, C); (B, F) → (B, F).
    """

    def forward(self, x: Tensor) -> Tensor:
        """Pools ``x`` over its spatial dimensions if it has any.

        Args:
            x: Features, shape (B, C, H, W) or (B, F).

        Returns:
            Vectors, shape (B, C) or (B, F).

        Raises:
            ValueError: If ``x`` has neither 2 nor 4 dimensions.
        """
        if x.dim() == 4:
            return x.mean(dim=(2, 3))
        if x.dim() == 2:
            return x
        raise ValueError(f"expected features of shape (B, F) or (B, C, H, W), got {tuple(x.shape)}")


def _probe_output(module: nn.Module, input_shape: Sequence[int]) -> Tensor:
    """Runs one all-zero image of ``input_shape`` through ``module`` in eval mode, no grad.

    Args:
        module: The model body.
        input_shape: (C, H, W) of one image.

    Returns:
        The output for a batch of one, e.g. (1, F) or (1, C, H', W').

    Raises:
        TypeError: If the output is not a (1, F) or (1, C, H, W) tensor.
    """
    param = next(iter(module.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, *input_shape, device=device, dtype=dtype))
    finally:
        module.train(was_training)
    if not isinstance(out, Tensor) or out.dim() not in (2, 4):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise TypeError(
            f"the feature module must return a (B, F) or (B, C, H, W) tensor for input "
            f"(1, {', '.join(map(str, input_shape))}); got {got}"
        )
    return out


def wrap_backbone(
    module: nn.Module,
    feature_dim: int | None = None,
    embedding_dim: int = 128,
    input_shape: Sequence[int] = (3, 224, 224),
) -> Backbone:
    """Turns any feature extractor into a :class:`Backbone`.

    The result has stages ``"features"`` (``module``) and ``"fc"`` (global average pool if
    ``module`` outputs maps, then ``Linear(feature_dim → embedding_dim)``); ``forward``
    L2-normalises.

    Args:
        module: Maps images (B, C, H, W) to features (B, F) or maps (B, F, H', W').
        feature_dim: F. ``None`` infers it from one forward pass of a zero image of
            ``input_shape``.
        embedding_dim: Size d of the output embedding.
        input_shape: (C, H, W) of one image, used only to infer ``feature_dim``.

    Returns:
        A :class:`Backbone` mapping (B, C, H, W) to unit vectors (B, embedding_dim).

    Raises:
        ValueError: If ``embedding_dim`` or ``feature_dim`` is < 1.
        TypeError: If ``module`` is not an ``nn.Module`` or its output is neither (B, F) nor
            (B, C, H, W).

    Example:
        >>> import torchvision
        >>> body = torchvision.models.resnet18(weights=None)
        >>> body.fc = nn.Identity()
        >>> wrap_backbone(body, feature_dim=512).layer_names
        ('features', 'fc')
    """
    check_positive_int("embedding_dim", embedding_dim)
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if feature_dim is None:
        feature_dim = int(_probe_output(module, input_shape).shape[1])
    check_positive_int("feature_dim", feature_dim)
    stages = OrderedDict(
        features=module,
        fc=nn.Sequential(GlobalAvgPool(), nn.Linear(feature_dim, embedding_dim)),
    )
    return Backbone(stages, embedding_dim)


def torchvision_names() -> list[str]:
    """Names of the torchvision classification models :func:`torchvision_backbone` can build."""
    return list(torchvision.models.list_models(module=torchvision.models))


def _set_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    """Replaces the submodule at dotted ``path`` (e.g. ``"classifier.3"``) by ``new``."""
    parent_path, _, attr = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, attr, new)


def _remove_head(model: nn.Module, name: str) -> None:
    """Removes the classifier of a torchvision model in place.

    The last ``nn.Linear`` registered (``fc``, ``classifier[-1]``, ``heads.head``, ``head``)
    becomes the identity, so the model outputs the features that fed it (for a multi-layer
    classifier such as MobileNetV3's or VGG's, the penultimate hidden layer). SqueezeNet's
    classifier is a 1x1 convolution; it is replaced by a global average pool.
    """
    linears = [path for path, module in model.named_modules() if isinstance(module, nn.Linear)]
    if linears:
        _set_submodule(model, linears[-1], nn.Identity())
    elif isinstance(getattr(model, "classifier", None), nn.Module):
        model.classifier = nn.AdaptiveAvgPool2d(1)
    else:  # pragma: no cover - every current torchvision classifier has one of the two
        raise ValueError(f"cannot find the classifier head of torchvision model {name!r}")


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """Swaps the first ``nn.Conv2d`` for a freshly initialised, ungrouped one reading ``in_channels``."""
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            if module.in_channels != in_channels:
                conv = nn.Conv2d(
                    in_channels,
                    module.out_channels,
                    kernel_size=module.kernel_size,  # type: ignore[arg-type]
                    stride=module.stride,  # type: ignore[arg-type]
                    padding=module.padding,  # type: ignore[arg-type]
                    dilation=module.dilation,  # type: ignore[arg-type]
                    bias=module.bias is not None,
                    padding_mode=module.padding_mode,
                )
                _set_submodule(model, path, conv)
            return
    raise ValueError("in_channels: the model has no nn.Conv2d whose input channels could be changed")


def torchvision_backbone(
    name: str,
    embedding_dim: int = 128,
    in_channels: int = 3,
    input_size: int | None = None,
    **kwargs: Any,
) -> Backbone:
    """Builds any torchvision classification model by name as an untrained :class:`Backbone`.

    The model is created with ``torchvision.models.get_model(name, weights=None, **kwargs)``,
    its classifier head is removed (see below), and the result has stages ``"features"`` (the
    headless model, (B, C, H, W) → (B, F)) and ``"fc"`` (``Linear(F → embedding_dim)``). F is
    found by one forward pass of a zero image. GoogLeNet and Inception-v3 are built without
    auxiliary classifiers and with PyTorch's default initialisation unless ``kwargs`` say
    otherwise.

    Head removal: the last ``nn.Linear`` of the model becomes the identity, so F is the input
    size of that layer (512 for resnet18; 1024 for mobilenet_v3_small, whose classifier is
    Linear → Hardswish → Dropout → Linear; 768 for vit_b_16). SqueezeNet's 1x1-conv classifier
    is replaced by a global average pool.

    Args:
        name: A torchvision classification model name, e.g. ``"mobilenet_v3_small"``
            (see :func:`torchvision_names`).
        embedding_dim: Size d of the output embedding.
        in_channels: Image channels; if not 3, the model's first convolution is replaced.
        input_size: Side of the square image used to infer F; default ``kwargs["image_size"]``
            if given (ViTs), else 224 (299 for inception_v3).
        **kwargs: Passed to the torchvision constructor (never ``weights`` or ``num_classes``).

    Returns:
        A :class:`Backbone` mapping (B, in_channels, H, W) to unit vectors (B, embedding_dim).

    Raises:
        KeyError: If ``name`` is not a torchvision classification model (lists close matches).
        ValueError: If ``embedding_dim`` or ``in_channels`` is < 1, or ``kwargs`` holds
            ``weights`` / ``num_classes``.

    Example:
        >>> net = torchvision_backbone("mobilenet_v3_small", embedding_dim=64)
        >>> net.layer_names, net.stages["fc"].in_features
        (('features', 'fc'), 1024)
    """
    check_positive_int("embedding_dim", embedding_dim)
    check_positive_int("in_channels", in_channels)
    known = torchvision_names()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise KeyError(
            f"unknown torchvision model {name!r}; {hint}torchvision classification models: {', '.join(known)}"
        )
    for reserved in ("weights", "num_classes"):
        if reserved in kwargs:
            raise ValueError(
                f"{reserved} is not accepted here (got {kwargs[reserved]!r}): backbones are built "
                "untrained (weights=None) and end in Linear → embedding_dim"
            )
    if name in _AUX_LOGIT_MODELS:
        kwargs.setdefault("aux_logits", False)
        kwargs.setdefault("init_weights", False)
    if input_size is None:
        input_size = int(kwargs.get("image_size", 299 if name == "inception_v3" else 224))
    check_positive_int("input_size", input_size)

    model = torchvision.models.get_model(name, weights=None, **kwargs)
    _remove_head(model, name)
    if in_channels != 3:
        _replace_first_conv(model, in_channels)
    out = _probe_output(model, (in_channels, input_size, input_size))
    feature_dim = int(out.shape[1])
    fc: nn.Module = nn.Linear(feature_dim, embedding_dim)
    if out.dim() == 4:
        fc = nn.Sequential(GlobalAvgPool(), fc)
    return Backbone(OrderedDict(features=model, fc=fc), embedding_dim)


__all__ = ["GlobalAvgPool", "torchvision_backbone", "torchvision_names", "wrap_backbone"]
