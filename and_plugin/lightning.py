"""AND as a PyTorch Lightning module: train it with an unmodified ``pl.Trainer``.

:class:`ANDModule` wraps any backbone around the same :class:`~and_plugin.method.ANDMethod`
our :class:`~and_plugin.trainer.Trainer` runs, so a lightly user keeps their transforms, data
and ``pl.Trainer`` and gets AND's memory bank, loss and curriculum:

- batches are ``(images, targets, indices)`` (``indices`` address the bank; wrap any data set
  — torchvision's ``ImageFolder``, lightly's ``LightlyDataset`` — with
  :func:`~and_plugin.data.base.with_index`); ``images`` may be a list of views (lightly's
  ``MultiViewTransform``, ``SimCLRTransform``, ...): every view takes the loss, the bank gets one
  write per sample (see :mod:`and_plugin.method`);
- rounds advance at epoch boundaries: the plan of :func:`~and_plugin.trainer.round_plan`
  (round 0, then R rounds of ``optim.epochs_per_round`` epochs); set
  ``pl.Trainer(max_epochs=module.total_epochs)``;
- the bank is updated after every optimiser step (``on_train_batch_end``, or before a checkpoint
  saved earlier in the step); under a data-parallel strategy (``strategy="ddp"``) the update
  all-gathers the global batch's features and indices, so every rank holds the same bank (or
  writes its own rows of a sharded bank), and every rank discovers its own rows' neighbourhoods;
- the bank, the round and its anchors/neighbours travel in Lightning checkpoints
  (``checkpoint["and_method"]``), so ``trainer.fit(module, ckpt_path=...)`` continues the round;
  with ``method.bank_layout="sharded"`` (one block of bank rows per rank) every rank writes its
  rows to ``<default_root_dir>/and_bank/step-<step>-<id>/`` and the checkpoint names that
  directory (a save keeps its own and the previous save's rows; resume from the newest
  checkpoint), and the bank is built in ``setup()``, once the process group exists;
- mistakes that would train a wrong model quietly are refused when the fit starts (a data set
  without indices, ``num_samples`` not its length, ``max_epochs`` ending before the first
  discovery, ``strategy="ddp_spawn"``): see :mod:`and_plugin.lightning_checks`;
- :class:`KNNMonitor` is a callback logging weighted-kNN top-1 (lightly's ``knn_predict``).
- :class:`CollapseMonitor` (added by the module itself) warns when the features collapse.

Example:
    >>> import pytorch_lightning as pl  # doctest: +SKIP
    >>> module = ANDModule(backbone, num_samples=len(dataset), config=config)  # doctest: +SKIP
    >>> pl.Trainer(max_epochs=module.total_epochs).fit(module, loader)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from . import lightning_checks as checks
from .checkpoint import CheckpointError
from .collapse import CollapseCheck, method_uniform_loss
from .config import Config, load_config
from .distributed import all_reduce_sum, broadcast_object, get_rank, get_world_size
from .method import ANDMethod, forward_views
from .sharded.checkpoint import ShardedRunCheckpoint
from .trainer import learning_rate, round_plan

#: Key of the method's state (bank, curriculum, round) in a Lightning checkpoint.
CHECKPOINT_KEY = "and_method"


class ANDModule(pl.LightningModule):
    """A ``LightningModule`` that trains ``backbone`` with AND.

    Args:
        backbone: Images (B, C, H, W) → features (B, d).
        num_samples: N, the number of training images (bank rows).
        config: ``method.*`` (AND), ``optim.*`` (SGD and the per-round schedule) and
            ``run.seed`` (the bank's initial vectors) are read; defaults of
            :func:`~and_plugin.config.load_config` when None.
        embedding_dim: d; ``backbone.embedding_dim`` or ``config.model.embedding_dim`` when None.
        labels: Classes (N,), only to report anchor-neighbourhood consistency.
        bank_update: With several views: "mean" (re-normalised mean of the views) or "first".
        normalize: L2-normalise the backbone's output (leave True unless it already does).
        bank_init_data: Data set (items ``(image, target, index)``) whose features fill the bank
            before the first discovery when round 0 is skipped (``method.round0=random``); the
            training data set when None.
        lr_schedule: "paper" sets the SGD learning rate at every epoch from the per-round step
            schedule (restarting every round); None leaves the optimiser's lr alone (use your
            own ``configure_optimizers`` and schedulers).

    Attributes:
        method: The :class:`~and_plugin.method.ANDMethod` (bank, criterion, curriculum).
        plan: ``[(round, epochs), ...]`` of the run.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_samples: int,
        config: Config | None = None,
        embedding_dim: int | None = None,
        labels: Tensor | None = None,
        bank_update: str = "mean",
        normalize: bool = True,
        bank_init_data: Dataset | None = None,
        lr_schedule: str | None = "paper",
    ) -> None:
        super().__init__()
        if lr_schedule not in ("paper", None):
            raise ValueError(f"lr_schedule must be 'paper' or None, got {lr_schedule!r}")
        self.backbone = backbone
        self.and_config = (config if config is not None else load_config(None, [])).validate()
        dim = embedding_dim or int(getattr(backbone, "embedding_dim", self.and_config.model.embedding_dim))
        self._method_args = (num_samples, dim, self.and_config.method, self.and_config.run.seed, labels, bank_update)
        # A sharded bank is split over the ranks of the process group, which a pl.Trainer creates
        # only when the fit starts: it is built in setup() then.
        deferred = self.and_config.method.bank_layout == "sharded" and not dist.is_initialized()
        self.method: ANDMethod = None if deferred else self._build_method()  # type: ignore[assignment]
        self.normalize = normalize
        self.bank_init_data = bank_init_data
        self.lr_schedule = lr_schedule
        self.plan = round_plan(self.and_config)
        self._epochs = [(r, e, n) for r, n in self.plan for e in range(n)]
        self._pending: tuple[Any, Tensor] | None = None
        self._previous_bank_save: str | None = None  # a sharded bank's last checkpoint rows (kept)
        self._first_epoch: int | None = None  # the epoch whose indices are counted (fresh fits)
        self._seen = 0

    # ------------------------------------------------------------------ plan

    @property
    def total_epochs(self) -> int:
        """Epochs of the whole plan: pass it as ``pl.Trainer(max_epochs=...)``."""
        return len(self._epochs)

    def round_position(self, epoch: int) -> tuple[int, int, int]:
        """``(round, epoch within the round, epochs of the round)`` of a (0-based) trainer epoch.

        Epochs past the plan stay in its last round (no new discovery).
        """
        return self._epochs[min(epoch, len(self._epochs) - 1)]

    def is_round_end(self, epoch: int) -> bool:
        """Whether ``epoch`` is the last epoch of its round."""
        _, e, n = self.round_position(epoch)
        return epoch < len(self._epochs) and e == n - 1

    # ----------------------------------------------------------------- model

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) → (B, d) features (unit length with ``normalize``)."""
        features = self.backbone(images)
        return F.normalize(features, dim=1) if self.normalize else features

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """SGD with the ``optim.*`` settings (Nesterov, momentum 0.9, weight decay 5e-4)."""
        optim = self.and_config.optim
        return torch.optim.SGD(self.parameters(), lr=optim.lr, momentum=optim.momentum,
                               nesterov=optim.nesterov and optim.momentum > 0, weight_decay=optim.weight_decay)

    def _build_method(self) -> ANDMethod:
        num_samples, dim, method, seed, labels, bank_update = self._method_args
        return ANDMethod(num_samples, dim, method, seed=seed, labels=labels, bank_update=bank_update)

    # ----------------------------------------------------------------- hooks

    def setup(self, stage: str) -> None:
        """Builds the method of a sharded bank, now that the process group exists."""
        if self.method is None:
            self.method = self._build_method()

    def on_fit_start(self) -> None:
        checks.check_strategy(self.trainer)
        checks.check_plan(self.trainer.max_epochs, self.plan)
        self.method.to(self.device)

    def on_train_start(self) -> None:
        loader = self.trainer.train_dataloader
        checks.check_training_data(getattr(loader, "dataset", None), self.method.num_samples)
        self._first_epoch = None
        if self.method.rows_written == 0:  # a fresh bank: count the first epoch's indices
            self._first_epoch, self._seen = self.current_epoch, 0

    def on_train_epoch_start(self) -> None:
        round_index, epoch, epochs = self.round_position(self.current_epoch)
        if epoch == 0 and self.current_epoch < self.total_epochs and self.method.round != round_index:
            state = self.method.start_round(round_index, self._bank_features)
            if state is not None:
                self.log("anchors", float(state.num_anchors), sync_dist=True)  # equal on every rank
        if self.lr_schedule == "paper":
            lr = learning_rate(self.and_config, epoch, epochs)
            for optimizer in self.trainer.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = lr
            self.log("lr", lr, sync_dist=True)
        self.log("round", float(round_index), sync_dist=True)

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> Tensor:
        """Eq 7 of one batch ``(images or [views], targets, indices)`` against the bank."""
        images, indices = batch[0], batch[-1]
        checks.check_batch_indices(indices)
        if self._first_epoch is not None:
            self._seen += len(indices)
        features = forward_views(self, images)
        loss = self.method.loss(features, indices)
        # Eq 8 needs the features after the optimiser step: kept until on_train_batch_end.
        self._pending = (features, indices)
        # The step value is this rank's (no collective per step); the epoch mean is reduced once.
        self.log("train_loss_step", loss, prog_bar=True, on_step=True, on_epoch=False)
        self.log("train_loss_epoch", loss, on_step=False, on_epoch=True, batch_size=len(indices), sync_dist=True)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._write_pending()

    def on_train_epoch_end(self) -> None:
        if self._first_epoch is not None and self.current_epoch == self._first_epoch:
            self._first_epoch = None
            checks.check_first_epoch(self._seen * get_world_size(), self.method.rows_written, self.method.num_samples)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Callbacks' on_train_batch_end (ModelCheckpoint(every_n_train_steps=...)) run before this
        # module's: write the step's bank update first, so the checkpoint holds the bank after it.
        self._write_pending()
        if not self.method.sharded:
            checkpoint[CHECKPOINT_KEY] = self.method.state_dict()
            return
        # Lightning writes its file from rank 0 alone, and no rank holds the whole bank: every rank
        # writes its rows beside it (torch.distributed.checkpoint), the file names the directory.
        # Each save gets its own directory; the previous save's stays until the next one is written,
        # since Lightning writes the .ckpt naming this save only after this hook (a crash in between
        # leaves the previous .ckpt and the rows it names).
        shared, rows = self.method.sharded_state()
        save_id = broadcast_object(f"step-{self.global_step}-{uuid.uuid4().hex[:12]}")
        store = ShardedRunCheckpoint(os.path.join(self._bank_dir(), save_id))
        store.save({"method_shared": shared, "save_id": save_id}, rows, self.method.partition)
        checkpoint[CHECKPOINT_KEY] = {"bank_layout": "sharded", "bank_dir": str(store.output_dir.resolve()),
                                      "save_id": save_id, "method_shared": shared}
        if get_rank() == 0:
            for old in Path(self._bank_dir()).glob("step-*"):
                if old.name not in (save_id, self._previous_bank_save):
                    shutil.rmtree(old, ignore_errors=True)
        self._previous_bank_save = save_id

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if CHECKPOINT_KEY not in checkpoint:
            raise KeyError(f"checkpoint: no {CHECKPOINT_KEY!r} entry; it was not written by an ANDModule")
        saved = checkpoint[CHECKPOINT_KEY]
        layout = saved.get("bank_layout", "replicated")
        if layout != self.and_config.method.bank_layout:
            raise ValueError(f"checkpoint: written with method.bank_layout={layout!r}, this module has "
                             f"{self.and_config.method.bank_layout!r}; resume with the layout the run was started with")
        if self.method is None:
            raise ValueError("checkpoint: a sharded ANDModule reads its memory bank rows on every rank inside "
                             "pl.Trainer.fit(module, ckpt_path=...); for the weights alone read "
                             "torch.load(path)['state_dict']")
        if layout == "replicated":
            self.method.load_state_dict(saved)
            return
        loaded = ShardedRunCheckpoint(saved["bank_dir"]).load(self.method.partition)  # this rank's rows only
        if loaded is None or loaded[0].get("save_id") != saved["save_id"]:
            raise CheckpointError(
                f"checkpoint: its memory bank rows ({saved['bank_dir']}) are gone (every save keeps only its "
                "own and the previous save's rows); resume from the newest checkpoint (ckpt_path='last'), or "
                "load the weights alone")
        self.method.load_sharded_state(saved["method_shared"], loaded[1])
        self._previous_bank_save = saved["save_id"]

    # ------------------------------------------------------------- callbacks

    def configure_callbacks(self) -> list[pl.Callback]:
        """The collapse check (:class:`CollapseMonitor`) unless ``eval.collapse_cosine`` is null."""
        threshold = self.and_config.eval.collapse_cosine
        return [] if threshold is None else [CollapseMonitor(threshold)]

    # ------------------------------------------------------------- internals

    def _bank_dir(self) -> str:
        """Where a sharded bank's checkpoint rows go: ``<default_root_dir>/and_bank`` of the pl.Trainer."""
        return os.path.join(self.trainer.default_root_dir, "and_bank")

    def _write_pending(self) -> None:
        """Eq 8 for the last training step, once (all-gathers the global batch under DDP)."""
        if self._pending is not None:
            features, indices = self._pending
            self._pending = None
            self.method.update_bank(features, indices)

    @torch.no_grad()
    def _bank_features(self) -> Tensor:
        """Features (N, d) of every training image from the current network.

        They fill the bank before the first discovery with round0 = "random", and the rows no
        batch wrote before a later one (see :meth:`~and_plugin.method.ANDMethod.start_round`).
        """
        dataset = self.bank_init_data
        if dataset is None:
            dataset = self.trainer.train_dataloader.dataset  # type: ignore[union-attr]
        first, count = 0, self.method.num_samples
        if self.method.sharded:  # this rank's rows only: each rank reads its own images
            part = self.method.partition
            first, count = part.start, part.count
            dataset = Subset(dataset, range(part.start, part.stop))
        loader = DataLoader(dataset, batch_size=256, shuffle=False)
        was_training = self.training
        self.eval()
        out = torch.zeros(count, self.method.bank.dim, device=self.device)
        written = torch.zeros(count, dtype=torch.bool, device=self.device)
        for batch in loader:
            images, indices = batch[0], batch[-1]
            images = [v.to(self.device) for v in images] if isinstance(images, (list, tuple)) else images.to(self.device)
            features = self.method.bank_features_of(forward_views(self, images))
            rows = torch.as_tensor(indices, device=self.device) - first
            out[rows] = features.float()
            written[rows] = True
        self.train(was_training)
        missing = int((~written).sum())
        if self.method.sharded:  # every rank raises, not only the one that lacks rows
            missing, count = all_reduce_sum(missing), self.method.num_samples
        if missing:  # a bank row left at zero would enter discovery as a fake sample
            name = "bank_init_data" if self.bank_init_data is not None else "training data"
            raise ValueError(f"{name}: its indices cover {count - missing} of the "
                             f"{count} bank rows; it must yield every training index once")
        return out


