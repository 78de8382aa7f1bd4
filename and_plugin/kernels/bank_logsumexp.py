"""Fast kernels of Eq 2's normaliser lse_i = log Σ_k exp(x_i · x̃_k / τ) over the whole bank.

The reference is :func:`and_plugin.loss.reference_bank_logsumexp` (the (B, N) logits at once);
:func:`and_plugin.loss.bank_logsumexp` dispatches to these:

- :func:`streamed_bank_logsumexp`: the bank in chunks, forward and backward in O(B x chunk)
  memory (backward recomputes each chunk's softmax).
- :func:`fused_bank_logsumexp`: one fused attention kernel with the bank as keys and values
  (PyTorch's CPU flash attention, CUDA's memory-efficient attention): its log-sum-exp output is
  lse_i and its attention output is Σ_k p_ik x̃_k, the whole gradient up to 1/τ. The kernels
  are private PyTorch ops, so the first call per (device type, dtype) is compared with the
  reference, and on a mismatch the fused path is switched off there (with a warning).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from torch import Tensor

#: (device type, dtype) -> whether the fused kernel agreed with the reference there.
FUSED_CHECKED: dict[tuple[str, torch.dtype], bool] = {}
#: The first check compares at most this many queries against at most this many bank rows.
CHECK_QUERIES, CHECK_KEYS = 64, 16384


class _StreamingLogSumExp(torch.autograd.Function):
    """logsumexp_k(x · M_k / τ) over the bank in chunks, keeping O(B x chunk) memory.

    Backward recomputes each chunk's softmax instead of storing the B x N logits:
    d lse_i / d x_i = (1/τ) Σ_k p_ik M_k. The bank receives no gradient.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, bank: Tensor, temperature: float, chunk_size: int) -> Tensor:  # type: ignore[override]
        # The running sums are float64: accumulated in x's dtype over N / chunk_size chunks their
        # rounding error grows with the number of chunks (1e-4 at 1,000 chunks in float32).
        # They are (B,) and (B, d); the matmuls stay in x's dtype.
        running = x.new_full((x.shape[0],), float("-inf"), dtype=torch.float64)
        for start in range(0, bank.shape[0], chunk_size):
            chunk = bank[start : start + chunk_size].to(x.dtype)
            running = torch.logaddexp(running, torch.logsumexp(x @ chunk.T / temperature, dim=1).double())
        lse = running.to(x.dtype)
        ctx.save_for_backward(x, bank, lse)
        ctx.temperature = temperature
        ctx.chunk_size = chunk_size
        return lse

    @staticmethod
    def backward(ctx: Any, grad_lse: Tensor) -> tuple[Tensor | None, None, None, None]:  # type: ignore[override]
        x, bank, lse = ctx.saved_tensors
        temperature, chunk_size = ctx.temperature, ctx.chunk_size
        expected = torch.zeros_like(x, dtype=torch.float64)
        for start in range(0, bank.shape[0], chunk_size):
            chunk = bank[start : start + chunk_size].to(x.dtype)
            probs = torch.exp(x @ chunk.T / temperature - lse[:, None])
            expected += probs @ chunk
        return (expected * (grad_lse[:, None] / temperature)).to(x.dtype), None, None, None


def streamed_bank_logsumexp(features: Tensor, bank: Tensor, temperature: float, chunk_size: int) -> Tensor:
    """lse of Eq 2, shape (B,), streaming over ``bank`` (N, d) in chunks of ``chunk_size`` rows."""
    return _StreamingLogSumExp.apply(features, bank, temperature, chunk_size)


def fused_attention(features: Tensor, keys: Tensor, scale: float) -> tuple[Tensor, Tensor] | None:
    """``(lse, expected)`` of shapes (B,), (B, d) from one fused attention kernel, or None.

    None where no kernel applies: mixed dtypes, both inputs requiring grad, other devices or
    dtypes, or (CUDA) a feature size that is not a multiple of 8.
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
            except RuntimeError:  # pragma: no cover - no kernel for this GPU/shape: use the reference
                return None
        else:
            return None
    batch = features.shape[0]
    return lse.reshape(-1)[:batch].to(features.dtype), out.reshape(batch, -1)


Reference = Callable[[Tensor, Tensor, float], Tensor]


def checked_fused_attention(
    features: Tensor, keys: Tensor, temperature: float, reference: Reference
) -> tuple[Tensor, Tensor] | None:
    """:func:`fused_attention`, verified once per (device type, dtype) against ``reference``.

    The check compares lse with ``reference(features, keys, temperature)`` and the attention
    output with τ times the reference's autograd gradient (= Σ_k p_ik x̃_k), on the first
    :data:`CHECK_QUERIES` queries against the first :data:`CHECK_KEYS` rows.
    """
    kind = (features.device.type, features.dtype)
    if FUSED_CHECKED.get(kind) is False:
        return None
    try:
        fused = fused_attention(features, keys, 1.0 / temperature)
    except (RuntimeError, TypeError) as error:  # op missing or signature changed in this release
        warnings.warn(f"fused bank log-sum-exp unavailable on {kind} ({error}); using the plain path")
        FUSED_CHECKED[kind] = False
        return None
    if fused is None or kind in FUSED_CHECKED:
        return fused
    # Checked on a slice: the kernel's correctness does not depend on N, while the reference's
    # (B, N) logits and their gradient would take several times the bank's memory at millions of rows.
    queries, some_keys = features[:CHECK_QUERIES], keys[:CHECK_KEYS]
    whole = queries.shape[0] == features.shape[0] and some_keys.shape[0] == keys.shape[0]
    sample = fused if whole else fused_attention(queries, some_keys, 1.0 / temperature)
    if sample is None:
        return None
    with torch.enable_grad(), torch.autocast(features.device.type, enabled=False):
        x = queries.detach().float().requires_grad_()
        lse = reference(x, some_keys.detach().float(), temperature)
        (gradient,) = torch.autograd.grad(lse.sum(), x)
    expected = gradient * temperature
    tolerance = 1e-3 if features.dtype in (torch.float32, torch.float64) else 5e-2
    ok = torch.allclose(sample[0].float(), lse.detach(), rtol=tolerance, atol=tolerance) and torch.allclose(
        sample[1].float(), expected, rtol=tolerance, atol=tolerance
    )
    FUSED_CHECKED[kind] = ok
    if not ok:
        warnings.warn(f"fused bank log-sum-exp disagrees with the plain path on {kind}; using the plain path")
        return None
    return fused


class _FusedBankLogSumExp(torch.autograd.Function):
    """lse and its gradient (1/τ) Σ_k p_ik M_k, precomputed by the fused kernel.

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


def fused_bank_logsumexp(features: Tensor, keys: Tensor, temperature: float, reference: Reference) -> Tensor | None:
    """lse of Eq 2, shape (B,), from one fused kernel; None where no (verified) kernel applies.

    Args:
        features: Queries, shape (B, d).
        keys: The bank in ``features``' dtype, shape (N, d); must not require grad.
        temperature: τ > 0.
        reference: The plain computation the kernel is verified against once per device/dtype.
    """
    fused = checked_fused_attention(features, keys, temperature, reference)
    if fused is None:
        return None
    return _FusedBankLogSumExp.apply(features, fused[0], fused[1], temperature)
