"""``ANDLoss``: AND's objective (Eq 7) as a pytorch-metric-learning loss function.

It takes PML's call ``loss(embeddings, labels, indices_tuple=None, ref_emb=None,
ref_labels=None)`` with the batch's **dataset indices** as labels, returns per-sample losses to
PML's reducer, and can own the memory bank, writing Eq 8 itself the way ``CrossBatchMemory``
owns its queue. The math is :func:`and_plugin.loss.neighbourhood_loss`'s; this module only
decides, per PML calling mode, what the keys and the positive sets are.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.losses import BaseMetricLossFunction, CrossBatchMemory
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from torch import Tensor

from ._validation import check_indices, check_int_at_least, check_positive, check_rows
from .curriculum import EntropyCurriculum, RoundState
from .loss import neighbourhood_loss
from .memory_bank import MemoryBank
from .miner import check_mining_inputs, positive_sets, related_rows
from .registry import LOSSES


class _WriteBankInBackward(torch.autograd.Function):
    """Identity on the features whose backward pass writes them into the bank (Eq 8).

    As in the reference implementation, the memory is updated in the backward pass: by then
    every use of the old bank in the loss's own backward is done, so the write is safe.
    """

    @staticmethod
    def forward(ctx: Any, features: Tensor, indices: Tensor, bank: MemoryBank) -> Tensor:  # type: ignore[override]
        ctx.written = (indices, features.detach(), bank)
        return features.view_as(features)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        indices, features, bank = ctx.written
        bank.update(indices, F.normalize(features.float(), dim=1))  # PML embeddings may have any length
        return grad, None, None


@LOSSES.register("and_pml")
class ANDLoss(BaseMetricLossFunction):
    """Eq 7 of AND, −log Σ_{j∈P(i)} p_ij with the softmax over a reference set, as a PML loss.

    P(i) = {i} ∪ N_k(i) for an anchor of the current round, {i} otherwise (and {i} for all
    before the first discovered round). The reference set, by calling mode:

    - ``loss(emb, idx)`` with a ``memory_bank``: the bank (Eq 7 exactly, as
      :class:`~and_plugin.loss.NeighbourhoodLoss`: no (B, N) tensor, O(B·d) extra memory);
      the batch is written into the bank by Eq 8 during ``backward()`` unless
      ``update_bank=False``.
    - ``loss(emb, idx, ref_emb=bank, ref_labels=torch.arange(N))``: the same, with your bank
      (never written).
    - ``loss(emb, idx, ref_emb=R, ref_labels=L)`` for any other reference (a queue with
      repeated labels, a permuted or partial set): every row whose label is in P(i) is a
      positive, the softmax runs over all R rows; a (B, R) logit matrix.
    - ``loss(emb, idx)`` without a bank: the batch is its own reference (two views of an image
      are each other's positives), an embedding is never compared with itself; (B, B).
    - with an ``indices_tuple`` (a miner's pairs, or ``CrossBatchMemory``'s): P(i) is query
      i's positive pairs and the softmax runs over its positive and negative pairs only.

    Queries without a single positive are left out. The losses go to PML's reducer with
    reduction type "element" (``MeanReducer`` by default: Eq 7 divided by the batch size).
    Embeddings are L2-normalised (the ``CosineSimilarity`` distance, the only one allowed), and
    so are the rows of any reference except a memory bank's (``ref_labels = arange(N)``), whose
    rows Eq 8 keeps at unit length.

    Args:
        temperature: τ > 0.
        curriculum: The curriculum whose current state gives P(i) at every call.
        round_state: A fixed :class:`~and_plugin.curriculum.RoundState` instead (at most one).
        memory_bank: A :class:`~and_plugin.memory_bank.MemoryBank` the loss owns (a submodule:
            it moves with ``.to()`` and is saved in ``state_dict``), used when no ``ref_emb``
            is given.
        update_bank: Write Eq 8 into ``memory_bank`` during ``backward()``.
        chunk_size: With the bank as reference, stream it in chunks of this many rows
            (see :func:`~and_plugin.loss.bank_logsumexp`).
        **kwargs: Passed to PML's ``BaseMetricLossFunction`` (``reducer``,
            ``embedding_regularizer``, ...).

    Example:
        >>> import torch
        >>> from and_plugin import ANDLoss, EntropyCurriculum, MemoryBank
        >>> curriculum = EntropyCurriculum(rounds=2)
        >>> loss_fn = ANDLoss(0.1, curriculum, memory_bank=MemoryBank(100, 8))
        >>> emb = torch.nn.functional.normalize(torch.randn(4, 8), dim=1).requires_grad_()
        >>> loss_fn(emb, torch.tensor([0, 5, 9, 42])).backward()  # round 0; bank written
        >>> state = loss_fn.discover(round=1)  # neighbourhoods of the owned bank
    """

    def __init__(
        self,
        temperature: float = 0.1,
        curriculum: EntropyCurriculum | None = None,
        round_state: RoundState | None = None,
        memory_bank: MemoryBank | None = None,
        update_bank: bool = True,
        chunk_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_positive("temperature", temperature)
        if curriculum is not None and round_state is not None:
            raise ValueError("ANDLoss takes at most one of curriculum= or round_state=, got both")
        if memory_bank is not None and not isinstance(memory_bank, MemoryBank):
            raise ValueError(f"memory_bank must be a MemoryBank or None, got {type(memory_bank).__name__}")
        if chunk_size is not None:
            check_int_at_least("chunk_size", chunk_size, 1)
        c_f.assert_distance_type(self, CosineSimilarity)
        self.temperature = float(temperature)
        self.curriculum = curriculum
        self.round_state = round_state
        self.memory_bank = memory_bank
        self.update_bank = bool(update_bank)
        self.chunk_size = chunk_size
        self.add_to_recordable_attributes(list_of_names=["temperature"], is_stat=False)

    def get_default_distance(self) -> CosineSimilarity:
        return CosineSimilarity()

    def current_state(self) -> RoundState | None:
        """The neighbourhoods in use; None before the first discovered round (P(i) = {i})."""
        if self.round_state is not None:
            return self.round_state
        return None if self.curriculum is None else self.curriculum.state

    def discover(self, round: int, labels: Tensor | None = None) -> RoundState:
        """Runs the curriculum's neighbourhood discovery on the owned bank (start of round r ≥ 1)."""
        if self.curriculum is None or self.memory_bank is None:
            raise ValueError("discover: needs both curriculum= and memory_bank=; call curriculum.discover(bank, r)")
        return self.curriculum.discover(self.memory_bank, round, labels=labels)

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        indices_tuple: tuple[Tensor, ...] | None = None,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        """PML's loss call; ``labels`` are the batch's dataset indices (required)."""
        if labels is None:
            raise ValueError("labels: ANDLoss needs the batch's dataset indices as labels, got None")
        check_mining_inputs(embeddings, labels, ref_emb, ref_labels, self.current_state())
        check_rows("embeddings", embeddings, unit=False)  # any length (normalised below), never NaN
        if ref_emb is None and self.memory_bank is not None:
            check_indices("labels", labels, self.memory_bank.size)
            labels = labels.long()
            if self.update_bank and torch.is_grad_enabled() and embeddings.requires_grad:
                embeddings = _WriteBankInBackward.apply(embeddings, labels, self.memory_bank)
            bank = self.memory_bank.bank
            ref_emb, ref_labels = bank, torch.arange(bank.shape[0], device=bank.device)
        return super().forward(embeddings, labels, indices_tuple, ref_emb, ref_labels)

    def compute_loss(
        self, embeddings: Tensor, labels: Tensor, indices_tuple: Any, ref_emb: Tensor, ref_labels: Tensor
    ) -> dict[str, Any]:
        self_reference = ref_labels is labels  # PML's test: the batch is its own reference
        queries = self.distance.normalize(embeddings) if self.distance.normalize_embeddings else embeddings
        keys = ref_emb.to(queries.dtype)
        if not self_reference and ref_emb is not embeddings:
            keys = keys.detach()
        state = self.current_state()
        if indices_tuple is None and not self_reference and _is_arange(ref_labels) and int(labels.max()) < len(keys):
            # The memory bank's layout: its rows are unit vectors already (Eq 8 normalises them).
            members, mask = positive_sets(state, labels.to(keys.device))
            losses = neighbourhood_loss(queries, keys, members, mask, self.temperature, self.chunk_size, "none")
            return self._element_losses(losses, torch.arange(len(losses), device=losses.device))
        if self.distance.normalize_embeddings:
            keys = F.normalize(keys, dim=1)
        if indices_tuple is not None:
            positive, allowed = self._pair_masks(indices_tuple, labels, ref_labels, embeddings.shape[0], keys.shape[0])
        else:
            members, mask = positive_sets(state, labels)
            query, rows, _ = related_rows(members, mask, ref_labels)
            positive = torch.zeros(embeddings.shape[0], keys.shape[0], dtype=torch.bool, device=keys.device)
            positive[query, rows] = True
            allowed = torch.ones_like(positive)
            if self_reference:
                positive.fill_diagonal_(False)
                allowed.fill_diagonal_(False)
        logits = queries @ keys.T / self.temperature
        has_positive = positive.any(dim=1)
        if not bool(has_positive.any()):
            return self.zero_losses()
        logits, positive, allowed = logits[has_positive], positive[has_positive], allowed[has_positive]
        neg_inf = torch.finfo(logits.dtype).min
        losses = torch.logsumexp(logits.masked_fill(~allowed, neg_inf), dim=1) - torch.logsumexp(
            logits.masked_fill(~positive, neg_inf), dim=1
        )
        return self._element_losses(losses, torch.nonzero(has_positive).flatten())

    def _pair_masks(
        self, indices_tuple: tuple[Tensor, ...], labels: Tensor, ref_labels: Tensor, batch: int, size: int
    ) -> tuple[Tensor, Tensor]:
        """(B, R) masks of a PML tuple: positive pairs, and positive-or-negative pairs."""
        a1, p, a2, n = lmu.convert_to_pairs(indices_tuple, labels, ref_labels)
        device = labels.device
        positive = torch.zeros(batch, size, dtype=torch.bool, device=device)
        positive[a1.to(device), p.to(device)] = True
        allowed = positive.clone()
        allowed[a2.to(device), n.to(device)] = True
        return positive, allowed

    def _element_losses(self, losses: Tensor, indices: Tensor) -> dict[str, Any]:
        return {"loss": {"losses": losses, "indices": indices, "reduction_type": "element"}}

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, update_bank={self.update_bank}, chunk_size={self.chunk_size}"


def _is_arange(labels: Tensor) -> bool:
    """Whether row j of the reference holds sample j (the memory bank's layout)."""
    return bool(torch.equal(labels, torch.arange(labels.numel(), device=labels.device, dtype=labels.dtype)))


class ANDCrossBatchMemory(CrossBatchMemory):
    """PML's ``CrossBatchMemory`` that also accepts :class:`ANDLoss` (PML keeps a list of losses).

    The queue holds past embeddings with their dataset indices as labels, so several copies of
    a sample can be in it; with ``miner=ANDMiner(...)`` every copy of a member of P(i) is a
    positive, and the wrapper removes each query's own, just-enqueued copy, as it does for any
    loss. Arguments are ``CrossBatchMemory``'s.
    """

    @staticmethod
    def supported_losses() -> list[str]:
        return CrossBatchMemory.supported_losses() + ["ANDLoss"]
