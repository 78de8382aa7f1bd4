"""The non-parametric neighbourhood loss of AND (Eq 2, 3 and 7 of the paper).

For a query feature x_i and the memory bank M (N x d):

    p_ij = exp(x_i · x̃_j / τ) / Σ_k exp(x_i · x̃_k / τ)
    L_i  = −log Σ_{j ∈ P(i)} p_ij = logsumexp_k(x_i·x̃_k/τ) − logsumexp_{j∈P(i)}(x_i·x̃_j/τ)

where P(i) = {i} for an instance (Eq 2) and {i} ∪ N_k(i) for an anchor (Eq 3). Everything is
computed in log space (never ``log(softmax(.))``), so any temperature is safe.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ._validation import check_indices, check_int_at_least, check_positive, check_shape
from .registry import LOSSES

if TYPE_CHECKING:
    from .curriculum import RoundState
    from .memory_bank import MemoryBank


class _StreamingLogSumExp(torch.autograd.Function):
    """logsumexp_k(x · M_k / τ) over the bank in chunks, keeping O(B x chunk) memory.

    Backward recomputes each chunk's softmax instead of storing the B x N logits:
    d lse_i / d x_i = (1/τ) Σ_k p_ik M_k. The bank receives no gradient.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, bank: Tensor, temperature: float, chunk_size: int) -> Tensor:  # type: ignore[override]
        lse = x.new_full((x.shape[0],), float("-inf"))
        for start in range(0, bank.shape[0], chunk_size):
            chunk = bank[start : start + chunk_size].to(x.dtype)
            lse = torch.logaddexp(lse, torch.logsumexp(x @ chunk.T / temperature, dim=1))
        ctx.save_for_backward(x, bank, lse)
        ctx.temperature = temperature
        ctx.chunk_size = chunk_size
        return lse

    @staticmethod
    def backward(ctx: Any, grad_lse: Tensor) -> tuple[Tensor | None, None, None, None]:  # type: ignore[override]
        x, bank, lse = ctx.saved_tensors
        temperature, chunk_size = ctx.temperature, ctx.chunk_size
        expected = torch.zeros_like(x)
        for start in range(0, bank.shape[0], chunk_size):
            chunk = bank[start : start + chunk_size].to(x.dtype)
            probs = torch.exp(x @ chunk.T / temperature - lse[:, None])
            expected.addmm_(probs, chunk)
        return expected * (grad_lse[:, None] / temperature), None, None, None


def _fused_attention(features: Tensor, keys: Tensor, scale: float) -> tuple[Tensor, Tensor] | None:
    """``(lse, expected)`` from one fused attention kernel, or None where none applies.

    With the bank as keys and values, attention computes exactly what the loss needs:
    lse_i = log Σ_k exp(s·x_i·M_k) (the kernel's log-sum-exp) and Σ_k p_ik M_k (its output, the
    gradient of lse_i up to 1/τ), streaming over the bank without a B x N tensor.
    """
    if features.dtype != keys.dtype or features.requires_grad and keys.requires_grad:
        return None
    q = features.detach()[None, None]
    k = keys.detach()[None, None]
    device = features.device.type
    with torch.autocast(device, enabled=False):
        if device == "cpu" and features.dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, k, 0.0, False, scale=scale)
        elif device == "cuda" and features.dtype in (torch.float32, torch.bfloat16, torch.float16) and keys.shape[1] % 8 == 0:
            try:
                out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, k, None, True, 0.0, False,
                                                                                  scale=scale)[:2]
            except RuntimeError:  # pragma: no cover - no kernel for this GPU/shape: use the plain path
                return None
        else:
            return None
    batch = features.shape[0]
    return lse.reshape(-1)[:batch].to(features.dtype), out.reshape(batch, -1)


# (device type, dtype) -> whether the fused kernel agreed with the plain computation there.
_FUSED_CHECKED: dict[tuple[str, torch.dtype], bool] = {}


