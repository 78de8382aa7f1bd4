"""The fast round-start refresh: entropy (Eq 5) and top-k neighbours (Eq 1) in symmetric tiles.

The reference is :func:`and_plugin.curriculum.reference_entropy_and_neighbours` (row blocks
against the whole bank, a per-row maximum, H = −Σ p log p); :func:`entropy_and_neighbours_tiled`
returns the same numbers with half the matrix products and, on the CPU, worker threads:

- The similarity matrix is symmetric, so it is computed in square tiles (I, J) with I ≤ J only,
  each tile serving the rows of block I and (transposed) those of block J; no N x N matrix.
- Every logit l_ij = x̃_i·x̃_j/τ is shifted by one constant c = max_i ‖x̃_i‖²/τ ≥ every logit,
  so exp(l_ij − c) is the same number for row i and row j; per row only
  Z_i = Σ_j e^(l_ij − c) and W_i = Σ_j e^(l_ij − c)(l_ij − c) accumulate, and
  H_i = log Z_i − W_i / Z_i. A bank whose row norms differ so much that the shared shift could
  underflow is left to the reference (the function returns None).
- Exponentials are base 2 (exp2 is about twice as fast as exp on CPUs).
- For k = 1 each tile only records the best value and tile of every row (cheap max
  reductions); a last pass finds the neighbour's index inside that tile, ties to the smallest
  index. For k > 1 running top-k lists are merged (topk's tie order).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor

#: Largest spread (max² − min²)/τ of the squared row norms the shared shift accepts: the terms
#: exp(l_ij − max²/τ) of the lowest-norm row stay far above underflow (float32: e^−87).
SHIFT_LIMIT = {torch.float32: 60.0, torch.float64: 600.0}
#: Tile side on the CPU: two float32 tiles of 512 x 512 (2 MiB) stay in cache.
CPU_TILE = 512
GPU_TILE = 8192
_LOG2E = 1.0 / math.log(2.0)


def tile_side(size: int, max_chunk_bytes: int, dtype: torch.dtype, cuda: bool) -> int:
    """The side of the square tiles: two (tile, tile) buffers fit ``max_chunk_bytes``."""
    itemsize = 8 if dtype == torch.float64 else 4
    tile = math.isqrt(max(1, max_chunk_bytes // (2 * itemsize)))
    return max(1, min(tile, GPU_TILE if cuda else CPU_TILE, size))


@torch.no_grad()
def entropy_and_neighbours_tiled(
    bank: Tensor, temperature: float, k: int, max_chunk_bytes: int, threads: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor] | None:
    """``(entropy (N,), neighbours (N, k))`` as the reference computes them, or None.

    None when the row norms differ too much for one shared shift (see :data:`SHIFT_LIMIT`).
    Arguments are those of :func:`and_plugin.curriculum.entropy_and_neighbours`, already
    validated, and ``dtype``, the computation dtype (float32, or float64).
    """
    size = bank.shape[0]
    tile = tile_side(size, max_chunk_bytes, dtype, bank.is_cuda)
    squared = torch.cat([bank[s : s + tile].to(dtype).square().sum(dim=1) for s in range(0, size, tile)])
    top, low = float(squared.max()), float(squared.min())  # once per round
    if (top - low) / temperature > SHIFT_LIMIT[dtype]:
        return None
    return _tiles(bank, temperature, k, tile, top / temperature, dtype, threads)


def _tiles(
    bank: Tensor, temperature: float, k: int, tile: int, shift: float, dtype: torch.dtype, threads: int
) -> tuple[Tensor, Tensor]:
    """All tiles (I ≤ J); on the CPU the row blocks are shared among ``threads`` Python threads,
    each running single-threaded torch operations on its own tiles (merged at the end)."""
    size = bank.shape[0]
    starts = list(range(0, size, tile))
    workers = min(threads, len(starts)) if bank.device.type == "cpu" else 1
    previous = torch.get_num_threads()
    if workers <= 1:
        if bank.device.type == "cpu":
            torch.set_num_threads(threads)
        try:
            parts = [_tile_pass(bank, temperature, k, tile, shift, dtype, list(range(len(starts))))]
        finally:
            torch.set_num_threads(previous)
    else:
        # Block b owns len(starts) − b tiles: deal the blocks out in a zigzag to balance the work.
        zigzag: list[list[int]] = [[] for _ in range(workers)]
        for position, block in enumerate(range(len(starts))):
            lap, slot = divmod(position, workers)
            zigzag[slot if lap % 2 == 0 else workers - 1 - slot].append(block)

        def work(blocks: list[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            torch.set_num_threads(1)  # OpenMP's thread count is per calling thread
            return _tile_pass(bank, temperature, k, tile, shift, dtype, blocks)

        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                parts = list(pool.map(work, zigzag))
        finally:
            torch.set_num_threads(previous)
    z = torch.stack([p[0] for p in parts]).sum(dim=0)
    w = torch.stack([p[1] for p in parts]).sum(dim=0)
    entropy = z.log() - w / z
    if k > 1:
        values = torch.cat([p[2] for p in parts], dim=1)
        indices = torch.cat([p[3] for p in parts], dim=1)
        top = values.topk(k, dim=1)
        return entropy, indices.gather(1, top.indices)
    best, best_block = parts[0][2], parts[0][3]
    for part in parts[1:]:
        # The larger value wins; on a tie the smaller block (so ties still go to the smallest index).
        take = (part[2] > best) | ((part[2] == best) & (part[3] < best_block))
        best = torch.where(take, part[2], best)
        best_block = torch.where(take, part[3], best_block)
    return entropy, _neighbour_in_block(bank, best_block, starts, tile, dtype).view(size, 1)


def _tile_pass(
    bank: Tensor, temperature: float, k: int, tile: int, shift: float, dtype: torch.dtype, blocks: list[int]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Tiles (I, J ≥ I) of the row blocks ``blocks``: partial Z, W (N,) and best values/positions.

    Returns:
        ``(z, w, best, where)``: for k = 1, best (N,) and the block holding it (N,); for k > 1,
        the running top-k values and indices (N, k).
    """
    size, device = bank.shape[0], bank.device
    z = torch.zeros(size, dtype=dtype, device=device)
    w = torch.zeros(size, dtype=dtype, device=device)
    if k == 1:
        best = torch.full((size,), -math.inf, dtype=dtype, device=device)
        where = torch.zeros(size, dtype=torch.long, device=device)
    else:
        best = torch.full((size, k), -math.inf, dtype=dtype, device=device)
        where = torch.zeros(size, k, dtype=torch.long, device=device)
    logits_buffer = torch.empty(tile, tile, dtype=dtype, device=device)
    exp_buffer = torch.empty(tile, tile, dtype=dtype, device=device)
    ones = torch.ones(tile, dtype=dtype, device=device)
    starts = list(range(0, size, tile))
    # Base 2 throughout: v = u·log2(e), e^u = 2^v, and Σ e^u·u = ln 2 · Σ 2^v·v.
    scale = _LOG2E / temperature
    shift = shift * _LOG2E
    for bi in blocks:
        i0 = starts[bi]
        i1 = min(i0 + tile, size)
        rows = bank[i0:i1].to(dtype) * scale
        for bj in range(bi, len(starts)):
            j0 = starts[bj]
            j1 = min(j0 + tile, size)
            r, c = i1 - i0, j1 - j0
            logits = torch.mm(rows, bank[j0:j1].to(dtype).T, out=logits_buffer[:r, :c])  # l_ij·log2(e), (r, c)
            diagonal = bi == bj
            if diagonal:
                self_logits = logits.diagonal().clone()
                logits.diagonal().fill_(-math.inf)  # self excluded from the neighbours
            if k == 1:
                row_best = logits.amax(dim=1)
                better = row_best > best[i0:i1]
                best[i0:i1] = torch.where(better, row_best, best[i0:i1])
                where[i0:i1] = torch.where(better, bj, where[i0:i1])
                if not diagonal:
                    column_best = logits.amax(dim=0)
                    better = column_best > best[j0:j1]
                    best[j0:j1] = torch.where(better, column_best, best[j0:j1])
                    where[j0:j1] = torch.where(better, bi, where[j0:j1])
            else:
                _merge_topk(best, where, i0, i1, logits.topk(min(k, c), dim=1), j0, k)
                if not diagonal:
                    _merge_topk(best, where, j0, j1, logits.T.topk(min(k, r), dim=1), i0, k)
            if diagonal:
                logits.diagonal().copy_(self_logits)
            if diagonal:
                add_exp_sums(logits, shift, exp_buffer, ones, z[i0:i1], w[i0:i1])
            else:
                add_exp_sums(logits, shift, exp_buffer, ones, z[i0:i1], w[i0:i1], z[j0:j1], w[j0:j1])
    return z, w.mul_(math.log(2.0)), best, where


