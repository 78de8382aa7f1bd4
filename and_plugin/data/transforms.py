"""Augmentation presets: the AND/NPID reference pipelines, built from lightly's transforms.

``build_transform(preset, train)`` returns a ``torchvision.transforms.v2.Compose`` that maps a
PIL image to a float tensor of shape (C, H, W). The training pipelines of the colour presets are
lightly's ``SimCLRViewTransform`` configured to the reference parameters, with every stage that
can never fire (probability 0: flips, rotation, Gaussian blur) removed and a ``RandomApply`` of
probability 1 unwrapped, so that the Compose lists exactly the reference stages.

Presets are registered in :data:`and_plugin.registry.PRESETS`: a builder
``fn(train, size, normalize) → transform`` with a :class:`PresetInfo` (input size, channels,
normalisation). A preset of your own is one more registration::

    @PRESETS.register("my_preset", info=PresetInfo(32, 3, {"mean": (0.5,) * 3, "std": (0.25,) * 3}))
    def my_preset(train: bool, size: int, normalize: dict) -> Callable:
        stages = [T.RandomResizedCrop(size)] if train else [T.Resize(size), T.CenterCrop(size)]
        return T.Compose(stages + to_tensor_and_normalize(normalize))

Built-in presets:

- ``cifar`` (CIFAR-10 and CIFAR-100), ``svhn``. Train: RandomResizedCrop(32, scale=(0.2, 1.0),
  ratio=(3/4, 4/3)) → ColorJitter(0.4, 0.4, 0.4, 0.4) always → RandomGrayscale(p=0.2) → to
  tensor → Normalize. No horizontal flip (the reference ``configs/base.yaml`` comments it out).
  Test: Resize(32) → CenterCrop(32) → to tensor → Normalize. Normalisation: CIFAR-10's
  mean (0.4914, 0.4822, 0.4465) / std (0.2023, 0.1994, 0.2010) for ``cifar``; SVHN's
  (0.4377, 0.4438, 0.4728) / (0.1201, 0.1231, 0.1052) for ``svhn`` (the reference's
  ``SVHNInstance``). The reference CIFAR-100 class declares its own statistics in a method that is
  never called, so its runs normalise CIFAR-100 with the CIFAR-10 numbers; ``cifar100`` therefore
  uses ``cifar`` here too (pass ``mean``/``std`` to override).
- ``imagenet`` (ImageNet, CUB-200, Stanford Dogs, any folder). Train: RandomResizedCrop(224,
  scale=(0.2, 1.0)) → RandomHorizontalFlip(0.5) → RandomGrayscale(p=0.2) → ColorJitter(0.4 x 4)
  → to tensor → Normalize(ImageNet mean/std). Test: Resize(256) → CenterCrop(224).
- ``fashion_mnist``. Train: RandomResizedCrop(28, scale=(0.2, 1.0)) → to tensor →
  Normalize((0.2860,), (0.3530,)); one grey channel, so no colour jitter or grey-scaling (they
  are no-ops or near no-ops on a grey image). Test: Resize(28) → CenterCrop(28) → to tensor.
- ``digits`` (scikit-learn's 8x8 digits). Train: Resize(16) → RandomResizedCrop(16,
  scale=(0.5, 1.0)) → RandomAffine(±10°) → to tensor → Normalize((0.3053,), (0.3759,)). Test:
  Resize(16). Why: an 8x8 input shrinks to 1x1 after a CIFAR ResNet's three stride-2 stages, so
  the images are upsampled to 16 (2x2 final map, still cheap on a CPU); a crop keeping at least
  half the area (not 0.2) because at this resolution a 20 % crop of a digit is a few pixels of
  stroke that no longer identify it; a small rotation instead of flips (a mirrored 2 looks like a
  5); no colour jitter on 17 grey levels.

Differences from the reference code, all deliberate and small:

- Order of grey-scaling and colour jitter: lightly applies ColorJitter then RandomGrayscale, which
  is the reference CIFAR/SVHN order. The NPID ImageNet code applies RandomGrayscale *before*
  ColorJitter; the ``imagenet`` preset moves RandomGrayscale in front to match it. The horizontal
  flip sits right after the crop (lightly) instead of after the jitter (NPID); flips commute with
  the per-pixel colour operations, so the output distribution is unchanged.
- ColorJitter: torchvision v2, like the reference's torchvision 0.2, applies brightness,
  contrast, saturation and hue in a random order each call, with factors drawn uniformly from
  [0.6, 1.4] and hue from [-0.4, 0.4]. Colour jitter is applied to every image (lightly's
  ``cj_prob=1.0``; SimCLR's default would be 0.8).
- Resizing uses torchvision v2 with antialiasing (PIL's bilinear filter, as the reference's PIL
  path did). The output is a plain ``torch.Tensor`` (``ToPureTensor`` ends every pipeline).

Example:
    >>> from PIL import Image
    >>> t = build_transform("cifar", train=True)
    >>> t(Image.new("RGB", (32, 32))).shape
    torch.Size([3, 32, 32])
    >>> build_transform("digits", train=False)(Image.new("L", (8, 8))).shape
    torch.Size([1, 16, 16])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torchvision.transforms import v2 as T

from and_plugin.registry import PRESETS

__all__ = [
    "CIFAR10_NORMALIZE",
    "DIGITS_NORMALIZE",
    "FASHION_MNIST_NORMALIZE",
    "IMAGENET_NORMALIZE",
    "SVHN_NORMALIZE",
    "PresetInfo",
    "available_presets",
    "build_transform",
    "get_preset",
    "to_tensor_and_normalize",
]

Normalization = dict[str, tuple[float, ...]]
Transform = Callable[[Any], torch.Tensor]

CIFAR10_NORMALIZE: Normalization = {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2023, 0.1994, 0.2010)}
SVHN_NORMALIZE: Normalization = {"mean": (0.4377, 0.4438, 0.4728), "std": (0.1201, 0.1231, 0.1052)}
IMAGENET_NORMALIZE: Normalization = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
FASHION_MNIST_NORMALIZE: Normalization = {"mean": (0.2860,), "std": (0.3530,)}
#: Pixel statistics of the 1,797 digits after scaling 0..16 → 0..255 (see ``datasets.digits``).
DIGITS_NORMALIZE: Normalization = {"mean": (0.3053,), "std": (0.3759,)}

#: The reference colour jitter strength, used for brightness, contrast, saturation and hue.
JITTER = 0.4
#: The reference RandomResizedCrop lower scale bound (upper bound 1.0).
MIN_SCALE = 0.2
#: The reference RandomGrayscale probability.
GRAYSCALE_P = 0.2


@dataclass(frozen=True)
class PresetInfo:
    """What the rest of the code needs to know about a preset without building it.

    Registered with the preset: ``@PRESETS.register("name", info=PresetInfo(...))``.

    Attributes:
        input_size: Side of the square tensor both pipelines produce by default.
        channels: Channels of the produced tensor (3 colour, 1 grey).
        normalize: Default ``{"mean": (...), "std": (...)}``, one value per channel.
        name: The registered name (filled in by :func:`get_preset`).
    """

    input_size: int
    channels: int
    normalize: Normalization
    name: str = ""


def to_tensor_and_normalize(normalize: Normalization) -> list[Any]:
    """The stages every preset ends with: PIL image → float tensor in [0, 1] → normalised plain tensor.

    Args:
        normalize: ``{"mean": (...), "std": (...)}``, one value per channel.

    Returns:
        torchvision v2 stages to append to a ``Compose``.
    """
    return [
        T.ToImage(),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean=list(normalize["mean"]), std=list(normalize["std"])),
        T.ToPureTensor(),
    ]


def _stage_probability(stage: Any) -> float | None:
    """The firing probability of a random stage (``p`` in torchvision, ``prob`` in lightly)."""
    for attr in ("p", "prob"):
        value = getattr(stage, attr, None)
        if isinstance(value, (int, float)):
            return float(value)
    return None


def _prune(stages: Sequence[Any]) -> list[Any]:
    """Drops stages that never fire and unwraps single-transform ``RandomApply(p=1)``."""
    kept: list[Any] = []
    for stage in stages:
        p = _stage_probability(stage)
        if p is not None and p <= 0.0:
            continue
        if isinstance(stage, T.RandomApply) and p is not None and p >= 1.0 and len(stage.transforms) == 1:
            stage = stage.transforms[0]
        kept.append(stage)
    return kept


def _move_before(stages: list[Any], moved: type, anchor: type) -> list[Any]:
    """Returns ``stages`` with the first ``moved`` stage placed right before the first ``anchor``."""
    kinds = [type(s) for s in stages]
    if moved not in kinds or anchor not in kinds:
        return stages
    stage = stages.pop(kinds.index(moved))
    stages.insert([type(s) for s in stages].index(anchor), stage)
    return stages


def _lightly_train(
    size: int,
    normalize: Normalization,
    *,
    jitter: float,
    grayscale_p: float,
    hflip_p: float,
    min_scale: float = MIN_SCALE,
    gray_before_jitter: bool = False,
) -> Transform:
    """A reference training pipeline built from lightly's ``SimCLRViewTransform``.

    Args:
        size: Output side (RandomResizedCrop size).
        normalize: ``{"mean": ..., "std": ...}``.
        jitter: ColorJitter strength for all four factors; 0 disables colour jitter.
        grayscale_p: RandomGrayscale probability; 0 disables it.
        hflip_p: RandomHorizontalFlip probability; 0 disables it.
        min_scale: RandomResizedCrop lower area bound.
        gray_before_jitter: Put RandomGrayscale before ColorJitter (NPID ImageNet order).

    Returns:
        A v2 ``Compose``: PIL image → tensor (C, size, size).
    """
    from lightly.transforms.simclr_transform import SimCLRViewTransform  # lazy: lightly is slow to import

    view = SimCLRViewTransform(
        input_size=size,
        cj_prob=1.0 if jitter > 0 else 0.0,
        cj_strength=1.0,
        cj_bright=jitter,
        cj_contrast=jitter,
        cj_sat=jitter,
        cj_hue=jitter,
        min_scale=min_scale,
        random_gray_scale=grayscale_p,
        gaussian_blur=0.0,
        hf_prob=hflip_p,
        vf_prob=0.0,
        rr_prob=0.0,
        normalize=None,
    )
    stages = _prune(view.transform.transforms)
    # lightly's own ToTensor ends the list; ours adds normalisation and a plain-tensor output.
    stages = [s for s in stages if type(s).__name__ != "ToTensor"]
    if gray_before_jitter:
        stages = _move_before(stages, T.RandomGrayscale, T.ColorJitter)
    return T.Compose(stages + to_tensor_and_normalize(normalize))


def _resize_center(size: int, normalize: Normalization, resize_ratio: float = 1.0) -> Transform:
    """Evaluation pipeline: Resize(round(size * ratio)) → CenterCrop(size) → tensor → Normalize."""
    resize = round(size * resize_ratio)
    return T.Compose([T.Resize(resize), T.CenterCrop(size), *to_tensor_and_normalize(normalize)])


@PRESETS.register("cifar", info=PresetInfo(32, 3, CIFAR10_NORMALIZE))
def cifar(train: bool, size: int, normalize: Normalization) -> Transform:
    """CIFAR-10/100: the reference crop → jitter → grey-scale; test Resize → CenterCrop."""
    if not train:
        return _resize_center(size, normalize)
    return _lightly_train(size, normalize, jitter=JITTER, grayscale_p=GRAYSCALE_P, hflip_p=0.0)


@PRESETS.register("svhn", info=PresetInfo(32, 3, SVHN_NORMALIZE))
def svhn(train: bool, size: int, normalize: Normalization) -> Transform:
    """SVHN: the ``cifar`` pipelines with SVHN's statistics."""
    return cifar(train, size, normalize)


