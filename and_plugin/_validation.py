"""Argument checks that raise errors naming the parameter, the value and what is allowed."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from torch import Tensor


def check_positive(name: str, value: float) -> None:
    """Raises ValueError unless ``value > 0``."""
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def check_in_range(name: str, value: float, low: float, high: float) -> None:
    """Raises ValueError unless ``low <= value <= high``."""
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")


def check_int_at_least(name: str, value: int, minimum: int) -> None:
    """Raises ValueError unless ``value`` is an int and ``value >= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raises ValueError unless ``value`` is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def check_shape(name: str, tensor: Tensor, shape: Sequence[int | None]) -> None:
    """Raises ValueError unless ``tensor`` has ``len(shape)`` dims matching ``shape`` (None = any)."""
    if not isinstance(tensor, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    ok = tensor.dim() == len(shape) and all(s is None or s == t for s, t in zip(shape, tensor.shape))
    if not ok:
        wanted = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {wanted}, got {tuple(tensor.shape)}")


def check_indices(name: str, indices: Tensor, size: int) -> None:
    """Raises ValueError unless ``indices`` is a 1-D integer tensor with values in [0, size)."""
    if not isinstance(indices, Tensor) or indices.dim() != 1:
        shape = tuple(indices.shape) if isinstance(indices, Tensor) else type(indices).__name__
        raise ValueError(f"{name} must be a 1-D integer tensor, got {shape}")
    if indices.dtype.is_floating_point or indices.dtype == torch.bool or indices.is_complex():
        raise ValueError(f"{name} must have an integer dtype, got {indices.dtype}")
    if indices.numel():
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= size:
            bad = low if low < 0 else high
            raise ValueError(f"{name} must lie in [0, {size}), got {bad}")
