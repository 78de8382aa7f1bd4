"""Losses by name (``method.loss``): the :data:`~and_plugin.registry.LOSSES` entries and
``"pml:<ClassName>"``.

Importing this module fills the registries the ``method`` section names: :data:`LOSSES` (AND's
own losses and five pytorch-metric-learning losses), :data:`MINERS` and :data:`CURRICULA`.
The configuration checks names here, and :mod:`and_plugin.criteria` builds from them; neither
needs the other.

Example:
    >>> from and_plugin.loss_names import loss_class
    >>> loss_class("neighbourhood").__name__, loss_class("pml:NTXentLoss").__name__
    ('NeighbourhoodLoss', 'NTXentLoss')
"""

from __future__ import annotations

import inspect
from typing import Any

from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning.losses import BaseMetricLossFunction

from . import curriculum, miner, pml_loss  # noqa: F401  (register their entries)
from .loss import NeighbourhoodLoss
from .registry import LOSSES

__all__ = ["PML_PREFIX", "loss_class"]

LOSSES.register("neighbourhood")(NeighbourhoodLoss)
for _name, _cls in {
    "contrastive": pml_losses.ContrastiveLoss,
    "triplet_margin": pml_losses.TripletMarginLoss,
    "multi_similarity": pml_losses.MultiSimilarityLoss,
    "ntxent": pml_losses.NTXentLoss,
    "supcon": pml_losses.SupConLoss,
}.items():
    LOSSES.register(_name)(_cls)

#: Prefix of a loss named by its pytorch-metric-learning class: ``"pml:NTXentLoss"``.
PML_PREFIX = "pml:"


def loss_class(name: str) -> Any:
    """The class or factory named ``name``: a :data:`LOSSES` entry or ``"pml:<ClassName>"``.

    Raises:
        KeyError: Naming the unknown name and listing the known ones.
    """
    if name.startswith(PML_PREFIX):
        cls = getattr(pml_losses, name[len(PML_PREFIX):], None)
        if not (inspect.isclass(cls) and issubclass(cls, BaseMetricLossFunction)):
            known = sorted(n for n, v in vars(pml_losses).items()
                           if inspect.isclass(v) and issubclass(v, BaseMetricLossFunction)
                           and v is not BaseMetricLossFunction)
            raise KeyError(f"unknown loss {name!r}: pytorch_metric_learning.losses has no loss "
                           f"{name[len(PML_PREFIX):]!r}; known: {', '.join(known)}")
        return cls
    return LOSSES.get(name)
