"""A batch sampler that shards each *global* batch across data-parallel ranks.

``DistributedSampler`` shards the dataset, so with two ranks the union of their batches is not
the batch a single process would draw. ``GlobalBatchSampler`` draws the same global batches as
a single process and gives rank r the r-th contiguous slice of each, so 2 processes with batch
B/2 see exactly the samples (and, after an all-gather in rank order, the order) of 1 process
with batch B.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

from ._validation import check_int_at_least


class GlobalBatchSampler(Sampler[list[int]]):
    """Yields this rank's share of every global batch.

    Args:
        num_samples: N, the dataset size.
        batch_size: The global batch size; must be divisible by ``world_size``.
        rank: This process's rank.
        world_size: Number of processes.
        shuffle: Draw a new permutation every epoch (seeded by ``seed`` and ``set_epoch``).
        drop_last: Drop the last incomplete global batch; otherwise it is padded with samples
            from the start of the permutation up to a multiple of ``world_size``.
        seed: Base seed shared by all ranks.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
    ) -> None:
        check_int_at_least("num_samples", num_samples, 1)
        check_int_at_least("batch_size", batch_size, 1)
        check_int_at_least("world_size", world_size, 1)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank!r}")
        if batch_size % world_size:
            raise ValueError(f"batch_size must be divisible by world_size = {world_size}, got {batch_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Selects the permutation; use a counter that never repeats across rounds."""
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        """Every global batch of the current epoch, as lists of sample indices."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        batches = [order[i : i + self.batch_size] for i in range(0, self.num_samples, self.batch_size)]
        if batches and len(batches[-1]) < self.batch_size:
            if self.drop_last:
                batches.pop()
            else:
                short = -len(batches[-1]) % self.world_size
                batches[-1] = batches[-1] + [order[i % self.num_samples] for i in range(short)]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            share = len(batch) // self.world_size
            yield batch[self.rank * share : (self.rank + 1) * share]

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)