def _checked_fused_attention(features: Tensor, keys: Tensor, temperature: float) -> tuple[Tensor, Tensor] | None:
    """:func:`_fused_attention`, verified once per (device type, dtype) against the plain path.

    The kernels are private PyTorch ops whose outputs' layout could change between releases; on
    the first call of each kind the result is compared with logsumexp/softmax of the plain
    logits, and on a mismatch the fused path is switched off there (with a warning).
    """
    kind = (features.device.type, features.dtype)
    if _FUSED_CHECKED.get(kind) is False:
        return None
    try:
        fused = _fused_attention(features, keys, 1.0 / temperature)
    except (RuntimeError, TypeError) as error:  # op missing or signature changed in this release
        warnings.warn(f"fused bank log-sum-exp unavailable on {kind} ({error}); using the plain path")
        _FUSED_CHECKED[kind] = False
        return None
    if fused is None or kind in _FUSED_CHECKED:
        return fused
    with torch.no_grad():
        logits = features.detach().float() @ keys.float().T / temperature
        lse = torch.logsumexp(logits, dim=1)
        expected = torch.softmax(logits, dim=1) @ keys.float()
        tolerance = 1e-3 if features.dtype == torch.float32 or features.dtype == torch.float64 else 5e-2
        ok = torch.allclose(fused[0].float(), lse, rtol=tolerance, atol=tolerance) and torch.allclose(
            fused[1].float(), expected, rtol=tolerance, atol=tolerance
        )
    _FUSED_CHECKED[kind] = ok
    if not ok:
        warnings.warn(f"fused bank log-sum-exp disagrees with the plain path on {kind}; using the plain path")
        return None
    return fused


class _FusedBankLogSumExp(torch.autograd.Function):
    """logsumexp_k(x · M_k / τ) and its gradient (1/τ) Σ_k p_ik M_k from one fused kernel.

    The forward pass saves only the (B, d) expectation; no B x N tensor exists at any time.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, lse: Tensor, expected: Tensor, temperature: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(expected)
        ctx.temperature = temperature
        return lse.clone()

    @staticmethod
    def backward(ctx: Any, grad_lse: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        (expected,) = ctx.saved_tensors
        return expected * (grad_lse[:, None] / ctx.temperature), None, None, None


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
            that requires grad, other devices) it computes the (B, N) logits at once. An int
            streams over the bank in chunks so forward and backward hold O(B x chunk_size) memory.

    Returns:
        Shape (B,).
    """
    if chunk_size is None:
        keys = bank.to(features.dtype)
        fused = None if bank.requires_grad else _checked_fused_attention(features, keys, temperature)
        if fused is not None:
            return _FusedBankLogSumExp.apply(features, fused[0], fused[1], temperature)
        return torch.logsumexp(features @ keys.T / temperature, dim=1)
    return _StreamingLogSumExp.apply(features, bank, temperature, chunk_size)


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
    if positive_mask is None:
        positive_mask = torch.ones_like(positives, dtype=torch.bool)
    check_shape("positive_mask", positive_mask, tuple(positives.shape))
    if not bool(positive_mask.any(dim=1).all()):
        raise ValueError("positive_mask: every query needs at least one positive")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be one of ['mean', 'sum', 'none'], got {reduction!r}")
    positives = positives.to(bank.device)
    positive_keys = bank[positives].to(features.dtype)  # (B, P, d)
    positive_logits = torch.einsum("bd,bpd->bp", features, positive_keys) / temperature
    positive_logits = positive_logits.masked_fill(~positive_mask.to(features.device), float("-inf"))
    losses = bank_logsumexp(features, bank, temperature, chunk_size) - torch.logsumexp(positive_logits, dim=1)
    if reduction == "mean":
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
        """
        keys = bank.bank if hasattr(bank, "bank") else bank
        check_shape("indices", indices, (features.shape[0],))
        check_indices("indices", indices, keys.shape[0])
        if round_state is None:
            positives = indices.view(-1, 1)
            mask = None
        else:
            positives, mask = round_state.positives(indices)
        return neighbourhood_loss(features, keys, positives, mask, self.temperature, self.chunk_size, reduction)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, chunk_size={self.chunk_size}"
