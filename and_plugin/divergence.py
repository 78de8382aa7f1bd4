"""Divergence: a non-finite loss, feature, parameter or buffer stops the run, located.

:class:`DivergenceMonitor` watches an epoch without host syncs per step: every step folds
"loss and features finite" into a device-side flag holding the first bad step of the epoch
(one ``isfinite`` reduction and one ``where``, queued with the step's other kernels). The flag
is read once at the end of the epoch, before anything is checkpointed, together with one check
of every parameter, buffer and the memory bank. A bad epoch raises :class:`DivergenceError`
naming the round, epoch and step; the trainer then keeps the last good checkpoint and saves the
bad state beside it as ``checkpoint.diverged.pt``.
"""

from __future__ import annotations

from collections.abc import Iterable

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["DivergenceError", "DivergenceMonitor"]


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss, feature, parameter or buffer; the message says where."""


class DivergenceMonitor:
    """Finds the first step of an epoch with a non-finite loss or features, with no per-step sync.

    Args:
        device: Where the flag lives (the training device).
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        self.round = self.epoch = 0
        self.steps = 0

    def start_epoch(self, round_index: int, epoch: int) -> None:
        """Resets the flag for epoch ``epoch`` (0-based) of round ``round_index``."""
        self.round, self.epoch, self.steps = round_index, epoch, 0
        self.first_bad.fill_(-1)

    def observe(self, loss: Tensor, features: Tensor | Sequence[Tensor]) -> None:
        """Records the step if its loss or features are not finite. Device ops only.

        Args:
            loss: The step's loss (scalar).
            features: (B, d), or one (B, d) tensor per view.
        """
        views = [features] if isinstance(features, Tensor) else list(features)
        ok = torch.isfinite(loss).all()
        for view in views:
            ok = ok & torch.isfinite(view.detach()).all()
        self.first_bad = torch.where(ok | (self.first_bad >= 0), self.first_bad, self.steps)
        self.steps += 1

    def check(self, model: nn.Module, tensors: Iterable[tuple[str, Tensor]] = (), collective: bool = True) -> None:
        """Raises :class:`DivergenceError` if the epoch saw a bad step or any state is non-finite.

        One host sync (and, distributed, one all-reduce so every rank stops together).

        Args:
            model: Its parameters and floating-point buffers (BatchNorm statistics) are checked.
            tensors: More named state, e.g. ``[("memory bank", bank.bank)]``.
            collective: All-reduce the flags over the ranks (every rank must call it); False
                when only this rank checks (after an error raised mid-epoch on this rank).
        """
        named = [(f"parameter {n}", p) for n, p in model.named_parameters()]
        named += [(f"buffer {n}", b) for n, b in model.named_buffers() if b.is_floating_point()]
        named += list(tensors)
        finite = torch.stack([torch.isfinite(t.detach()).all().to(self.device) for _, t in named]) if named else None
        flags = torch.cat([self.first_bad.view(1).double(),
                           (finite.double() if finite is not None else torch.ones(0, dtype=torch.float64,
                                                                                  device=self.device))])
        if collective and dist.is_available() and dist.is_initialized():
            # first bad step: the max over ranks of (-1 | step) is good enough to name one; finite: min
            reduced = flags.clone()
            dist.all_reduce(reduced[:1], op=dist.ReduceOp.MAX)
            rest = reduced[1:].clone()
            dist.all_reduce(rest, op=dist.ReduceOp.MIN)
            flags = torch.cat([reduced[:1], rest])
        values = flags.cpu().tolist()
        first_bad, finite_flags = int(values[0]), values[1:]
        bad_state = [name for (name, _), ok in zip(named, finite_flags) if not ok]
        if first_bad < 0 and not bad_state:
            return
        where = f"round {self.round}, epoch {self.epoch + 1}"
        if first_bad >= 0:
            what = f"the loss or the features became non-finite (inf/nan) at step {first_bad + 1}"
        else:
            what = f"the model state became non-finite by the end of the epoch ({self.steps} steps)"
        if bad_state:
            shown = ", ".join(bad_state[:5]) + (f" and {len(bad_state) - 5} more" if len(bad_state) > 5 else "")
            what += f"; non-finite: {shown}"
        raise DivergenceError(
            f"training diverged in {where}: {what}. The last good checkpoint is kept; the diverged state is "
            "saved beside it as checkpoint.diverged.pt. Lower optim.lr or check the data"
        )
