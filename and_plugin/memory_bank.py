"""The memory bank: one unit vector per training image, updated by exponential moving average."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validation import check_in_range, check_indices, check_int_at_least, check_shape
from .distributed import all_gather_cat
from .kernels.gather import check_index_tensor

#: Storage dtypes a bank accepts.
BANK_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def check_bank_arguments(size: int, dim: int, memory_momentum: float, dtype: torch.dtype) -> None:
    """The constructor checks of a bank, whole or sharded: N, d ≥ 1, η in [0, 1], a storage dtype.

    Raises:
        ValueError: Naming the argument, its value and what is allowed.
    """
    check_int_at_least("size", size, 1)
    check_int_at_least("dim", dim, 1)
    check_in_range("memory_momentum", memory_momentum, 0.0, 1.0)
    if dtype not in BANK_DTYPES:
        raise ValueError(f"dtype must be one of float32, float64, bfloat16, float16, got {dtype}")


def check_loaded_rows(key: str, loaded: Tensor, shape: tuple[int, int]) -> Tensor:
    """A saved bank checked for loading: the right shape, finite non-zero rows, unit length.

    Rows already unit length (up to storage precision) stay bit-exact so resumes are exact;
    others are re-normalised.

    Raises:
        ValueError: A wrong shape, or non-finite or all-zero rows.
    """
    check_shape(key, loaded, shape)
    as_float = loaded.float()
    norms = as_float.norm(dim=1)
    if not torch.isfinite(as_float).all() or bool((norms == 0).any()):
        raise ValueError(f"{key}: the saved memory bank has non-finite or all-zero rows; refusing to load it")
    tolerance = 1e-2 if loaded.dtype in (torch.bfloat16, torch.float16) else 1e-4
    off = (norms - 1).abs() > tolerance
    if bool(off.any()):
        fixed = as_float.clone()
        fixed[off] = F.normalize(as_float[off], dim=1)
        return fixed.to(loaded.dtype)
    return loaded


def gather_write(indices: Tensor, features: Tensor, size: int, dim: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The global batch of one bank write: gathered from every rank and checked (one host sync).

    One combined check that every index lies in [0, N) and every feature is finite (the detailed
    message is worked out only when it fails). After the gather every rank holds the same
    tensors, so all ranks raise together.

    Args:
        indices: Shape (B,), this rank's sample indices.
        features: Shape (B, d) (detached inside).
        size: N.
        dim: d.
        device: The bank's device.

    Returns:
        ``(indices (B_global,), features (B_global, d) float32)``, in rank order.
    """
    check_index_tensor("indices", indices)
    check_shape("features", features, (indices.shape[0], dim))
    indices = all_gather_cat(indices.to(device))
    features = all_gather_cat(features.detach().to(device, torch.float32))
    bad = (indices < 0).any() | (indices >= size).any() | ~torch.isfinite(features).all()
    if bad:  # the one host sync
        check_indices("indices", indices, size)
        raise ValueError("features must be finite; got NaN or inf (check the loss and learning rate)")
    return indices, features


