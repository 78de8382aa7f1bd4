"""The memory bank: one unit vector per training image, updated by exponential moving average."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validation import check_in_range, check_indices, check_int_at_least, check_shape
from .distributed import all_gather_cat
from .kernels.gather import check_index_tensor


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
        check_int_at_least("size", size, 1)
        check_int_at_least("dim", dim, 1)
        check_in_range("memory_momentum", memory_momentum, 0.0, 1.0)
        if dtype not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be one of float32, float64, bfloat16, float16, got {dtype}")
        self.size = size
        self.dim = dim
        self.memory_momentum = float(memory_momentum)
        generator = torch.Generator().manual_seed(seed)
        initial = F.normalize(torch.randn(size, dim, generator=generator), dim=1)
        self.register_buffer("bank", initial.to(dtype))

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
        check_index_tensor("indices", indices)
        check_shape("features", features, (indices.shape[0], self.dim))
        indices = all_gather_cat(indices.to(self.bank.device))
        features = all_gather_cat(features.detach().to(self.bank.device, torch.float32))
        # After the gather every rank holds the same tensors, so all ranks raise together.
        bad = (indices < 0).any() | (indices >= self.size).any() | ~torch.isfinite(features).all()
        if bad:  # the one host sync
            check_indices("indices", indices, self.size)
            raise ValueError("features must be finite; got NaN or inf (check the loss and learning rate)")
        # Average repeated indices (x̄ per distinct index) without torch.unique, whose output
        # size would need a sync: sort, number the runs of equal indices, sum per run.
        indices, order = torch.sort(indices, stable=True)
        features = features.index_select(0, order)
        starts = torch.ones_like(indices, dtype=torch.bool)
        starts[1:] = indices[1:] != indices[:-1]
        run = starts.cumsum(0) - 1  # (B,), the run of every row
        sums = torch.zeros_like(features).index_add_(0, run, features)
        counts = torch.zeros_like(features[:, 0]).index_add_(0, run, torch.ones_like(features[:, 0]))
        mean = (sums / counts.clamp_min_(1).unsqueeze(1)).index_select(0, run)
        eta = self.memory_momentum
        old = self.bank.index_select(0, indices).float()
        # Rows of one index are equal, so writing each of them leaves the same (order-free) result.
        self.bank.index_copy_(0, indices, F.normalize((1.0 - eta) * old + eta * mean, dim=1).to(self.bank.dtype))
        if written is not None:
            written.index_fill_(0, indices, True)

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
            loaded = state_dict[key]
            check_shape(key, loaded, (self.size, self.dim))
            as_float = loaded.float()
            norms = as_float.norm(dim=1)
            if not torch.isfinite(as_float).all() or bool((norms == 0).any()):
                raise ValueError(f"{key}: the saved memory bank has non-finite or all-zero rows; refusing to load it")
            # Rows already unit length (up to storage precision) stay bit-exact so resumes are exact.
            tolerance = 1e-2 if loaded.dtype in (torch.bfloat16, torch.float16) else 1e-4
            off = (norms - 1).abs() > tolerance
            if bool(off.any()):
                fixed = as_float.clone()
                fixed[off] = F.normalize(as_float[off], dim=1)
                state_dict[key] = fixed.to(loaded.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, memory_momentum={self.memory_momentum}, dtype={self.dtype}"
