"""Exact neighbourhood discovery (Eq 1 and 5) with every rank computing only its own rows.

Rank r holds the query rows [start_r, stop_r) of its :class:`~and_plugin.sharded.partition.RowPartition`
and streams the whole bank past them, one key block (one rank's rows) at a time:

- ``replicated`` layout (``full_bank`` given): the key blocks are slices of the local copy of the
  bank; nothing travels but two numbers (the norm range of the shared shift).
- ``sharded`` layout (``full_bank=None``): the key blocks travel around a ring. At step s rank r
  holds block (r − s) mod W, computes with it while it already sends it to rank r + 1 and
  receives block (r − s − 1) mod W from rank r − 1 (``batch_isend_irecv``). Every rank knows
  every block's row count from the partition, so nothing but the rows is sent, and an empty
  block is neither sent nor received.

Each (query rows, key block) pair runs the tiled pass of
:func:`and_plugin.kernels.refresh_tiles.query_key_tiles`: the shared shift c = max_i ‖x̃_i‖²/τ
(the max and min of the squared norms all-reduced over the ranks), base-2 exponentials, Z and W
partial sums, best value per row (k = 1) or a running top-k (k > 1). The blocks' partial Z and W
are added in float64, so their sum is exact in practice (a float32 partial has 24 significant
bits) and does not depend on the ring order: duplicate rows on different ranks get the same
entropy. Neighbours from different blocks are merged with ties to the smallest index. Where the
norms spread too far for the shared shift (see
:data:`~and_plugin.kernels.refresh_tiles.SHIFT_LIMIT`), every row keeps an online log-sum-exp
(running max, Z, W) in float64 instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import Tensor

from .._validation import check_int_at_least, check_positive, check_shape, require
from ..kernels.refresh_tiles import SHIFT_LIMIT, query_key_tiles, tile_side
from .partition import RowPartition


def check_process_group(partition: RowPartition) -> None:
    """Raises unless the partition's world and rank are those of the running process group."""
    if partition.world == 1:
        return
    initialised = dist.is_available() and dist.is_initialized()
    require(initialised, "partition.world", partition.world, "1 outside an initialised torch.distributed group")
    require(dist.get_world_size() == partition.world, "partition.world", partition.world,
            f"the process group's world size {dist.get_world_size()}")
    require(dist.get_rank() == partition.rank, "partition.rank", partition.rank,
            f"this process's rank {dist.get_rank()}")


def _computation_dtype(rows: Tensor) -> torch.dtype:
    """float64 for a float64 bank, float32 for every other storage dtype (as the single-process refresh)."""
    return torch.float64 if rows.dtype == torch.float64 else torch.float32


def _norm_range(rows: Tensor, partition: RowPartition, dtype: torch.dtype, tile: int) -> tuple[float, float]:
    """The largest and smallest squared row norm of the whole bank (one all-reduce of two numbers)."""
    squared = [rows[s : s + tile].to(dtype).square().sum(dim=1) for s in range(0, rows.shape[0], tile)]
    local = torch.cat(squared) if squared else torch.empty(0, dtype=dtype, device=rows.device)
    extremes = torch.tensor(
        [float(local.max()) if local.numel() else -math.inf, -float(local.min()) if local.numel() else -math.inf],
        dtype=torch.float64,
        device=rows.device,
    )
    if partition.world > 1:
        dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
    return float(extremes[0]), -float(extremes[1])


def _key_blocks(local_rows: Tensor, partition: RowPartition, full_bank: Tensor | None) -> Iterator[tuple[int, Tensor]]:
    """``(key_offset, keys)`` of every rank's block, once each: slices of ``full_bank``, or a ring.

    In the ring the next block's transfer is posted before the current one is handed out, so
    it overlaps the caller's compute; it is awaited when the caller asks for the next block.
    """
    world, rank = partition.world, partition.rank
    if full_bank is not None:
        for owner in range(world):
            start, stop = partition.bounds(owner)
            yield start, full_bank[start:stop]
        return
    counts = partition.counts()
    current = local_rows.contiguous()
    for step in range(world):
        owner = (rank - step) % world
        pending: list = []
        incoming = current
        if step + 1 < world:
            arriving = (rank - step - 1) % world
            incoming = current.new_empty((counts[arriving], current.shape[1]))
            ops = []
            if counts[owner]:
                ops.append(dist.P2POp(dist.isend, current, (rank + 1) % world))
            if counts[arriving]:
                ops.append(dist.P2POp(dist.irecv, incoming, (rank - 1) % world))
            pending = dist.batch_isend_irecv(ops) if ops else []
        yield partition.bounds(owner)[0], current
        for request in pending:
            request.wait()
        current = incoming