@PRESETS.register("imagenet", info=PresetInfo(224, 3, IMAGENET_NORMALIZE))
def imagenet(train: bool, size: int, normalize: Normalization) -> Transform:
    """ImageNet-like sets: NPID's crop → flip → grey-scale → jitter; test Resize(256) → CenterCrop(224)."""
    if not train:
        return _resize_center(size, normalize, 256 / 224)
    return _lightly_train(size, normalize, jitter=JITTER, grayscale_p=GRAYSCALE_P, hflip_p=0.5, gray_before_jitter=True)


@PRESETS.register("fashion_mnist", info=PresetInfo(28, 1, FASHION_MNIST_NORMALIZE))
def fashion_mnist(train: bool, size: int, normalize: Normalization) -> Transform:
    """Fashion-MNIST: a random resized crop only (one grey channel)."""
    if not train:
        return _resize_center(size, normalize)
    return _lightly_train(size, normalize, jitter=0.0, grayscale_p=0.0, hflip_p=0.0)


@PRESETS.register("digits", info=PresetInfo(16, 1, DIGITS_NORMALIZE))
def digits(train: bool, size: int, normalize: Normalization) -> Transform:
    """scikit-learn's digits: upsample to 16, crop ≥ half the area, rotate ±10°."""
    if not train:
        return _resize_center(size, normalize)
    return T.Compose(
        [
            T.Resize(size),
            T.RandomResizedCrop(size, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)),
            T.RandomAffine(degrees=10.0, interpolation=T.InterpolationMode.BILINEAR),
            *to_tensor_and_normalize(normalize),
        ]
    )


