"""Run directories: never overwrite a run by accident, resume only what the checkpoint was trained on.

A run directory (``run.output_dir``) holds one run: ``checkpoint.pt``, ``metrics.jsonl``,
``config.yaml`` and the reports. :func:`resume_decision` is asked once when a run starts:

=====================  ==========================  ============================================
``run.resume``         run directory               what happens
=====================  ==========================  ============================================
``false``              empty / no run in it        a new run
``false``              holds a run                 :class:`RunDirError`, unless ``run.overwrite``
``true``               holds a checkpoint          continue from it
``true``               no checkpoint               :class:`RunDirError`
``"auto"``             either                      continue if a checkpoint is there, else new
=====================  ==========================  ============================================

Every checkpoint carries its :func:`provenance` (data set, N, a digest of the labels and of
the config fields that shape training); :func:`check_provenance` refuses to continue a
checkpoint under anything else and names each field that differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .checkpoint import remove_stale_temporaries
from .config import Config, ConfigError

__all__ = ["RunDirError", "check_provenance", "plan_resume", "provenance", "resume_decision"]

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
#: Beside the last good checkpoint: the state in which a run diverged (for debugging).
DIVERGED_NAME = "checkpoint.diverged.pt"
#: Config fields that do not change what is trained (where, how fast, how it is shown).
_IGNORED = {
    "name", "data.root", "data.download", "data.num_workers", "data.gpu_resident", "data.test_subset",
    "method.loss_chunk_size", "run.output_dir", "run.device", "run.precision", "run.channels_last", "run.compile",
    "run.threads", "run.checkpoint_every", "run.progress", "run.resume", "run.overwrite", "run.deterministic",
    "run.sync_batchnorm", "run.imports", "eval",
}  # fmt: skip


class RunDirError(ConfigError):
    """The run directory does not fit the request (a run would be overwritten, nothing to resume,
    or the checkpoint was trained on something else)."""


def plan_resume(config: Config, output_dir: Path) -> bool:
    """Whether a run of ``config`` continues from ``output_dir/checkpoint.pt``; changes nothing.

    Raises:
        RunDirError: A new run would overwrite another one, or ``run.resume=true`` finds no
            checkpoint.
    """
    checkpoint = output_dir / CHECKPOINT_NAME
    resume, present = config.run.resume, checkpoint.is_file()
    if resume == "auto":
        return present
    if resume:
        if not present:
            raise RunDirError(
                f"run.resume: {str(output_dir)!r} holds no checkpoint ({CHECKPOINT_NAME}) to continue; "
                "drop --resume to start a new run there, or use run.resume=auto to continue only if one exists"
            )
        return True
    existing = [name for name in (CHECKPOINT_NAME, METRICS_NAME) if (output_dir / name).exists()]
    if existing and not config.run.overwrite:
        raise RunDirError(
            f"run.output_dir: {str(output_dir)!r} already holds a run ({', '.join(existing)}); nothing was changed. "
            "Pass --resume (run.resume=true) to continue it, --overwrite (run.overwrite=true) to replace it, "
            "or choose another --output-dir"
        )
    return False


def resume_decision(config: Config, output_dir: Path, main_process: bool = True) -> bool:
    """:func:`plan_resume`, then on the main process the clean-up a start needs.

    Stale temporary files of killed checkpoint writers are removed; a new run with
    ``run.overwrite`` removes the previous run's checkpoints (so a crash before its first
    checkpoint cannot resume the old run).
    """
    resume = plan_resume(config, output_dir)
    if main_process:
        remove_stale_temporaries(output_dir / CHECKPOINT_NAME)
        if not resume and config.run.overwrite:
            for name in (CHECKPOINT_NAME, DIVERGED_NAME):
                (output_dir / name).unlink(missing_ok=True)
        elif not resume and config.run.resume == "auto":
            _keep_logs_of_an_uncheckpointed_run(output_dir)
    return resume


def _keep_logs_of_an_uncheckpointed_run(output_dir: Path) -> None:
    """``run.resume=auto`` found epochs logged but no checkpoint: the new start keeps them aside.

    (A run stopped before its first checkpoint, e.g. with ``run.checkpoint_every`` > 1.) Its
    ``metrics.jsonl`` and ``config.yaml`` move to ``*.kept-<UTC time>`` instead of being rewritten.
    """
    metrics = output_dir / METRICS_NAME
    if not (metrics.is_file() and metrics.stat().st_size > 0):
        return
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    kept = []
    for name in (METRICS_NAME, "config.yaml"):
        path = output_dir / name
        if path.is_file():
            target = path.with_name(f"{name}.kept-{stamp}")
            os.replace(path, target)
            kept.append(target.name)
    warnings.warn(f"run.resume=auto: {str(output_dir)!r} has logged epochs but no checkpoint to continue; "
                  f"starting over, the earlier logs kept as {', '.join(kept)}")


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if name in _IGNORED:
            continue
        if isinstance(value, dict) and key != "kwargs":
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def provenance(config: Config, num_samples: int, labels: Tensor | None) -> dict[str, Any]:
    """What a checkpoint was trained on: data set, N, labels digest, training fields + digest."""
    fields = _flatten(config.to_dict())
    text = json.dumps(fields, sort_keys=True, default=str)
    labels_digest = None
    if labels is not None:
        labels_digest = hashlib.sha256(labels.to(torch.int64).cpu().numpy().tobytes()).hexdigest()[:16]
    return {
        "dataset": config.data.dataset,
        "num_samples": int(num_samples),
        "labels_digest": labels_digest,
        "config_digest": hashlib.sha256(text.encode()).hexdigest()[:16],
        "fields": fields,
    }


def check_provenance(stored: dict[str, Any] | None, current: dict[str, Any], path: Path) -> None:
    """Refuses to continue a checkpoint trained on another data set, N or training config.

    Raises:
        RunDirError: Naming every field that differs (checkpoint value → this run's value).
    """
    if stored is None:
        warnings.warn(f"checkpoint {str(path)!r} records no provenance (written by an older version); "
                      "it cannot be checked against this run's data and config", stacklevel=3)
        return
    differences = []
    for key in ("dataset", "num_samples", "labels_digest"):
        if stored.get(key) != current.get(key):
            label = {"dataset": "data.dataset", "num_samples": "N (training images)",
                     "labels_digest": "training labels (digest)"}[key]
            differences.append(f"{label}: {stored.get(key)!r} -> {current.get(key)!r}")
    if stored.get("config_digest") != current.get("config_digest"):
        old, new = stored.get("fields", {}), current.get("fields", {})
        for key in sorted(set(old) | set(new)):
            if key != "data.dataset" and old.get(key, "<absent>") != new.get(key, "<absent>"):
                differences.append(f"{key}: {old.get(key, '<absent>')!r} -> {new.get(key, '<absent>')!r}")
    if differences:
        raise RunDirError(
            f"checkpoint {str(path)!r} was trained on something else than this run; refusing to resume. "
            f"Differences (checkpoint -> now): {'; '.join(differences)}. Resume with the run's own config "
            "(its config.yaml), or start a new run in another --output-dir"
        )
