"""The sharded memory bank: rank r holds rows [start_r, stop_r) of the N x d bank (Eq 8 by owner)."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_shape
from ..memory_bank import (
    average_repeated,
    check_bank_arguments,
    check_loaded_rows,
    gather_write,
    initial_rows,
    write_ema,
)
from .partition import RowPartition

#: The one-line answer to ``method.bank_layout='sharded'`` outside torch.distributed.
NOT_DISTRIBUTED = (
    "method.bank_layout='sharded' needs torch.distributed: start the run with "
    "`torchrun --nproc_per_node=W ...` with W >= 2 (or --slurm with several tasks); one process holds the whole "
    "bank anyway: use method.bank_layout='replicated' there"
)


class ShardedMemoryBank(nn.Module):
    """This rank's block of an N x d bank of L2-normalised features (Eq 8 of the paper).

    The rows are split as :class:`~and_plugin.sharded.partition.RowPartition` says (ceil(N/W)
    rows per rank, in rank order), so each rank holds N·d·bytes/W. ``update`` gathers the global
    batch, as :class:`~and_plugin.memory_bank.MemoryBank` does, and each rank writes the rows it
    owns: the union of the shards is, bit for bit, the replicated bank of the same run. The
    initial random rows are those of a replicated bank with the same seed (made in blocks; no
    rank holds the whole matrix).

    Needs an initialised process group (a group of one process works too).

    Args:
        size: N, the number of training images.
        dim: d, the feature size.
        memory_momentum: η in [0, 1].
        dtype: Storage dtype (float32, float64, bfloat16, float16).
        seed: Seed of the initial random unit vectors.
        partition: The row split; this process's place in the default group when None.

    Attributes:
        bank: This rank's rows, shape (partition.count, d); ``bank[i]`` is global row
            ``partition.start + i``.
        partition: Which rows every rank owns.

    Raises:
        ValueError: Outside torch.distributed (the message says what to run), or a bad argument.
    """

    bank: Tensor
    sharded = True

    def __init__(
        self,
        size: int,
        dim: int,
        memory_momentum: float = 0.5,
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
        partition: RowPartition | None = None,
    ) -> None:
        super().__init__()
        if partition is None:
            if not (dist.is_available() and dist.is_initialized()):
                raise ValueError(NOT_DISTRIBUTED)
            partition = RowPartition.current(size)
        check_bank_arguments(size, dim, memory_momentum, dtype)
        if partition.size != size:
            raise ValueError(f"partition: it splits {partition.size} rows, but the bank has size {size}")
        self.size = size
        self.dim = dim
        self.memory_momentum = float(memory_momentum)
        self.partition = partition
        self.register_buffer("bank", initial_rows(size, dim, seed, partition.start, partition.stop, dtype))

    @property
    def dtype(self) -> torch.dtype:
        return self.bank.dtype

    @torch.no_grad()
    def update(self, indices: Tensor, features: Tensor, written: Tensor | None = None) -> None:
        """Eq 8 for one (local) batch: the global batch is gathered, each rank writes its rows.

        Collective: every rank calls it once per step. Same arguments as
        :meth:`~and_plugin.memory_bank.MemoryBank.update`, except that ``written`` is this
        rank's mask (partition.count,).
        """
        indices, features = gather_write(indices, features, self.size, self.dim, self.bank.device)
        indices, mean = average_repeated(indices, features)
        mine = self.partition.owns(indices)
        write_ema(self.bank, indices[mine] - self.partition.start, mean[mine], self.memory_momentum, written)

    @torch.no_grad()
    def fill(self, features: Tensor) -> None:
        """Overwrites this rank's rows with ``features`` (normalised).

        Args:
            features: This rank's rows (partition.count, d), or all N rows (N, d) of which this
                rank keeps its own.
        """
        if features.shape[0] == self.size and self.partition.count != self.size:
            features = features[self.partition.start : self.partition.stop]
        check_shape("features", features, (self.partition.count, self.dim))
        self.bank.copy_(F.normalize(features.float(), dim=1).to(self.bank.dtype))

    @torch.no_grad()
    def rows(self, indices: Tensor) -> Tensor:
        """Global rows of the bank, from their owners (collective: every rank calls it).

        Args:
            indices: Shape (B,), the same on every rank.

        Returns:
            Shape (B, d) float32, a copy, identical on every rank.
        """
        indices = indices.to(self.bank.device)
        mine = self.partition.owns(indices)
        out = torch.zeros(indices.shape[0], self.dim, dtype=torch.float32, device=self.bank.device)
        out[mine] = self.bank[indices[mine] - self.partition.start].float()
        dist.all_reduce(out)
        return out

    @torch.no_grad()
    def row_sum(self) -> Tensor:
        """Σ_i x̃_i over all N rows, shape (d,) float32 (collective)."""
        total = self.bank.sum(dim=0, dtype=torch.float32)
        dist.all_reduce(total)
        return total

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        key = prefix + "bank"
        if key in state_dict:
            state_dict[key] = check_loaded_rows(key, state_dict[key], (self.partition.count, self.dim))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        part = self.partition
        return (f"size={self.size}, dim={self.dim}, memory_momentum={self.memory_momentum}, dtype={self.dtype}, "
                f"rows=[{part.start}, {part.stop}) of rank {part.rank}/{part.world}")


__all__ = ["NOT_DISTRIBUTED", "ShardedMemoryBank"]