def initial_rows(
    size: int, dim: int, seed: int, start: int = 0, stop: int | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Rows [start, stop) of the random unit vectors a bank of ``size`` rows starts with.

    The numbers of ``normalize(torch.randn(size, dim, generator=seeded))[start:stop]``, made in
    blocks of about a million values and stored in ``dtype`` block by block: the peak memory is
    the result plus one block, and a rank of a sharded bank never holds the whole N x d matrix.
    The CPU generator fills a tensor in groups of 16 values (its last group redrawn when the
    size is not a multiple of 16), so blocks of a multiple of 16 values, the last one at least
    16 long, draw the very same sequence as one call.

    Args:
        size: N.
        dim: d.
        seed: The bank's seed.
        start: First row kept.
        stop: One past the last row kept; N by default.
        dtype: Storage dtype of the result.

    Returns:
        Shape (stop − start, d), unit rows.
    """
    stop = size if stop is None else stop
    generator = torch.Generator().manual_seed(seed)
    out = torch.empty(max(0, stop - start), dim, dtype=dtype)
    block = 16 * max(1, (1 << 20) // (16 * dim))  # rows per block: block·d is a multiple of 16
    row = 0
    while row < stop:
        rows = min(block, size - row)
        if (size - row - rows) * dim < 16:  # a short last block joins this one
            rows = size - row
        values = torch.randn(rows, dim, generator=generator)
        lo, hi = max(start, row), min(stop, row + rows)
        if lo < hi:
            out[lo - start : hi - start] = F.normalize(values[lo - row : hi - row], dim=1).to(dtype)
        row += rows
    return out


def write_ema(bank: Tensor, rows: Tensor, mean: Tensor, eta: float, written: Tensor | None = None) -> None:
    """Eq 8 on ``rows`` of ``bank``: x̃ ← normalise((1 − η) x̃ + η x̄), in place, and marks them written.

    Rows of one index carry the same x̄ (:func:`average_repeated`), so writing each of them leaves
    the same (order-free) result.

    Args:
        bank: The stored rows (n, d), any float dtype.
        rows: Row positions in ``bank`` (B,).
        mean: x̄ of every position (B, d), float32.
        eta: η.
        written: Optional bool mask (n,) set True at ``rows``.
    """
    old = bank.index_select(0, rows).float()
    bank.index_copy_(0, rows, F.normalize((1.0 - eta) * old + eta * mean, dim=1).to(bank.dtype))
    if written is not None:
        written.index_fill_(0, rows, True)


def average_repeated(indices: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
    """Sorts a batch by index and gives every row the mean feature x̄ of its index.

    Without torch.unique, whose output size would need a host sync: sort, number the runs of
    equal indices, sum per run. Rows of one index end up equal, so writing each of them leaves
    the same (order-free) result.

    Args:
        indices: Shape (B,).
        features: Shape (B, d), float32.

    Returns:
        ``(sorted indices (B,), x̄ of each row's index (B, d))``.
    """
    indices, order = torch.sort(indices, stable=True)
    features = features.index_select(0, order)
    starts = torch.ones_like(indices, dtype=torch.bool)
    starts[1:] = indices[1:] != indices[:-1]
    run = starts.cumsum(0) - 1  # (B,), the run of every row
    sums = torch.zeros_like(features).index_add_(0, run, features)
    counts = torch.zeros_like(features[:, 0]).index_add_(0, run, torch.ones_like(features[:, 0]))
    return indices, (sums / counts.clamp_min_(1).unsqueeze(1)).index_select(0, run)


class MemoryBank(nn.Module):
    """An N x d bank of L2-normalised features addressed by sample index (Eq 8 of the paper).

    ``update`` applies ``x̃_i ← normalise((1 − η) x̃_i + η x_i)`` with η = ``memory_momentum``.
    Repeated indices within one batch are first averaged, then written once, so the result does
    not depend on the order of the batch (and is identical across data-parallel layouts).
    Under torch.distributed the indices and features of the whole global batch are gathered
    before the write, so every rank holds the same bank.

    The bank is a persistent buffer: it is saved and restored with ``state_dict``. Rows that are
    not unit vectors on load (beyond storage precision) are re-normalised; non-finite or all-zero rows are refused.

    Args:
        size: N, the number of training images.
        dim: d, the feature size (128 in the paper).
        memory_momentum: η in [0, 1]; 0.5 in the paper. 1 overwrites, 0 freezes the bank.
        dtype: Storage dtype; float32 by default, bfloat16/float16 halve the memory at scale.
        seed: Seed of the random unit vectors the bank starts with.

    Example:
        >>> import torch
        >>> bank = MemoryBank(size=10, dim=4, memory_momentum=0.5)
        >>> feats = torch.nn.functional.normalize(torch.randn(2, 4), dim=1)
        >>> bank.update(torch.tensor([3, 7]), feats)
        >>> bank.bank.shape
        torch.Size([10, 4])
    """

    bank: Tensor

    def __init__(
        self,
        size: int,
        dim: int,
        memory_momentum: float = 0.5,
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_bank_arguments(size, dim, memory_momentum, dtype)
        self.size = size
        self.dim = dim
        self.memory_momentum = float(memory_momentum)
        self.register_buffer("bank", initial_rows(size, dim, seed, dtype=dtype))

    @property
    def dtype(self) -> torch.dtype:
        return self.bank.dtype

    def get(self, indices: Tensor) -> Tensor:
        """Reads entries.

        Args:
            indices: Shape (B,), values in [0, N).

        Returns:
            Shape (B, d), a copy.
        """
        check_indices("indices", indices, self.size)
        return self.bank[indices.to(self.bank.device)].clone()

    @torch.no_grad()
    def update(self, indices: Tensor, features: Tensor, written: Tensor | None = None) -> None:
        """Applies the EMA write of Eq 8 for one (local) batch; call after the loss is computed.

        One host sync per call: a single combined check that every index lies in [0, N) and
        every feature is finite (the detailed message is worked out only when it fails). The
        duplicate handling has a fixed output size, so it adds none.

        Args:
            indices: Shape (B,), sample indices in [0, N).
            features: Shape (B, d), the batch's features (detached inside).
            written: Optional bool mask (N,) on the bank's device: the rows written (the whole
                global batch's under torch.distributed) are set True in it.

        Raises:
            ValueError: For a bad shape or dtype, an index outside [0, N) or a non-finite feature.
        """
        indices, features = gather_write(indices, features, self.size, self.dim, self.bank.device)
        indices, mean = average_repeated(indices, features)
        write_ema(self.bank, indices, mean, self.memory_momentum, written)

    @torch.no_grad()
    def fill(self, features: Tensor) -> None:
        """Overwrites the whole bank with ``features`` (normalised), e.g. from a forward pass.

        Args:
            features: Shape (N, d).
        """
        check_shape("features", features, (self.size, self.dim))
        self.bank.copy_(F.normalize(features.float(), dim=1).to(self.bank.dtype))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        key = prefix + "bank"
        if key in state_dict:
            state_dict[key] = check_loaded_rows(key, state_dict[key], (self.size, self.dim))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, memory_momentum={self.memory_momentum}, dtype={self.dtype}"
