"""AND past one machine: the memory bank split by rows across the ranks of torch.distributed.

``method.bank_layout="sharded"`` gives rank r one contiguous block of bank rows
(:class:`RowPartition`, the row split of a DTensor ``Shard(0)``), so each rank holds N·d/W
entries instead of N·d. The parts:

- :mod:`~and_plugin.sharded.partition`: which rows each rank owns;
- :mod:`~and_plugin.sharded.bank`: :class:`ShardedMemoryBank`, this rank's rows, written by owner;
- :mod:`~and_plugin.sharded.loss`: Eq 7 against the shards, exact, one all-reduce per step;
- :mod:`~and_plugin.sharded.checkpoint`: :class:`ShardedRunCheckpoint`, the run's checkpoint
  with each rank's rows in its own file (torch.distributed.checkpoint), re-sharded on resume.
"""

from .bank import ShardedMemoryBank
from .checkpoint import ShardedRunCheckpoint
from .loss import sharded_neighbourhood_loss
from .partition import RowPartition

__all__ = ["RowPartition", "ShardedMemoryBank", "ShardedRunCheckpoint", "sharded_neighbourhood_loss"]
