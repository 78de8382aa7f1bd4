"""What :class:`~and_plugin.lightning.ANDModule` checks before and while a ``pl.Trainer`` fits it.

Each check turns a mistake that would train a wrong model which looks right into one line that
names the value and the fix:

- :func:`check_strategy`: ``strategy="ddp_spawn"`` (and the fork variants) train copies of the
  module in child processes and hand back only the weights; the bank's round, anchors and
  monitors would stay behind;
- :func:`check_plan`: ``max_epochs`` shorter than AND's round plan (Lightning's default is 1,000
  epochs; a typical ``max_epochs=100`` would never reach the first discovery);
- :func:`check_training_data`: the data set's length is ``num_samples`` and its items end with
  their own index (an ``(image, label)`` data set puts the label in the index's place);
- :func:`check_batch_indices`: every batch ends with a 1-D integer tensor (type and dtype only,
  no host synchronisation);
- :func:`check_first_epoch`: after the first epoch the indices addressed about as many bank rows
  as samples went through (class labels repeat: a few rows only).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import IterableDataset

#: The fix named by every index error.
WRAP = "wrap the data set: and_plugin.data.with_index(dataset)"

Plan = Sequence[tuple[int, int]]


def check_strategy(trainer: Any) -> None:
    """Refuses strategies whose training runs in child processes (``ddp_spawn``, ``ddp_fork``, ...).

    Raises:
        ValueError: Naming the strategy and ``strategy="ddp"`` instead.
    """
    try:
        from pytorch_lightning.strategies.launchers import _MultiProcessingLauncher
    except ImportError:  # pragma: no cover - a Lightning without it has no such strategies
        return
    launcher = getattr(trainer.strategy, "launcher", None)
    in_children = isinstance(launcher, _MultiProcessingLauncher)
    name = f"ddp_{getattr(launcher, '_start_method', 'spawn')}"
    if in_children:
        raise ValueError(
            f"strategy={name!r} trains copies of this module in child processes and hands back only the "
            "weights, so this ANDModule would end without its round, anchors and monitors; use "
            "strategy='ddp' (one process per device, this module among them)"
        )


def check_plan(max_epochs: int | None, plan: Plan) -> None:
    """Refuses a ``max_epochs`` that ends before the first discovery; warns when it cuts the plan.

    Args:
        max_epochs: ``pl.Trainer.max_epochs`` (-1 or None: no limit).
        plan: ``[(round, epochs), ...]`` of :func:`~and_plugin.trainer.round_plan`.

    Raises:
        ValueError: When round 0 is planned, a discovery round follows, and ``max_epochs`` ends
            within round 0.
    """
    plan = [(int(r), int(n)) for r, n in plan]
    total = sum(n for _, n in plan)
    if max_epochs is None or max_epochs < 0 or max_epochs == total:  # no limit: max_steps or max_time ends it
        return
    if max_epochs > total:
        warnings.warn(f"max_epochs={max_epochs} exceeds the AND plan's {total} epochs ({plan}); the extra epochs "
                      f"stay in round {plan[-1][0]}", stacklevel=2)
        return
    fix = f"pass max_epochs=module.total_epochs ({total})"
    if plan[0][0] == 0 and len(plan) > 1 and max_epochs <= plan[0][1]:
        raise ValueError(
            f"pl.Trainer(max_epochs={max_epochs}) ends before AND's first neighbourhood discovery at epoch "
            f"{plan[0][1] + 1} of the {total}-epoch plan {plan}: it would train instance discrimination "
            f"(round 0) only; {fix} or shorten the plan (optim.epochs_per_round, method.rounds)"
        )
    ran, never, start = [], [], 0
    for round_index, epochs in plan:
        if start < max_epochs:
            ran.append(round_index)
            last, done, planned = round_index, min(epochs, max_epochs - start), epochs
        else:
            never.append(round_index)
        start += epochs
    message = f"pl.Trainer(max_epochs={max_epochs}) is shorter than AND's {total}-epoch plan {plan}: it runs rounds "
    message += ", ".join(map(str, ran))
    if done < planned:
        message += f" (round {last} for {done} of its {planned} epochs)"
    if never:
        message += f" and never starts round{'s' if len(never) > 1 else ''} {', '.join(map(str, never))}"
    warnings.warn(f"{message}; {fix} for the whole plan", stacklevel=2)


def check_training_data(dataset: Any, num_samples: int, probes: int = 4) -> bool:
    """Checks a map-style training set: ``len(dataset) == num_samples`` and ``dataset[i][-1] == i``.

    Reads ``dataset[i]`` at a few positions (0, 1, the middle, the last), once per fit.

    Args:
        dataset: The training data loader's data set.
        num_samples: N, the bank rows.
        probes: How many positions to read.

    Returns:
        False when the data set cannot be checked (an ``IterableDataset``, no length or no
        indexing); True when it passed.

    Raises:
        ValueError: Naming the length and ``num_samples``, or the first item that does not end
            with its index and what it ends with instead.
    """
    if dataset is None or isinstance(dataset, IterableDataset):
        return False
    try:
        length = len(dataset)
    except TypeError:
        return False
    if not hasattr(dataset, "__getitem__"):
        return False
    if length != num_samples:
        raise ValueError(f"num_samples must equal the training data set's length {length} (one memory bank row "
                         f"per image), got {num_samples}")
    for position in sorted({0, 1, length // 2, length - 1})[:probes]:
        if position >= length:
            continue
        item = dataset[position]
        last = item[-1] if isinstance(item, (tuple, list)) and item else item
        if not _is_index(last, position):
            raise ValueError(f"training data: item {position} must end with its index {position} (the memory bank "
                             f"row), got {_describe_value(last)}; {WRAP}")
    return True


def check_batch_indices(indices: Any) -> None:
    """Raises unless a batch's last element is a 1-D integer tensor; reads no values (no sync)."""
    if isinstance(indices, Tensor) and indices.dim() == 1 and not (
        indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool
    ):
        return
    raise ValueError(f"batch[-1] must be the dataset indices (a 1-D integer tensor), got "
                     f"{_describe_batch(indices)}; {WRAP}")