def add_exp_sums(
    logits: Tensor,
    shift: float,
    exp_buffer: Tensor,
    ones: Tensor,
    z_rows: Tensor,
    w_rows: Tensor,
    z_columns: Tensor | None = None,
    w_columns: Tensor | None = None,
) -> None:
    """Adds one tile's terms of Z and W (base 2, before the factor ln 2) in place.

    With v_ij = logits − shift ≤ 0 (``logits`` is overwritten by v): Z_i += Σ_j 2^v_ij and
    W_i += Σ_j 2^v_ij·v_ij for the tile's rows, and the same sums over i for its columns when
    ``z_columns`` / ``w_columns`` are given (a symmetric tile serving both blocks).

    Args:
        logits: l_ij·log2(e), shape (r, c).
        shift: The shared shift c·log2(e), at least every logit.
        exp_buffer: Scratch of at least (r, c).
        ones: Ones of at least max(r, c) entries.
        z_rows, w_rows: Running sums of the rows, shape (r,).
        z_columns, w_columns: Running sums of the columns, shape (c,), or None.
    """
    r, c = logits.shape
    shifted = logits.sub_(shift)  # v_ij = (l_ij − c)·log2(e) ≤ 0
    e = torch.exp2(shifted, out=exp_buffer[:r, :c])
    z_rows += torch.mv(e, ones[:c])
    if z_columns is not None:
        z_columns += torch.mv(e.T, ones[:r])
    e.mul_(shifted)
    w_rows += torch.mv(e, ones[:c])
    if w_columns is not None:
        w_columns += torch.mv(e.T, ones[:r])


