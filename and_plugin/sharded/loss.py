"""Eq 2, 3 and 7 against a sharded bank: exact, with one all-reduce per step.

For the gathered batch X (B_g, d) and rank r's rows M_r of the bank, rank r computes

- the partial normaliser lse_i^r = log Σ_{k ∈ M_r} exp(x_i·x̃_k/τ) and the partial positive term
  lsepos_i^r = log Σ_{j ∈ P(i) ∩ M_r} exp(x_i·x̃_j/τ) (−∞ where rank r owns no member of P(i));
- one all-reduce (sum) of exp(lse^r − 1/τ) and exp(lsepos^r − 1/τ), in float64, gives every rank
  lse_i = 1/τ + log Σ_r exp(lse_i^r − 1/τ) and likewise lsepos_i. The shift 1/τ bounds every logit
  of unit vectors, so no term overflows and none underflows for τ > 0.003;
- L_i = lse_i − lsepos_i (Eq 2/3), the same number the replicated bank gives (to float rounding).

The gradient d L_i / d x_i = (1/τ) (Σ_k p_ik x̃_k − Σ_{j∈P(i)} q_ij x̃_j) is a sum over the shards:
rank r's part is exp(lse^r − lse)·E_r − exp(lsepos^r − lsepos)·Epos_r with E_r the softmax-weighted
mean of its rows. Backward gathers the (B_g,) upstream gradients, and one reduce-scatter sums the
parts of every query on the rank that owns the query. No rank ever holds more than its own rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor

from .._validation import check_indices, check_positive, check_rows, check_shape
from ..distributed import all_gather_known, all_gather_rows, get_rank
from ..kernels.bank_logsumexp import checked_fused_attention
from ..kernels.gather import check_index_tensor
from ..loss import REDUCTIONS, NeighbourhoodLoss, reference_bank_logsumexp

if TYPE_CHECKING:
    from ..curriculum import RoundState
    from .bank import ShardedMemoryBank


def shard_softmax(
    queries: Tensor, keys: Tensor, temperature: float, chunk_size: int | None = None
) -> tuple[Tensor, Tensor]:
    """log Σ_k exp(q·k/τ) and Σ_k softmax_k(q·k/τ) k over one shard of keys.

    Args:
        queries: Shape (B, d).
        keys: Shape (n, d), n ≥ 0, in the queries' dtype.
        temperature: τ.
        chunk_size: None tries one fused attention kernel first; an int (or no kernel) streams
            the keys in chunks with a running (online) softmax.

    Returns:
        ``(lse (B,) float64, expectation (B, d))``; −∞ and zeros for an empty shard.
    """
    batch, dim = queries.shape
    if keys.shape[0] == 0:
        return queries.new_full((batch,), float("-inf"), dtype=torch.float64), queries.new_zeros(batch, dim)
    if chunk_size is None:
        fused = checked_fused_attention(queries, keys, temperature, reference_bank_logsumexp)
        if fused is not None:
            return fused[0].double(), fused[1]
        chunk_size = max(1, (64 << 20) // (4 * max(1, batch)))
    running = queries.new_full((batch,), float("-inf"), dtype=torch.float64)
    expectation = queries.new_zeros(batch, dim)
    for start in range(0, keys.shape[0], chunk_size):
        chunk = keys[start : start + chunk_size]
        logits = queries @ chunk.T / temperature  # (B, chunk)
        updated = torch.logaddexp(running, torch.logsumexp(logits, dim=1).double())
        weights = torch.exp(logits - updated[:, None].to(logits.dtype))
        expectation = expectation * torch.exp(running - updated).to(expectation.dtype)[:, None] + weights @ chunk
        running = updated
    return running, expectation


#: The smallest τ the shards' combination supports: exp(−2/τ) must stay above float64's range.
MIN_TEMPERATURE = 0.003


class _ShardedLoss(torch.autograd.Function):
    """Per-query Eq 7 of this rank's queries; the bank shards are constants."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, features: Tensor, gathered: Tensor, positives: Tensor, mask: Tensor, shard: Tensor,
        start: int, temperature: float, chunk_size: int | None, counts: list[int],
    ) -> Tensor:
        keys = shard.to(gathered.dtype)
        lse_part, expectation = shard_softmax(gathered, keys, temperature, chunk_size)
        rows = keys.shape[0]
        owned = mask & (positives >= start) & (positives < start + rows)  # (B_g, P)
        if rows:
            positive_keys = keys[(positives - start).clamp(0, rows - 1)]  # (B_g, P, d)
        else:
            positive_keys = gathered.new_zeros(*positives.shape, gathered.shape[1])
        logits = torch.einsum("bd,bpd->bp", gathered, positive_keys) / temperature
        logits = logits.masked_fill(~owned, float("-inf"))
        positive_part = torch.logsumexp(logits, dim=1).double()  # −∞ where this rank owns none
        weights = torch.where(owned, torch.exp(logits - positive_part[:, None].to(logits.dtype)), 0.0)
        positive_expectation = torch.einsum("bp,bpd->bd", weights, positive_keys)
        shift = 1.0 / temperature
        sums = torch.stack([torch.exp(lse_part - shift), torch.exp(positive_part - shift)], dim=1)  # (B_g, 2)
        dist.all_reduce(sums)  # the one all-reduce of the step
        lse = shift + sums[:, 0].log()
        positive_lse = shift + sums[:, 1].log()
        direction = (torch.exp(lse_part - lse).to(gathered.dtype)[:, None] * expectation
                     - torch.exp(positive_part - positive_lse).to(gathered.dtype)[:, None] * positive_expectation)
        offset = sum(counts[: get_rank()])
        ctx.save_for_backward(direction)
        ctx.temperature, ctx.counts, ctx.offset = temperature, counts, offset
        return (lse - positive_lse)[offset : offset + features.shape[0]].to(features.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        (direction,) = ctx.saved_tensors
        counts: list[int] = ctx.counts
        upstream = all_gather_known(grad.contiguous(), counts)  # (B_g,)
        parts = direction * (upstream[:, None].to(direction.dtype) / ctx.temperature)  # (B_g, d)
        longest = max(counts)
        padded = parts.new_zeros(len(counts) * longest, parts.shape[1])
        offset = 0
        for rank, count in enumerate(counts):
            padded[rank * longest : rank * longest + count] = parts[offset : offset + count]
            offset += count
        mine = parts.new_empty(longest, parts.shape[1])
        dist.reduce_scatter_single(mine, padded)  # every query's parts summed on its own rank
        return mine[: grad.shape[0]].to(grad.dtype), None, None, None, None, None, None, None, None


def sharded_neighbourhood_loss(
    features: Tensor,
    indices: Tensor,
    bank: "ShardedMemoryBank",
    round_state: "RoundState | None" = None,
    temperature: float = 0.1,
    chunk_size: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Eq 7 of this rank's batch against a :class:`~and_plugin.sharded.bank.ShardedMemoryBank`.

    Collective: every rank calls it (and its backward) once per step and view. The result is
    the one :func:`~and_plugin.loss.neighbourhood_loss` gives against the whole bank.

    Args:
        features: This rank's L2-normalised features (B_r, d), requiring grad.
        indices: Their dataset indices (B_r,).
        bank: The sharded bank.
        round_state: The round's anchors and neighbours (all N rows, on every rank); None =
            instance loss.
        temperature: τ > 0.
        chunk_size: Stream each shard in chunks of this many rows (None: fused kernel first).
        reduction: "mean" (over this rank's queries), "sum" or "none".

    Returns:
        A scalar, or shape (B_r,) for "none".
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
    device = bank.bank.device
    gathered, counts = all_gather_rows(features.detach())
    gathered_indices = all_gather_known(indices.to(device), counts)
    # Every rank holds the same gathered indices, so all ranks raise together. An index no rank
    # owns would otherwise make the positive term −∞ (an infinite loss, NaN gradients).
    check_indices("indices", gathered_indices, bank.size)
    if round_state is None:
        positives = gathered_indices.view(-1, 1)
        mask = torch.ones_like(positives, dtype=torch.bool)
    else:
        if round_state.num_samples != bank.size:
            raise ValueError(f"round_state: it covers {round_state.num_samples} samples but the bank has "
                             f"{bank.size} rows")
        positives, mask = round_state.positives(gathered_indices)
    losses = _ShardedLoss.apply(features, gathered, positives.to(device), mask.to(device), bank.bank,
                                bank.partition.start, float(temperature), chunk_size, counts)
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


class ShardedNeighbourhoodLoss(NeighbourhoodLoss):
    """:class:`~and_plugin.loss.NeighbourhoodLoss` (Eq 7) against a sharded bank, exact.

    The same arguments and result as its parent; ``bank`` must be a
    :class:`~and_plugin.sharded.bank.ShardedMemoryBank`, and every rank calls it (and the
    backward pass) at the same step: see :func:`sharded_neighbourhood_loss`.
    :class:`~and_plugin.method.ANDMethod` uses it for ``method.bank_layout="sharded"``.
    """

    accepts_sharded = True

    def __init__(self, temperature: float = 0.1, chunk_size: int | None = None) -> None:
        check_positive("temperature", temperature)
        if temperature < MIN_TEMPERATURE:
            raise ValueError(f"temperature must be >= {MIN_TEMPERATURE} with a sharded bank (the shards' sums are "
                             f"combined in float64 after a shift of 1/τ), got {temperature!r}")
        super().__init__(temperature, chunk_size)

    def forward(
        self,
        features: Tensor,
        indices: Tensor,
        bank: "ShardedMemoryBank",  # type: ignore[override]
        round_state: "RoundState | None" = None,
        reduction: str = "mean",
    ) -> Tensor:
        if not getattr(bank, "sharded", False):
            raise ValueError(f"bank: ShardedNeighbourhoodLoss needs a ShardedMemoryBank, got {type(bank).__name__}; "
                             "use NeighbourhoodLoss with a whole bank")
        check_shape("features", features, (None, bank.dim))
        check_index_tensor("indices", indices)
        check_shape("indices", indices, (features.shape[0],))
        check_rows("features", features)  # unit and finite; no host sync on CUDA
        return sharded_neighbourhood_loss(features, indices, bank, round_state, self.temperature, self.chunk_size,
                                          reduction)


__all__ = ["MIN_TEMPERATURE", "ShardedNeighbourhoodLoss", "shard_softmax", "sharded_neighbourhood_loss"]
