"""The non-parametric neighbourhood loss of AND (Eq 2, 3 and 7 of the paper).

For a query feature x_i and the memory bank M (N x d):

    p_ij = exp(x_i · x̃_j / τ) / Σ_k exp(x_i · x̃_k / τ)                                  (Eq 2)
    L_i  = −log Σ_{j ∈ P(i)} p_ij = logsumexp_k(x_i·x̃_k/τ) − logsumexp_{j∈P(i)}(x_i·x̃_j/τ)

where P(i) = {i} for an instance (Eq 2) and {i} ∪ N_k(i) for an anchor (Eq 3); a batch averages
the anchors' and the instances' terms (Eq 7). Everything is computed in log space (never
``log(softmax(.))``), so any temperature is safe.

The readable code of each equation is here: :func:`reference_bank_logsumexp` (Eq 2's
normaliser) and :func:`neighbourhood_loss` (Eq 2/3/7). The normaliser's fast kernels (streamed,
fused attention) are in :mod:`and_plugin.kernels.bank_logsumexp`, dispatched from
:func:`bank_logsumexp` only.

Validation happens once, where a value enters: the constructor of :class:`NeighbourhoodLoss`
checks τ and ``chunk_size``; the public functions check their arguments; the per-step path
(``NeighbourhoodLoss.forward``) checks shapes and dtypes, which need no host sync, index ranges
inside the gathers themselves (:func:`and_plugin.kernels.gather.select_rows`), and that the
features are finite unit rows (``check_rows``: a device-side
assertion on CUDA, no host sync).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ._validation import check_int_at_least, check_positive, check_rows, check_shape
from .kernels.bank_logsumexp import fused_bank_logsumexp, streamed_bank_logsumexp
from .kernels.gather import check_index_tensor, select_rows
from .registry import LOSSES

if TYPE_CHECKING:
    from .curriculum import RoundState
    from .memory_bank import MemoryBank

REDUCTIONS = ("mean", "sum", "none")


def reference_bank_logsumexp(features: Tensor, bank: Tensor, temperature: float) -> Tensor:
    """Eq 2's normaliser written out: lse_i = log Σ_k exp(x_i · x̃_k / τ), from the (B, N) logits.

    The reference every kernel of :mod:`and_plugin.kernels.bank_logsumexp` is tested against;
    autograd gives d lse_i / d x_i = (1/τ) Σ_k p_ik x̃_k (and the bank's gradient, if it has one).

    Args:
        features: Queries x, shape (B, d).
        bank: Keys x̃, shape (N, d).
        temperature: τ > 0.

    Returns:
        Shape (B,).
    """
    logits = features @ bank.to(features.dtype).T / temperature  # (B, N)
    return torch.logsumexp(logits, dim=1)


def bank_logsumexp(features: Tensor, bank: Tensor, temperature: float, chunk_size: int | None = None) -> Tensor:
    """log Σ_k exp(x_i · x̃_k / τ) for every query: the log of the softmax denominator of Eq 2.

    Args:
        features: Queries x, shape (B, d).
        bank: Keys x̃, shape (N, d). Gets a gradient only when ``chunk_size`` is None and it
            requires grad (used to check Eq 9–11 with live keys).
        temperature: τ > 0.
        chunk_size: None (the default) uses a fused attention kernel (PyTorch's CPU flash
            attention, CUDA's memory-efficient attention) with the bank as keys and values: one
            pass gives the log-sum-exp and Σ_k p_ik x̃_k, the whole gradient, so no (B, N) tensor
            exists and nothing is recomputed in backward; where no such kernel applies (a bank
            that requires grad, other devices) it computes the (B, N) logits at once
            (:func:`reference_bank_logsumexp`). An int streams over the bank in chunks so forward
            and backward hold O(B x chunk_size) memory.

    Returns:
        Shape (B,).
    """
    check_positive("temperature", temperature)
    check_shape("features", features, (None, None))
    check_shape("bank", bank, (None, features.shape[1]))
    if chunk_size is not None:
        check_int_at_least("chunk_size", chunk_size, 1)
    return _bank_logsumexp(features, bank, temperature, chunk_size)


def _bank_logsumexp(features: Tensor, bank: Tensor, temperature: float, chunk_size: int | None) -> Tensor:
    """The one dispatch between the reference and the kernels of Eq 2's normaliser (unchecked)."""
    if chunk_size is not None:
        return streamed_bank_logsumexp(features, bank, temperature, chunk_size)
    keys = bank.to(features.dtype)
    if not bank.requires_grad:
        fused = fused_bank_logsumexp(features, keys, temperature, reference_bank_logsumexp)
        if fused is not None:
            return fused
    return reference_bank_logsumexp(features, keys, temperature)


def neighbourhood_loss(
    features: Tensor,
    bank: Tensor,
    positives: Tensor,
    positive_mask: Tensor | None = None,
    temperature: float = 0.1,
    chunk_size: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Eq 7: −log Σ_{j∈P(i)} p_ij for every query, with the softmax over the whole bank.

    Args:
        features: Queries x_i (L2-normalised), shape (B, d).
        bank: Memory bank x̃, shape (N, d).
        positives: Bank indices of each query's positive set P(i), shape (B, P). Column 0 is
            normally the query's own index.
        positive_mask: Which entries of ``positives`` count, shape (B, P), bool; all by default.
            Each row needs at least one True.
        temperature: τ > 0.
        chunk_size: See :func:`bank_logsumexp`.
        reduction: "mean" (Eq 7 divided by the batch size, as in the reference), "sum" or "none".

    Returns:
        A scalar, or shape (B,) for ``reduction="none"``.
    """
    check_positive("temperature", temperature)
    check_shape("features", features, (None, None))
    check_shape("bank", bank, (None, features.shape[1]))
    check_shape("positives", positives, (features.shape[0], None))
    check_rows("features", features)
    if chunk_size is not None:
        check_int_at_least("chunk_size", chunk_size, 1)
    if positive_mask is None:
        positive_mask = torch.ones_like(positives, dtype=torch.bool)
    check_shape("positive_mask", positive_mask, tuple(positives.shape))
    if not bool(positive_mask.any(dim=1).all()):
        raise ValueError("positive_mask: every query needs at least one positive")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
    return _neighbourhood_loss(features, bank, positives, positive_mask, temperature, chunk_size, reduction)


def _neighbourhood_loss(
    features: Tensor,
    bank: Tensor,
    positives: Tensor,
    positive_mask: Tensor,
    temperature: float,
    chunk_size: int | None,
    reduction: str,
    positives_name: str = "positives",
) -> Tensor:
    """:func:`neighbourhood_loss` on validated arguments: Eq 7 in log space, no host sync."""
    batch, width = positives.shape
    flat = positives.reshape(-1).to(bank.device)
    positive_keys = select_rows(positives_name, bank, flat).view(batch, width, -1).to(features.dtype)  # (B, P, d)
    positive_logits = torch.einsum("bd,bpd->bp", features, positive_keys) / temperature
    positive_logits = positive_logits.masked_fill(~positive_mask.to(features.device), float("-inf"))
    # L_i = logsumexp_k(x_i·x̃_k/τ) − logsumexp_{j∈P(i)}(x_i·x̃_j/τ) = −log Σ_{j∈P(i)} p_ij  (Eq 2, 3)
    losses = _bank_logsumexp(features, bank, temperature, chunk_size) - torch.logsumexp(positive_logits, dim=1)
    if reduction == "mean":  # Eq 7 over the batch size, as the reference code does
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


@LOSSES.register("and")
class NeighbourhoodLoss(nn.Module):
    """AND's objective (Eq 7): anchors use the neighbourhood term, all others the instance term.

    Args:
        temperature: τ > 0 (0.1 for CIFAR/SVHN in the reference, 0.07 for ImageNet).
        chunk_size: None, or stream the bank in chunks of this many rows (O(B x chunk) memory).

    Example:
        >>> import torch
        >>> from and_plugin import MemoryBank, NeighbourhoodLoss
        >>> bank = MemoryBank(size=100, dim=8)
        >>> feats = torch.nn.functional.normalize(torch.randn(4, 8), dim=1).requires_grad_()
        >>> idx = torch.tensor([0, 5, 9, 42])
        >>> loss = NeighbourhoodLoss(temperature=0.1)(feats, idx, bank)  # round 0: instance loss
        >>> loss.backward()
        >>> bank.update(idx, feats)
    """

    #: Whether ``forward`` handles a :class:`~and_plugin.sharded.bank.ShardedMemoryBank` (its subclass does).
    accepts_sharded = False

    def __init__(self, temperature: float = 0.1, chunk_size: int | None = None) -> None:
        super().__init__()
        check_positive("temperature", temperature)
        if chunk_size is not None:
            check_int_at_least("chunk_size", chunk_size, 1)
        self.temperature = float(temperature)
        self.chunk_size = chunk_size

    def forward(
        self,
        features: Tensor,
        indices: Tensor,
        bank: "MemoryBank | Tensor",
        round_state: "RoundState | None" = None,
        reduction: str = "mean",
    ) -> Tensor:
        """Computes the loss of one batch. Call ``bank.update(indices, features)`` afterwards.

        Args:
            features: L2-normalised batch features, shape (B, d).
            indices: Dataset indices of the batch, shape (B,).
            bank: The memory bank (N, d), as a :class:`MemoryBank` or a tensor.
            round_state: The current round's anchors and neighbours; None = instance loss only.
            reduction: "mean", "sum" or "none".

        Returns:
            A scalar, or shape (B,) for ``reduction="none"``.

        Raises:
            ValueError: For a bad shape or dtype; on the CPU also for an index outside [0, N) or
                features that are not finite unit rows (on CUDA the gather and a device-side
                assertion refuse them: the checks cost no host sync).
        """
        keys = bank.bank if hasattr(bank, "bank") else bank
        check_shape("features", features, (None, None))
        check_shape("bank", keys, (None, features.shape[1]))
        check_index_tensor("indices", indices)
        if getattr(bank, "sharded", False) and not self.accepts_sharded:
            # Against this rank's rows alone the softmax would miss the other ranks' rows: a wrong loss.
            raise ValueError("bank: a ShardedMemoryBank holds this rank's rows only; use "
                             "and_plugin.sharded.ShardedNeighbourhoodLoss (ANDMethod picks it for "
                             "method.bank_layout='sharded')")
        check_shape("indices", indices, (features.shape[0],))
        check_rows("features", features)  # unit and finite; no host sync on CUDA
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
        if round_state is None:
            positives = indices.view(-1, 1)
            mask = torch.ones_like(positives, dtype=torch.bool)
        else:
            if round_state.num_samples != keys.shape[0]:
                raise ValueError(
                    f"round_state: it covers {round_state.num_samples} samples but the bank has {keys.shape[0]} rows"
                )
            positives, mask = round_state.positives(indices)  # column 0 = the sample itself: never empty
        return _neighbourhood_loss(
            features, keys, positives, mask, self.temperature, self.chunk_size, reduction, positives_name="indices"
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, chunk_size={self.chunk_size}"