def _merge_smallest_index(values: Tensor, indices: Tensor, new_values: Tensor, new_indices: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k largest of two candidate lists (n, k) per row; equal values go to the smaller index."""
    values = torch.cat([values, new_values], dim=1)
    indices = torch.cat([indices, new_indices], dim=1)
    by_index = indices.argsort(dim=1, stable=True)
    values, indices = values.gather(1, by_index), indices.gather(1, by_index)
    by_value = values.argsort(dim=1, descending=True, stable=True)[:, :k]
    return values.gather(1, by_value), indices.gather(1, by_value)


def _online_block(
    queries: Tensor,
    keys: Tensor,
    query_offset: int,
    key_offset: int,
    temperature: float,
    k: int,
    tile: int,
    dtype: torch.dtype,
    running: tuple[Tensor, Tensor, Tensor],
) -> tuple[Tensor, Tensor]:
    """The fallback pass: an online log-sum-exp per row in float64 (no shared shift).

    ``running = (m, z, w)``, float64 (n,), is updated in place to the running max m_i of the
    logits, Z_i = Σ_j e^(l_ij − m_i) and W_i = Σ_j e^(l_ij − m_i)(l_ij − m_i). Neighbours are
    ranked by the similarities in ``dtype``, as the single-process reference ranks them.

    Returns:
        The block's k best similarities (n, k) and their global indices (n, k).
    """
    m, z, w = running
    n = queries.shape[0]
    best = torch.full((n, k), -math.inf, dtype=dtype, device=queries.device)
    index = torch.zeros(n, k, dtype=torch.long, device=queries.device)
    for i0 in range(0, n, tile):
        i1 = min(i0 + tile, n)
        rows = queries[i0:i1].to(dtype)
        for j0 in range(0, keys.shape[0], tile):
            j1 = min(j0 + tile, keys.shape[0])
            similarity = rows @ keys[j0:j1].to(dtype).T  # s_ij, (r, c)
            logits = similarity.double() / temperature
            selves = similarity.diagonal(offset=(query_offset + i0) - (key_offset + j0))
            selves.fill_(-math.inf)
            found = similarity.topk(min(k, j1 - j0), dim=1)
            found_values, found_indices = found.values, found.indices + (key_offset + j0)
            if found_values.shape[1] < k:
                pad = k - found_values.shape[1]
                found_values = torch.cat([found_values, found_values.new_full((i1 - i0, pad), -math.inf)], dim=1)
                found_indices = torch.cat([found_indices, found_indices.new_zeros((i1 - i0, pad))], dim=1)
            best[i0:i1], index[i0:i1] = _merge_smallest_index(best[i0:i1], index[i0:i1], found_values, found_indices, k)
            top = torch.maximum(m[i0:i1], logits.amax(dim=1))
            rescale = torch.exp(m[i0:i1] - top)  # 0 on a row's first tile (m = −inf)
            # Σ e^(l−m')(l−m') = α·(W + (m − m')·Z) for the terms seen so far, α = e^(m − m').
            w[i0:i1] = rescale * (w[i0:i1] + torch.nan_to_num(m[i0:i1] - top, neginf=0.0) * z[i0:i1])
            z[i0:i1] = rescale * z[i0:i1]
            shifted = logits - top.view(-1, 1)
            e = shifted.exp()
            z[i0:i1] += e.sum(dim=1)
            w[i0:i1] += (e * shifted).sum(dim=1)
            m[i0:i1] = top
    return best, index


@torch.no_grad()
def distributed_entropy_and_neighbours(
    local_rows: Tensor,
    partition: RowPartition,
    temperature: float,
    k: int,
    full_bank: Tensor | None = None,
    max_chunk_bytes: int | None = None,
    threads: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Entropy (Eq 5) and top-k neighbours (Eq 1) of this rank's rows against the whole bank.

    The numbers of :func:`and_plugin.curriculum.entropy_and_neighbours` on the whole bank,
    rows [partition.start, partition.stop) of them: the same neighbours and the entropy to float
    rounding (a few 1e-7 relative in float32). Exact ties go to the smallest index (for k > 1,
    inside one tile, to ``topk``'s order, as in one process). Every rank calls it at once (it
    runs collectives when ``partition.world`` > 1).

    Work per rank: its n_r ≈ N/W query rows against all N keys, 2·n_r·N·d ≈ 2N²d/W FLOPs of
    matrix products plus n_r·N exponentials; no rank ever holds an N x N block or, in the
    sharded layout, more than two key blocks (its own and the one arriving). Across W ranks
    this is twice the products of the single-process symmetric kernel (N²d FLOPs), which
    computes each pair once for both of its rows.

    Args:
        local_rows: This rank's bank rows, bank[partition.start:partition.stop], shape (n_r, d),
            unit vectors, any float dtype (computed in float32, float64 for a float64 bank).
        partition: The row partition of this rank (``RowPartition.current(N)`` under
            torch.distributed).
        temperature: τ of the softmax, the training temperature.
        k: Neighbours per row, self excluded; 1 ≤ k < N.
        full_bank: The replicated layout: the whole bank (N, d) held by every rank (the key
            blocks are read from it, nothing travels). None: the sharded layout (the key blocks
            travel around the ranks in a ring).
        max_chunk_bytes: Memory budget of the two tile buffers (as the single-process refresh;
            256 MiB on CPU, 2 GiB on GPU by default).
        threads: CPU torch threads of this rank during the pass; None keeps
            ``torch.get_num_threads()`` (one per rank under torchrun's default OMP_NUM_THREADS=1).

    Returns:
        ``(entropy, neighbours)``: shapes (n_r,) (float32, float64 for a float64 bank) and
        (n_r, k) long holding GLOBAL row indices in [0, N).

    Raises:
        ValueError: If a shape, ``temperature``, ``k`` or the partition (against the process
            group) is wrong.
    """
    check_shape("local_rows", local_rows, (partition.count, None))
    check_positive("temperature", temperature)
    check_int_at_least("k", k, 1)
    require(k < partition.size, "k", k, f"< the number of samples N = {partition.size}")
    if full_bank is not None:
        check_shape("full_bank", full_bank, (partition.size, local_rows.shape[1]))
    check_process_group(partition)
    if max_chunk_bytes is None:
        max_chunk_bytes = (2 << 30) if local_rows.is_cuda else (256 << 20)
    check_int_at_least("max_chunk_bytes", max_chunk_bytes, 1)
    if threads is not None:
        check_int_at_least("threads", threads, 1)
    dtype = _computation_dtype(local_rows)
    tile = tile_side(partition.size, max_chunk_bytes, dtype, local_rows.is_cuda)
    previous = torch.get_num_threads()
    if threads is not None and local_rows.device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        return _discover(local_rows, partition, float(temperature), k, full_bank, tile, dtype)
    finally:
        torch.set_num_threads(previous)


def _discover(
    local_rows: Tensor, partition: RowPartition, temperature: float, k: int, full_bank: Tensor | None,
    tile: int, dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """The pass over every key block (arguments checked)."""
    n, device = partition.count, local_rows.device
    top, low = _norm_range(local_rows, partition, dtype, tile)
    shared = (top - low) / temperature <= SHIFT_LIMIT[dtype]
    z = torch.zeros(n, dtype=torch.float64, device=device)
    w = torch.zeros(n, dtype=torch.float64, device=device)
    m = torch.full((n,), -math.inf, dtype=torch.float64, device=device)
    best = torch.full((n, k), -math.inf, dtype=dtype, device=device)
    index = torch.zeros(n, k, dtype=torch.long, device=device)
    for key_offset, keys in _key_blocks(local_rows, partition, full_bank):
        if keys.shape[0] == 0 or n == 0:
            continue
        if shared:
            block_z, block_w, values, indices = query_key_tiles(
                local_rows, keys, partition.start, key_offset, temperature, k, tile, top / temperature, dtype
            )
            z += block_z.double()
            w += block_w.double()
        else:
            values, indices = _online_block(local_rows, keys, partition.start, key_offset, temperature, k, tile,
                                            dtype, (m, z, w))
        best, index = _merge_smallest_index(best, index, values, indices, k)
    entropy = (z.log() - w / z).to(dtype)
    return entropy, index


__all__ = ["check_process_group", "distributed_entropy_and_neighbours"]
