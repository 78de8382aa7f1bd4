"""Neighbourhood discovery and the entropy curriculum (Eq 1, 5 and 6 of the paper).

At the start of round r ≥ 1 the curriculum reads the memory bank and:

1. computes the entropy H(x̃_i) = −Σ_j p_ij log p_ij of every entry's softmax
   p_ij = exp(x̃_i·x̃_j/τ) / Σ_k exp(x̃_i·x̃_k/τ) over the whole bank (memory against memory,
   self term included) (Eq 5);
2. selects the fraction S = r/R of entries with the lowest entropy as anchors, recomputed from
   scratch every round (Eq 6);
3. finds every entry's top-k cosine neighbours N_k(i) in the bank, self excluded, not mutual
   (Eq 1).

The readable code of each equation is here: :func:`reference_entropy_and_neighbours` (Eq 1
and 5 by the plain formula, in row blocks) and :func:`select_anchors` (Eq 6). The fast refresh
(symmetric tiles, one shared shift, exp2, CPU worker threads) is in
:mod:`and_plugin.kernels.refresh_tiles`, dispatched from :func:`entropy_and_neighbours` only.

The result, a :class:`RoundState`, is validated once when it is built and is fixed for the
whole round; the loss and the miner read it every step without further checks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ._validation import check_choice, check_indices, check_int_at_least, check_positive, check_shape
from .discovery_faiss import faiss_entropy_and_neighbours
from .distributed import all_gather_cat
from .kernels.gather import check_index_tensor, select_rows
from .kernels.refresh_tiles import entropy_and_neighbours_tiled
from .registry import CURRICULA
from .sharded.discovery import distributed_entropy_and_neighbours
from .sharded.partition import RowPartition
from .sharded.selection import select_anchors_distributed

SELECTIONS = ("curriculum", "one_off", "none")
#: ``method.discovery``: every pair (Eq 1 and 5 as written), or a faiss index and a sampled tail.
DISCOVERIES = ("exact", "faiss")


@dataclass
class RoundState:
    """Anchors and neighbours of one round, checked once when built.

    Attributes:
        round: The round r ≥ 1 this state belongs to.
        anchor_mask: Shape (N,), bool: True for samples trained with the AN loss this round.
        neighbours: Shape (N, k), long: every sample's top-k neighbours (used for anchors only),
            each in [0, N).
        entropy: Shape (N,), float: H(x̃_i) at discovery time.
        consistency: With monitoring labels: {"consistent", "inconsistent", "ratio"} counts of
            anchor neighbourhoods whose members all share (or not) the anchor's class.

    Raises:
        ValueError: If a shape, a dtype or a neighbour index is wrong.
    """

    round: int
    anchor_mask: Tensor
    neighbours: Tensor
    entropy: Tensor
    consistency: dict[str, float] | None = field(default=None)

    def __post_init__(self) -> None:
        check_shape("anchor_mask", self.anchor_mask, (None,))
        if self.anchor_mask.dtype != torch.bool:
            raise ValueError(f"anchor_mask must have dtype torch.bool, got {self.anchor_mask.dtype}")
        size = self.anchor_mask.numel()
        check_shape("neighbours", self.neighbours, (size, None))
        check_index_tensor("neighbours", self.neighbours.reshape(-1))
        check_indices("neighbours", self.neighbours.reshape(-1), size)  # once per round
        check_shape("entropy", self.entropy, (size,))

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

        No host sync: the gathers refuse indices outside [0, N) themselves (on the CPU with a
        ValueError naming the value).

        Args:
            indices: Dataset indices of the batch, shape (B,).

        Returns:
            ``(positives, mask)``, both shape (B, 1 + k): column 0 is the sample itself; the
            other columns are its neighbours, masked out for non-anchors.
        """
        check_index_tensor("indices", indices)
        indices = indices.to(self.neighbours.device)
        neighbours = select_rows("indices", self.neighbours, indices)  # (B, k)
        is_anchor = select_rows("indices", self.anchor_mask, indices).view(-1, 1)  # (B, 1)
        positives = torch.cat([indices.view(-1, 1), neighbours], dim=1)
        mask = torch.cat([torch.ones_like(is_anchor), is_anchor.expand_as(neighbours)], dim=1)
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


