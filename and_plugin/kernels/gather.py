"""Row gathers by sample index that need no host synchronisation on the valid path.

``tensor[indices]`` silently wraps negative indices and reading ``indices.min()/max()`` to
check them costs a device-to-host copy per call. ``index_select`` refuses both out-of-range
and negative indices inside the kernel (an IndexError on the CPU, a device-side assertion on
CUDA), so the hot path checks the range for free; on the CPU the error is re-raised with the
message of ``and_plugin._validation.check_indices``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_indices


def check_index_tensor(name: str, indices: Tensor) -> None:
    """Raises ValueError unless ``indices`` is a 1-D integer tensor; reads no values (no sync).

    Args:
        name: The parameter's name, for the message.
        indices: The tensor to check.
    """
    if not isinstance(indices, Tensor) or indices.dim() != 1:
        shape = tuple(indices.shape) if isinstance(indices, Tensor) else type(indices).__name__
        raise ValueError(f"{name} must be a 1-D integer tensor, got {shape}")
    if indices.dtype.is_floating_point or indices.dtype == torch.bool or indices.is_complex():
        raise ValueError(f"{name} must have an integer dtype, got {indices.dtype}")


def select_rows(name: str, table: Tensor, indices: Tensor) -> Tensor:
    """``table[indices]`` for 1-D integer ``indices`` in [0, len(table)), without a host sync.

    Args:
        name: The indices' parameter name, for the error message.
        table: Shape (N, ...).
        indices: Shape (M,), on ``table``'s device.

    Returns:
        Shape (M, ...), differentiable with respect to ``table``.

    Raises:
        ValueError: On the CPU, for an index outside [0, N), naming ``name`` and the value.
    """
    try:
        return table.index_select(0, indices)
    except (IndexError, RuntimeError):
        check_indices(name, indices, table.shape[0])
        raise