def available_presets() -> list[str]:
    """The registered preset names, sorted."""
    return PRESETS.names()


def get_preset(preset: str) -> PresetInfo:
    """The :class:`PresetInfo` of a registered preset (its ``name`` filled in).

    Raises:
        ValueError: Naming the unknown preset and listing the allowed ones, or when the preset
            was registered without ``info``.
    """
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ValueError(f"transform preset: unknown preset {preset!r}; allowed: {', '.join(available_presets())}")
    info = PRESETS.info(preset)
    if not isinstance(info, PresetInfo):
        raise ValueError(
            f"transform preset {preset!r}: registered without info; register it with "
            "@PRESETS.register(name, info=PresetInfo(input_size, channels, normalize))"
        )
    return info if info.name == preset else replace(info, name=preset)


def build_transform(
    preset: str,
    train: bool,
    *,
    size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Transform:
    """Builds the training or evaluation pipeline of a registered preset.

    Args:
        preset: A name in :data:`~and_plugin.registry.PRESETS`; built in: "cifar", "svhn",
            "imagenet", "fashion_mnist", "digits".
        train: The augmenting training pipeline if True, the deterministic test one otherwise.
        size: Output side; defaults to the preset's ``input_size``. The ``imagenet`` test pipeline
            resizes to ``round(size * 256 / 224)`` before the centre crop (256 → 224 by default).
        mean: Per-channel normalisation mean; defaults to the preset's.
        std: Per-channel normalisation std; defaults to the preset's.

    Returns:
        A callable ``PIL.Image → Tensor (C, size, size)``; for the built-in presets a
        ``torchvision.transforms.v2.Compose`` whose ``.transforms`` lists the stages.

    Raises:
        ValueError: For an unknown preset, or ``mean``/``std`` of the wrong length.
    """
    spec = get_preset(preset)
    normalize: Normalization = {
        "mean": tuple(float(m) for m in (mean if mean is not None else spec.normalize["mean"])),
        "std": tuple(float(s) for s in (std if std is not None else spec.normalize["std"])),
    }
    for key, values in normalize.items():
        if len(values) != spec.channels:
            raise ValueError(
                f"transform preset {preset!r}: {key} needs {spec.channels} value(s) (one per channel), "
                f"got {list(values)}"
            )
    side = int(size) if size is not None else spec.input_size
    return PRESETS.get(preset)(bool(train), side, normalize)