def _computation_dtype(bank: Tensor) -> torch.dtype:
    """float64 for a float64 bank, float32 for every other storage dtype."""
    return torch.float64 if bank.dtype == torch.float64 else torch.float32


@torch.no_grad()
def reference_entropy_and_neighbours(
    bank: Tensor, temperature: float, neighbours: int = 1, max_chunk_bytes: int = 256 << 20
) -> tuple[Tensor, Tensor]:
    """Eq 5 and Eq 1 by the plain formula, a block of rows against the whole bank at a time.

    For each row i: s_ij = x̃_i·x̃_j (all j), p_ij = softmax_j(s_ij/τ),
    H_i = −Σ_j p_ij log p_ij (self term included), and N_k(i) = the k largest s_ij with j ≠ i.
    The reference the tiled kernel (:mod:`and_plugin.kernels.refresh_tiles`) is tested against,
    and the path for banks whose row norms differ too much for the kernel's shared shift.
    Arguments as :func:`entropy_and_neighbours` (unchecked here).

    Returns:
        ``(entropy, neighbours)`` of shapes (N,) and (N, k) long.
    """
    size = bank.shape[0]
    dtype = _computation_dtype(bank)
    keys = bank.to(dtype)
    itemsize = 8 if dtype == torch.float64 else 4
    rows_per_block = max(1, min(size, max_chunk_bytes // (4 * itemsize * size)))  # four (rows, N) temporaries
    entropy = torch.empty(size, dtype=dtype, device=bank.device)
    nearest = torch.empty(size, neighbours, dtype=torch.long, device=bank.device)
    for start in range(0, size, rows_per_block):
        stop = min(start + rows_per_block, size)
        similarity = keys[start:stop] @ keys.T  # s_ij, (rows, N)
        log_p = torch.log_softmax(similarity / temperature, dim=1)
        entropy[start:stop] = -(log_p.exp() * log_p).sum(dim=1)
        rows = torch.arange(stop - start, device=bank.device)
        similarity[rows, rows + start] = float("-inf")  # j ≠ i
        nearest[start:stop] = similarity.topk(neighbours, dim=1).indices
    return entropy, nearest


@torch.no_grad()
def entropy_and_neighbours(
    bank: Tensor,
    temperature: float,
    neighbours: int = 1,
    max_chunk_bytes: int | None = None,
    threads: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Entropy of every bank entry's softmax over the bank (Eq 5) and its top-k neighbours (Eq 1).

    The numbers of :func:`reference_entropy_and_neighbours`, computed by the symmetric tiled
    kernel of :mod:`and_plugin.kernels.refresh_tiles` (half the matrix products, no N x N
    matrix, CPU worker threads), or by the reference itself for a bank whose row norms differ
    so much that the kernel's shared shift could underflow. For k = 1, exact ties of the
    computed similarities go to the smallest index (k > 1 keeps topk's unspecified tie order).

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
            threads per core), at most ``torch.get_num_threads()``, at least 1.

    Returns:
        ``(entropy, neighbours)`` of shapes (N,) (float32, float64 for a float64 bank) and (N, k) long.

    Raises:
        ValueError: If ``bank`` is not 2-D, ``temperature`` ≤ 0 or ``neighbours`` not in [1, N).
    """
    check_shape("bank", bank, (None, None))
    check_positive("temperature", temperature)
    return _entropy_and_neighbours(bank, temperature, neighbours, max_chunk_bytes, threads)


def _entropy_and_neighbours(
    bank: Tensor, temperature: float, neighbours: int, max_chunk_bytes: int | None, threads: int | None
) -> tuple[Tensor, Tensor]:
    """The one dispatch between the tiled kernel and the reference (τ already checked)."""
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
    tiled = entropy_and_neighbours_tiled(bank, temperature, neighbours, max_chunk_bytes, threads, _computation_dtype(bank))
    if tiled is not None:
        return tiled
    return reference_entropy_and_neighbours(bank, temperature, neighbours, max_chunk_bytes)


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
        selection: "curriculum" (S = r/R, Eq 6), "one_off" (all samples are anchors from the
            first neighbourhood round on; the Table 6 ablation) or "none" (no anchors in any
            round: instance learning with AND's rounds and per-round schedule restarts, the
            control that separates the restarts from the neighbourhoods).
        max_chunk_bytes: Memory budget of one block of the streamed refresh.
        discovery: "exact" (every pair) or "faiss" (top-k from a faiss index, the entropy's tail
            from a sample: :mod:`and_plugin.discovery_faiss`, with its error bound).
        discovery_kwargs: Keyword arguments of the faiss discovery (``method.discovery_kwargs``).

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
        discovery: str = "exact",
        discovery_kwargs: dict[str, Any] | None = None,
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
        check_choice("discovery", discovery, DISCOVERIES)
        self.discovery = discovery
        self.discovery_kwargs = dict(discovery_kwargs or {})
        self.state: RoundState | None = None

    def selection_ratio(self, round: int) -> float:
        """S for round r: r/R for the curriculum, 1 for one-off, 0 for "none" and for round 0."""
        if isinstance(round, bool) or not isinstance(round, int) or not 0 <= round <= self.rounds:
            raise ValueError(f"round must be an integer in [0, {self.rounds}], got {round!r}")
        if round == 0 or self.selection == "none":
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
        check_shape("bank", keys, (None, None))
        ratio = self.selection_ratio(round)
        if round == 0:
            raise ValueError("round must be >= 1 for discovery; round 0 is instance learning")
        if self.discovery == "faiss":
            entropy, nearest = faiss_entropy_and_neighbours(keys, self.temperature, self.neighbours,
                                                            **self.discovery_kwargs)
        else:
            entropy, nearest = _entropy_and_neighbours(keys, self.temperature, self.neighbours,
                                                       self.max_chunk_bytes, None)
        anchor_mask = select_anchors(entropy, ratio)
        consistency = None if labels is None else neighbourhood_consistency(anchor_mask, nearest, labels)
        self.state = RoundState(round, anchor_mask, nearest, entropy, consistency)
        return self.state

    def discover_distributed(
        self,
        local_rows: Tensor,
        partition: RowPartition,
        round: int,
        labels: Tensor | None = None,
        full_bank: Tensor | None = None,
    ) -> RoundState:
        """:meth:`discover` with the work split by rows over the ranks; every rank calls it at once.

        Each rank computes the entropy and neighbours of its own rows against the whole bank
        (:func:`~and_plugin.sharded.discovery.distributed_entropy_and_neighbours`, ≈ 2N²d/W FLOPs per
        rank) and its share of the anchors (:func:`~and_plugin.sharded.selection.select_anchors_distributed`,
        no N-value gather). The per-rank results are then all-gathered into the whole
        :class:`RoundState` on every rank: anchor_mask (N,), neighbours (N, k), entropy (N,),
        that is O(N·k) integers, the state the loss and the miner read every step. It equals
        what :meth:`discover` returns on the whole bank (entropy to float rounding).

        Args:
            local_rows: This rank's bank rows, bank[partition.start:partition.stop], shape (n_r, d).
            partition: The row partition of this rank (``RowPartition.current(N)``).
            round: r in [1, R].
            labels: Optional classes of all N samples (N,), only to count consistent neighbourhoods.
            full_bank: The whole bank (N, d) in the replicated layout; None in the sharded layout.

        Returns:
            The new :class:`RoundState`, identical on every rank.
        """
        ratio = self.selection_ratio(round)
        if round == 0:
            raise ValueError("round must be >= 1 for discovery; round 0 is instance learning")
        if self.discovery == "faiss":
            if full_bank is None:
                raise ValueError("discovery: 'faiss' searches an index of the whole bank, which a sharded bank has on "
                                 "no rank; use discovery='exact' with method.bank_layout='sharded'")
            entropy, nearest = faiss_entropy_and_neighbours(full_bank, self.temperature, self.neighbours, local_rows,
                                                            partition.start, **self.discovery_kwargs)
        else:
            entropy, nearest = distributed_entropy_and_neighbours(
                local_rows, partition, self.temperature, self.neighbours, full_bank, self.max_chunk_bytes
            )
        local_mask = select_anchors_distributed(entropy, partition, ratio)
        if partition.world > 1:
            entropy, nearest = all_gather_cat(entropy), all_gather_cat(nearest)
            local_mask = all_gather_cat(local_mask.to(torch.uint8)).bool()  # gloo gathers no bool
        consistency = None if labels is None else neighbourhood_consistency(local_mask, nearest, labels)
        self.state = RoundState(round, local_mask, nearest, entropy, consistency)
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


@CURRICULA.register("label_filtered")
class LabelFilteredCurriculum(EntropyCurriculum):
    """A diagnostic, not a method: the entropy curriculum with every class-inconsistent anchor
    neighbourhood dropped, using the labels.

    Anchors are selected by entropy as in :class:`EntropyCurriculum` (Eq 5 and 6); then each
    anchor whose k neighbours are not all of its own class goes back to instance learning for the
    round. It answers one question: *would AND gain if its neighbourhoods were clean?* Set
    against the unfiltered curriculum at equal budgets, it separates the neighbourhoods' noise
    from the method's mechanism. It reads labels, so it is never an unsupervised result.

    Args: as :class:`EntropyCurriculum`.

    Example:
        >>> import torch
        >>> from and_plugin import MemoryBank
        >>> curriculum = LabelFilteredCurriculum(rounds=1, selection="one_off")
        >>> state = curriculum.discover(MemoryBank(20, 8, seed=0), 1, labels=torch.arange(20) % 2)
        >>> state.consistency["ratio"] if state.num_anchors else 1.0
        1.0
    """

    def discover(self, bank: "Tensor | Any", round: int, labels: Tensor | None = None) -> RoundState:
        """As :meth:`EntropyCurriculum.discover`, then the inconsistent anchors are dropped.

        Raises:
            ValueError: If ``labels`` is None (the filter needs them).
        """
        if labels is None:
            raise ValueError("labels: the label_filtered curriculum needs the training labels, got None")
        state = super().discover(bank, round, labels=labels)
        labels = labels.to(state.neighbours.device)
        consistent = (labels[state.neighbours] == labels.view(-1, 1)).all(dim=1)
        anchor_mask = state.anchor_mask & consistent
        self.state = RoundState(round, anchor_mask, state.neighbours, state.entropy,
                                neighbourhood_consistency(anchor_mask, state.neighbours, labels))
        return self.state

    def discover_distributed(
        self,
        local_rows: Tensor,
        partition: RowPartition,
        round: int,
        labels: Tensor | None = None,
        full_bank: Tensor | None = None,
    ) -> RoundState:
        """As :meth:`EntropyCurriculum.discover_distributed`, then the inconsistent anchors are
        dropped (``labels`` are those of all N samples, shape (N,)).

        Raises:
            ValueError: If ``labels`` is None (the filter needs them).
        """
        if labels is None:
            raise ValueError("labels: the label_filtered curriculum needs the training labels, got None")
        state = super().discover_distributed(local_rows, partition, round, labels=labels, full_bank=full_bank)
        labels = labels.to(state.neighbours.device)
        consistent = (labels[state.neighbours] == labels.view(-1, 1)).all(dim=1)
        anchor_mask = state.anchor_mask & consistent
        self.state = RoundState(state.round, anchor_mask, state.neighbours, state.entropy,
                                neighbourhood_consistency(anchor_mask, state.neighbours, labels))
        return self.state
