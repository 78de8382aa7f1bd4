"""AND past one machine: the memory bank split by rows across the ranks of torch.distributed.

``method.bank_layout="sharded"`` gives rank r one contiguous block of bank rows
(:class:`RowPartition`, the row split of a DTensor ``Shard(0)``), so each rank holds N·d/W
entries instead of N·d. The parts:

- :mod:`~and_plugin.sharded.partition`: which rows each rank owns.
- :mod:`~and_plugin.sharded.discovery`: exact entropy and neighbours of each rank's own rows
  against the whole bank (a ring of key blocks in the sharded layout).
- :mod:`~and_plugin.sharded.selection`: the round's anchors chosen across ranks (a radix select,
  no rank gathers the N entropies).
"""

from .discovery import distributed_entropy_and_neighbours
from .partition import RowPartition
from .selection import select_anchors_distributed

__all__ = ["RowPartition", "distributed_entropy_and_neighbours", "select_anchors_distributed"]
