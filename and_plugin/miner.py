"""``ANDMiner``: AND's anchor neighbourhoods as pytorch-metric-learning index tuples."""

from __future__ import annotations

from typing import Any

import torch
from pytorch_metric_learning.miners import BaseMiner
from torch import Tensor

from ._validation import check_choice, check_int_at_least
from .curriculum import EntropyCurriculum, RoundState
from .registry import MINERS

NEGATIVES = ("sampled", "hardest", "all", "none")
#: Rows of the reference set compared at once by ``negatives="hardest"``.
_HARDEST_CHUNK = 8192


def positive_sets(state: RoundState | None, labels: Tensor) -> tuple[Tensor, Tensor]:
    """P(i) of every query as labels: ``{i} ∪ N_k(i)`` for anchors, ``{i}`` otherwise.

    Args:
        state: The round's neighbourhoods; None (round 0) gives P(i) = {i} for everyone.
        labels: Dataset indices of the batch, shape (B,).

    Returns:
        ``(members, mask)``, both shape (B, 1 + k) (``(B, 1)`` without a state): column 0 is
        the sample itself, the other columns its neighbours, masked out for non-anchors.
    """
    if state is None:
        return labels.view(-1, 1), torch.ones(labels.numel(), 1, dtype=torch.bool, device=labels.device)
    members, mask = state.positives(labels)
    return members.to(labels.device), mask.to(labels.device)


