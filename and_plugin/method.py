"""AND as one object: the memory bank, the loss and the curriculum, and the order they run in.

:class:`ANDMethod` is the algorithm of the paper without a training loop. A loop (our
:class:`~and_plugin.trainer.Trainer`, the Lightning :class:`~and_plugin.lightning.ANDModule`,
or yours) calls, per round and per batch:

1. ``start_round(r)`` at the first epoch of round r: round 0 trains instances; r ≥ 1 runs
   neighbourhood discovery on the bank (Eq 1, 5, 6);
2. ``loss(features, indices)``: Eq 7 of the batch against the bank;
3. ``update_bank(features, indices)`` after the optimiser step: Eq 8.

**Several views per sample** (lightly's ``MultiViewTransform`` / ``SimCLRTransform`` give a
list of V tensors): every view's features take the loss against the bank (the mean over the
views of Eq 7), and the bank receives one write per sample, from the mean of the V unit
features, re-normalised (``bank_update="mean"``). The mean is the default because the bank
entry is meant to be the sample's expected feature under augmentation (the EMA of Eq 8 already
averages augmentations across epochs; averaging V views in the same step is that estimator with
V samples instead of one), because no view is privileged (the result does not depend on the
order of the views), and because it is re-normalised, so the write has the same unit size as a
single view's. ``bank_update="first"`` writes the first view only (the "key" view of
MoCo-style pipelines, where the other views are local crops). One view stays the paper's
default, computed exactly as before.

**Rows never written.** The method records which bank rows Eq 8 has written. A row that is still
its initial random vector when a round's discovery starts would enter it as a fake sample (it can
become an anchor or a neighbour): ``start_round`` fills such rows from ``bank_features`` (the
current network's features) when it is given, and warns naming how many rows it concerned.

Example:
    >>> import torch
    >>> import torch.nn.functional as F
    >>> from and_plugin.method import ANDMethod
    >>> from and_plugin.config import MethodConfig
    >>> method = ANDMethod(num_samples=20, embedding_dim=8, config=MethodConfig(rounds=2))
    >>> method.start_round(0)
    >>> features = F.normalize(torch.randn(20, 8), dim=1).requires_grad_()
    >>> indices = torch.arange(20)
    >>> loss = method.loss(features, indices)
    >>> loss.backward()
    >>> method.update_bank(features, indices)
    >>> method.rows_written
    20
    >>> method.start_round(1).num_anchors  # S = 1/2 of 20
    10
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ._validation import check_choice, check_rows
from .config import MethodConfig
from .criteria import build_criterion
from .curriculum import EntropyCurriculum, RoundState
from .distributed import all_gather_known, collective_device, is_distributed
from .memory_bank import MemoryBank, check_loaded_rows
from .registry import CURRICULA
from .sharded import RowPartition, ShardedMemoryBank, ShardedNeighbourhoodLoss

#: How several views of one sample write the bank: see the module docstring.
BANK_UPDATES = ("mean", "first")

Features = Tensor | Sequence[Tensor]


def _build_criterion(config: MethodConfig, curriculum: EntropyCurriculum) -> nn.Module:
    """The loss: the one place the criterion is chosen (``method.loss`` / ``method.miner`` by name).

    Called as ``criterion(features (B, d), indices (B,), bank, round_state or None)``; the default
    ``"neighbourhood"`` is Eq 7's :class:`~and_plugin.loss.NeighbourhoodLoss`.
    """
    return build_criterion(config, curriculum)


class ANDMethod:
    """Anchor Neighbourhood Discovery: bank, loss and curriculum, and when each one acts.

    Not a ``nn.Module`` on purpose: the bank is an N x d tensor that must not travel as a model
    buffer (DDP would broadcast it from rank 0 at every step, optimisers and EMA copies of the
    model would carry it). Loops save it with :meth:`state_dict` and move it with :meth:`to`.

    Args:
        num_samples: N, the number of training images (bank rows).
        embedding_dim: d, the feature size the backbone returns.
        config: The ``method.*`` settings (temperature, η, k, R, selection, round0, ...).
        seed: Seed of the bank's random initial unit vectors.
        labels: Classes (N,), only to report neighbourhood consistency; training never reads them.
        bank_update: With several views per sample: "mean" (default) or "first"; see the
            module docstring.

    Attributes:
        bank: The :class:`~and_plugin.memory_bank.MemoryBank` (N, d).
        criterion: The loss module (Eq 7).
        curriculum: The :class:`~and_plugin.curriculum.EntropyCurriculum`.
        round: The round last started, None before the first ``start_round``.
        bank_initialised: False until round 0 ran or the bank was filled (round0 = "random").
        written: Bool (N,) on the bank's device: the rows Eq 8 (or a fill) has written.
    """

    def __init__(
        self,
        num_samples: int,
        embedding_dim: int,
        config: MethodConfig | None = None,
        seed: int = 0,
        labels: Tensor | None = None,
        bank_update: str = "mean",
    ) -> None:
        config = config if config is not None else MethodConfig()
        config.validate()
        check_choice("bank_update", bank_update, BANK_UPDATES)
        if config.neighbours >= num_samples:
            raise ValueError(
                f"method.neighbours: got {config.neighbours}, expected < the number of training images N = {num_samples}"
            )
        self.config = config
        self.num_samples = int(num_samples)
        self.labels = labels
        self.bank_update = bank_update
        dtype = getattr(torch, config.bank_dtype)
        self.bank: MemoryBank | ShardedMemoryBank
        if config.bank_layout == "sharded":
            self.bank = ShardedMemoryBank(num_samples, embedding_dim, config.memory_momentum, dtype=dtype, seed=seed)
        else:
            self.bank = MemoryBank(num_samples, embedding_dim, config.memory_momentum, dtype=dtype, seed=seed)
        self.partition = RowPartition.current(self.num_samples)
        self.curriculum = CURRICULA.build(config.curriculum, rounds=config.rounds, neighbours=config.neighbours,
                                          temperature=config.temperature, selection=config.selection,
                                          discovery=config.discovery, discovery_kwargs=config.discovery_kwargs)
        self.criterion = _build_criterion(config, self.curriculum)  # checks method.loss_kwargs and method.miner
        if self.sharded:  # the same loss and settings, against the shards
            self.criterion = ShardedNeighbourhoodLoss(self.criterion.temperature, self.criterion.chunk_size)
        self.round: int | None = None
        self.bank_initialised = False
        self.written = torch.zeros(self.partition.count if self.sharded else self.num_samples, dtype=torch.bool)

    @property
    def device(self) -> torch.device:
        return self.bank.bank.device

    def to(self, device: torch.device | str) -> "ANDMethod":
        """Moves the bank, the loss and the current round's neighbourhoods to ``device``."""
        self.bank.to(device)
        self.written = self.written.to(self.bank.bank.device)
        self.criterion.to(device)
        if self.curriculum.state is not None:
            self.curriculum.state = self.curriculum.state.to(device)
        return self

    @property
    def sharded(self) -> bool:
        """True for ``method.bank_layout='sharded'``: this rank holds ``partition``'s rows only."""
        return isinstance(self.bank, ShardedMemoryBank)

    @property
    def rows_written(self) -> int:
        """How many of the N bank rows have been written (one host sync; collective when sharded)."""
        count = self.written.sum()
        if self.sharded:
            dist.all_reduce(count)
        return int(count)

    @property
    def round_state(self) -> RoundState | None:
        """The anchors and neighbours the loss uses now; None in round 0 (instance learning)."""
        return self.curriculum.state if self.round else None

    # ------------------------------------------------------------------ rounds

    def start_round(self, round_index: int, bank_features: Callable[[], Tensor] | None = None) -> RoundState | None:
        """Begins round ``round_index``: instance learning (0) or neighbourhood discovery (≥ 1).

        Under torch.distributed every rank must call it: every rank discovers the entropies and
        neighbours of its own block of rows (:class:`~and_plugin.sharded.partition.RowPartition`), the
        anchors are selected globally, and every rank ends with the same round state, identical
        to one process's discovery on the same bank.

        Args:
            round_index: r in [0, R].
            bank_features: Returns the features (N, d) of every training image from the current
                network (with a sharded bank it may return this rank's rows only). Called when
                the bank has never been written (round0 = "random": discovery on the untrained
                network's features instead of random vectors), and when some rows were never
                written (those rows are filled from it).

        Returns:
            The round's :class:`~and_plugin.curriculum.RoundState`; None for round 0.
        """
        self.round = round_index
        if round_index == 0:
            self.curriculum.state = None
            self.bank_initialised = True
            return None
        if not self.bank_initialised:
            if bank_features is None:
                raise ValueError("bank_features: required to fill the bank before the first discovery "
                                 "when round 0 is skipped (method.round0='random')")
            self.bank.fill(bank_features())
            if is_distributed() and not self.sharded:  # one bank for every rank, whatever the kernels did
                dist.broadcast(self.bank.bank, src=0)
            self.bank_initialised = True
            self.written.fill_(True)
        self._fill_unwritten(round_index, bank_features)
        return self._discover(round_index)

    def _discover(self, round_index: int) -> RoundState:
        """Eq 1, 5 and 6: in one process on the whole bank, else every rank on its own rows."""
        if not is_distributed():
            return self.curriculum.discover(self.bank, round_index, labels=self.labels)
        part = self.partition
        if self.sharded:
            local, whole = self.bank.bank, None
        else:
            local, whole = self.bank.bank[part.start : part.stop], self.bank.bank
        return self.curriculum.discover_distributed(local, part, round_index, labels=self.labels, full_bank=whole)

    # ------------------------------------------------------------------- steps

    def loss(self, features: Features, indices: Tensor) -> Tensor:
        """Eq 7 of one batch against the bank: the mean over the batch (and over the views).

        Args:
            features: The batch's L2-normalised features (B, d), or one (B, d) tensor per view.
            indices: Dataset indices of the batch (B,).

        Returns:
            A scalar.

        Raises:
            ValueError: Features that are not finite unit rows (norm 1 ± 0.02); on CUDA a
                device-side assertion instead (no host sync).
        """
        state = self.round_state
        views = [features] if isinstance(features, Tensor) else _check_views(features)
        for view in views:  # the bank's EMA (Eq 8) needs unit rows whatever the criterion
            check_rows("features", view)
        if isinstance(features, Tensor):
            return self.criterion(features.float(), indices, self.bank, state)
        return torch.stack([self.criterion(v.float(), indices, self.bank, state) for v in views]).mean()

    def update_bank(self, features: Features, indices: Tensor) -> None:
        """Eq 8 for one batch, after the optimiser step: one write per sample.

        Args:
            features: As in :meth:`loss` (detached inside).
            indices: (B,).
        """
        self.bank.update(indices, self.bank_features_of(features), written=self.written)

    def bank_features_of(self, features: Features) -> Tensor:
        """The (B, d) features written to the bank: the tensor itself, or the views combined."""
        if isinstance(features, Tensor):
            return features
        views = _check_views(features)
        if len(views) == 1 or self.bank_update == "first":
            return views[0]
        return F.normalize(torch.stack([v.detach().float() for v in views]).mean(0), dim=1)

    def _fill_unwritten(self, round_index: int, bank_features: Callable[[], Tensor] | None) -> None:
        """Before discovery: rows never written get the network's features, or a warning."""
        missing = self.num_samples - self.rows_written  # the written mask is the same on every rank
        if not missing:
            return
        where = (f"memory bank: {missing} of {self.num_samples} rows were never written before round "
                 f"{round_index}'s neighbourhood discovery (num_samples larger than the data set, or a "
                 f"sampler or drop_last that skips samples?)")
        if bank_features is None:
            warnings.warn(f"{where}; they enter it as random vectors: write every row, or pass bank_features",
                          stacklevel=3)
            return
        unwritten = ~self.written
        features = bank_features().to(self.device)
        if self.sharded and features.shape[0] != self.partition.count:  # all N rows given: keep this rank's
            features = features[self.partition.start : self.partition.stop]
        self.bank.bank[unwritten] = F.normalize(features[unwritten].float(), dim=1).to(self.bank.dtype)
        if is_distributed() and not self.sharded:
            dist.broadcast(self.bank.bank, src=0)
        self.written.fill_(True)
        warnings.warn(f"{where}; they were filled with the current network's features", stacklevel=3)

    # ------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """The bank, the curriculum's round state, the round and which bank rows were written."""
        return {
            "memory_bank": self.bank.state_dict(),
            "curriculum": self.curriculum.state_dict(),
            "bank_initialised": self.bank_initialised,
            "round": self.round,
            "written": self.written.clone(),
        }

    #: The N-row tensors a sharded checkpoint stores by rank (:meth:`sharded_state`).
    SHARDED_KEYS = ("memory_bank", "written", "entropy", "anchor_mask", "neighbours")

    def sharded_state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """A sharded bank's state in two parts: what every rank shares, and this rank's rows.

        Returns:
            ``(shared, rows)``: ``shared`` is small (round, flags, the round state's round and
            consistency); ``rows`` maps ``SHARDED_KEYS`` to this rank's rows of the bank, of
            the written mask and of the round state (entropy, anchor mask, neighbours), each
            (partition.count, ...). A sharded checkpoint stores ``rows`` per rank.
        """
        part = self.partition
        rows: dict[str, Tensor] = {"memory_bank": self.bank.bank, "written": self.written}
        state = self.curriculum.state
        if state is not None:
            rows.update(entropy=state.entropy[part.start : part.stop],
                        anchor_mask=state.anchor_mask[part.start : part.stop],
                        neighbours=state.neighbours[part.start : part.stop])
        shared = {
            "bank_initialised": self.bank_initialised,
            "round": self.round,
            "round_state": None if state is None else {"round": state.round, "consistency": state.consistency},
        }
        return shared, rows

    def load_sharded_state(self, shared: dict[str, Any], rows: dict[str, Tensor]) -> None:
        """Restores :meth:`sharded_state` (collective: every rank passes its own rows).

        The rows may come from a run on another number of ranks, re-split for this one.
        """
        part = self.partition
        key = "memory_bank"
        self.bank.bank.copy_(check_loaded_rows(key, rows[key], (part.count, self.bank.dim)).to(self.device))
        self.written = torch.as_tensor(rows["written"], dtype=torch.bool).clone().to(self.device)
        saved = shared.get("round_state")
        if saved is None:
            self.curriculum.state = None
        else:
            counts = part.counts()
            # On the process group's device (a Lightning resume loads before the module moves to it).
            where = collective_device() if is_distributed() else self.device
            whole = {name: all_gather_known(rows[name].to(where), counts).to(self.device)
                     for name in ("entropy", "neighbours")}
            mask = rows["anchor_mask"].to(where, torch.uint8)  # some backends gather no bool
            whole["anchor_mask"] = all_gather_known(mask, counts).to(self.device, torch.bool)
            self.curriculum.state = RoundState(saved["round"], whole["anchor_mask"], whole["neighbours"],
                                               whole["entropy"], saved["consistency"])
        self.bank_initialised = bool(shared["bank_initialised"])
        self.round = shared["round"]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict` (tensors land on the bank's current device)."""
        self.bank.load_state_dict(state["memory_bank"])
        self.curriculum.load_state_dict(state["curriculum"])
        if self.curriculum.state is not None:
            self.curriculum.state = self.curriculum.state.to(self.device)
        self.bank_initialised = bool(state["bank_initialised"])
        written = state.get("written")  # absent from older checkpoints: no record, assume every row
        self.written = (torch.ones(self.num_samples, dtype=torch.bool) if written is None
                        else torch.as_tensor(written, dtype=torch.bool).clone()).to(self.device)
        saved = self.curriculum.state
        self.round = state.get("round", saved.round if saved is not None else (0 if self.bank_initialised else None))

    def __repr__(self) -> str:
        return (f"ANDMethod(bank={self.bank.extra_repr()}, criterion={self.criterion!r}, "
                f"curriculum={self.curriculum!r}, round={self.round}, bank_update={self.bank_update!r})")


def _check_views(features: Sequence[Tensor]) -> list[Tensor]:
    views = list(features)
    if not views or not all(isinstance(v, Tensor) for v in views):
        raise ValueError(f"features: expected a tensor (B, d) or a non-empty list of them, got {type(features).__name__}")
    if any(v.shape != views[0].shape for v in views):
        raise ValueError(f"features: every view needs the same shape (B, d), got {[tuple(v.shape) for v in views]}")
    return views


def forward_views(model: Callable[[Tensor], Tensor], images: Tensor | Sequence[Tensor]) -> Features:
    """The model's features of one batch: a tensor for a tensor, a list (one per view) for a list.

    Each view goes through the model on its own, as in lightly's examples, so views of
    different sizes (multi-crop) work and BatchNorm sees one view at a time.
    """
    if isinstance(images, Tensor):
        return model(images)
    return [model(view) for view in images]


__all__ = ["BANK_UPDATES", "ANDMethod", "forward_views"]