def _merge_topk(values: Tensor, indices: Tensor, start: int, stop: int, found: Any, offset: int, k: int) -> None:
    """Merges a tile's top-k (values, column indices + offset) into the running top-k of rows start:stop."""
    merged_values = torch.cat([values[start:stop], found.values], dim=1)
    merged_indices = torch.cat([indices[start:stop], found.indices + offset], dim=1)
    top = merged_values.topk(k, dim=1)
    values[start:stop] = top.values
    indices[start:stop] = merged_indices.gather(1, top.indices)


def _neighbour_in_block(bank: Tensor, best_block: Tensor, starts: list[int], tile: int, dtype: torch.dtype) -> Tensor:
    """The nearest neighbour's index of every row, searched only in the tile that holds it."""
    size = bank.shape[0]
    nearest = torch.empty(size, dtype=torch.long, device=bank.device)
    for block, start in enumerate(starts):
        members = torch.nonzero(best_block == block).flatten()
        if members.numel() == 0:
            continue
        keys = bank[start : start + tile].to(dtype)
        for m0 in range(0, members.numel(), 4 * tile):
            rows = members[m0 : m0 + 4 * tile]
            sims = bank[rows].to(dtype) @ keys.T
            inside = (rows >= start) & (rows < start + keys.shape[0])
            sims[inside.nonzero().flatten(), rows[inside] - start] = -math.inf  # never oneself
            nearest[rows] = start + sims.argmax(dim=1)
    return nearest