def related_rows(members: Tensor, mask: Tensor, ref_labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Every (query, reference row) whose row label is in the query's P(i), without a (B, R) matrix.

    The reference labels are sorted once; each member label's rows are a range found by binary
    search, so repeated labels (queue copies, two views) all match.

    Args:
        members: Labels of P(i), shape (B, P).
        mask: Which members count, shape (B, P).
        ref_labels: Label of every reference row, shape (R,).

    Returns:
        ``(query, row, is_self)``, each shape (M,): ``is_self`` is True where the row's label is
        the query's own label (column 0 of ``members``).
    """
    sorted_labels, order = torch.sort(ref_labels)
    low = torch.searchsorted(sorted_labels, members.contiguous())
    high = torch.searchsorted(sorted_labels, members.contiguous(), right=True)
    counts = ((high - low) * mask).flatten()
    total = int(counts.sum())
    device = ref_labels.device
    if total == 0:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return empty, empty, torch.empty(0, dtype=torch.bool, device=device)
    width = members.shape[1]
    slot = torch.arange(members.numel(), device=device)
    slot = torch.repeat_interleave(slot, counts)
    starts = torch.cumsum(counts, 0) - counts
    offset = torch.arange(total, device=device) - starts[slot]
    rows = order[low.flatten()[slot] + offset]
    return slot // width, rows, slot % width == 0


@MINERS.register("and")
class ANDMiner(BaseMiner):
    """Turns the current round's anchor neighbourhoods into PML pair tuples ``(a1, p, a2, n)``.

    The labels are the batch's **dataset indices**. For a query with index i the positive set is
    P(i) = {i} ∪ N_k(i) for an anchor of the current round and {i} otherwise (Eq 1, 7); before
    the first discovered round every P(i) is {i} (instance pairs, round 0). A reference row is a
    positive of query i when its label is in P(i) (so every copy of a label counts: a
    ``CrossBatchMemory`` queue, two views of an image in one batch); no other row with a label
    in P(i) is ever a negative. Call it any way PML calls a miner:

    - ``miner(emb, idx, bank.bank, torch.arange(N))``: the memory bank as reference;
    - ``miner(emb, idx)``: the batch as its own reference; as in PML's
      ``get_all_pairs_indices``, an embedding is never paired with itself (this holds whenever
      ``ref_labels is labels``);
    - ``miner(emb, idx, queue_emb, queue_idx)``: any reference set, permuted, partial or with
      repeated labels.

    Negatives (a2, n), per query, at most:

    - ``"sampled"`` (default): ``num_negatives`` rows drawn uniformly without replacement from
      the eligible ones (B·num_negatives pairs, O(B·num_negatives) memory);
    - ``"hardest"``: the ``num_negatives`` eligible rows nearest the query under ``distance``
      (same pair count; scans the reference in chunks, O(B·(chunk + num_negatives)) memory,
      O(B·R·d) time);
    - ``"all"``: every eligible row (B·R pairs and a (B, R) mask: 6.4M pairs at B = 128,
      R = 50k; only for small reference sets);
    - ``"none"``: no negatives (losses that use positive pairs only).

    Args:
        curriculum: The curriculum whose current ``state`` is read at every call.
        round_state: A fixed :class:`RoundState` instead of a curriculum. With neither, every
            call mines instance pairs (P(i) = {i}).
        include_self: Whether the rows labelled i are positives of query i; False leaves them
            out of *both* lists, so only the anchors' neighbour pairs remain.
        negatives: "sampled", "hardest", "all" or "none".
        num_negatives: Negatives per query for "sampled" and "hardest" (fewer where fewer are
            eligible).
        **kwargs: Passed to PML's ``BaseMiner`` (e.g. ``distance``, used by "hardest").
    """

    def __init__(
        self,
        curriculum: EntropyCurriculum | None = None,
        round_state: RoundState | None = None,
        include_self: bool = True,
        negatives: str = "sampled",
        num_negatives: int = 256,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if curriculum is not None and round_state is not None:
            raise ValueError("ANDMiner takes at most one of curriculum= or round_state=, got both")
        check_choice("negatives", negatives, NEGATIVES)
        check_int_at_least("num_negatives", num_negatives, 1)
        self.curriculum = curriculum
        self.round_state = round_state
        self.include_self = bool(include_self)
        self.negatives = negatives
        self.num_negatives = num_negatives

    def current_state(self) -> RoundState | None:
        """The neighbourhoods in use; None before the first discovered round (instance pairs)."""
        if self.round_state is not None:
            return self.round_state
        return None if self.curriculum is None else self.curriculum.state

    def forward(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor | None = None, ref_labels: Tensor | None = None
    ) -> tuple[Tensor, ...]:
        """Checks the arguments, then runs PML's ``BaseMiner.forward`` (which calls :meth:`mine`)."""
        check_mining_inputs(embeddings, labels, ref_emb, ref_labels, self.current_state())
        return super().forward(embeddings, labels, ref_emb, ref_labels)

    def mine(self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor, ref_labels: Tensor) -> tuple[Tensor, ...]:
        """PML's mining step.

        Args:
            embeddings: Shape (B, d).
            labels: Dataset indices of the batch, shape (B,).
            ref_emb: Reference embeddings, shape (R, d): the memory bank, a queue, or the batch
                itself (then ``ref_labels is labels``).
            ref_labels: Dataset index of every reference row, shape (R,).

        Returns:
            ``(a1, p, a2, n)``, long tensors on ``embeddings.device``: positive pairs
            (a1[m], p[m]) and negative pairs (a2[m], n[m]); a1/a2 index ``embeddings``, p/n
            index ``ref_emb``.
        """
        device = embeddings.device
        self_reference = ref_labels is labels  # PML's test for "the batch is its own reference"
        labels = labels.to(device, torch.long)
        ref_labels = ref_labels.to(device, torch.long)
        members, mask = positive_sets(self.current_state(), labels)
        query, rows, is_self = related_rows(members, mask, ref_labels)
        keep = torch.ones_like(is_self) if self.include_self else ~is_self
        if self_reference:
            keep &= query != rows
        a1, p = query[keep], rows[keep]
        order = torch.argsort(a1 * ref_labels.numel() + p)
        a1, p = a1[order], p[order]
        if self.negatives == "none":
            empty = torch.empty(0, dtype=torch.long, device=device)
            return a1, p, empty, empty
        if self.negatives == "all":
            eligible = torch.ones(labels.numel(), ref_labels.numel(), dtype=torch.bool, device=device)
            eligible[query, rows] = False
            if self_reference:
                eligible.fill_diagonal_(False)
            a2, n = torch.nonzero(eligible, as_tuple=True)
            return a1, p, a2, n
        if self.negatives == "sampled":
            a2, n = self._sampled(members, mask, ref_labels, self_reference)
        else:
            a2, n = self._hardest(embeddings, ref_emb, members, mask, ref_labels, self_reference)
        return a1, p, a2, n

    def _eligible(self, candidates: Tensor, members: Tensor, mask: Tensor, ref_labels: Tensor, self_reference: bool) -> Tensor:
        """Which candidate rows (B, M) may be negatives: label not in P(i), not the query itself."""
        candidate_labels = ref_labels[candidates]  # (B, M)
        related = ((candidate_labels[:, :, None] == members[:, None, :]) & mask[:, None, :]).any(dim=2)
        eligible = ~related
        if self_reference:
            eligible &= candidates != torch.arange(candidates.shape[0], device=candidates.device)[:, None]
        return eligible

    def _sampled(self, members: Tensor, mask: Tensor, ref_labels: Tensor, self_reference: bool) -> tuple[Tensor, Tensor]:
        """Up to ``num_negatives`` eligible rows per query, uniform without replacement.

        Draws 2m + 16 rows with replacement (all R rows where R is smaller), drops ineligible
        ones and repeats, then keeps a uniformly random m of the distinct rows that remain.
        """
        batch, size, m = members.shape[0], ref_labels.numel(), self.num_negatives
        device = ref_labels.device
        draws = 2 * m + 16
        if size <= draws:
            candidates = torch.arange(size, device=device).expand(batch, size)
        else:
            candidates = torch.sort(torch.randint(size, (batch, draws), device=device), dim=1).values
        valid = self._eligible(candidates, members, mask, ref_labels, self_reference)
        valid[:, 1:] &= candidates[:, 1:] != candidates[:, :-1]  # sorted: a repeat follows its first copy
        scores = torch.rand(candidates.shape, device=device).masked_fill_(~valid, -1.0)
        top = scores.topk(min(m, candidates.shape[1]), dim=1)
        chosen = top.values >= 0
        queries = torch.arange(batch, device=device)[:, None].expand_as(top.indices)
        return queries[chosen], candidates.gather(1, top.indices)[chosen]

    def _hardest(
        self, embeddings: Tensor, ref_emb: Tensor, members: Tensor, mask: Tensor, ref_labels: Tensor, self_reference: bool
    ) -> tuple[Tensor, Tensor]:
        """The ``num_negatives`` eligible rows nearest each query under ``self.distance``."""
        batch, size, m = embeddings.shape[0], ref_emb.shape[0], self.num_negatives
        device = embeddings.device
        sign = 1.0 if self.distance.is_inverted else -1.0  # larger score = harder
        best = torch.full((batch, 0), float("-inf"), device=device)
        best_rows = torch.empty(batch, 0, dtype=torch.long, device=device)
        for start in range(0, size, _HARDEST_CHUNK):
            chunk = ref_emb[start : start + _HARDEST_CHUNK].to(embeddings.dtype)
            rows = torch.arange(start, start + chunk.shape[0], device=device).expand(batch, -1)
            scores = sign * self.distance(embeddings, chunk).float()
            scores = scores.masked_fill(~self._eligible(rows, members, mask, ref_labels, self_reference), float("-inf"))
            merged, merged_rows = torch.cat([best, scores], dim=1), torch.cat([best_rows, rows], dim=1)
            top = merged.topk(min(m, merged.shape[1]), dim=1)
            best, best_rows = top.values, merged_rows.gather(1, top.indices)
        chosen = torch.isfinite(best)
        queries = torch.arange(batch, device=device)[:, None].expand_as(best_rows)
        return queries[chosen], best_rows[chosen]

    def extra_repr(self) -> str:
        return f"include_self={self.include_self}, negatives={self.negatives!r}, num_negatives={self.num_negatives}"


def check_mining_inputs(
    embeddings: Tensor, labels: Tensor | None, ref_emb: Tensor | None, ref_labels: Tensor | None,
    state: RoundState | None,
) -> None:
    """Shape, dtype and range checks of a PML call ``(embeddings, labels, ref_emb, ref_labels)``.

    Raises:
        ValueError: Naming the argument, what it got and what is allowed.
    """
    _check_embeddings("embeddings", embeddings, None)
    width = embeddings.shape[1]
    size = None if state is None else state.num_samples
    _check_labels("labels", labels, "embeddings", embeddings.shape[0], size)
    if ref_emb is None:
        if ref_labels is not None:
            raise ValueError("ref_labels: given without ref_emb; pass both or neither")
        return
    _check_embeddings("ref_emb", ref_emb, width)
    if ref_labels is None:
        raise ValueError("ref_labels: required with ref_emb (the dataset index of every row, e.g. torch.arange(N))")
    _check_labels("ref_labels", ref_labels, "ref_emb", ref_emb.shape[0], size)


def _check_embeddings(name: str, tensor: Any, width: int | None) -> None:
    if not isinstance(tensor, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() != 2:
        raise ValueError(f"{name} must have shape (rows, d), got {tuple(tensor.shape)}")
    if not tensor.dtype.is_floating_point:
        raise ValueError(f"{name} must have a floating-point dtype, got {tensor.dtype}")
    if width is not None and tensor.shape[1] != width:
        raise ValueError(f"{name} must have d = {width} columns like embeddings, got shape {tuple(tensor.shape)}")


def _check_labels(name: str, labels: Any, rows_of: str, rows: int, size: int | None) -> None:
    if not isinstance(labels, Tensor) or labels.dim() != 1:
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{name} must be a 1-D integer tensor of dataset indices, got {shape}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"{name} must have an integer dtype, got {labels.dtype}")
    if labels.numel() != rows:
        raise ValueError(f"{name} must have one entry per row of {rows_of} ({rows} rows), got {labels.numel()}")
    if labels.numel():
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or (size is not None and high >= size):
            bad = low if low < 0 else high
            allowed = f"[0, {size})" if size is not None else "[0, inf)"
            raise ValueError(f"{name} must lie in {allowed}, got {bad}")
