"""Per-round learning-rate schedules (every round of AND restarts its schedule).

The paper trains 200-epoch rounds with the lr divided by 10 at epochs 80, 120 and 160. Short
rounds need something else: the same milestones scaled to a 4-epoch round decay the lr after its
first epoch. Four schedules, chosen by ``optim.lr_schedule``:

- ``"step"`` (default): ``optim.lr_milestones`` are fractions of the round; the lr is multiplied
  by ``lr_gamma`` at every epoch ``max(1, floor(m * E))`` (80/120/160 of 200 by default).
- ``"step_epochs"``: ``optim.lr_milestone_epochs`` are absolute epochs of the round, as in the
  authors' code (80/120/160): a milestone beyond the round's last epoch never triggers.
- ``"cosine"``: ``lr_min + (lr - lr_min) * (1 + cos(pi * e / E)) / 2`` for epoch e of E.
- ``"constant"``: the base lr throughout.

Every schedule starts a round at the base lr; the lr is set once per epoch.

Example:
    >>> [round(schedule_factor("cosine", e, 4), 3) for e in range(4)]
    [1.0, 0.854, 0.5, 0.146]
    >>> [schedule_factor("step", e, 5, milestones=[0.4, 0.6, 0.8]) for e in range(5)]
    [1.0, 1.0, 0.1, 0.010000000000000002, 0.0010000000000000002]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .config import Config

__all__ = ["LR_SCHEDULES", "learning_rate", "schedule_factor"]

#: The names ``optim.lr_schedule`` accepts.
LR_SCHEDULES = ("step", "step_epochs", "cosine", "constant")


def schedule_factor(
    schedule: str,
    epoch: int,
    epochs_in_round: int,
    *,
    milestones: Sequence[float] = (),
    milestone_epochs: Sequence[int] = (),
    gamma: float = 0.1,
    min_factor: float = 0.0,
) -> float:
    """The multiplier of the base lr at ``epoch`` (0-based) of a round of ``epochs_in_round`` epochs.

    Args:
        schedule: One of :data:`LR_SCHEDULES`.
        epoch: Epoch within the round, ``0 <= epoch < epochs_in_round``.
        epochs_in_round: E, the round's length.
        milestones: ``"step"``: fractions of E in (0, 1), increasing.
        milestone_epochs: ``"step_epochs"``: epochs >= 1, increasing.
        gamma: Multiplier applied at every milestone passed.
        min_factor: ``"cosine"``: the factor the curve tends to at the round's end (lr_min / lr).

    Returns:
        A float in (0, 1] (in [min_factor, 1] for cosine).

    Raises:
        ValueError: Unknown ``schedule``, or ``epoch`` outside the round.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule: got {schedule!r}, expected one of {list(LR_SCHEDULES)}")
    if not 0 <= epoch < epochs_in_round:
        raise ValueError(f"epoch: got {epoch}, expected 0 <= epoch < epochs_in_round = {epochs_in_round}")
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs_in_round))
    if schedule == "step":
        passed = sum(epoch >= max(1, math.floor(m * epochs_in_round)) for m in milestones)
    else:
        passed = sum(epoch >= m for m in milestone_epochs)
    return gamma**passed


def learning_rate(config: "Config", epoch: int, epochs_in_round: int) -> float:
    """The lr of ``epoch`` (0-based) within a round of ``epochs_in_round`` epochs, per ``config.optim``.

    The base lr ``optim.lr`` (scaled by ``batch_size / lr_reference_batch`` when that is set)
    times :func:`schedule_factor` of ``optim.lr_schedule``.
    """
    optim = config.optim
    lr = optim.lr
    if optim.lr_reference_batch:
        lr *= config.data.batch_size / optim.lr_reference_batch
    factor = schedule_factor(
        optim.lr_schedule,
        epoch,
        epochs_in_round,
        milestones=optim.lr_milestones,
        milestone_epochs=optim.lr_milestone_epochs,
        gamma=optim.lr_gamma,
        min_factor=optim.lr_min / optim.lr,
    )
    return lr * factor
