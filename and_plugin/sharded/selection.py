"""The anchors of a round (Eq 6) chosen across ranks without gathering the N entropies.

:func:`and_plugin.curriculum.select_anchors` sorts all N entropies and keeps the
floor(S·N) lowest, ties by index. Here each rank holds only its rows' entropies, and the same
set is found with a few small collectives:

1. every entropy becomes an order-preserving 64-bit integer key (its float64 bits, the lower
   63 flipped for negative numbers; −0.0 and NaN made canonical as a sort treats them);
2. a radix select finds the count-th smallest key T byte by byte, most significant first: 8
   passes, each one histogram of 256 bins over the keys still matching T's prefix, summed
   over the ranks with one all-reduce;
3. every key below T is an anchor, and of the keys equal to T the smallest indices: the
   per-rank numbers of keys equal to T (W integers) are all-gathered, and since rank order is
   index order, rank r takes what the ranks before it left.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from .._validation import check_shape
from .discovery import check_process_group
from .partition import RowPartition

_SIGN = -(1 << 63)  # the sign bit of an int64
_PASSES, _BITS = 8, 8


def order_keys(values: Tensor) -> Tensor:
    """int64 keys whose signed order is the order of ``values`` (as float64), shape kept.

    −0.0 counts as 0.0 and every NaN as the one positive NaN, last, as ``torch.sort`` places them.
    """
    values = values.double() + 0.0  # −0.0 + 0.0 = +0.0
    values = torch.where(values.isnan(), torch.full_like(values, float("nan")).abs(), values)
    bits = values.view(torch.int64)
    return torch.where(bits < 0, bits ^ ~_SIGN, bits)  # negative: flip the 63 lower bits


def _sum_over_ranks(tensor: Tensor, partition: RowPartition) -> Tensor:
    if partition.world > 1:
        dist.all_reduce(tensor)
    return tensor


def select_anchors_distributed(local_entropy: Tensor, partition: RowPartition, fraction: float) -> Tensor:
    """This rank's share of the floor(S·N) lowest entropies of the whole bank, ties by index.

    Exactly ``select_anchors(all entropies, fraction)[partition.start:partition.stop]``, with
    8 all-reduces of 256 counts and one all-gather of W counts instead of gathering N values.
    Every rank calls it at once; outside torch.distributed (W = 1) it runs alone.

    Args:
        local_entropy: Entropies of this rank's rows, shape (n_r,), any float dtype.
        partition: The row partition of this rank.
        fraction: S in [0, 1].

    Returns:
        Shape (n_r,), bool: True for this rank's anchors.

    Raises:
        ValueError: If ``fraction`` is outside [0, 1], the shape or the partition is wrong.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    check_shape("local_entropy", local_entropy, (partition.count,))
    check_process_group(partition)
    count = int(fraction * partition.size + 1e-9)  # as select_anchors
    device = local_entropy.device
    if count == 0:
        return torch.zeros(partition.count, dtype=torch.bool, device=device)
    if count == partition.size:
        return torch.ones(partition.count, dtype=torch.bool, device=device)
    keys = order_keys(local_entropy)
    unsigned = keys ^ _SIGN  # the same order read as unsigned: the digits below are bytes of it
    candidates = unsigned
    remaining = count  # the rank of T among the keys that share its prefix so far
    threshold = 0
    for step in range(_PASSES):
        shift = 64 - _BITS * (step + 1)
        digits = (candidates >> shift) & 0xFF  # the mask undoes the arithmetic shift's sign fill
        histogram = _sum_over_ranks(torch.bincount(digits, minlength=256).to(torch.int64), partition)
        below = torch.cumsum(histogram, dim=0)
        digit = int(torch.searchsorted(below, torch.tensor(remaining, device=below.device)))  # first bin reaching it
        remaining -= int(below[digit - 1]) if digit else 0
        threshold |= digit << shift
        candidates = candidates[digits == digit]
    if threshold >= 1 << 63:  # back to the int64 bit pattern
        threshold -= 1 << 64
    threshold_key = threshold ^ _SIGN
    mask = keys < threshold_key
    equal = keys == threshold_key
    here = torch.tensor([int(equal.sum())], dtype=torch.int64, device=device)
    if partition.world > 1:
        counts = [torch.zeros_like(here) for _ in range(partition.world)]
        dist.all_gather(counts, here)
        before = sum(int(c) for c in counts[: partition.rank])
    else:
        before = 0
    share = max(0, min(remaining - before, int(here)))
    mask[torch.nonzero(equal).flatten()[:share]] = True
    return mask


__all__ = ["order_keys", "select_anchors_distributed"]
