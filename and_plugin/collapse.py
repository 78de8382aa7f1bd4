"""Collapse: every image mapped to (nearly) the same feature, found at the end of an epoch.

A collapsed network trains without error: the loss sits at the value of a uniform softmax over
the memory bank, and its features are worse than the untrained network's for kNN. The check
reads two numbers the epoch already has, with one host sync per epoch and none per step:

- the **bank spread**: the mean cosine between two different rows of the memory bank,
  exactly, from the mean row m: for N unit rows x̃_j,
  ``mean_{i≠j} x̃_i·x̃_j = (N ‖m‖² − 1) / (N − 1)`` (one pass over the bank, no N x N matrix);
- the epoch's mean **loss against the uniform-softmax value** of Eq 7: when every p_ij = 1/N,
  ``L_i = log N − log |P(i)|``, so ``uniform = log N − mean_i log |P(i)|`` (log N in round 0).

A run is called collapsed when, at ``patience`` consecutive epoch ends, the bank's mean cosine
is at least ``max_cosine`` and not falling (by more than :data:`SPREADING`), and (for Eq 7's
losses) the loss is at least ``loss_fraction`` of the uniform value: a network whose loss is
clearly below it still tells its images apart, and a bank that is spreading out is escaping. An
untrained network is itself compact (mean cosine 0.96–0.99 for ``small_cnn``, ``alexnet_cifar``
and ``resnet18_cifar``), so a bank filled from it (``method.round0=random``) starts high and
must not warn while it spreads.

Measured (docs/failure-modes.md): a small conv net with a plain linear head under lightly's
``SimCLRTransform`` climbs to cosine 0.96–0.98 and stays there, at 0.985–1.01 x the uniform
loss; the same net with lightly's ``SimCLRProjectionHead`` stays below cosine 0.2; the
quick-start run on digits (seeds 0–3) passes a peak of cosine 0.87–0.93 for one or two epochs
of round 0 on its way to cosine 0. The defaults (0.95, 0.95, 2 epochs) sit between them.

Example:
    >>> import torch
    >>> from and_plugin.collapse import CollapseCheck, bank_mean_cosine
    >>> same = torch.nn.functional.normalize(torch.ones(100, 8), dim=1)
    >>> round(float(bank_mean_cosine(same)), 6)
    1.0
    >>> import warnings
    >>> check = CollapseCheck(patience=2)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     records = [check.update(same, f"round 0, epoch {e}", loss=4.61, uniform=uniform_loss(100))
    ...                for e in (1, 2, 3)]  # epoch 1 has no previous epoch to compare with
    >>> round(records[-1]["bank_cosine"], 3), ["collapse_warning" in r for r in records]
    (1.0, [False, False, True])
    >>> [w.category.__name__ for w in caught]
    ['CollapseWarning']
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ._validation import check_in_range, check_int_at_least

from .criteria import PMLCriterion
from .loss import NeighbourhoodLoss
from .pml_loss import ANDLoss

if TYPE_CHECKING:
    from .sharded import ShardedMemoryBank
    from .curriculum import RoundState
    from .method import ANDMethod

__all__ = ["CollapseCheck", "CollapseWarning", "bank_mean_cosine", "method_uniform_loss", "uniform_loss"]

#: A bank whose mean cosine falls by more than this per epoch is spreading out, not collapsed.
SPREADING = 0.002

#: The advice every collapse warning ends with.
ADVICE = (
    "Try a projection head with BatchNorm (e.g. lightly's SimCLRProjectionHead) after the backbone, "
    "a lower optim.lr, or milder augmentation"
)


class CollapseWarning(UserWarning):
    """The features collapsed: the message names the epoch, the measured numbers and what to try."""


@torch.no_grad()
def bank_mean_cosine(bank: "Tensor | ShardedMemoryBank") -> Tensor:
    """Mean cosine between two different rows of a bank of unit rows, without an N x N matrix.

    Args:
        bank: Unit rows (N, d), N ≥ 2, any floating dtype (summed in float32); or a
            :class:`~and_plugin.sharded.bank.ShardedMemoryBank` (its row sum is all-reduced:
            collective).

    Returns:
        A 0-dim float32 tensor on the bank's device: ``(N ‖mean row‖² − 1) / (N − 1)``, in
        [−1/(N−1), 1]; 0 for random directions, 1 when every row is the same.
    """
    n = bank.shape[0] if isinstance(bank, Tensor) else bank.size
    if n < 2:
        raise ValueError(f"bank must have at least 2 rows, got {n}")
    mean = (bank.sum(dim=0, dtype=torch.float32) if isinstance(bank, Tensor) else bank.row_sum()) / n
    return (n * mean.dot(mean) - 1) / (n - 1)


@torch.no_grad()
def uniform_loss(num_samples: int, round_state: "RoundState | None" = None) -> float:
    """Eq 7's mean loss when every softmax is uniform (p_ij = 1/N): ``log N − mean_i log |P(i)|``.

    Args:
        num_samples: N.
        round_state: The round's anchors and neighbours; None (round 0): ``|P(i)| = 1``.

    Returns:
        log N in round 0; lower by the anchors' share of log(1 + k) in later rounds.
    """
    if round_state is None:
        return math.log(num_samples)
    _, mask = round_state.positives(torch.arange(round_state.num_samples, device=round_state.anchor_mask.device))
    return math.log(num_samples) - float(mask.sum(dim=1).double().log().mean())


def method_uniform_loss(method: "ANDMethod") -> float | None:
    """:func:`uniform_loss` of the method's current round; None unless its criterion is Eq 7.

    Eq 7 is :class:`~and_plugin.loss.NeighbourhoodLoss`, or :class:`~and_plugin.pml_loss.ANDLoss`
    against the bank without a miner; other PML losses have other scales.
    """
    criterion = method.criterion
    eq7 = isinstance(criterion, NeighbourhoodLoss) or (
        isinstance(criterion, PMLCriterion) and isinstance(criterion.loss, ANDLoss) and criterion.miner is None
    )
    return uniform_loss(method.num_samples, method.round_state) if eq7 else None


class CollapseCheck:
    """Decides at every epoch end whether the features collapsed; warns once per run.

    Args:
        max_cosine: The bank's mean cosine at or above which an epoch looks collapsed, in (0, 1].
        loss_fraction: With Eq 7's loss: also require loss ≥ this fraction of the uniform value.
        patience: Consecutive collapsed-looking epochs before the warning (≥ 1).

    Attributes:
        warned: The message of the warning already issued, or None.
    """

    def __init__(self, max_cosine: float = 0.95, loss_fraction: float = 0.95, patience: int = 2) -> None:
        check_in_range("max_cosine", max_cosine, 0.0, 1.0)
        check_in_range("loss_fraction", loss_fraction, 0.0, 1.0)
        check_int_at_least("patience", patience, 1)
        self.max_cosine = float(max_cosine)
        self.loss_fraction = float(loss_fraction)
        self.patience = patience
        self.streak = 0  # consecutive epochs that looked collapsed
        self.previous: float | None = None  # the mean cosine at the last epoch end
        self.warned: str | None = None

    def update(
        self,
        bank: "Tensor | ShardedMemoryBank",
        where: str,
        loss: float | None = None,
        uniform: float | None = None,
        warn: bool = True,
    ) -> dict[str, Any]:
        """Measures the bank (one host sync) and warns the first time the run looks collapsed.

        Args:
            bank: The memory bank (N, d) at the end of the epoch.
            where: The epoch, as the message names it ("round 1, epoch 3").
            loss: The epoch's mean loss; None when unknown.
            uniform: The loss's uniform-softmax value (:func:`uniform_loss`); None when the
                loss is not Eq 7's (a PML loss): the bank's spread decides alone.
            warn: Issue the Python warning (False on ranks other than 0).

        Returns:
            ``{"bank_cosine": c}``, plus ``"collapse_warning": message`` at the epoch that warned.
        """
        cosine = float(bank_mean_cosine(bank))
        record: dict[str, Any] = {"bank_cosine": cosine}
        compared = loss is not None and uniform is not None and math.isfinite(loss)
        spreading = self.previous is None or cosine < self.previous - SPREADING
        looks = (cosine >= self.max_cosine and not spreading
                 and (not compared or loss >= self.loss_fraction * uniform))  # type: ignore[operator]
        self.previous = cosine
        self.streak = self.streak + 1 if looks else 0
        if self.streak >= self.patience and self.warned is None:
            numbers = f"the memory bank's mean cosine is {cosine:.3f} (>= {self.max_cosine} for {self.streak} epochs)"
            if compared:
                numbers += f" and the loss {loss:.3f} is {loss / uniform:.3f} x the {uniform:.3f} of a uniform softmax"  # type: ignore[operator]
            message = (f"features collapsed in {where}: {numbers}; every image maps to nearly the same "
                       f"feature. {ADVICE} (eval.collapse_cosine=null turns this check off)")
            self.warned = message
            record["collapse_warning"] = message
            if warn:
                warnings.warn(message, CollapseWarning, stacklevel=2)
        return record
