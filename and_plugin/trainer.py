"""Algorithm 1 of the paper: round 0 instance learning, then R rounds of neighbourhood discovery.

Every round restarts the learning-rate schedule; weights, memory bank and optimizer state carry
over. A checkpoint is written atomically every ``run.checkpoint_every`` epochs (default 1) and at
every round end, and ``run.resume`` continues exactly
where it stopped (per-epoch seeding makes the shuffling and augmentation of every epoch a
function of (seed, round, epoch) alone).

The algorithm itself lives in :class:`~and_plugin.method.ANDMethod` (bank, loss, curriculum);
the :class:`Trainer` is the loop around it, composed with small parts: the checkpoint file
(:mod:`and_plugin.run_checkpoint`), the metrics log (:mod:`and_plugin.metrics_log`) and the kNN
monitor (:mod:`and_plugin.evaluation.monitor`).
"""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from . import rundir
from . import schedule as _schedule
from .checkpoint import save_checkpoint
from .collapse import CollapseCheck, method_uniform_loss
from .config import Config, save_config
from .curriculum import EntropyCurriculum, RoundState
from .data.labels import targets_of
from .distributed import broadcast_object, get_rank, get_world_size, is_distributed, is_main_process
from .divergence import DivergenceError, DivergenceMonitor
from .evaluation.knn import extract_features
from .evaluation import monitor as _monitor  # noqa: F401  (fills EVALUATORS)
from .memory_bank import MemoryBank
from .method import ANDMethod, forward_views
from .metrics_log import METRICS_NAME, MetricsLog
from .progress import progress_bar
from .registry import EVALUATORS
from .run_checkpoint import CHECKPOINT_NAME, RunCheckpoint, rng_state, set_rng_state
from .sampling import GlobalBatchSampler


class Callback(Protocol):
    """Hooks called on rank 0; every method is optional."""

    def on_epoch_end(self, trainer: "Trainer", record: dict[str, Any]) -> None: ...

    def on_round_end(self, trainer: "Trainer", record: dict[str, Any]) -> None: ...

    def on_fit_end(self, trainer: "Trainer", result: "FitResult") -> None: ...


@dataclass
class FitResult:
    """What a finished run reports.

    Attributes:
        rounds: One record per round: round, kNN top-1 (recomputed and bank), anchors, consistency.
        output_dir: Where checkpoints, metrics and plots are.
        linear_probe: Filled by :func:`and_plugin.run.run_training` when ``eval.linear_probe``
            is set: layer name → {"top1", "train_top1", "dim", ...}.
    """

    rounds: list[dict[str, Any]] = field(default_factory=list)
    output_dir: str = ""
    linear_probe: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def final_knn(self) -> float | None:
        return self.rounds[-1].get("knn") if self.rounds else None


def resolve_device(name: str) -> torch.device:
    """"auto" → cuda if available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"run.device: got {name!r}, but CUDA is not available here; use 'cpu' or 'auto'")
    return device


def seed_everything(seed: int) -> None:
    """Seeds python, torch (CPU and CUDA) and, if present, numpy."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:  # pragma: no cover - numpy ships with torch's wheels
        pass


def learning_rate(config: Config, epoch: int, epochs_in_round: int) -> float:
    """The lr of ``epoch`` (0-based) within a round, per ``optim.lr_schedule``: see :mod:`and_plugin.schedule`."""
    return _schedule.learning_rate(config, epoch, epochs_in_round)


def round_plan(config: Config) -> list[tuple[int, int]]:
    """``[(round, epochs), ...]`` of a run: round 0 (unless skipped) then rounds 1..R."""
    method, optim = config.method, config.optim
    round0 = optim.epochs_per_round if optim.round0_epochs is None else optim.round0_epochs
    if method.instance_only:
        return [(0, round0)]
    plan = [] if method.round0 == "random" else [(0, round0)]
    return plan + [(r, optim.epochs_per_round) for r in range(1, method.rounds + 1)]


