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


@torch.no_grad()
def entropy_and_neighbours(
    bank: Tensor,
    temperature: float,
    neighbours: int = 1,
    max_chunk_bytes: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Entropy of every bank entry's softmax over the bank (Eq 5) and its top-k neighbours (Eq 1).

    Streams over row blocks of the bank: each block holds a (rows x N) similarity matrix and one
    buffer of the same size, so peak extra memory is about ``max_chunk_bytes``, never N x N.

    Args:
        bank: Unit vectors, shape (N, d).
        temperature: τ of the softmax, the training temperature.
        neighbours: k, top-k cosine neighbours per entry, self excluded; 1 ≤ k < N.
        max_chunk_bytes: Memory budget of one block; 256 MiB on CPU, 2 GiB on GPU by default.

    Returns:
        ``(entropy, neighbours)`` of shapes (N,) (float32, float64 for a float64 bank) and (N, k) long.
    """
    check_shape("bank", bank, (None, None))
    check_positive("temperature", temperature)
    size = bank.shape[0]
    check_int_at_least("neighbours", neighbours, 1)
    if neighbours >= size:
        raise ValueError(f"neighbours must be < the number of samples N = {size}, got {neighbours}")
    if max_chunk_bytes is None:
        max_chunk_bytes = (2 << 30) if bank.is_cuda else (256 << 20)
    rows_per_block = max(1, min(size, max_chunk_bytes // (2 * 4 * size)))
    keys = bank if bank.dtype == torch.float64 else bank.float()
    entropy = torch.empty(size, dtype=keys.dtype, device=bank.device)
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
