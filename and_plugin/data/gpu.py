"""GPU-resident training data: the whole uint8 set on the device, augmented there in batches.

The fast path for data sets that fit in device memory (CIFAR-10/100, SVHN, Fashion-MNIST: 50,000
32x32x3 images are 150 MiB as uint8). The images are decoded once into one tensor (N, C, H, W)
of dtype uint8 on the device; every batch is gathered by index and augmented there, with
per-sample random parameters and no Python loop over the batch:

- RandomResizedCrop(size, scale, ratio): torchvision's sampling rule (10 tries of area and
  log-uniform aspect ratio, then the centre-crop fallback), vectorised over the batch; the crop
  is resampled with ``torch.nn.functional.grid_sample`` (bilinear, border padding,
  ``align_corners=False``) on a per-sample affine grid. An optional horizontal flip and rotation
  (the ``digits`` preset's RandomAffine) are folded into the same grid.
- ColorJitter(b, c, s, h): torchvision's float-tensor formulas (brightness ``x·f``; contrast blends
  with the mean grey level of the image; saturation with the grey image; hue shifts H in HSV),
  factors uniform in [1 − s, 1 + s] and hue in [−h, h], clamped to [0, 1] after every step. The
  order of the four steps is drawn per sample, as torchvision draws it per call
  (``jitter_order="random"``, the default); ``"fixed"`` applies brightness, contrast, saturation,
  hue in that order (a slightly different distribution; on accelerators a quarter of the hue
  work, since the random order computes the hue step at all four positions and selects per
  sample to avoid host syncs; on the CPU both cost the same).
- RandomGrayscale(p): ITU-R 601 luma (0.2989, 0.587, 0.114), as torchvision; before or after the
  jitter as the preset says (after for CIFAR/SVHN, before for ImageNet).
- Normalize(mean, std).

Differences from the PIL pipeline of :mod:`and_plugin.data.transforms`, all small: the colour
operations run in float32 instead of being rounded to 8 bits after every step; crops that shrink
the image (only possible when the output is smaller than the stored image) use plain bilinear
sampling without PIL's antialiasing filter; the ``digits`` preset's Resize(16) is folded into the
crop (the 8x8 image is sampled directly at the crop's coordinates).

Random parameters come from a ``torch.Generator`` on the CPU, so a given seed gives the same
augmentation on every device; :class:`DeviceBatches` draws them for a whole epoch from
``(seed, epoch)`` alone, which keeps resumed runs exact and data-parallel runs equal to one
process (each rank takes its slice of the global batch's parameters).

Example:
    >>> import torch
    >>> from and_plugin.data.gpu import GPUAugment, augment_spec
    >>> augment = GPUAugment(augment_spec("cifar"))
    >>> images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    >>> out = augment(images, generator=torch.Generator().manual_seed(0))
    >>> tuple(out.shape), out.dtype
    ((4, 3, 32, 32), torch.float32)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .._validation import check_choice, check_in_range, check_int_at_least
from ..sampling import GlobalBatchSampler
from .transforms import GRAYSCALE_P, JITTER, MIN_SCALE, get_preset

__all__ = [
    "AugmentParams",
    "AugmentSpec",
    "DeviceBatches",
    "GPUAugment",
    "augment_spec",
    "dataset_to_uint8",
    "device_batches_for",
    "hsv_to_rgb",
    "rgb_to_grayscale",
    "rgb_to_hsv",
]

#: ITU-R 601-2 luma weights, as ``torchvision.transforms.functional.rgb_to_grayscale``.
LUMA = (0.2989, 0.587, 0.114)
JITTER_ORDERS = ("random", "fixed")
#: Jitter step ids: brightness, contrast, saturation, hue (the "fixed" order).
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


@dataclass(frozen=True)
class AugmentSpec:
    """What :class:`GPUAugment` does.

    Attributes:
        size: Side of the square output.
        scale: RandomResizedCrop area bounds, fractions of the image, 0 < low <= high <= 1.
        ratio: RandomResizedCrop aspect-ratio bounds (w / h), 0 < low <= high.
        jitter: ColorJitter strength for brightness, contrast, saturation and hue (hue ≤ 0.5);
            0 disables the jitter.
        jitter_order: "random" (a new order of the four steps per sample, as torchvision) or
            "fixed" (brightness, contrast, saturation, hue).
        grayscale_p: RandomGrayscale probability.
        gray_before_jitter: Grey-scale before the jitter (NPID ImageNet order) instead of after.
        hflip_p: RandomHorizontalFlip probability.
        rotation: RandomAffine rotation bound in degrees (uniform in [−rotation, rotation]);
            areas rotated in from outside the crop are black (0 before normalisation).
        crop_grid: Side of the grid the crop is sampled on (the ``digits`` preset's Resize(16)
            before its crop); None = the stored image's height and width.
        mean: Normalisation mean, one value per channel.
        std: Normalisation std, one value per channel.
    """

    size: int
    scale: tuple[float, float] = (MIN_SCALE, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter: float = JITTER
    jitter_order: str = "random"
    grayscale_p: float = GRAYSCALE_P
    gray_before_jitter: bool = False
    hflip_p: float = 0.0
    rotation: float = 0.0
    crop_grid: int | None = None
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        check_int_at_least("size", self.size, 1)
        low, high = self.scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {self.scale!r}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < low <= high, got {self.ratio!r}")
        check_in_range("jitter", self.jitter, 0.0, 1.0)
        if self.jitter > 0.5:
            raise ValueError(f"jitter must be <= 0.5 (it is also the hue bound), got {self.jitter!r}")
        check_choice("jitter_order", self.jitter_order, JITTER_ORDERS)
        check_in_range("grayscale_p", self.grayscale_p, 0.0, 1.0)
        check_in_range("hflip_p", self.hflip_p, 0.0, 1.0)
        check_in_range("rotation", self.rotation, 0.0, 180.0)
        if self.crop_grid is not None:
            check_int_at_least("crop_grid", self.crop_grid, 1)
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError(f"mean/std: need one value each per channel and std > 0, got {self.mean!r} / {self.std!r}")

    @property
    def channels(self) -> int:
        return len(self.mean)


#: The on-device equivalent of every training preset of :mod:`and_plugin.data.transforms`.
_PRESET_SPECS: dict[str, dict[str, Any]] = {
    "cifar": {},
    "svhn": {},
    "imagenet": {"hflip_p": 0.5, "gray_before_jitter": True},
    "fashion_mnist": {"jitter": 0.0, "grayscale_p": 0.0},
    "digits": {"scale": (0.5, 1.0), "jitter": 0.0, "grayscale_p": 0.0, "rotation": 10.0, "crop_grid": 16},
}


def augment_spec(
    preset: str,
    size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    jitter_order: str = "random",
) -> AugmentSpec:
    """The :class:`AugmentSpec` of a transform preset's training pipeline.

    Args:
        preset: "cifar", "svhn", "imagenet", "fashion_mnist" or "digits".
        size: Output side; defaults to the preset's.
        mean: Normalisation mean; defaults to the preset's.
        std: Normalisation std; defaults to the preset's.
        jitter_order: "random" or "fixed" (see :class:`AugmentSpec`).

    Raises:
        ValueError: For an unknown preset (listing the known ones).
    """
    base = get_preset(preset)
    if preset not in _PRESET_SPECS:  # a preset of your own has no on-device twin
        raise ValueError(f"preset: no on-device augmentation for {preset!r}; allowed: {sorted(_PRESET_SPECS)}")
    spec = AugmentSpec(
        size=int(size) if size is not None else base.input_size,
        mean=tuple(float(m) for m in (mean if mean is not None else base.normalize["mean"])),
        std=tuple(float(s) for s in (std if std is not None else base.normalize["std"])),
        jitter_order=jitter_order,
    )
    return replace(spec, **_PRESET_SPECS[preset])


# ------------------------------------------------------------------------------ colour maths


def rgb_to_grayscale(images: Tensor) -> Tensor:
    """Luma of RGB images, shape (B, 3, H, W) → (B, 1, H, W)."""
    r, g, b = images.unbind(dim=1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def rgb_to_hsv(images: Tensor) -> Tensor:
    """RGB in [0, 1], shape (B, 3, H, W) → HSV in [0, 1] (torchvision's formulas)."""
    r, g, b = images.unbind(dim=1)
    maxc = images.amax(dim=1)
    minc = images.amin(dim=1)
    equal = maxc == minc
    chroma = maxc - minc
    ones = torch.ones_like(maxc)
    saturation = chroma / torch.where(equal, ones, maxc)
    divisor = torch.where(equal, ones, chroma)
    rc, gc, bc = (maxc - r) / divisor, (maxc - g) / divisor, (maxc - b) / divisor
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    hue = torch.where(is_r, bc - gc, torch.where(is_g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.remainder(hue / 6.0, 1.0)
    return torch.stack([hue, saturation, maxc], dim=1)


def hsv_to_rgb(images: Tensor) -> Tensor:
    """HSV in [0, 1], shape (B, 3, H, W) → RGB, with c_n = v − v·s·clamp(min(k, 4 − k), 0, 1),
    k = (n + 6h) mod 6 for n = 5, 3, 1 (R, G, B)."""
    hue, saturation, value = images.unbind(dim=1)
    n = torch.tensor([5.0, 3.0, 1.0], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * hue.unsqueeze(1), 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return value.unsqueeze(1) * (1.0 - saturation.unsqueeze(1) * ramp)


def _adjust_hue(images: Tensor, shift: Tensor) -> Tensor:
    hsv = rgb_to_hsv(images)
    hue = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    return hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], dim=1))


# ------------------------------------------------------------------------------ parameters


@dataclass
class AugmentParams:
    """Per-sample random parameters of a batch of n images (all tensors have n rows).

    Attributes:
        crop: (n, 4) float: top, left, height, width of the crop on the crop grid.
        flip: (n,) bool: horizontal flip.
        angle: (n,) float: rotation in radians.
        factors: (n, 4) float: brightness, contrast, saturation factors and hue shift.
        order: (n, 4) long: the jitter step applied at each of the four positions.
        gray: (n,) bool: grey-scale this image.
    """

    crop: Tensor
    flip: Tensor
    angle: Tensor
    factors: Tensor
    order: Tensor
    gray: Tensor

    def to(self, device: torch.device | str) -> AugmentParams:
        """A copy with every tensor on ``device``."""
        return AugmentParams(*(getattr(self, f).to(device) for f in self._fields()))

    def slice(self, start: int, stop: int) -> AugmentParams:
        """Rows ``start:stop``."""
        return AugmentParams(*(getattr(self, f)[start:stop] for f in self._fields()))

    def __len__(self) -> int:
        return int(self.crop.shape[0])

    @staticmethod
    def _fields() -> tuple[str, ...]:
        return ("crop", "flip", "angle", "factors", "order", "gray")


def _crop_params(n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                 generator: torch.Generator) -> Tensor:
    """torchvision's RandomResizedCrop.get_params for n images at once → (n, 4) float."""
    area = float(height * width)
    tries = 10
    target = area * torch.empty(n, tries).uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.empty(n, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.to(torch.int8).argmax(dim=1)  # the first successful try (0 when none succeeded)
    rows = torch.arange(n)
    w, h, found = w[rows, first], h[rows, first], valid.any(dim=1)
    u = torch.rand(n, 2, generator=generator)
    top = torch.floor(u[:, 0] * (height - h + 1))
    left = torch.floor(u[:, 1] * (width - w + 1))
    # Fallback: the centre crop with the aspect ratio clamped into the allowed range.
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = float(width), float(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = float(round(height * max(ratio))), float(height)
    else:
        fw, fh = float(width), float(height)
    top = torch.where(found, top, torch.tensor(float((height - fh) // 2)))
    left = torch.where(found, left, torch.tensor(float((width - fw) // 2)))
    h = torch.where(found, h, torch.tensor(fh))
    w = torch.where(found, w, torch.tensor(fw))
    return torch.stack([top, left, h, w], dim=1)


# ------------------------------------------------------------------------------ the augmentation


class GPUAugment:
    """Batched, per-sample random training augmentation on any device (see the module docs).

    Args:
        spec: What to do; :func:`augment_spec` builds it from a transform preset.

    Example:
        >>> import torch
        >>> augment = GPUAugment(augment_spec("cifar"))
        >>> params = augment.sample_params(8, 32, 32, torch.Generator().manual_seed(0))
        >>> images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
        >>> augment.apply(images, params).shape
        torch.Size([8, 3, 32, 32])
    """

    def __init__(self, spec: AugmentSpec) -> None:
        self.spec = spec

    def sample_params(self, n: int, height: int, width: int, generator: torch.Generator | None = None) -> AugmentParams:
        """Draws the random parameters of n images of the stored size (height, width), on the CPU.

        Args:
            n: Number of images.
            height: Stored image height.
            width: Stored image width.
            generator: A CPU generator; None uses torch's global one.

        Returns:
            The parameters, on the CPU.
        """
        check_int_at_least("n", n, 0)
        spec = self.spec
        grid_h = grid_w = spec.crop_grid
        if spec.crop_grid is None:
            grid_h, grid_w = height, width
        crop = _crop_params(n, grid_h, grid_w, spec.scale, spec.ratio, generator)  # type: ignore[arg-type]
        flip = torch.rand(n, generator=generator) < spec.hflip_p
        angle = torch.empty(n).uniform_(-spec.rotation, spec.rotation, generator=generator) * (math.pi / 180)
        j = spec.jitter
        factors = torch.empty(n, 4)
        factors[:, :3].uniform_(1.0 - j, 1.0 + j, generator=generator)
        factors[:, 3].uniform_(-j, j, generator=generator)
        if spec.jitter_order == "random":
            order = torch.argsort(torch.rand(n, 4, generator=generator), dim=1)
        else:
            order = torch.arange(4).expand(n, 4).clone()
        gray = torch.rand(n, generator=generator) < spec.grayscale_p
        return AugmentParams(crop, flip, angle, factors, order, gray)

    def _grid(self, params: AugmentParams, height: int, width: int, device: torch.device) -> tuple[Tensor, Tensor | None]:
        """Sampling grid (n, S, S, 2) in the stored image's normalised coordinates, and the mask
        (n, 1, S, S) of output pixels that a rotation brought in from outside the crop (or None).

        Output pixel centres u in [-1, 1] (``align_corners=False``) are rotated about the centre,
        flipped, then mapped into the crop box: x_in = (w / W)·u_x + (2·left + w) / W − 1.
        """
        spec = self.spec
        n, size = len(params), spec.size
        grid_h, grid_w = (height, width) if spec.crop_grid is None else (spec.crop_grid, spec.crop_grid)
        top, left, h, w = params.crop.to(device=device, dtype=torch.float32).unbind(dim=1)
        scale_x = (w / grid_w) * torch.where(params.flip.to(device), -1.0, 1.0)
        scale_y = h / grid_h
        shift_x = (2 * left + w) / grid_w - 1
        shift_y = (2 * top + h) / grid_h - 1
        angle = params.angle.to(device=device, dtype=torch.float32)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack(
            [
                torch.stack([scale_x * cos, -scale_x * sin, shift_x], dim=1),
                torch.stack([scale_y * sin, scale_y * cos, shift_y], dim=1),
            ],
            dim=1,
        )
        grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
        # Clamp to the crop's outer pixel centres, as resizing the cropped image does (bilinear
        # interpolation never reads pixels outside the crop).
        low = torch.stack([(2 * left + 1) / grid_w - 1, (2 * top + 1) / grid_h - 1], dim=1).view(n, 1, 1, 2)
        high = torch.stack([(2 * (left + w) - 1) / grid_w - 1, (2 * (top + h) - 1) / grid_h - 1], dim=1).view(n, 1, 1, 2)
        grid = torch.maximum(torch.minimum(grid, high), low)
        mask = None
        if spec.rotation > 0:
            zero = torch.zeros_like(cos)
            rotation = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
            rotated = F.affine_grid(rotation, [n, 1, size, size], align_corners=False)
            mask = (rotated.abs() <= 1).all(dim=-1).unsqueeze(1)
        return grid, mask

    def _jitter(self, images: Tensor, params: AugmentParams) -> Tensor:
        """The four ColorJitter steps, in each sample's order (clamped to [0, 1] after each)."""
        n = images.shape[0]
        factors = params.factors.to(device=images.device, dtype=images.dtype)
        order = params.order.to(images.device)
        colour = images.shape[1] == 3
        fixed = self.spec.jitter_order == "fixed"
        for position in range(4):
            step = order[:, position]
            factor = factors.gather(1, step.view(n, 1)).view(n)
            step4 = step.view(n, 1, 1, 1)
            # Brightness, contrast and saturation all blend with a reference: 0, the mean grey
            # level, the grey image. The hue step blends with factor 1 (a no-op) here.
            grey = rgb_to_grayscale(images) if colour else images
            reference = torch.where(step4 == CONTRAST, grey.mean(dim=(1, 2, 3), keepdim=True), grey)
            reference = torch.where(step4 == BRIGHTNESS, torch.zeros_like(reference), reference)
            if not colour:
                reference = torch.where(step4 == SATURATION, images, reference)
            blend = torch.where(step4 == HUE, torch.ones_like(step4, dtype=images.dtype), factor.view(n, 1, 1, 1))
            images = (blend * images + (1 - blend) * reference).clamp_(0.0, 1.0)
            if not colour:
                continue
            if fixed:
                if position == HUE:
                    images = _adjust_hue(images, factor)
            elif images.device.type == "cpu":
                # On the CPU, shift the hue of the images whose step this is (no device sync to avoid).
                rows = torch.nonzero(step == HUE).flatten()
                if rows.numel():
                    images[rows] = _adjust_hue(images[rows], factor[rows])
            else:
                # On accelerators, a masked select avoids a host sync per step (4x the hue work).
                images = torch.where(step4 == HUE, _adjust_hue(images, factor), images)
        return images

    def _grayscale(self, images: Tensor, params: AugmentParams) -> Tensor:
        if images.shape[1] != 3 or self.spec.grayscale_p <= 0:
            return images
        gray = params.gray.to(images.device).view(-1, 1, 1, 1)
        return torch.where(gray, rgb_to_grayscale(images).expand_as(images), images)

    def apply(self, images: Tensor, params: AugmentParams) -> Tensor:
        """Augments a batch with given parameters.

        Args:
            images: uint8, shape (B, C, H, W), C = 1 or 3 (the spec's channels).
            params: B rows of parameters (from :meth:`sample_params`), on any device.

        Returns:
            float32, shape (B, C, size, size), normalised.

        Raises:
            ValueError: If the images are not uint8 (B, C, H, W) with the spec's channels or
                ``params`` has a different number of rows.
        """
        spec = self.spec
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != spec.channels:
            raise ValueError(
                f"images must be uint8 of shape (B, {spec.channels}, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if len(params) != images.shape[0]:
            raise ValueError(f"params: expected {images.shape[0]} rows (one per image), got {len(params)}")
        height, width = images.shape[-2:]
        x = images.float().div_(255.0)
        grid, mask = self._grid(params, height, width, x.device)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if mask is not None:
            x = x * mask
        if spec.gray_before_jitter:
            x = self._grayscale(x, params)
        if spec.jitter > 0:
            x = self._jitter(x, params)
        if not spec.gray_before_jitter:
            x = self._grayscale(x, params)
        mean = torch.tensor(spec.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(spec.std, device=x.device).view(1, -1, 1, 1)
        return x.sub_(mean).div_(std)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draws parameters (CPU generator) and augments; see :meth:`apply`."""
        params = self.sample_params(images.shape[0], images.shape[-2], images.shape[-1], generator)
        return self.apply(images, params)

    def __repr__(self) -> str:
        return f"GPUAugment({self.spec})"


# ------------------------------------------------------------------------------ data on the device


def _pil_to_array(image: Any) -> np.ndarray:
    array = np.asarray(image)
    return array[:, :, None] if array.ndim == 2 else array


def dataset_to_uint8(dataset: Dataset, workers: int = 8) -> Tensor:
    """Decodes a training set's raw images into one uint8 tensor (N, C, H, W) on the CPU.

    Reads the stored pixels, never the dataset's transform: an :class:`~and_plugin.data.base.IndexedDataset`
    over an in-memory array (CIFAR pickles, SVHN, Fashion-MNIST, digits, synthetic) is converted
    without decoding; image files (CIFAR JPEG folders, image folders) are decoded in ``workers``
    threads; any other ``(PIL image or uint8 tensor (C, H, W), target)`` base is read item by item.

    Args:
        dataset: The training set (items ``(image, target, index)``).
        workers: Threads that decode image files.

    Returns:
        uint8, shape (N, C, H, W).

    Raises:
        ValueError: If the images differ in size or are not 8-bit (the message names
            ``data.gpu_resident`` and what is allowed).
    """
    base = getattr(dataset, "base", dataset)
    images = getattr(base, "images", None)
    if isinstance(images, np.ndarray) and images.dtype == np.uint8:
        array = images[:, :, :, None] if images.ndim == 3 else images
        return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).contiguous()
    paths = getattr(base, "paths", None)
    if paths is not None:
        from .base import read_image

        mode = getattr(base, "mode", "RGB")

        def read(path: str) -> np.ndarray:
            return _pil_to_array(read_image(path, mode))

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            arrays = list(pool.map(read, paths, chunksize=256))
    else:
        arrays = []
        for index in range(len(base)):  # type: ignore[arg-type]
            image = base[index][0]
            if isinstance(image, Tensor):
                if image.dtype != torch.uint8 or image.dim() != 3:
                    raise ValueError(
                        f"data.gpu_resident: item {index} is a {image.dtype} tensor of shape {tuple(image.shape)}; "
                        "allowed: PIL images or uint8 tensors (C, H, W)"
                    )
                arrays.append(image.permute(1, 2, 0).numpy())
            else:
                arrays.append(_pil_to_array(image))
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        listed = ", ".join(f"{s[1]}x{s[0]}x{s[2]}" for s in sorted(shapes)[:3])
        raise ValueError(
            f"data.gpu_resident: needs every training image at one size, found {len(shapes)} sizes ({listed}, ...); "
            "allowed: a data set of fixed-size images (CIFAR, SVHN, Fashion-MNIST), else set data.gpu_resident=false"
        )
    if arrays and arrays[0].dtype != np.uint8:
        raise ValueError(f"data.gpu_resident: images must be 8-bit, got {arrays[0].dtype}")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


@dataclass
class DeviceBatches:
    """The training set on the device, served as augmented ``(images, indices)`` batches.

    Iterating over :meth:`epoch` follows ``sampler`` exactly (the same global batches, this rank's
    slice of each), so the DataLoader path and this one train on the same indices. Augmentation
    parameters are drawn for the whole epoch from ``(seed, epoch)`` and indexed by position in
    the epoch, so they do not depend on the rank layout or on where a run was resumed.

    Args:
        images: uint8, shape (N, C, H, W); moved to ``device`` once.
        augment: The batch augmentation.
        sampler: The run's batch sampler (its ``set_epoch`` is called by :meth:`epoch`).
        device: Where the images live and batches are produced.
        seed: Base seed of the augmentation.

    Example:
        >>> import torch
        >>> from and_plugin.sampling import GlobalBatchSampler
        >>> images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
        >>> source = DeviceBatches(images, GPUAugment(augment_spec("cifar")), GlobalBatchSampler(10, 4))
        >>> [tuple(x.shape) for x, _ in source.epoch(0)]
        [(4, 3, 32, 32), (4, 3, 32, 32), (2, 3, 32, 32)]
    """

    images: Tensor
    augment: GPUAugment
    sampler: GlobalBatchSampler
    device: torch.device | str = "cpu"
    seed: int = 0
    _on_device: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 of shape (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.images.shape[0] != self.sampler.num_samples:
            raise ValueError(
                f"images: the sampler draws from {self.sampler.num_samples} samples, got {self.images.shape[0]} images"
            )
        self.device = torch.device(self.device)
        self._on_device = self.images.to(self.device)

    def __len__(self) -> int:
        return len(self.sampler)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """This rank's batches of one epoch.

        Args:
            epoch: The sampler epoch (a counter that never repeats across rounds).

        Yields:
            ``(images, indices)``: float32 (b, C, size, size) normalised, and long (b,), on the device.
        """
        sampler = self.sampler
        sampler.set_epoch(epoch)
        batches = sampler.global_batches()
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (2**63 - 1) + 17)
        height, width = self._on_device.shape[-2:]
        total = sum(len(b) for b in batches)
        params = self.augment.sample_params(total, height, width, generator).to(self.device)
        order = torch.cat([torch.tensor(b, dtype=torch.long) for b in batches]).to(self.device)
        start = 0
        for batch in batches:
            share = len(batch) // sampler.world_size
            lo, hi = start + sampler.rank * share, start + (sampler.rank + 1) * share
            indices = order[lo:hi]
            yield self.augment.apply(self._on_device[indices], params.slice(lo, hi)), indices
            start += len(batch)


def device_batches_for(config: Any, train_set: Dataset, sampler: GlobalBatchSampler,
                       device: torch.device | str) -> DeviceBatches:
    """The :class:`DeviceBatches` of a run with ``data.gpu_resident=true``.

    The augmentation is the on-device twin of the run's training preset (``data.transform``, else
    the data set's default preset), at the preset's input size and normalisation.

    Args:
        config: The run's :class:`~and_plugin.config.Config`.
        train_set: The training set (its stored pixels are read, its transform is not).
        sampler: The run's batch sampler.
        device: Where the data set is kept.

    Raises:
        ValueError: If the preset cannot be resolved or the images differ in size.
    """
    from .builder import dataset_info

    data = config.data
    try:
        preset = data.transform or dataset_info(data.dataset).preset
    except ValueError:
        raise ValueError(
            f"data.gpu_resident: no transform preset for data.dataset={data.dataset!r}; set data.transform "
            f"to one of {sorted(_PRESET_SPECS)}"
        ) from None
    spec = augment_spec(preset)
    images = dataset_to_uint8(train_set)
    if images.shape[1] != spec.channels:
        raise ValueError(
            f"data.gpu_resident: the {preset!r} preset expects {spec.channels} channel(s), the images have "
            f"{images.shape[1]}; set data.transform to a preset for {images.shape[1]}-channel images"
        )
    return DeviceBatches(images, GPUAugment(spec), sampler, device, seed=config.run.seed)
