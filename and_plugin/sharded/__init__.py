"""AND past one machine: the memory bank split by rows across the ranks of torch.distributed.

``method.bank_layout="sharded"`` gives rank r one contiguous block of bank rows
(:class:`RowPartition`, the row split of a DTensor ``Shard(0)``), so each rank holds N·d/W
entries instead of N·d. The parts:

- :mod:`~and_plugin.sharded.partition`: which rows each rank owns;
- :mod:`~and_plugin.sharded.bank`: :class:`ShardedMemoryBank`, this rank's rows, written by owner;
- :mod:`~and_plugin.sharded.loss`: Eq 7 against the shards, exact, one all-reduce per step;
- :mod:`~and_plugin.sharded.discovery`: exact entropy and neighbours of each rank's own rows
  against the whole bank (a ring of key blocks in the sharded layout);
- :mod:`~and_plugin.sharded.selection`: the round's anchors chosen across ranks (a radix select,
  no rank gathers the N entropies);
- :mod:`~and_plugin.sharded.checkpoint`: ``ShardedRunCheckpoint``, the run's checkpoint with
  each rank's rows in its own file (torch.distributed.checkpoint), re-sharded on resume; it sits
  with the trainer's checkpoints (not re-exported here, which the core modules import).
"""

from .bank import ShardedMemoryBank
from .discovery import distributed_entropy_and_neighbours
from .loss import ShardedNeighbourhoodLoss, sharded_neighbourhood_loss
from .partition import RowPartition
from .selection import select_anchors_distributed

__all__ = [
    "RowPartition",
    "ShardedMemoryBank",
    "ShardedNeighbourhoodLoss",
    "distributed_entropy_and_neighbours",
    "select_anchors_distributed",
    "sharded_neighbourhood_loss",
]
