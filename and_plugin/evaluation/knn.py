"""Weighted kNN evaluation (NPID / AND protocol), built on lightly's ``knn_predict``."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .._validation import check_int_at_least, check_positive, check_shape


@torch.no_grad()
def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    batch_size: int = 1024,
) -> float:
    """Top-1 accuracy of the weighted kNN classifier.

    Each test feature votes over its k most cosine-similar training features with weight
    exp(s/σ), summed per class; the class with the largest sum wins.

    Args:
        train_features: L2-normalised, shape (N, d) (recomputed features or the memory bank).
        train_labels: Shape (N,).
        test_features: L2-normalised, shape (M, d).
        test_labels: Shape (M,).
        num_classes: Number of classes C.
        k: Neighbours (200 in the paper); clipped to N.
        temperature: σ of the vote weights (0.1 in the reference CIFAR code, 0.07 in the paper text).
        batch_size: Test features per similarity block.

    Returns:
        Top-1 accuracy in [0, 1].
    """
    # Imported here: lightly.utils.benchmarking pulls in pytorch_lightning (seconds of import time).
    from lightly.utils.benchmarking import knn_predict

    check_shape("train_features", train_features, (None, None))
    check_shape("test_features", test_features, (None, train_features.shape[1]))
    check_shape("train_labels", train_labels, (train_features.shape[0],))
    check_shape("test_labels", test_labels, (test_features.shape[0],))
    check_int_at_least("k", k, 1)
    check_positive("temperature", temperature)
    k = min(k, train_features.shape[0])
    bank = train_features.float().T.contiguous()
    labels = train_labels.to(bank.device)
    correct = 0
    for start in range(0, test_features.shape[0], batch_size):
        block = test_features[start : start + batch_size].float().to(bank.device)
        predicted = knn_predict(block, bank, labels, num_classes, knn_k=k, knn_t=temperature)[:, 0]
        correct += int((predicted == test_labels[start : start + batch_size].to(bank.device)).sum())
    return correct / max(1, test_features.shape[0])


@torch.no_grad()
def extract_features(model: nn.Module, loader: DataLoader, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Runs ``model`` in eval mode over a loader of ``(image, target, index)`` batches.

    Args:
        model: Returns L2-normalised features (B, d).
        loader: Yields (images, targets, indices); use the test transform.
        device: Where to run the model.

    Returns:
        ``(features, targets)`` of shapes (N, d) and (N,), ordered by dataset index.
    """
    was_training = model.training
    model.eval()
    features: list[Tensor] = []
    targets: list[Tensor] = []
    order: list[Tensor] = []
    for images, batch_targets, indices in loader:
        features.append(model(images.to(device)).float().cpu())
        targets.append(torch.as_tensor(batch_targets))
        order.append(torch.as_tensor(indices))
    model.train(was_training)
    permutation = torch.argsort(torch.cat(order))
    return torch.cat(features)[permutation], torch.cat(targets)[permutation]
