"""Argument checks that raise errors naming the parameter, the value and what is allowed.

Every check in the package (constructors, public functions, the config and the SLURM profile)
goes through :func:`require`, so every message reads the same way::

    <name> must be <what is allowed>, got <value>

``error`` selects the exception type (``ValueError`` by default; the config raises its
``ConfigError``, the launcher its ``ProfileError``, both subclasses of ``ValueError``).
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any, Iterable, Sequence, Union

import torch
from torch import Tensor


def require(ok: bool, name: str, value: Any, allowed: str, error: type[Exception] = ValueError) -> None:
    """Raises ``error("<name> must be <allowed>, got <value>")`` unless ``ok``."""
    if not ok:
        raise error(f"{name} must be {allowed}, got {value!r}")


def is_finite_number(value: Any) -> bool:
    """True for an int or a finite float (not bool, not inf, not nan)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


def check_finite(name: str, value: Any, error: type[Exception] = ValueError) -> None:
    """Raises unless ``value`` is a finite number (``.inf`` / ``.nan`` from YAML are refused)."""
    require(is_finite_number(value), name, value, "a finite number", error)


def type_name(tp: Any) -> str:
    """A readable name of a type annotation (``int``, ``int | None``, ``list[float]``)."""
    if typing.get_args(tp):
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def check_type(name: str, value: Any, tp: Any, error: type[Exception] = ValueError) -> Any:
    """Checks ``value`` against the annotation ``tp`` and returns it (ints widened to float).

    Understands int, float, bool, str, None, Any, ``list[T]``, ``dict`` and unions; floats must
    be finite.

    Raises:
        error: ``"<name> must be <type>, got <value> (<its type>)"``.
    """
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        specific = None  # a value of the right type that failed a value check (a non-finite float)
        for option in typing.get_args(tp):
            try:
                return check_type(name, value, option, error)
            except error as err:
                if "finite" in str(err) and specific is None:
                    specific = err
        if specific is not None:
            raise specific
        raise error(f"{name} must be {type_name(tp)}, got {value!r} ({type(value).__name__})")
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            check_finite(name, value, error)
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        (item_type,) = typing.get_args(tp)
        if isinstance(value, (list, tuple)):
            return [check_type(f"{name}[{i}]", item, item_type, error) for i, item in enumerate(value)]
    elif origin is dict or tp is dict:
        if isinstance(value, dict):
            return dict(value)
    elif tp is Any:
        return value
    raise error(f"{name} must be {type_name(tp)}, got {value!r} ({type(value).__name__})")


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


#: Largest |‖x‖ − 1| accepted for features said to be L2-normalised: rows normalised in bfloat16
#: (the autocast fast path) are off by < 0.005, a feature that was never normalised by far more.
UNIT_NORM_TOLERANCE = 0.02


def check_rows(name: str, tensor: Tensor, unit: bool = True) -> None:
    """Raises unless every row of ``tensor`` (B, d) is finite and, with ``unit``, of L2 norm 1 ± 0.02.

    Meant for the per-step path: one norm reduction and ``torch._assert_async``, so no host sync
    on CUDA, where a bad row stops the run with a device-side assertion carrying the same advice
    (without the numbers); on the CPU the error is a ``ValueError`` naming the measured norms.

    Args:
        name: The parameter's name, for the message.
        tensor: Shape (B, d).
        unit: Also require unit L2 norms.
    """
    rows = tensor.detach().float()
    norms = rows.norm(dim=1)
    ok = ((norms - 1).abs() <= UNIT_NORM_TOLERANCE).all() if unit else torch.isfinite(norms).all()
    advice = "normalise them, e.g. torch.nn.functional.normalize(features, dim=1)"
    what = f"L2-normalised rows (norm 1 ± {UNIT_NORM_TOLERANCE}), without NaN or inf" if unit else "finite"
    try:  # CUDA: queued with the step's kernels, no host sync; CPU: raises here
        torch._assert_async(ok, f"{name} must be {what}; {advice if unit else 'check the network and the data'}")
    except RuntimeError:
        pass
    else:
        return
    finite = torch.isfinite(rows).all(dim=1)
    if not bool(finite.all()):
        raise ValueError(f"{name} must be finite, got NaN or inf in {int((~finite).sum())} of {len(rows)} rows "
                         "(the network diverged or an input holds NaN); check optim.lr and the data")
    low, high = float(norms.min()), float(norms.max())
    raise ValueError(f"{name} must be L2-normalised rows (norm 1 ± {UNIT_NORM_TOLERANCE}), got norms in "
                     f"[{low:.4g}, {high:.4g}]; {advice}")
