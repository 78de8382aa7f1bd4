"""Evaluators: weighted kNN and linear probes on frozen features."""

from .knn import extract_features, knn_accuracy

__all__ = ["extract_features", "knn_accuracy"]