def check_first_epoch(seen: int, rows_written: int, num_samples: int) -> None:
    """After a fit's first epoch: refuses indices that addressed far fewer rows than samples seen.

    Sample indices address one row per sample; class labels in their place address a few rows
    over and over. Samplers that draw with replacement still address most rows.

    Args:
        seen: Indices the epoch's batches carried (all ranks).
        rows_written: Distinct bank rows written so far (all ranks).
        num_samples: N.
    """
    expected = min(seen, num_samples)
    if 4 * rows_written < expected:
        raise ValueError(f"batch[-1]: the first epoch's batches carried {seen} indices but addressed only "
                         f"{rows_written} of the {num_samples} memory bank rows; batches must end with the sample "
                         f"index, not a label: {WRAP}")


def _is_index(value: Any, position: int) -> bool:
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.dtype.is_floating_point or value.dtype == torch.bool:
            return False
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        return False
    return int(value) == position


def _describe_value(value: Any) -> str:
    text = repr(value) if len(repr(value)) <= 60 else f"a {type(value).__name__}"
    if isinstance(value, str):
        text += " (LightlyDataset items end with the file name)"
    return text


def _describe_batch(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a {str(value.dtype).replace('torch.', '')} tensor of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple)) and value:
        kinds = sorted({type(v).__name__ for v in value})
        text = f"a {type(value).__name__} of {', '.join(kinds)}"
        if kinds == ["str"]:
            text += " (LightlyDataset items end with the file name)"
        return text
    return f"a {type(value).__name__}"


__all__ = ["WRAP", "check_batch_indices", "check_first_epoch", "check_plan", "check_strategy", "check_training_data"]
