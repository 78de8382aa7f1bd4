"""The kNN monitor a training loop runs at round ends: recomputed-feature kNN and bank kNN."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..registry import EVALUATORS
from .knn import extract_features, knn_accuracy


@EVALUATORS.register("knn")
class KNNMonitor:
    """Weighted kNN top-1 on the test set (Sec 4 protocol), never used to select checkpoints.

    Registered as ``"knn"`` in :data:`~and_plugin.registry.EVALUATORS`, the default of
    ``eval.monitor``. An evaluator of your own registers there under another name, takes the
    same keyword arguments and has the same :meth:`evaluate` (its dict is logged at every round
    end); the :class:`~and_plugin.Trainer` builds it from the config.

    ``knn`` uses training features recomputed with the test transform (the honest number);
    ``knn_bank`` uses the memory bank as the training features (what the reference code prints).

    Args:
        test_set: Test data with the test transform; None turns the monitor off.
        eval_train_set: Training images with the test transform; None skips ``knn``.
        train_labels: Classes of the bank rows (N,); None skips ``knn_bank``.
        k: Neighbours of the vote.
        temperature: σ of the vote weights.
        bank_knn: Whether to report ``knn_bank``.
        batch_size: Images per feature-extraction batch.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        test_set: Dataset | None,
        eval_train_set: Dataset | None = None,
        train_labels: Tensor | None = None,
        k: int = 200,
        temperature: float = 0.1,
        bank_knn: bool = True,
        batch_size: int = 256,
        num_workers: int = 0,
    ) -> None:
        self.test_set = test_set
        self.eval_train_set = eval_train_set
        self.train_labels = train_labels
        self.k = k
        self.temperature = temperature
        self.bank_knn = bank_knn
        self.batch_size = batch_size
        self.num_workers = num_workers

    def loader(self, dataset: Dataset) -> DataLoader:
        """A sequential loader over ``dataset`` (test transform, no shuffling)."""
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)

    def features(self, model: nn.Module, dataset: Dataset, device: torch.device) -> tuple[Tensor, Tensor]:
        """``(features (N, d), targets (N,))`` of ``dataset`` in index order, on the CPU."""
        return extract_features(model, self.loader(dataset), device)

    def evaluate(self, model: nn.Module, bank: Tensor | None, device: torch.device) -> dict[str, Any]:
        """``{"knn": ..., "knn_bank": ...}`` (each only where its inputs exist); {} without a test set.

        Args:
            model: The backbone (L2-normalised features).
            bank: The memory bank rows (N, d), or None.
            device: Where to run the model.
        """
        if self.test_set is None:
            return {}
        test_features, test_labels = self.features(model, self.test_set, device)
        num_classes = num_classes_of(self.test_set, test_labels, self.train_labels)
        out: dict[str, Any] = {}
        if self.eval_train_set is not None:
            train_features, train_labels = self.features(model, self.eval_train_set, device)
            out["knn"] = knn_accuracy(train_features, train_labels, test_features, test_labels, num_classes,
                                      self.k, self.temperature)
        if self.bank_knn and self.train_labels is not None and bank is not None:
            out["knn_bank"] = knn_accuracy(bank.float().cpu(), self.train_labels.cpu(), test_features, test_labels,
                                           num_classes, self.k, self.temperature)
        return out


def num_classes_of(dataset: Dataset, *labels: Tensor | None) -> int:
    """``dataset.num_classes`` when it has one, else 1 + the largest label seen."""
    count = getattr(dataset, "num_classes", None)
    if count:
        return int(count)
    return int(max(int(l.max()) for l in labels if l is not None)) + 1


__all__ = ["KNNMonitor", "num_classes_of"]
