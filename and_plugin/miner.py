"""``ANDMiner``: AND's anchor neighbourhoods as pytorch-metric-learning index tuples."""

from __future__ import annotations

from typing import Any

import torch
from pytorch_metric_learning.miners import BaseMiner
from torch import Tensor

from ._validation import check_choice, check_indices
from .curriculum import EntropyCurriculum, RoundState
from .registry import MINERS


@MINERS.register("and")
class ANDMiner(BaseMiner):
    """Turns the current round's anchor neighbourhoods into PML pair tuples ``(a1, p, a2, n)``.

    Call it the pytorch-metric-learning way, with the *dataset indices* as labels and the
    memory bank as the reference set::

        miner = ANDMiner(curriculum)
        pairs = miner(embeddings, indices, ref_emb=bank.bank, ref_labels=torch.arange(N))
        loss = pml_loss(embeddings, indices, pairs, ref_emb=bank.bank, ref_labels=torch.arange(N))

    For a query with dataset index i, the positives are the reference rows whose label is in
    P(i) = {i} ∪ N_k(i) when i is an anchor, {i} otherwise (the anchor itself is included, as
    in Eq 1); every other reference row is a negative (``negatives="all"``) or none is
    (``negatives="none"``, for losses that only need positive pairs).

    Args:
        curriculum: The curriculum whose current ``state`` is read at every call.
        round_state: A fixed :class:`RoundState` instead of a curriculum.
        include_self: Whether (i, row of i) is a positive pair; False leaves non-anchors without
            positives, so only the anchors' neighbour pairs remain.
        negatives: "all" or "none".
        **kwargs: Passed to PML's ``BaseMiner`` (e.g. ``distance``).

    Raises:
        ValueError: At call time, if no round has been discovered yet.
    """

    def __init__(
        self,
        curriculum: EntropyCurriculum | None = None,
        round_state: RoundState | None = None,
        include_self: bool = True,
        negatives: str = "all",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (curriculum is None) == (round_state is None):
            raise ValueError("ANDMiner needs exactly one of curriculum= or round_state=, got "
                             f"curriculum={curriculum!r}, round_state={round_state!r}")
        check_choice("negatives", negatives, ("all", "none"))
        self.curriculum = curriculum
        self.round_state = round_state
        self.include_self = include_self
        self.negatives = negatives

    def current_state(self) -> RoundState:
        """The neighbourhoods in use; raises if no round was discovered yet."""
        state = self.round_state if self.round_state is not None else self.curriculum.state  # type: ignore[union-attr]
        if state is None:
            raise ValueError(
                "round_state: no neighbourhood round has been discovered yet (got None); call "
                "curriculum.discover(bank, round) first — round 0 is pure instance learning"
            )
        return state

    def mine(self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor, ref_labels: Tensor) -> tuple[Tensor, ...]:
        """PML's mining step.

        Args:
            embeddings: Shape (B, d).
            labels: Dataset indices of the batch, shape (B,).
            ref_emb: Reference embeddings, shape (R, d) (the memory bank, or the batch itself).
            ref_labels: Dataset index of every reference row, shape (R,).

        Returns:
            ``(a1, p, a2, n)``: positive pairs (a1[m], p[m]) and negative pairs (a2[m], n[m]);
            a1/a2 index ``embeddings``, p/n index ``ref_emb``.
        """
        state = self.current_state()
        size = state.num_samples
        check_indices("labels", labels, size)
        check_indices("ref_labels", ref_labels, size)
        device = embeddings.device
        positives, mask = state.positives(labels)
        if not self.include_self:
            mask[:, 0] = False
        row_of = torch.full((size,), -1, dtype=torch.long, device=device)
        row_of[ref_labels.to(device)] = torch.arange(ref_labels.numel(), device=device)
        rows = row_of[positives.to(device)]
        mask = mask.to(device) & (rows >= 0)
        positive_matrix = torch.zeros(labels.numel(), ref_labels.numel(), dtype=torch.bool, device=device)
        query = torch.arange(labels.numel(), device=device).view(-1, 1).expand_as(rows)
        positive_matrix[query[mask], rows[mask]] = True
        a1, p = torch.nonzero(positive_matrix, as_tuple=True)
        if self.negatives == "all":
            a2, n = torch.nonzero(~positive_matrix, as_tuple=True)
        else:
            a2 = n = torch.empty(0, dtype=torch.long, device=device)
        return a1, p, a2, n

    def extra_repr(self) -> str:
        return f"include_self={self.include_self}, negatives={self.negatives!r}"
