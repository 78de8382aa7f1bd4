"""Neighbourhood discovery and the entropy curriculum (Eq 1, 5 and 6 of the paper).

At the start of round r ≥ 1 the curriculum reads the memory bank and:

1. computes the entropy H(x̃_i) = −Σ_j p_ij log p_ij of every entry's softmax over the whole
   bank (memory against memory, self term included), streaming over row blocks so no N x N
   matrix ever exists;
2. selects the fraction S = r/R of entries with the lowest entropy as anchors (recomputed from
   scratch every round);
3. finds every entry's top-k cosine neighbours in the bank (self excluded, not mutual).

The result, a :class:`RoundState`, is fixed for the whole round; the loss and the miner read it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ._validation import check_choice, check_indices, check_int_at_least, check_positive, check_shape
from .registry import CURRICULA

SELECTIONS = ("curriculum", "one_off")


@dataclass
class RoundState:
    """Anchors and neighbours of one round.

    Attributes:
        round: The round r ≥ 1 this state belongs to.
        anchor_mask: Shape (N,), bool: True for samples trained with the AN loss this round.
        neighbours: Shape (N, k), long: every sample's top-k neighbours (used for anchors only).
        entropy: Shape (N,), float: H(x̃_i) at discovery time.
        consistency: With monitoring labels: {"consistent", "inconsistent", "ratio"} counts of
            anchor neighbourhoods whose members all share (or not) the anchor's class.
    """

    round: int
    anchor_mask: Tensor
    neighbours: Tensor
    entropy: Tensor
    consistency: dict[str, float] | None = field(default=None)

    @property
    def num_anchors(self) -> int:
        return int(self.anchor_mask.sum())

    @property
    def num_samples(self) -> int:
        return int(self.anchor_mask.numel())

    def anchors(self) -> Tensor:
        """Sample indices of the anchors, ascending, shape (A,)."""
        return torch.nonzero(self.anchor_mask, as_tuple=False).flatten()

    def positives(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """The positive set P(i) = {i} ∪ N_k(i) (anchors) or {i} (others) of each query.

        Args:
            indices: Dataset indices of the batch, shape (B,).

        Returns:
            ``(positives, mask)``, both shape (B, 1 + k): column 0 is the sample itself; the
            other columns are its neighbours, masked out for non-anchors.
        """
        check_indices("indices", indices, self.num_samples)
        device = self.neighbours.device
        indices = indices.to(device)
        positives = torch.cat([indices.view(-1, 1), self.neighbours[indices]], dim=1)
        mask = torch.ones_like(positives, dtype=torch.bool)
        mask[:, 1:] = self.anchor_mask[indices].view(-1, 1)
        return positives, mask

    def to(self, device: torch.device | str) -> "RoundState":
        """A copy with all tensors on ``device``."""
        return RoundState(
            self.round,
            self.anchor_mask.to(device),
            self.neighbours.to(device),
            self.entropy.to(device),
            self.consistency,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "anchor_mask": self.anchor_mask.cpu(),
            "neighbours": self.neighbours.cpu(),
            "entropy": self.entropy.cpu(),
            "consistency": self.consistency,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "RoundState":
        return cls(**state)


#: Largest spread (max² − min²)/τ of the squared row norms the shared-shift refresh accepts: the
#: terms exp(l_ij − max²/τ) of the lowest-norm row stay far above underflow (float32: e^−87).
_SHIFT_LIMIT = {torch.float32: 60.0, torch.float64: 600.0}
#: Tile side of the refresh on the CPU: two float32 tiles of 512 x 512 (2 MiB) stay in cache.
_CPU_TILE = 512
_LOG2E = 1.0 / math.log(2.0)
_GPU_TILE = 8192


@torch.no_grad()
def entropy_and_neighbours(
    bank: Tensor,
    temperature: float,
    neighbours: int = 1,
    max_chunk_bytes: int | None = None,
    threads: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Entropy of every bank entry's softmax over the bank (Eq 5) and its top-k neighbours (Eq 1).

    The similarity matrix is symmetric, so it is computed in square tiles (I, J) with I ≤ J only,
    each tile serving the rows of block I and (transposed) those of block J: half the matrix
    products of a row-by-row pass, and no N x N matrix. Every logit l_ij = x̃_i·x̃_j/τ is shifted by
    one constant c = max_i ‖x̃_i‖²/τ ≥ every logit, so exp(l_ij − c) is the same number for row i
    and row j, and per row only Z_i = Σ_j e^(l_ij − c) and W_i = Σ_j e^(l_ij − c)(l_ij − c)
    accumulate; then H_i = log Z_i − W_i / Z_i (a bank whose row norms differ so much that the
    shared shift could underflow falls back to a row-block pass with a per-row maximum). For
    k = 1 each tile only records the best value and tile of every row (cheap max reductions); a
    last pass finds the neighbour's index inside that tile. For k = 1, ties go to the smallest index (k > 1 keeps topk's unspecified tie order).

    Args:
        bank: Unit vectors, shape (N, d), any float dtype (computed in float32, or float64 for a
            float64 bank).
        temperature: τ of the softmax, the training temperature.
        neighbours: k, top-k cosine neighbours per entry, self excluded; 1 ≤ k < N.
        max_chunk_bytes: Memory budget of the two tile buffers; the tile side is at most 512 on
            the CPU (cache-sized) and 8192 on a GPU; 256 MiB on CPU, 2 GiB on GPU by default.
        threads: CPU only: worker threads that share the row blocks, each running single-threaded
            torch operations on its own tiles (independent workers instead of OpenMP barriers on
            small tiles). None = half of ``os.cpu_count()`` (physical cores, assuming two hardware
            threads per core), at most ``torch.get_num_threads()``, at least 1. On the shared
            2-vCPU development machine one worker was fastest.

    Returns:
        ``(entropy, neighbours)`` of shapes (N,) (float32, float64 for a float64 bank) and (N, k) long.

    Raises:
        ValueError: If ``bank`` is not 2-D, ``temperature`` ≤ 0 or ``neighbours`` not in [1, N).
    """
    check_shape("bank", bank, (None, None))
    check_positive("temperature", temperature)
    size = bank.shape[0]
    check_int_at_least("neighbours", neighbours, 1)
    if neighbours >= size:
        raise ValueError(f"neighbours must be < the number of samples N = {size}, got {neighbours}")
    if max_chunk_bytes is None:
        max_chunk_bytes = (2 << 30) if bank.is_cuda else (256 << 20)
    check_int_at_least("max_chunk_bytes", max_chunk_bytes, 1)
    if threads is None:
        threads = max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) // 2))
    check_int_at_least("threads", threads, 1)
    dtype = torch.float64 if bank.dtype == torch.float64 else torch.float32
    itemsize = 8 if dtype == torch.float64 else 4
    tile = math.isqrt(max(1, max_chunk_bytes // (2 * itemsize)))
    tile = max(1, min(tile, _GPU_TILE if bank.is_cuda else _CPU_TILE, size))
    squared = torch.cat([bank[s : s + tile].to(dtype).square().sum(dim=1) for s in range(0, size, tile)])
    top, low = float(squared.max()), float(squared.min())
    if (top - low) / temperature > _SHIFT_LIMIT[dtype]:
        return _entropy_and_neighbours_rows(bank, temperature, neighbours, max_chunk_bytes, dtype)
    return _entropy_and_neighbours_tiles(bank, temperature, neighbours, tile, top / temperature, dtype, threads)


def _entropy_and_neighbours_tiles(
    bank: Tensor, temperature: float, k: int, tile: int, shift: float, dtype: torch.dtype, threads: int
) -> tuple[Tensor, Tensor]:
    """The symmetric tiled refresh (see :func:`entropy_and_neighbours`); ``shift`` ≥ every logit.

    On the CPU, row blocks are shared among ``threads`` Python threads, each running
    single-threaded torch operations on its own tiles and accumulators (merged at the end).
    """
    size = bank.shape[0]
    starts = list(range(0, size, tile))
    workers = min(threads, len(starts)) if bank.device.type == "cpu" else 1
    if workers <= 1:
        previous = torch.get_num_threads()
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
        from concurrent.futures import ThreadPoolExecutor

        previous = torch.get_num_threads()

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
    # Base 2 throughout (exp2 is about twice as fast as exp on CPUs): v = u·log2(e), e^u = 2^v,
    # and Σ e^u·u = ln 2 · Σ 2^v·v.
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
            shifted = logits.sub_(shift)  # v_ij = (l_ij − c)·log2(e) ≤ 0
            e = torch.exp2(shifted, out=exp_buffer[:r, :c])
            z[i0:i1] += torch.mv(e, ones[:c])
            if not diagonal:
                z[j0:j1] += torch.mv(e.T, ones[:r])
            e.mul_(shifted)
            w[i0:i1] += torch.mv(e, ones[:c])
            if not diagonal:
                w[j0:j1] += torch.mv(e.T, ones[:r])
    return z, w.mul_(math.log(2.0)), best, where


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


def _entropy_and_neighbours_rows(
    bank: Tensor, temperature: float, neighbours: int, max_chunk_bytes: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Row blocks x all N with a per-row maximum: for banks whose row norms differ widely."""
    size = bank.shape[0]
    rows_per_block = max(1, min(size, max_chunk_bytes // (2 * 4 * size)))
    keys = bank.to(dtype)
    entropy = torch.empty(size, dtype=dtype, device=bank.device)
    nearest = torch.empty(size, neighbours, dtype=torch.long, device=bank.device)
    for start in range(0, size, rows_per_block):
        stop = min(start + rows_per_block, size)
        rows = torch.arange(stop - start, device=bank.device)
        logits = keys[start:stop] @ keys.T  # cosine similarities, (rows, N)
        self_sim = logits[rows, rows + start].clone()
        logits[rows, rows + start] = float("-inf")
        nearest[start:stop] = logits.topk(neighbours, dim=1).indices
        logits[rows, rows + start] = self_sim
        logits.div_(temperature)
        lse = torch.logsumexp(logits, dim=1)
        probs = torch.sub(logits, lse[:, None]).exp_()
        # H = −Σ p (l − lse) = lse − Σ p l
        entropy[start:stop] = lse - probs.mul_(logits).sum(dim=1)
    return entropy, nearest


def select_anchors(entropy: Tensor, fraction: float) -> Tensor:
    """The ``fraction`` of samples with the lowest entropy, as a bool mask (Eq 6).

    Ties are broken by sample index (stable sort), so the selection is deterministic.

    Args:
        entropy: Shape (N,).
        fraction: S in [0, 1]; ``floor(S·N)`` anchors are selected.

    Returns:
        Shape (N,), bool.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    count = int(fraction * entropy.numel() + 1e-9)
    order = torch.sort(entropy, stable=True).indices
    mask = torch.zeros(entropy.numel(), dtype=torch.bool, device=entropy.device)
    mask[order[:count]] = True
    return mask


def neighbourhood_consistency(anchor_mask: Tensor, neighbours: Tensor, labels: Tensor) -> dict[str, float]:
    """Counts anchor neighbourhoods whose members all share the anchor's class (Fig 6).

    Labels are for monitoring only; training never reads them.

    Args:
        anchor_mask: Shape (N,), bool.
        neighbours: Shape (N, k).
        labels: Shape (N,), class of every sample.

    Returns:
        {"consistent": int, "inconsistent": int, "ratio": consistent / anchors (0 if none)}.
    """
    check_shape("labels", labels, (anchor_mask.numel(),))
    labels = labels.to(neighbours.device)
    anchors = torch.nonzero(anchor_mask, as_tuple=False).flatten().to(neighbours.device)
    same = (labels[neighbours[anchors]] == labels[anchors].view(-1, 1)).all(dim=1)
    consistent = int(same.sum())
    total = int(anchors.numel())
    return {
        "consistent": consistent,
        "inconsistent": total - consistent,
        "ratio": consistent / total if total else 0.0,
    }


@CURRICULA.register("entropy")
class EntropyCurriculum:
    """The progressive curriculum of Algorithm 1: which samples are anchors in round r.

    Args:
        rounds: R ≥ 1, the number of neighbourhood rounds after round 0 (4 in the paper).
        neighbours: k ≥ 1, neighbours per anchor (1 in the paper; Fig 4 sweeps 1–100).
        temperature: τ of the entropy softmax; use the training temperature.
        selection: "curriculum" (S = r/R, Eq 6) or "one_off" (all samples are anchors from the
            first neighbourhood round on; the Table 6 ablation).
        max_chunk_bytes: Memory budget of one block of the streamed refresh.

    Attributes:
        state: The current :class:`RoundState`, None before the first discovery.

    Example:
        >>> import torch
        >>> from and_plugin import EntropyCurriculum
        >>> bank = torch.nn.functional.normalize(torch.randn(20, 8), dim=1)
        >>> curriculum = EntropyCurriculum(rounds=4, neighbours=1)
        >>> state = curriculum.discover(bank, round=1)
        >>> state.num_anchors  # 1/4 of 20
        5
    """

    def __init__(
        self,
        rounds: int = 4,
        neighbours: int = 1,
        temperature: float = 0.1,
        selection: str = "curriculum",
        max_chunk_bytes: int | None = None,
    ) -> None:
        check_int_at_least("rounds", rounds, 1)
        check_int_at_least("neighbours", neighbours, 1)
        check_positive("temperature", temperature)
        check_choice("selection", selection, SELECTIONS)
        self.rounds = rounds
        self.neighbours = neighbours
        self.temperature = float(temperature)
        self.selection = selection
        self.max_chunk_bytes = max_chunk_bytes
        self.state: RoundState | None = None

    def selection_ratio(self, round: int) -> float:
        """S for round r: r/R for the curriculum, 1 for one-off, 0 for round 0."""
        if isinstance(round, bool) or not isinstance(round, int) or not 0 <= round <= self.rounds:
            raise ValueError(f"round must be an integer in [0, {self.rounds}], got {round!r}")
        if round == 0:
            return 0.0
        return 1.0 if self.selection == "one_off" else round / self.rounds

    def discover(self, bank: "Tensor | Any", round: int, labels: Tensor | None = None) -> RoundState:
        """Runs neighbourhood discovery for round r ≥ 1 and makes it the current state.

        Args:
            bank: The memory bank, a :class:`~and_plugin.MemoryBank` or a tensor (N, d).
            round: r in [1, R].
            labels: Optional classes (N,), used only to count consistent neighbourhoods.

        Returns:
            The new :class:`RoundState`.
        """
        keys = bank.bank if hasattr(bank, "bank") else bank
        ratio = self.selection_ratio(round)
        if round == 0:
            raise ValueError("round must be >= 1 for discovery; round 0 is instance learning")
        entropy, nearest = entropy_and_neighbours(keys, self.temperature, self.neighbours, self.max_chunk_bytes)
        anchor_mask = select_anchors(entropy, ratio)
        consistency = None if labels is None else neighbourhood_consistency(anchor_mask, nearest, labels)
        self.state = RoundState(round, anchor_mask, nearest, entropy, consistency)
        return self.state

    def state_dict(self) -> dict[str, Any]:
        return {"state": None if self.state is None else self.state.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("state")
        self.state = None if saved is None else RoundState.from_state_dict(saved)

    def __repr__(self) -> str:
        return (
            f"EntropyCurriculum(rounds={self.rounds}, neighbours={self.neighbours}, "
            f"temperature={self.temperature}, selection={self.selection!r})"
        )
