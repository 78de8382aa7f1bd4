"""The Trainer's criterion from the config: AND's own loss, or any PML loss driven by ``ANDMiner``.

A criterion is called ``criterion(features (B, d), indices (B,), bank, state) -> scalar``, the
bank being a :class:`~and_plugin.memory_bank.MemoryBank` (written by the Trainer after the
step) and ``state`` the round's :class:`~and_plugin.curriculum.RoundState` (None in round 0).

Loss names (``method.loss``), all in :data:`~and_plugin.registry.LOSSES`:

- ``"neighbourhood"`` (alias ``"and"``): :class:`~and_plugin.loss.NeighbourhoodLoss`, the paper's Eq 7;
- ``"and_pml"``: :class:`~and_plugin.pml_loss.ANDLoss`, the same objective as a PML loss;
- ``"contrastive"``, ``"triplet_margin"``, ``"multi_similarity"``, ``"ntxent"``, ``"supcon"``:
  the unmodified pytorch-metric-learning losses, fed :class:`~and_plugin.miner.ANDMiner`'s
  pairs against the bank;
- ``"pml:<ClassName>"``: any other class of ``pytorch_metric_learning.losses``.

``method.loss_kwargs`` go to the loss (``temperature`` defaults to ``method.temperature`` for
losses that take one), ``method.miner`` / ``method.miner_kwargs`` choose the miner (``"and"``
by default for PML losses; none for ``"neighbourhood"``).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import torch
from pytorch_metric_learning.losses import BaseMetricLossFunction
from torch import Tensor, nn

from .curriculum import RoundState
from .loss_names import PML_PREFIX, loss_class
from .miner import ANDMiner
from .pml_loss import ANDLoss
from .registry import MINERS

if TYPE_CHECKING:
    from .config import MethodConfig
    from .memory_bank import MemoryBank

__all__ = ["PML_PREFIX", "PMLCriterion", "build_criterion", "loss_class"]


class PMLCriterion(nn.Module):
    """A PML loss and a miner against the memory bank, with the Trainer's criterion interface.

    Every call mines ``miner(features, indices, bank, arange(N))`` (skipped without a miner)
    and returns ``loss(features, indices, pairs, bank, arange(N))``; a bf16/fp16 bank is
    cast to the features' dtype first. The round state the Trainer passes is handed to the
    miner (and to an :class:`~and_plugin.pml_loss.ANDLoss`) for the call.

    Args:
        loss: An unmodified PML loss (``BaseMetricLossFunction``).
        miner: A PML miner (normally :class:`~and_plugin.miner.ANDMiner`), or None.
    """

    def __init__(self, loss: nn.Module, miner: nn.Module | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.miner = miner
        self._everything: Tensor | None = None

    def forward(self, features: Tensor, indices: Tensor, bank: "MemoryBank | Tensor", state: RoundState | None = None) -> Tensor:
        """Args: features (B, d), indices (B,), the bank (N, d), the round state (None = round 0)."""
        keys = bank.bank if hasattr(bank, "bank") else bank
        keys = keys.to(features.dtype)
        if self._everything is None or self._everything.numel() != keys.shape[0] or self._everything.device != keys.device:
            self._everything = torch.arange(keys.shape[0], device=keys.device)
        for module in (self.miner, self.loss):
            if isinstance(module, (ANDMiner, ANDLoss)):
                module.round_state = state  # the Trainer's state wins; None falls back to the curriculum's
        indices = indices.to(features.device)
        pairs = None if self.miner is None else self.miner(features, indices, keys, self._everything)
        return self.loss(features, indices, pairs, keys, self._everything)


def build_criterion(method: "MethodConfig", curriculum: Any = None) -> nn.Module:
    """The criterion ``method.loss`` names, built through the registries.

    Args:
        method: The validated ``method`` section of the config.
        curriculum: The run's curriculum (given to a miner or loss that takes one).

    Returns:
        A module called ``criterion(features, indices, bank, state) -> scalar``.

    Raises:
        KeyError: An unknown loss or miner name (the message lists the known ones).
        ValueError: A miner asked for with the ``"neighbourhood"`` loss.
    """
    cls = loss_class(method.loss)
    kwargs = dict(method.loss_kwargs)
    if _takes(cls, "temperature"):
        kwargs.setdefault("temperature", method.temperature)
    if _takes(cls, "chunk_size") and method.loss_chunk_size is not None:
        kwargs.setdefault("chunk_size", method.loss_chunk_size)
    if inspect.isclass(cls) and issubclass(cls, ANDLoss):
        kwargs.setdefault("update_bank", False)  # the Trainer writes the bank
        if curriculum is not None:
            kwargs.setdefault("curriculum", curriculum)
    loss = cls(**kwargs)
    if not isinstance(loss, BaseMetricLossFunction):
        if method.miner is not None:
            raise ValueError(f"method.miner: the {method.loss!r} loss takes no miner, got {method.miner!r}; "
                             "set method.miner: null")
        return loss
    miner_name = method.miner if method.miner is not None else (None if isinstance(loss, ANDLoss) else "and")
    miner = None
    if miner_name is not None:
        miner_cls = MINERS.get(miner_name)
        miner_kwargs = dict(method.miner_kwargs)
        if curriculum is not None and _takes(miner_cls, "curriculum"):
            miner_kwargs.setdefault("curriculum", curriculum)
        miner = miner_cls(**miner_kwargs)
    return PMLCriterion(loss, miner)


def _takes(cls: Any, name: str) -> bool:
    try:
        return name in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
