"""Quick start: instance learning (NPID) vs AND on the same epoch budget, on an embedded data set.

Runs on 2 CPU cores in a few minutes with no download: scikit-learn's 8x8 digits (1,400
train / 397 test images) ship inside a pip package we already depend on. Prints, per round,
the weighted-kNN top-1 of both methods at the same number of epochs and AND's anchor
neighbourhood class consistency (labels are used for monitoring only).

    python recipes/quickstart.py                       # digits, 5 rounds x 8 epochs
    python recipes/quickstart.py --dataset fashion_mnist --subset 10000   # after apt-get install dataset-fashion-mnist
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from and_plugin import Trainer, load_config
from and_plugin.build import build_run

QUICKSTART_DEFAULTS = {
    "name": "quickstart",
    "model": {"backbone": "small_cnn"},
    # gpu_resident keeps the uint8 images on the device (here the CPU) and augments whole
    # batches at once: about 4x faster than per-image PIL work for these tiny images.
    "data": {"dataset": "digits", "batch_size": 64, "gpu_resident": True},
    "method": {"temperature": 0.1, "memory_momentum": 0.5, "neighbours": 1, "rounds": 4},
    "eval": {"knn_k": 200, "knn_temperature": 0.1},
    "run": {"device": "cpu", "threads": 2},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits", help="digits (embedded) or fashion_mnist (apt package)")
    parser.add_argument("--subset", type=int, default=None, help="use only this many training images")
    parser.add_argument("--epochs-per-round", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4, help="R, neighbourhood rounds after round 0")
    parser.add_argument("--output-dir", default="runs/quickstart")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", help="extra key=value config overrides for both runs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, list[dict]]:
    args = parse_args(argv)
    epochs, rounds = args.epochs_per_round, args.rounds
    common = [
        f"data.dataset={args.dataset}",
        f"optim.epochs_per_round={epochs}",
        f"method.rounds={rounds}",
        f"run.seed={args.seed}",
        f"run.progress={'false' if args.no_progress else 'true'}",
        "run.overwrite=true",  # each quick start replaces the previous one's output
    ]
    if args.subset:
        common.append(f"data.subset={args.subset}")
    runs = {
        # Same epoch budget: one round of (R + 1) * E epochs, kNN measured every E epochs.
        "instance": common + [
            "method.instance_only=true",
            f"optim.round0_epochs={(rounds + 1) * epochs}",
            f"eval.every_epochs={epochs}",
            f"run.output_dir={args.output_dir}/instance",
        ],
        "and": common + [f"run.output_dir={args.output_dir}/and"],
    }
    console = Console()
    results: dict[str, list[dict]] = {}
    for name, overrides in runs.items():
        config = load_config(QUICKSTART_DEFAULTS, overrides + list(args.overrides))
        parts = build_run(config)
        started = time.perf_counter()
        console.print(f"[bold]{name}[/bold]: {len(parts.train_set)} training images, {config.model.backbone}")
        trainer = Trainer(config, parts.model, parts.train_set, parts.eval_train_set, parts.test_set)
        trainer.fit()
        console.print(f"  done in {time.perf_counter() - started:.0f} s")
        # AND: one record per round; instance: the kNN measured every E epochs of its single round.
        results[name] = trainer.round_records if name == "and" else [r for r in trainer.history if "knn" in r]
    console.print(summary_table(results, epochs))
    return results


def summary_table(results: dict[str, list[dict]], epochs: int) -> Table:
    """Per round: kNN of both methods at the same epoch count, and AND's AN consistency."""
    table = Table(title=f"Weighted kNN top-1 (recomputed features), {epochs} epochs per round")
    for column in ("round", "epochs", "instance kNN", "AND kNN", "AND anchors", "AN consistency"):
        table.add_column(column, justify="right")
    instance = results.get("instance", [])
    for position, record in enumerate(results.get("and", [])):
        baseline = instance[position]["knn"] if position < len(instance) else None
        anchors = record.get("anchors")
        consistency = record.get("consistency")
        table.add_row(
            str(record["round"]),
            str((position + 1) * epochs),
            "-" if baseline is None else f"{100 * baseline:.1f} %",
            f"{100 * record['knn']:.1f} %",
            "-" if anchors is None else f"{100 * record['anchor_fraction']:.0f} %",
            "-" if consistency is None else f"{100 * consistency:.0f} %",
        )
    return table


if __name__ == "__main__":
    main()