class KNNMonitor(pl.Callback):
    """Logs weighted-kNN top-1 (lightly's ``knn_predict``) at the end of training epochs.

    Features of ``train_loader`` (training images, test transform) vote for the class of each
    image of ``test_loader``; with ``bank=True`` the memory bank rows vote too (``knn_bank``).
    Every rank computes the same numbers (same weights, full loaders, and rank 0's BatchNorm
    statistics, lent for the evaluation: DDP gives every rank rank 0's buffers at the next
    step), so no rank waits, and they are logged with ``sync_dist=True``.

    Args:
        train_loader: Yields ``(images, targets)`` or ``(images, targets, indices)`` of the
            training images (test transform, sequential); ``bank=True`` needs the indices.
        test_loader: Yields ``(images, targets)`` or ``(images, targets, ...)`` of the test
            images (lightly's ``LightlyDataset`` yields filenames third: fine here).
        num_classes: C.
        k: Neighbours of the vote (200 in the paper).
        temperature: σ of the vote weights.
        every_n_epochs: Evaluate every this many epochs; None (default) at the end of every
            AND round.
        bank: Also report the bank's kNN (needs ``train_loader``'s dataset indices).

    Attributes:
        history: ``[{"epoch", "round", "knn", "knn_bank"?}, ...]``, one per evaluation.
    """

    def __init__(
        self,
        train_loader: DataLoader,
        test_loader: DataLoader,
        num_classes: int,
        k: int = 200,
        temperature: float = 0.1,
        every_n_epochs: int | None = None,
        bank: bool = True,
    ) -> None:
        super().__init__()
        self.train_loader = train_loader
        self.test_loader = test_loader
        self.num_classes = num_classes
        self.k = k
        self.temperature = temperature
        self.every_n_epochs = every_n_epochs
        self.bank = bank
        self.history: list[dict[str, Any]] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.bank and getattr(pl_module.method, "sharded", False):
            raise ValueError("KNNMonitor(bank=True): the bank's kNN needs the whole memory bank, and with "
                             "method.bank_layout='sharded' every rank holds only its rows; pass bank=False")
        # One batch of each loader now, so a wrong layout fails before the first round, not after it.
        for name, loader in (("train_loader", self.train_loader), ("test_loader", self.test_loader)):
            _, _, indices = self._split(name, next(iter(loader)))
            if name == "train_loader" and self.bank:
                self._bank_rows(indices, pl_module.device)

    def _split(self, name: str, batch: Any) -> tuple[Tensor, Any, Any]:
        """``(images (first view), targets, third item or None)`` of one batch."""
        if not isinstance(batch, (list, tuple)) or len(batch) not in (2, 3):
            got = f"a {len(batch)}-tuple" if isinstance(batch, (list, tuple)) else f"a {type(batch).__name__}"
            raise ValueError(f"KNNMonitor: {name} must yield (images, targets) or (images, targets, indices) "
                             f"batches, got {got}")
        images = batch[0][0] if isinstance(batch[0], (list, tuple)) else batch[0]
        return images, batch[1], batch[2] if len(batch) == 3 else None

    def _bank_rows(self, indices: Any, device: torch.device) -> Tensor:
        """The bank rows of a ``train_loader`` batch; a one-line error when it has no indices."""
        if indices is None:
            raise ValueError("KNNMonitor: train_loader yields (images, targets) batches; the bank's kNN (bank=True) "
                             "needs (images, targets, indices) with the dataset indices of the bank rows: wrap the "
                             "data set in and_plugin.data.IndexedDataset, or pass bank=False")
        if not (isinstance(indices, Tensor) and indices.dim() == 1 and not indices.is_floating_point()
                and indices.dtype != torch.bool):
            shown = (f"{type(indices).__name__} of {type(indices[0]).__name__} ({indices[0]!r}, ...)"
                     if isinstance(indices, (list, tuple)) and len(indices) else
                     (f"a {indices.dtype} tensor of shape {tuple(indices.shape)}" if isinstance(indices, Tensor)
                      else type(indices).__name__))
            raise ValueError("KNNMonitor: train_loader's third batch item must be the dataset indices (an integer "
                             f"tensor) for the bank's kNN (bank=True), got {shown}; wrap the data set in "
                             "and_plugin.data.IndexedDataset, or pass bank=False")
        return indices.to(device)

    @torch.no_grad()
    def _features(self, module: ANDModule, loader: DataLoader, name: str,
                  with_rows: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        features, targets, rows = [], [], []
        for batch in loader:
            images, batch_targets, batch_indices = self._split(name, batch)
            features.append(module(images.to(module.device)).float())
            targets.append(torch.as_tensor(batch_targets, device=module.device))
            if with_rows:
                rows.append(self._bank_rows(batch_indices, module.device))
        return torch.cat(features), torch.cat(targets), torch.cat(rows) if with_rows else None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        due = (pl_module.is_round_end(epoch) if self.every_n_epochs is None  # type: ignore[operator]
               else (epoch + 1) % self.every_n_epochs == 0)
        if not due:
            return
        from lightly.utils.benchmarking import knn_predict

        was_training = pl_module.training
        pl_module.eval()
        with _rank_zero_buffers(pl_module):
            train_features, train_targets, train_rows = self._features(
                pl_module, self.train_loader, "train_loader", self.bank)  # type: ignore[arg-type]
            test_features, test_targets, _ = self._features(pl_module, self.test_loader, "test_loader", False)  # type: ignore[arg-type]
        pl_module.train(was_training)
        k = min(self.k, train_features.shape[0])

        def top1(keys: Tensor) -> float:
            predicted = knn_predict(test_features, keys.T.contiguous(), train_targets, self.num_classes,
                                    knn_k=k, knn_t=self.temperature)[:, 0]
            return float((predicted == test_targets).float().mean())

        record: dict[str, Any] = {"epoch": epoch, "round": pl_module.round_position(epoch)[0],  # type: ignore[operator]
                                  "knn": top1(train_features)}
        if self.bank:
            bank = pl_module.method.bank.bank  # type: ignore[union-attr]
            record["knn_bank"] = top1(bank[train_rows.to(bank.device)].float().to(train_features.device))  # type: ignore[union-attr]
        self.history.append(record)
        for key in ("knn", "knn_bank"):
            if key in record:  # the same on every rank: the sync only satisfies Lightning's check
                pl_module.log(key, record[key], prog_bar=key == "knn", sync_dist=True)


class CollapseMonitor(pl.Callback):
    """Warns when the features collapse: the check of :mod:`and_plugin.collapse`, at every epoch end.

    :class:`ANDModule` adds it itself (``configure_callbacks``) unless ``eval.collapse_cosine``
    is null. The epoch's loss is summed on the device from each step's output (no host sync
    per step) and reduced over the ranks once per epoch; ``bank_cosine`` is logged every epoch.

    Args:
        max_cosine: ``eval.collapse_cosine``: see :class:`~and_plugin.collapse.CollapseCheck`.

    Attributes:
        check: The :class:`~and_plugin.collapse.CollapseCheck` (its ``warned`` message, if any).
        history: ``[{"epoch", "round", "loss", "bank_cosine", "collapse_warning"?}, ...]``.
    """

    def __init__(self, max_cosine: float = 0.95) -> None:
        super().__init__()
        self.check = CollapseCheck(max_cosine)
        self.history: list[dict[str, Any]] = []
        self._sum: Tensor | None = None  # (loss x samples, samples) of the epoch, on the device

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sum = torch.zeros(2, dtype=torch.float64, device=pl_module.device)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if self._sum is not None and isinstance(loss, Tensor):
            samples = len(batch[-1])
            self._sum += torch.stack([loss.detach().double() * samples, loss.new_tensor(samples, dtype=torch.float64)])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._sum is None or not pl_module.method.bank_initialised:  # type: ignore[union-attr]
            return
        total, samples = trainer.strategy.reduce(self._sum, reduce_op="sum").tolist()
        loss = total / samples if samples else None
        epoch = trainer.current_epoch
        round_index, epoch_in_round, _ = pl_module.round_position(epoch)  # type: ignore[operator]
        method = pl_module.method  # type: ignore[union-attr]
        record = self.check.update(method.bank if method.sharded else method.bank.bank, f"round {round_index}, epoch {epoch_in_round + 1}", loss,
                                   method_uniform_loss(method), warn=trainer.is_global_zero)
        self.history.append({"epoch": epoch, "round": round_index, "loss": loss, **record})
        pl_module.log("bank_cosine", record["bank_cosine"], sync_dist=True)  # equal on every rank


@contextmanager
def _rank_zero_buffers(module: nn.Module) -> Iterator[None]:
    """Lends every rank rank 0's buffers (BatchNorm statistics) for the block; restores its own after.

    Under DDP each rank's running statistics are those of its own last batches until the next
    step's broadcast; evaluating with them would give every rank different numbers.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        yield
        return
    buffers = list(module.buffers())
    own = [b.detach().clone() for b in buffers]
    for buffer in buffers:
        dist.broadcast(buffer.data, src=0)
    try:
        yield
    finally:
        for buffer, saved in zip(buffers, own):
            buffer.data.copy_(saved)


__all__ = ["CHECKPOINT_KEY", "ANDModule", "CollapseMonitor", "KNNMonitor"]
