"""Evaluators: weighted kNN and linear probes on frozen features."""

from .knn import extract_features, knn_accuracy
from .linear import (
    DEFAULT_MAX_DIM,
    LinearClassifier,
    LinearProbeResult,
    check_probe_layers,
    fit_linear_classifier,
    linear_accuracy,
    linear_probe,
    pool_features,
    probe_pool_size,
)

__all__ = [
    "DEFAULT_MAX_DIM",
    "LinearClassifier",
    "LinearProbeResult",
    "check_probe_layers",
    "extract_features",
    "fit_linear_classifier",
    "knn_accuracy",
    "linear_accuracy",
    "linear_probe",
    "pool_features",
    "probe_pool_size",
]
