#!/usr/bin/env python
"""The short-schedule accuracy check: AND on CIFAR-10, 5 rounds x 6 epochs, kNN per round.

Two modes at the same epoch budget:

- ``paper``: the paper-faithful mode — ResNet18-CIFAR, batch 128, fp32, the PIL/DataLoader
  pipeline, lr 0.03 restarted every round.
- ``fast``: the fast path — data.gpu_resident, bf16 autocast, channels_last, batch 512 with the lr
  scaled linearly from batch 128 (0.12).

Prints one line per epoch and a summary, and writes a JSON record (kNN top-1 per round with
recomputed features and with the memory bank, anchor-neighbour consistency, wall time, images/s).
Not a test. What the authors' code reaches at this schedule is listed in docs/recipes.md
("Reference measurements at a short schedule"); compare the per-round kNN of the paper mode with it.

Usage::

    python benchmarks/accuracy_check.py --mode paper --data ~/data/cifar10 --out paper.json
    python benchmarks/accuracy_check.py --mode fast --data ~/data/cifar10 --out fast.json
    python benchmarks/accuracy_check.py --mode paper --data ~/data/cifar10 --device cpu --quick   # bug check
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES: dict[str, list[str]] = {
    "paper": ["data.batch_size=128", "run.precision=fp32", "data.gpu_resident=false"],
    "fast": [
        "data.batch_size=512", "optim.lr_reference_batch=128", "run.precision=bf16", "run.channels_last=true",
        "data.gpu_resident=true",
    ],
}


class _Printer:
    """Trainer callback: one line per epoch; after every round the partial record is written to
    ``out`` (so a run stopped by a time limit still leaves its finished rounds)."""

    def __init__(self, mode: str, out: str | None) -> None:
        self.mode, self.out = mode, out

    def on_round_end(self, trainer: Any, summary: dict[str, Any]) -> None:
        if self.out:
            record = _record(self.mode, trainer, trainer.round_records, None, None)
            Path(self.out).write_text(json.dumps({**record, "partial": True}, indent=2) + "\n")

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        knn = f"  kNN {100 * record['knn']:.1f} %" if "knn" in record else ""
        print(f"  round {record['round']} epoch {record['epoch'] + 1}: loss {record['loss']:.4f}  "
              f"{record['images_per_s']:,.0f} img/s  lr {record['lr']:.4g}{knn}", flush=True)


def _record(mode: str, trainer: Any, rounds: list[dict[str, Any]], wall: float | None, setup: float | None) -> dict[str, Any]:
    epochs = [h for h in trainer.history if h.get("kind") == "epoch"]
    train_seconds = sum(h["seconds"] for h in epochs)
    images = sum(h["images_per_s"] * h["seconds"] for h in epochs)
    return {
        "mode": mode,
        "knn_per_round": [r.get("knn") for r in rounds],
        "knn_bank_per_round": [r.get("knn_bank") for r in rounds],
        "consistency_per_round": [r.get("consistency") for r in rounds],
        "wall_s": wall, "setup_s": setup, "train_s": train_seconds,
        "train_images_per_s": images / max(train_seconds, 1e-9), "epochs": len(epochs),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=sorted(MODES), required=True)
    parser.add_argument("--data", required=True, help="CIFAR-10 root: pickle batches or the JPEG tree train/, test/")
    parser.add_argument("--device", default="cuda", help="cuda or cpu")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per round")
    parser.add_argument("--rounds", type=int, default=4, help="neighbourhood rounds after round 0")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers")
    parser.add_argument("--quick", action="store_true",
                        help="a bug check: 512 training / 256 test images, small CNN, 1 epoch, 1 round")
    parser.add_argument("--out", default=None, help="write the JSON record here")
    parser.add_argument("overrides", nargs="*", help="extra config overrides key=value")
    args = parser.parse_args(argv)

    import torch

    from and_plugin import Trainer, build_run, load_config

    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # both modes: fixed input shapes

    overrides = [
        "data.dataset=cifar10", f"data.root={args.data}", f"run.device={args.device}", "run.progress=false",
        "model.backbone=resnet18_cifar", f"optim.epochs_per_round={args.epochs}", f"method.rounds={args.rounds}",
        f"data.num_workers={args.workers}", "run.checkpoint_every=1000", *MODES[args.mode],
    ]
    if args.quick:
        overrides += ["data.subset=512", "data.test_subset=256", "model.backbone=small_cnn", "optim.epochs_per_round=1",
                      "method.rounds=1", "data.num_workers=0"]
    overrides += args.overrides
    with tempfile.TemporaryDirectory() as out_dir:
        config = load_config(None, [*overrides, f"run.output_dir={out_dir}"])
        started = time.perf_counter()
        parts = build_run(config)
        trainer = Trainer(config, parts.model, parts.train_set, parts.eval_train_set, parts.test_set,
                          callbacks=[_Printer(args.mode, args.out)])
        setup = time.perf_counter() - started
        result = trainer.fit()
        wall = time.perf_counter() - started
    record = {**_record(args.mode, trainer, result.rounds, wall, setup), "overrides": overrides, "device": args.device}
    train_seconds = record["train_s"]
    knn = " / ".join("—" if k is None else f"{100 * k:.1f}" for k in record["knn_per_round"])
    print(f"{args.mode}: kNN per round {knn} %; training {train_seconds:.0f} s at "
          f"{record['train_images_per_s']:,.0f} img/s; wall {wall:.0f} s (setup {setup:.0f} s)", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return record


if __name__ == "__main__":
    main()
