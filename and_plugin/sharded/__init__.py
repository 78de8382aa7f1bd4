"""AND past one machine: the memory bank split by rows across the ranks of torch.distributed.

``method.bank_layout="sharded"`` gives rank r one contiguous block of bank rows
(:class:`RowPartition`, the row split of a DTensor ``Shard(0)``), so each rank holds N·d/W
entries instead of N·d. The parts:

- :mod:`~and_plugin.sharded.partition`: which rows each rank owns.
- :mod:`~and_plugin.sharded.checkpoint`: the run's checkpoint with each rank's rows in its own
  file (torch.distributed.checkpoint), re-sharded on resume.
"""

from .checkpoint import ShardedRunCheckpoint
from .partition import RowPartition

__all__ = ["RowPartition", "ShardedRunCheckpoint"]
