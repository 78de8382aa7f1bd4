"""Thin helpers over torch.distributed that are no-ops in a single process."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank, 0 when not distributed."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes, 1 when not distributed."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0: the only rank that writes checkpoints, logs and plots."""
    return get_rank() == 0


def all_gather_rows(tensor: Tensor) -> tuple[Tensor, list[int]]:
    """Concatenates ``tensor`` from every rank along dim 0, in rank order, with each rank's count.

    Ranks may hold different numbers of rows. No gradient flows through the result.

    Args:
        tensor: Shape (B_r, ...) on rank r.

    Returns:
        ``(rows (sum_r B_r, ...), [B_0, ..., B_{W-1}])``, identical on every rank;
        ``(tensor, [B])`` when not distributed.
    """
    if not is_distributed():
        return tensor, [tensor.shape[0]]
    world = get_world_size()
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    return all_gather_known(tensor, counts), counts


def all_gather_known(tensor: Tensor, counts: list[int]) -> Tensor:
    """:func:`all_gather_rows` when every rank's row count is already known (one collective)."""
    if not is_distributed():
        return tensor
    longest = max(counts)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:count] for part, count in zip(parts, counts)])


def all_gather_cat(tensor: Tensor) -> Tensor:
    """Concatenates ``tensor`` from every rank along dim 0, in rank order (see :func:`all_gather_rows`).

    Args:
        tensor: Shape (B_r, ...) on rank r.

    Returns:
        Shape (sum_r B_r, ...), identical on every rank; ``tensor`` itself when not distributed.
    """
    return all_gather_rows(tensor)[0]


def all_reduce_sum(value: int) -> int:
    """The sum of an integer over the ranks; ``value`` itself when not distributed."""
    if not is_distributed():
        return value
    total = torch.tensor([value], dtype=torch.int64, device=collective_device())
    dist.all_reduce(total)
    return int(total)


def collective_device() -> torch.device:
    """Where the default process group's tensors must live: the current CUDA device under NCCL."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_object(obj: object, src: int = 0) -> object:
    """Sends a picklable object from ``src`` to every rank; returns it unchanged when alone."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
