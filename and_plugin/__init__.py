"""and_plugin: Anchor Neighbourhood Discovery (ICML 2019) as plug-in components.

The four AND components, each usable alone:

- :class:`MemoryBank` — N x d unit vectors, EMA write by sample index (Eq 8).
- :class:`NeighbourhoodLoss` — the non-parametric softmax loss over the bank (Eq 2, 3, 7).
- :class:`EntropyCurriculum` — neighbourhood discovery and anchor selection (Eq 1, 5, 6);
  :class:`LabelFilteredCurriculum`, a diagnostic that drops class-inconsistent neighbourhoods.
- :class:`ANDMiner` — the anchor neighbourhoods as pytorch-metric-learning index tuples.
- :class:`ANDLoss` — Eq 7 as a pytorch-metric-learning loss, optionally owning the bank.
- :func:`faiss_entropy_and_neighbours` — approximate discovery (Eq 1, 5) from a faiss index, for
  banks where the exact O(N² d) refresh is too slow (``pip install 'and_plugin[faiss]'``).
- :class:`ShardedMemoryBank` — the bank split by rows over the ranks of torch.distributed
  (``method.bank_layout="sharded"``), with :class:`RowPartition` (who owns which rows) and
  :class:`ShardedRunCheckpoint` (per-rank checkpoints, re-sharded on resume).

plus :class:`ANDMethod` (the three together, for any training loop), the :class:`Trainer` that
runs Algorithm 1, the Lightning module (``and_plugin.lightning``), the registries and the evaluators.
"""

from . import backbones, data  # noqa: F401  (imported to fill the registries)
from ._version import __version__
from .backbones import Backbone, build_backbone, wrap_backbone
from .build import build_run
from .checkpoint import CheckpointError
from .collapse import CollapseCheck, CollapseWarning
from .config import Config, ConfigError, load_config
from .criteria import PMLCriterion, build_criterion
from .curriculum import (
    EntropyCurriculum,
    LabelFilteredCurriculum,
    RoundState,
    entropy_and_neighbours,
    neighbourhood_consistency,
    reference_entropy_and_neighbours,
    select_anchors,
)
from .data import DatasetInfo, PresetInfo, register_dataset, with_index
from .discovery_faiss import faiss_entropy_and_neighbours
from .divergence import DivergenceError
from .evaluation import extract_features, knn_accuracy
from .loss import NeighbourhoodLoss, bank_logsumexp, neighbourhood_loss, reference_bank_logsumexp
from .memory_bank import MemoryBank
from .method import ANDMethod
from .miner import ANDMiner
from .pml_loss import ANDLoss
from .registry import BACKBONES, CURRICULA, DATASETS, EVALUATORS, LOSSES, MINERS, PRESETS, Registry
from .rundir import RunDirError
from .sampling import GlobalBatchSampler
from .sharded import RowPartition, ShardedMemoryBank
from .sharded.checkpoint import ShardedRunCheckpoint
from .trainer import FitResult, Trainer

__all__ = [
    "BACKBONES",
    "CURRICULA",
    "DATASETS",
    "EVALUATORS",
    "LOSSES",
    "MINERS",
    "PRESETS",
    "ANDLoss",
    "ANDMethod",
    "ANDMiner",
    "Backbone",
    "CheckpointError",
    "CollapseCheck",
    "CollapseWarning",
    "Config",
    "ConfigError",
    "DatasetInfo",
    "DivergenceError",
    "EntropyCurriculum",
    "FitResult",
    "GlobalBatchSampler",
    "LabelFilteredCurriculum",
    "MemoryBank",
    "NeighbourhoodLoss",
    "PMLCriterion",
    "PresetInfo",
    "Registry",
    "RoundState",
    "RowPartition",
    "RunDirError",
    "ShardedMemoryBank",
    "ShardedRunCheckpoint",
    "Trainer",
    "bank_logsumexp",
    "build_backbone",
    "build_criterion",
    "build_run",
    "entropy_and_neighbours",
    "extract_features",
    "faiss_entropy_and_neighbours",
    "knn_accuracy",
    "load_config",
    "neighbourhood_consistency",
    "neighbourhood_loss",
    "reference_bank_logsumexp",
    "reference_entropy_and_neighbours",
    "register_dataset",
    "select_anchors",
    "with_index",
    "wrap_backbone",
]
