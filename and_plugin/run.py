"""One whole run from a config: what every recipe, the CLI and the SLURM job call.

:func:`run_training` = :func:`~and_plugin.build.build_run` + :class:`~and_plugin.Trainer`
(with the :class:`~and_plugin.reporting.ReportingCallback`) + the linear probes of
``eval.probe_layers`` when ``eval.linear_probe`` is set.

Probe results go to ``FitResult.linear_probe``, to ``output_dir/linear_probe.json`` and as one
``{"kind": "linear_probe", ...}`` line to ``metrics.jsonl``. Resuming a finished run (``run.resume``)
trains nothing and reuses the stored probe results, so it changes no file's numbers.

Example:
    >>> from and_plugin.config import load_config
    >>> from and_plugin.run import run_training
    >>> config = load_config(None, ["data.dataset=synthetic", "model.backbone=small_cnn", "run.device=cpu",
    ...                              "optim.epochs_per_round=1", "method.rounds=1", "data.batch_size=16"])
    >>> result = run_training(config)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch.distributed as dist

from .build import RunParts, build_run
from .config import Config, ConfigError
from .distributed import is_distributed, is_main_process
from .evaluation.linear import check_probe_layers, linear_probe
from .reporting import ReportingCallback, default_console, probe_table
from .trainer import METRICS_NAME, FitResult, Trainer

__all__ = ["PROBE_NAME", "run_training"]

#: File (in ``run.output_dir``) holding the linear-probe results of a finished run.
PROBE_NAME = "linear_probe.json"


def run_training(config: Config, callbacks: list[Any] | None = None, *, report: bool = True) -> FitResult:
    """Trains AND (or the instance baseline) as configured, then runs the configured probes.

    Args:
        config: A validated :class:`~and_plugin.config.Config`.
        callbacks: Extra trainer callbacks (on_epoch_end / on_round_end / on_fit_end).
        report: Add the :class:`~and_plugin.reporting.ReportingCallback` (plots, CSV, table).

    Returns:
        The :class:`~and_plugin.trainer.FitResult`, with ``linear_probe`` filled when
        ``eval.linear_probe`` is set (layer → {"top1", "train_top1", "dim", ...}, on rank 0).

    Raises:
        ConfigError: ``eval.probe_layers`` names a layer the backbone does not have (checked
            before any training).
    """
    parts = build_run(config)
    if config.eval.linear_probe:
        try:
            check_probe_layers(parts.model, config.eval.probe_layers)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"eval.probe_layers: got {config.eval.probe_layers!r}; {err}") from None
    all_callbacks = ([ReportingCallback()] if report else []) + list(callbacks or [])
    trainer = Trainer(config, parts.model, parts.train_set, parts.eval_train_set, parts.test_set,
                      callbacks=all_callbacks)
    result = trainer.fit()
    if config.eval.linear_probe:
        if is_main_process():
            result.linear_probe = _linear_probes(trainer, parts, report)
        if is_distributed():
            dist.barrier()
    return result


def _linear_probes(trainer: Trainer, parts: RunParts, report: bool) -> dict[str, dict[str, Any]]:
    """Runs (or, for an unchanged finished run, reloads) the probes of ``eval.probe_layers``."""
    config = trainer.config
    ev = config.eval
    key = {"epochs_trained": len(trainer.history), "layers": list(ev.probe_layers), "epochs": ev.probe_epochs,
           "lr": ev.probe_lr}
    path = Path(trainer.output_dir) / PROBE_NAME
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            stored = {}
        if stored.get("key") == key:
            _log_probes(trainer, stored["results"])  # the trainer rewrote metrics.jsonl on resume
            return stored["results"]
    probes = linear_probe(
        trainer.model,
        parts.eval_train_set,
        parts.test_set,
        ev.probe_layers,
        epochs=ev.probe_epochs,
        lr=ev.probe_lr,
        device=trainer.device,
        num_workers=config.data.num_workers,
        seed=config.run.seed,
        progress=config.run.progress,
    )
    results = {name: probe.to_dict() for name, probe in probes.items()}
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps({"key": key, "results": results}, indent=1))
    os.replace(temporary, path)
    _log_probes(trainer, results)
    if report:
        default_console().print(probe_table(results, title=f"{config.name}: linear probes (frozen backbone)"))
    return results


def _log_probes(trainer: Trainer, results: dict[str, dict[str, Any]]) -> None:
    """Appends the probes' line to metrics.jsonl unless it is already there."""
    path = Path(trainer.output_dir) / METRICS_NAME
    last_round = trainer.plan[-1][0] if trainer.plan else 0
    line = json.dumps({"kind": "linear_probe", "round": last_round, "layers": results}) + "\n"
    existing = path.read_text() if path.exists() else ""
    if line not in existing:
        with open(path, "a") as file:
            file.write(line)
