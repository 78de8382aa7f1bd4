"""Which bank rows each rank owns: contiguous blocks of ceil(N / W) rows, in rank order.

This is the split of ``torch.chunk`` and of a DTensor placed with ``Shard(0)``, so a sharded bank
is a DTensor's local shard as it is, and torch.distributed.checkpoint can re-shard it onto another
number of ranks. With N not a multiple of W the last ranks hold fewer rows (possibly none).
Rank order is index order: the rows of rank r all come before those of rank r + 1, which keeps
"ties by the smaller index" a matter of rank order across ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._validation import check_int_at_least
from ..distributed import get_rank, get_world_size


@dataclass(frozen=True)
class RowPartition:
    """Rows [start, stop) of an N-row bank owned by ``rank`` of ``world`` ranks.

    Args:
        size: N, the number of rows of the whole bank.
        world: W, the number of ranks.
        rank: This rank, in [0, W).

    Example:
        >>> part = RowPartition(size=10, world=4, rank=3)
        >>> part.rows_per_rank, part.start, part.stop, part.count
        (3, 9, 10, 1)
        >>> [RowPartition(10, 4, r).count for r in range(4)]
        [3, 3, 3, 1]
    """

    size: int
    world: int = 1
    rank: int = 0

    def __post_init__(self) -> None:
        check_int_at_least("size", self.size, 1)
        check_int_at_least("world", self.world, 1)
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank must be in [0, {self.world}), got {self.rank}")

    @classmethod
    def current(cls, size: int) -> "RowPartition":
        """The partition of this process under torch.distributed (the whole bank when alone)."""
        return cls(size, get_world_size(), get_rank())

    @property
    def rows_per_rank(self) -> int:
        """ceil(N / W): the rows of every rank but the last ones."""
        return -(-self.size // self.world)

    def bounds(self, rank: int) -> tuple[int, int]:
        """``(start, stop)`` of ``rank``'s rows."""
        start = min(rank * self.rows_per_rank, self.size)
        return start, min(start + self.rows_per_rank, self.size)

    @property
    def start(self) -> int:
        return self.bounds(self.rank)[0]

    @property
    def stop(self) -> int:
        return self.bounds(self.rank)[1]

    @property
    def count(self) -> int:
        """The number of rows this rank owns."""
        return self.stop - self.start

    def counts(self) -> list[int]:
        """Rows of every rank, in rank order."""
        return [stop - start for start, stop in (self.bounds(r) for r in range(self.world))]

    def owner(self, indices: Tensor) -> Tensor:
        """The rank that owns each of ``indices`` (values in [0, N)), same shape."""
        return torch.div(indices, self.rows_per_rank, rounding_mode="floor")

    def owns(self, indices: Tensor) -> Tensor:
        """Bool mask: which of ``indices`` this rank owns."""
        return (indices >= self.start) & (indices < self.stop)


__all__ = ["RowPartition"]