@torch.no_grad()
def query_key_tiles(
    queries: Tensor,
    keys: Tensor,
    query_offset: int,
    key_offset: int,
    temperature: float,
    k: int,
    tile: int,
    shift: float,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One rectangular pass: query rows against one block of key rows, in (tile, tile) tiles.

    The building block of discovery on several ranks (:mod:`and_plugin.sharded.discovery`): the
    queries are rows [query_offset, query_offset + n) of the bank, the keys rows
    [key_offset, key_offset + m). A query never counts itself as a neighbour (the pairs with
    equal global index are masked), but its self term stays in Z and W, as in Eq 5.

    Args:
        queries: Shape (n, d), any float dtype.
        keys: Shape (m, d), m ≥ 0.
        query_offset: Global index of the first query row.
        key_offset: Global index of the first key row.
        temperature: τ.
        k: Neighbours kept per query.
        tile: The tile side.
        shift: The shared shift c ≥ every logit l_ij = x̃_i·x̃_j/τ (natural-log units).
        dtype: The computation dtype.

    Returns:
        ``(z, w, best, index)``: Z_i = Σ_j e^(l_ij − c) and W_i = Σ_j e^(l_ij − c)(l_ij − c) over
        this block's keys (shape (n,), ``dtype``); the k largest logits·log2(e) (n, k) and their
        GLOBAL key indices (n, k) long. k = 1 ties go to the smallest index (k > 1: topk's
        order, as in :func:`entropy_and_neighbours_tiled`); entries of a block with fewer than
        k usable keys are −inf.
    """
    n, m, device = queries.shape[0], keys.shape[0], queries.device
    z = torch.zeros(n, dtype=dtype, device=device)
    w = torch.zeros(n, dtype=dtype, device=device)
    best = torch.full((n, k), -math.inf, dtype=dtype, device=device)
    index = torch.zeros(n, k, dtype=torch.long, device=device)
    if n == 0 or m == 0:
        return z, w, best, index
    logits_buffer = torch.empty(tile, tile, dtype=dtype, device=device)
    exp_buffer = torch.empty(tile, tile, dtype=dtype, device=device)
    ones = torch.ones(tile, dtype=dtype, device=device)
    scale = _LOG2E / temperature
    shift = shift * _LOG2E
    for i0 in range(0, n, tile):
        i1 = min(i0 + tile, n)
        rows = queries[i0:i1].to(dtype) * scale
        for j0 in range(0, m, tile):
            j1 = min(j0 + tile, m)
            r, c = i1 - i0, j1 - j0
            logits = torch.mm(rows, keys[j0:j1].to(dtype).T, out=logits_buffer[:r, :c])  # l_ij·log2(e), (r, c)
            # Pairs (g, g) with one global index g lie on the diagonal at offset (query − key) start.
            selves = logits.diagonal(offset=(query_offset + i0) - (key_offset + j0))
            self_logits = selves.clone()
            selves.fill_(-math.inf)
            if k == 1:
                row_best, row_index = logits.max(dim=1)  # the first maximum: ties to the smallest index
                better = row_best > best[i0:i1, 0]  # earlier tiles hold smaller indices: strict
                best[i0:i1, 0] = torch.where(better, row_best, best[i0:i1, 0])
                index[i0:i1, 0] = torch.where(better, row_index + (key_offset + j0), index[i0:i1, 0])
            else:
                _merge_topk(best, index, i0, i1, logits.topk(min(k, c), dim=1), key_offset + j0, k)
            selves.copy_(self_logits)
            add_exp_sums(logits, shift, exp_buffer, ones, z[i0:i1], w[i0:i1])
    return z, w.mul_(math.log(2.0)), best, index