class Trainer:
    """Runs AND (or the instance baseline) from a :class:`Config`.

    Args:
        config: The validated run configuration.
        model: A backbone returning L2-normalised features (B, d).
        train_set: Training data with the training augmentation; items (image, target, index).
        eval_train_set: The same images with the test transform (for recomputed kNN features).
        test_set: Test data with the test transform.
        callbacks: Objects with optional on_epoch_end / on_round_end / on_fit_end methods.
    """

    def __init__(
        self,
        config: Config,
        model: nn.Module,
        train_set: Dataset,
        eval_train_set: Dataset | None = None,
        test_set: Dataset | None = None,
        callbacks: list[Any] | None = None,
    ) -> None:
        self.config = config.validate()
        self.device = resolve_device(config.run.device)
        self.output_dir = Path(config.run.output_dir)
        self.callbacks = list(callbacks or [])
        self.train_set = train_set
        self.eval_train_set = eval_train_set
        self.test_set = test_set
        self.num_samples = len(train_set)  # type: ignore[arg-type]
        self.labels = targets_of(train_set)
        method = config.method
        if method.neighbours >= self.num_samples:
            raise ValueError(
                f"method.neighbours: got {method.neighbours}, expected < the number of training images N = {self.num_samples}"
            )
        if config.data.batch_size > self.num_samples:
            raise ValueError(f"data.batch_size must be <= the number of training images N = {self.num_samples}, "
                             f"got {config.data.batch_size}")
        world = get_world_size()
        if config.data.batch_size % world:
            raise ValueError(f"data.batch_size: got {config.data.batch_size}, expected a multiple of the world size {world}")
        if config.run.threads:
            torch.set_num_threads(config.run.threads)
        if config.run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        seed_everything(config.run.seed)
        if config.run.precision == "bf16" and self.device.type == "cpu":
            warnings.warn("run.precision='bf16' on the CPU: autocast bf16 measured ~9x slower than fp32 in "
                          "the CPU benchmark (benchmarks/results); the fast path is meant for GPUs")

        self.model = model.to(self.device)
        if config.run.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.method = ANDMethod(
            self.num_samples, _embedding_dim(model, config), method, seed=config.run.seed, labels=self.labels
        ).to(self.device)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=config.optim.lr,
            momentum=config.optim.momentum,
            nesterov=config.optim.nesterov and config.optim.momentum > 0,
            weight_decay=config.optim.weight_decay,
        )
        self.train_model: nn.Module = self.model
        if is_distributed():
            if config.run.sync_batchnorm and self.device.type == "cuda":
                # BatchNorm statistics over the global batch, as one process with the whole batch.
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
                self.train_model = self.model
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        if config.run.compile:
            self.train_model = torch.compile(self.train_model)  # type: ignore[assignment]
        self.sampler = GlobalBatchSampler(
            self.num_samples, config.data.batch_size, get_rank(), world, shuffle=True, seed=config.run.seed
        )
        # data.gpu_resident: the uint8 training set lives on the device and is augmented there.
        self.device_batches = None
        if config.data.gpu_resident:
            from .data.gpu import device_batches_for

            self.device_batches = device_batches_for(config, train_set, self.sampler, self.device)
        self.plan = round_plan(config)
        self.position = (0, 0)  # (index into plan, epoch within that round) of the next epoch to run
        self.history: list[dict[str, Any]] = []
        self.round_records: list[dict[str, Any]] = []
        self.checkpoint = RunCheckpoint(self.output_dir)
        self.sharded_checkpoint = None
        if self.method.sharded:
            from .sharded.checkpoint import ShardedRunCheckpoint

            self.sharded_checkpoint = ShardedRunCheckpoint(self.output_dir)
        self.metrics = MetricsLog(self.output_dir, enabled=is_main_process())
        ev = config.eval
        self.eval_batch_size = max(256, config.data.batch_size)
        self.monitor = EVALUATORS.build(ev.monitor, test_set=test_set, eval_train_set=self._knn_train_set(),
                                        train_labels=self.labels, k=ev.knn_k, temperature=ev.knn_temperature,
                                        bank_knn=ev.bank_knn, batch_size=self.eval_batch_size,
                                        num_workers=config.data.num_workers)
        self.divergence = DivergenceMonitor(self.device)
        self.collapse = None if ev.collapse_cosine is None else CollapseCheck(ev.collapse_cosine)

    def _knn_train_set(self) -> Dataset | None:
        """The kNN's training side: ``eval_train_set``, or ``eval.knn_train_subset`` images of it."""
        count = self.config.eval.knn_train_subset
        data = self.eval_train_set
        if data is None or count is None or count >= len(data):  # type: ignore[arg-type]
            return data
        generator = torch.Generator().manual_seed(self.config.run.seed)
        chosen = torch.randperm(len(data), generator=generator)[:count].sort().values  # type: ignore[arg-type]
        return Subset(data, chosen.tolist())

    # The method's parts, as attributes of the trainer (reporting and tests read them).
    @property
    def bank(self) -> MemoryBank:
        return self.method.bank

    @property
    def criterion(self) -> nn.Module:
        return self.method.criterion

    @property
    def curriculum(self) -> EntropyCurriculum:
        return self.method.curriculum

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: weights, optimizer, bank, curriculum, position, RNG."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            # memory_bank, curriculum, bank_initialised, round, written; a sharded bank's rows go to
            # the per-rank shards of its checkpoint instead (see save()).
            **({"method_shared": self.method.sharded_state()[0]} if self.method.sharded else self.method.state_dict()),
            "position": self.position,
            "plan": self.plan,
            "history": self.history,
            "round_records": self.round_records,
            "rng": rng_state(),
            "config": self.config.to_dict(),
            "provenance": rundir.provenance(self.config, self.num_samples, self.labels),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if [tuple(p) for p in state["plan"]] != [tuple(p) for p in self.plan]:
            raise ValueError(
                f"checkpoint: its round plan {state['plan']} differs from this config's {self.plan}; "
                "resume with the config the run was started with"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if not self.method.sharded:
            self.method.load_state_dict(state)
        self.position = tuple(state["position"])  # type: ignore[assignment]
        self.history = list(state["history"])
        self.round_records = list(state["round_records"])
        set_rng_state(state["rng"])

    @property
    def checkpoint_path(self) -> Path:
        return self.checkpoint.path

    def save(self) -> None:
        """Writes the checkpoint: rank 0 writes the file; with a sharded bank every rank writes its rows."""
        if self.sharded_checkpoint is not None:
            self.sharded_checkpoint.save(self.state_dict(), self.method.sharded_state()[1], self.method.partition)
        else:
            self.checkpoint.save(self.state_dict())

    def maybe_resume(self) -> bool:
        """Loads output_dir/checkpoint.pt when ``run.resume`` is set and it exists.

        Under torch.distributed rank 0 decides for every rank: a rank that looked at the run
        directory later could find the files rank 0 has begun to write (and refuse to start, or
        resume alone).
        """
        if not self._resume_decision():
            return False
        rows: dict[str, Tensor] | None = None
        if self.sharded_checkpoint is not None:
            loaded = self.sharded_checkpoint.load(self.method.partition)  # this rank's rows only
            state, rows = (None, None) if loaded is None else loaded
        else:
            state = self.checkpoint.load()  # on the CPU: RNG states must stay CPU ByteTensors
        if state is None:
            return False
        rundir.check_provenance(state.get("provenance"), rundir.provenance(self.config, self.num_samples, self.labels),
                                self.checkpoint_path)
        self.load_state_dict(state)
        if rows is not None:
            self.method.load_sharded_state(state["method_shared"], {k: v.to(self.device) for k, v in rows.items()})
        return True

    def _resume_decision(self) -> bool:
        if not is_distributed():
            return rundir.resume_decision(self.config, self.output_dir)
        decision: tuple[bool, str | None] = (False, None)
        error: rundir.RunDirError | None = None
        if is_main_process():
            try:
                decision = (rundir.resume_decision(self.config, self.output_dir), None)
            except rundir.RunDirError as raised:
                error, decision = raised, (False, str(raised))
        resume, message = broadcast_object(decision)  # type: ignore[misc]
        if error is not None:
            raise error
        if message is not None:
            raise rundir.RunDirError(message)
        return resume

    # --------------------------------------------------------------- training

    def fit(self, stop_after_epochs: int | None = None) -> FitResult:
        """Runs the remaining rounds. ``stop_after_epochs`` ends early (tests of resume)."""
        resumed = self.maybe_resume()
        if is_main_process():
            self.output_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.config, self.output_dir / "config.yaml")
        self.metrics.reset(self.history if resumed else [])
        epochs_run = 0
        plan_index, epoch = self.position
        while plan_index < len(self.plan):
            round_index, epochs_in_round = self.plan[plan_index]
            if epoch == 0:
                self._start_round(round_index)
            while epoch < epochs_in_round:
                try:
                    record = self.train_epoch(round_index, epoch, epochs_in_round)
                except ValueError:  # a check that met a non-finite value mid-epoch: name the step
                    self._check_divergence(collective=False)
                    raise
                epoch += 1
                finished_round = epoch == epochs_in_round
                self.position = (plan_index + 1, 0) if finished_round else (plan_index, epoch)
                if finished_round:
                    record.update(self._end_of_round_eval(round_index))
                elif self.config.eval.every_epochs and epoch % self.config.eval.every_epochs == 0:
                    record.update(self.evaluate() if is_main_process() else {})
                    if is_distributed():
                        dist.barrier()  # the other ranks wait while rank 0 evaluates
                self._log(record)
                if finished_round or epoch % self.config.run.checkpoint_every == 0:
                    self.save()
                epochs_run += 1
                if stop_after_epochs is not None and epochs_run >= stop_after_epochs:
                    return FitResult(list(self.round_records), str(self.output_dir))
            plan_index, epoch = self.position
        result = FitResult(list(self.round_records), str(self.output_dir))
        if is_main_process():
            for callback in self.callbacks:
                if hasattr(callback, "on_fit_end"):
                    callback.on_fit_end(self, result)
        return result

    def _start_round(self, round_index: int) -> None:
        # round0 = "random": the bank is filled by the untrained network before discovery.
        self.method.start_round(round_index, lambda: self._features_of(self.eval_train_set or self.train_set))

    def train_epoch(self, round_index: int, epoch: int, epochs_in_round: int) -> dict[str, Any]:
        """One epoch of Eq 7 + Eq 8 over the training set. Returns the epoch's metrics."""
        config = self.config
        global_epoch = round_index * 100_000 + epoch
        # Rank r > 0 gets its own augmentation stream (rank 0 keeps the single-process one).
        seed_everything(config.run.seed * 1_000_003 + global_epoch + 1_000_000_007 * get_rank())
        lr = learning_rate(config, epoch, epochs_in_round)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16) if config.run.precision == "bf16" else nullcontext()
        )
        self.train_model.train()
        # The loss is summed on the device: no host sync per step.
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        seen, started = 0, time.perf_counter()
        description = f"round {round_index} epoch {epoch + 1}/{epochs_in_round}"
        self.divergence.start_epoch(round_index, epoch)
        with progress_bar(len(self.sampler), description, enabled=config.run.progress and is_main_process()) as advance:
            for images, indices in self._batches(global_epoch):
                with autocast:
                    features = forward_views(self.train_model, images)  # (B, d), or one per view
                try:
                    loss = self.method.loss(features, indices)  # Eq 7
                except ValueError:  # e.g. NaN features (CPU): let the divergence check name this step
                    self.divergence.observe(torch.zeros((), device=self.device), features)
                    raise
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.divergence.observe(loss, features)
                self.method.update_bank(features, indices)  # Eq 8
                loss_sum += loss.detach().double() * len(indices)
                seen += len(indices)
                advance(len(indices) * get_world_size())
        self._check_divergence()
        total_loss = float(loss_sum)
        elapsed = time.perf_counter() - started
        if is_distributed():  # the loss of the global batch, not of this rank's share
            totals = torch.tensor([total_loss, float(seen)], dtype=torch.float64, device=self.device)
            dist.all_reduce(totals)
            total_loss, seen = float(totals[0]), int(totals[1])
        record = {
            "kind": "epoch",
            "round": round_index,
            "epoch": epoch,
            "lr": lr,
            "loss": total_loss / max(1, seen),
            "images_per_s": seen / max(elapsed, 1e-9),
            "seconds": elapsed,
        }
        return record | self._check_collapse(round_index, epoch, record["loss"])

    def _check_collapse(self, round_index: int, epoch: int, loss: float) -> dict[str, Any]:
        """``bank_cosine`` of the epoch, and a warning the first time the features look collapsed."""
        if self.collapse is None:
            return {}
        bank = self.bank if self.method.sharded else self.bank.bank  # a sharded one sums its rows across ranks
        return self.collapse.update(bank, f"round {round_index}, epoch {epoch + 1}", loss,
                                    method_uniform_loss(self.method), warn=is_main_process())

    def _check_divergence(self, collective: bool = True) -> None:
        """Stops a diverged epoch before it is checkpointed; its state goes to checkpoint.diverged.pt."""
        try:
            self.divergence.check(self.model, [("memory bank", self.bank.bank)], collective)
        except DivergenceError as error:
            if is_main_process():
                save_checkpoint(self.state_dict(), self.output_dir / rundir.DIVERGED_NAME)
            raise error from None

    def _batches(self, epoch: int) -> Iterator[tuple[Tensor | list[Tensor], Tensor]]:
        """This rank's training batches of one epoch, ``(images, indices)`` on the device.

        Both sources follow ``self.sampler`` (same global batches, same rank slices): the
        DataLoader over ``train_set`` by default, the on-device data set and augmentation
        (:class:`~and_plugin.data.gpu.DeviceBatches`) with ``data.gpu_resident``.

        Args:
            epoch: The sampler epoch (never repeats across rounds).

        Yields:
            Images (B, C, H, W), channels-last with ``run.channels_last``, or a list of them
            (one per view, from a multi-view transform such as lightly's), and indices (B,).
        """
        channels_last = self.config.run.channels_last
        if self.device_batches is not None:
            batches: Iterator[tuple[Tensor, Tensor]] = self.device_batches.epoch(epoch)
        else:
            self.sampler.set_epoch(epoch)
            loader = DataLoader(
                self.train_set,
                batch_sampler=self.sampler,
                num_workers=self.config.data.num_workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=False,
            )
            batches = ((_to_device(x, self.device), i.to(self.device)) for x, _targets, i in loader)
        for images, indices in batches:
            if channels_last:
                images = _channels_last(images)
            yield images, indices

    # ------------------------------------------------------------- evaluation

    def _features_of(self, dataset: Dataset) -> Tensor:
        """The bank rows (N, d) the network gives ``dataset`` (round0 = "random": the untrained fill).

        With a sharded bank only this rank's rows (partition.count, d): each rank reads its own
        images. Multi-view items (lightly's transforms) are combined the way training writes the bank.
        """
        was_training = self.model.training
        self.model.eval()
        first = 0
        if self.method.sharded:
            part = self.method.partition
            first, dataset = part.start, Subset(dataset, range(part.start, part.stop))
        rows = torch.zeros(len(dataset), self.bank.dim, device=self.device)  # type: ignore[arg-type]
        with torch.no_grad():
            for images, _targets, indices in self._eval_loader(dataset):
                if isinstance(images, (list, tuple)):
                    images = [view.to(self.device) for view in images]
                else:
                    images = images.to(self.device)
                features = self.method.bank_features_of(forward_views(self.model, images))
                rows[torch.as_tensor(indices, device=self.device) - first] = features.float()
        self.model.train(was_training)
        return rows

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        return DataLoader(dataset, batch_size=self.eval_batch_size, shuffle=False,
                          num_workers=self.config.data.num_workers)

    def evaluate(self) -> dict[str, Any]:
        """Weighted kNN top-1 on the test set, with recomputed training features and with the bank.

        The recomputed number is the honest one (training images through the test transform);
        the bank number is what the reference code prints. Never used to select checkpoints.
        """
        # A sharded bank has no whole copy for the bank kNN (a rank-0-only computation): skipped.
        return self.monitor.evaluate(self.model, None if self.method.sharded else self.bank.bank, self.device)

    def _end_of_round_eval(self, round_index: int) -> dict[str, Any]:
        record: dict[str, Any] = {}
        if is_main_process():
            record.update(self.evaluate())
        state: RoundState | None = self.curriculum.state if round_index > 0 else None
        summary = {"kind": "round", "round": round_index, **record}
        if state is not None:
            summary["anchors"] = state.num_anchors
            summary["anchor_fraction"] = state.num_anchors / state.num_samples
            if state.consistency is not None:
                summary["consistency"] = state.consistency["ratio"]
                summary["consistent"] = state.consistency["consistent"]
                summary["inconsistent"] = state.consistency["inconsistent"]
        self.round_records.append(summary)
        if is_main_process():
            for callback in self.callbacks:
                if hasattr(callback, "on_round_end"):
                    callback.on_round_end(self, summary)
        if is_distributed():
            dist.barrier()
        return record

    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if not is_main_process():
            return
        self.metrics.append(record)
        for callback in self.callbacks:
            if hasattr(callback, "on_epoch_end"):
                callback.on_epoch_end(self, record)


def _to_device(images: Tensor | list[Tensor], device: torch.device) -> Tensor | list[Tensor]:
    if isinstance(images, (list, tuple)):
        return [view.to(device, non_blocking=True) for view in images]
    return images.to(device, non_blocking=True)


def _channels_last(images: Tensor | list[Tensor]) -> Tensor | list[Tensor]:
    if isinstance(images, (list, tuple)):
        return [view.contiguous(memory_format=torch.channels_last) for view in images]
    return images.contiguous(memory_format=torch.channels_last)


def _embedding_dim(model: nn.Module, config: Config) -> int:
    return int(getattr(model, "embedding_dim", config.model.embedding_dim))


__all__ = [
    "CHECKPOINT_NAME",
    "METRICS_NAME",
    "Callback",
    "FitResult",
    "Trainer",
    "learning_rate",
    "resolve_device",
    "round_plan",
    "seed_everything",
]
