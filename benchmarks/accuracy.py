"""AND vs instance learning at the same epoch budget, over seeds: mean ± sd per round.

One invocation measures one *setting* (a data set and a list of config overrides applied to
both methods) and writes ``benchmarks/results/accuracy/<study>/<setting>.json`` plus a PNG of the
curves next to it. ``report`` redraws every PNG and rewrites the study index from the JSON files;
``docs/results.md`` and the recipes page read those files (nothing is typed by hand).

Fair comparison, by construction:

- AND: round 0 (instance loss) + R rounds of E epochs, the lr schedule restarting every round.
- Instance (NPID): ``method.instance_only=true`` with ``optim.round0_epochs = (R + 1) * E``, the
  same total epochs, the same schedule family over its single round, kNN measured every E
  epochs, so every AND round has an instance point at the same epoch count. With
  ``optim.lr_schedule=constant`` both runs see exactly the same lr at every epoch.
- Same seed ⇒ same initial weights and, up to the end of round 0, the same training: the curves
  share their first point.
- Optional third arm, ``--arms ... instance_restarts``: the AND run with ``method.selection=none``
  (no anchors in any round), i.e. instance learning with AND's rounds and per-round schedule
  restarts. Under a decaying schedule it separates what the restarts add from what the
  neighbourhoods add; under ``constant`` it is the instance arm's process (the same lr every
  epoch), only its random stream (batch order, augmentation) differs from round 1 on.
- Keys only AND reads (:data:`AND_ONLY_KEYS`) are left out of the instance arm, so an ablation of
  them (k, selection, curriculum) can take its instance arm from an earlier setting measured with
  the same instance config (``--instance-from STUDY/SETTING``); the JSON records where it came from.

Settings are chosen on a validation split (``--split val``): ``--val-size`` class-balanced
images of the *training* set, disjoint from the training images, act as the test set. Final
numbers use ``--split test`` (the data set's test split); the test split is never used to choose.

Examples::

    python benchmarks/accuracy.py run --study digits --setting constant --split val --seeds 0 1 2 \\
        --dataset digits --epochs-per-round 8 --rounds 4 -- optim.lr_schedule=constant
    python benchmarks/accuracy.py report
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "accuracy"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from and_plugin import Trainer, load_config  # noqa: E402
from and_plugin.build import build_run  # noqa: E402
from and_plugin.data.base import IndexedDataset  # noqa: E402
from and_plugin.data.builder import subset_indices  # noqa: E402

#: Both methods start from these; the command line's overrides come after.
DEFAULTS: dict[str, Any] = {
    "model": {"backbone": "small_cnn"},
    "data": {"batch_size": 128, "gpu_resident": True},
    "method": {"temperature": 0.1, "memory_momentum": 0.5, "neighbours": 1, "rounds": 4},
    "optim": {"lr": 0.03},
    "eval": {"knn_k": 200, "knn_temperature": 0.1, "bank_knn": True},
    "run": {"device": "cpu", "threads": 1, "progress": False, "checkpoint_every": 1_000_000},
}
SPLIT_SEED = 20190425
METRICS = ("knn", "knn_bank", "consistency")
ARMS = ("and", "instance", "instance_restarts")
#: Overrides that the instance baseline (``method.instance_only=true``) never reads.
AND_ONLY_KEYS = frozenset({"method.neighbours", "method.selection", "method.round0", "method.curriculum",
                           "method.miner", "method.miner_kwargs"})


def _key(override: str) -> str:
    return override.split("=", 1)[0].strip()


def instance_overrides(overrides: list[str]) -> list[str]:
    """The overrides the instance arm runs with: ``overrides`` less :data:`AND_ONLY_KEYS`."""
    return [o for o in overrides if _key(o) not in AND_ONLY_KEYS]


# ------------------------------------------------------------------------------------ splits


def _take(dataset: IndexedDataset, keep: np.ndarray) -> IndexedDataset:
    """The items ``keep`` of an in-memory or file-backed data set, as a new IndexedDataset."""
    base = dataset.base
    targets = [int(dataset.targets[i]) for i in keep]
    if hasattr(base, "images"):
        new_base = type(base)(base.images[keep], targets)
    elif hasattr(base, "paths"):
        new_base = type(base)([base.paths[i] for i in keep], targets, getattr(base, "mode", "RGB"))
    else:  # pragma: no cover - every registered data set stores images or paths
        raise TypeError(f"cannot split a {type(base).__name__}: expected stored images or paths")
    return IndexedDataset(new_base, targets, dataset.classes, dataset.transform)


def validation_split(targets: np.ndarray, train_size: int | None, val_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, validation indices) within a training set, disjoint and class-balanced.

    The training images are the ones ``data.subset = train_size`` selects when that leaves at
    least ``val_size`` images over (so validation and test runs train on the same images);
    otherwise the training set is split, ``val_size`` images (seeded, stratified) held out.
    """
    n = len(targets)
    rng = np.random.default_rng(SPLIT_SEED)
    train = subset_indices(targets, train_size) if train_size else np.arange(n)
    rest = np.setdiff1d(np.arange(n), train)
    if len(rest) < val_size:  # not enough spare images: hold out part of the training set
        order = rng.permutation(n)
        ranked = order[subset_indices(targets[order], val_size)]
        val = np.sort(ranked)
        train = np.setdiff1d(np.arange(n), val)
        if train_size:
            train = train[subset_indices(targets[train], train_size)]
        return np.sort(train), val
    order = rng.permutation(rest)
    val = np.sort(order[subset_indices(targets[order], val_size)])
    return train, val


# ------------------------------------------------------------------------------------ runs


def configs_for(args: argparse.Namespace, seed: int, output: Path) -> dict[str, Any]:
    """The configs of one seed, per arm in ``args.arms`` (same overrides, same total epochs)."""
    common = [
        f"data.dataset={args.dataset}",
        f"optim.epochs_per_round={args.epochs_per_round}",
        f"method.rounds={args.rounds}",
        f"run.seed={seed}",
    ]
    if args.split == "test" and args.subset:
        common.append(f"data.subset={args.subset}")
    if args.test_subset:
        common.append(f"data.test_subset={args.test_subset}")
    total = (args.rounds + 1) * args.epochs_per_round
    builders = {
        "and": lambda: load_config(DEFAULTS, common + list(args.overrides) + [
            f"run.output_dir={output}/and-seed{seed}", f"name=and-{args.setting}"]),
        "instance": lambda: load_config(DEFAULTS, common + instance_overrides(args.overrides) + [
            "method.instance_only=true",
            f"optim.round0_epochs={total}",
            f"eval.every_epochs={args.eval_every or args.epochs_per_round}",
            f"run.output_dir={output}/instance-seed{seed}",
            f"name=instance-{args.setting}",
        ]),
        "instance_restarts": lambda: load_config(DEFAULTS, common + instance_overrides(args.overrides) + [
            "method.selection=none",
            f"run.output_dir={output}/instance_restarts-seed{seed}",
            f"name=instance-restarts-{args.setting}",
        ]),
    }
    return {arm: builders[arm]() for arm in args.arms}


def _quoted_command(result: dict[str, Any]) -> str:
    """A results file's command, its ``--note`` quoted (files written before commands were
    recorded with shell quoting hold the note's words unquoted)."""
    command, note = result["command"], result.get("note") or ""
    if " " in note and f"--note {note} " in command:
        command = command.replace(f"--note {note} ", f"--note {shlex.quote(note)} ", 1)
    return command


def budgets(args: argparse.Namespace) -> list[int]:
    """The epoch counts at which both arms are compared: the end of round 0 and of every round."""
    return [(i + 1) * args.epochs_per_round for i in range(args.rounds + 1)]


def points_at(points: list[dict[str, Any]], epochs: list[int]) -> list[dict[str, Any]] | None:
    """The records of ``points`` at exactly ``epochs`` (in that order); None if one is missing."""
    by_epochs = {p["epochs"]: p for p in points}
    return [by_epochs[e] for e in epochs] if all(e in by_epochs for e in epochs) else None


def _instance_source(args: argparse.Namespace, results: Path) -> dict[str, Any]:
    """The results file of ``--instance-from``, after checking its instance arm is ours.

    The other setting must share data set, split, sizes and every override the instance arm
    reads, and its instance runs must be at least as long as ours with kNN at each of our budgets
    (at a constant lr an instance run does not depend on its length: one long run evaluated
    every few epochs serves every round length whose budgets it covers).

    Raises:
        SystemExit: Naming the first thing that differs.
    """
    path = results / f"{args.instance_from}.json"
    if not path.exists():
        raise SystemExit(f"--instance-from: no results file {path}")
    other = json.loads(path.read_text())
    theirs = parse_args(shlex.split(_quoted_command(other))[2:])  # the command that wrote it
    for key in ("dataset", "split", "subset", "test_subset", "val_size"):
        if key == "val_size" and args.split != "val":
            continue
        if getattr(args, key) != getattr(theirs, key):
            raise SystemExit(f"--instance-from {args.instance_from}: {key} differs ({getattr(theirs, key)!r} "
                             f"there, {getattr(args, key)!r} here); its instance arm is not this setting's")
    if instance_overrides(args.overrides) != instance_overrides(theirs.overrides):
        raise SystemExit(f"--instance-from {args.instance_from}: the instance arm's overrides differ "
                         f"({instance_overrides(theirs.overrides)} there, {instance_overrides(args.overrides)} here)")
    same_length = (theirs.epochs_per_round, theirs.rounds) == (args.epochs_per_round, args.rounds)
    if not same_length and _schedule(args.overrides) != "constant":
        raise SystemExit(f"--instance-from {args.instance_from}: epochs_per_round differs ({theirs.epochs_per_round} "
                         f"there, {args.epochs_per_round} here); only a constant lr lets one instance run serve "
                         "other round lengths")
    for seed, points in sorted(other["per_seed"].get("instance", {}).items())[:1]:
        if points_at(points, budgets(args)) is None:  # refuse now, not after training
            raise SystemExit(f"--instance-from {args.instance_from}: seed {seed}'s instance run has kNN at epochs "
                             f"{[p['epochs'] for p in points]}, not at every budget {budgets(args)} of this setting")
    return other


def _schedule(overrides: list[str]) -> str:
    schedules = [o.split("=", 1)[1].strip() for o in overrides if _key(o) == "optim.lr_schedule"]
    return schedules[-1] if schedules else load_config(DEFAULTS, []).optim.lr_schedule


def _wait_until(done: Any, seconds: float) -> None:
    """Polls ``done()`` (at most once a minute) until it is true or ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(min(60.0, max(1.0, deadline - time.monotonic())))


def reusable_instance(args: argparse.Namespace, results: Path, seed: int,
                      wait_seconds: float = 0.0) -> list[dict[str, Any]]:
    """Seed ``seed``'s instance points from ``--instance-from``, at this setting's budgets.

    Args:
        args: This setting's arguments.
        results: The results folder.
        seed: The seed wanted.
        wait_seconds: How long to wait for a run in progress to write the seed (``--instance-wait``).

    Raises:
        SystemExit: The setting differs, or the seed is missing (after waiting), or its run does
            not reach every budget of this setting.
    """
    _wait_until(lambda: str(seed) in _instance_source(args, results)["per_seed"].get("instance", {}), wait_seconds)
    runs = _instance_source(args, results)["per_seed"].get("instance", {})
    if str(seed) not in runs:
        raise SystemExit(f"--instance-from {args.instance_from}: has no instance run of seed {seed} "
                         f"(it has seeds {sorted(int(s) for s in runs)})")
    points = points_at(runs[str(seed)], budgets(args))
    if points is None:
        have = [p["epochs"] for p in runs[str(seed)]]
        raise SystemExit(f"--instance-from {args.instance_from}: seed {seed}'s instance run has kNN at epochs "
                         f"{have}, not at every budget {budgets(args)} of this setting")
    return points


def run_one(config: Any, split: str, subset: int | None, val_size: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Trains one config; returns its per-round records (kNN at every E epochs) and data sizes."""
    parts = build_run(config)
    train_set, eval_train_set, test_set = parts.train_set, parts.eval_train_set, parts.test_set
    if split == "val":
        train_idx, val_idx = validation_split(train_set.targets.numpy(), subset, val_size)
        test_set = _take(eval_train_set, val_idx)
        train_set, eval_train_set = _take(train_set, train_idx), _take(eval_train_set, train_idx)
    trainer = Trainer(config, parts.model, train_set, eval_train_set, test_set)
    started = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - started
    if config.method.instance_only:  # one round: kNN every eval.every_epochs epochs
        points = [{"epochs": r["epoch"] + 1, **{m: r.get(m) for m in METRICS}, "anchor_fraction": None}
                  for r in trainer.history if "knn" in r]
    else:  # kNN at the end of every round
        points = [{"epochs": (i + 1) * config.optim.epochs_per_round, **{m: r.get(m) for m in METRICS},
                   "anchor_fraction": r.get("anchor_fraction")}
                  for i, r in enumerate(trainer.round_records)]
    return points, {"train": len(train_set), "eval": len(test_set), "seconds": seconds}


def summarise(values: list[float | None]) -> dict[str, float] | None:
    """mean, sd (sample, n-1) and n of the non-missing values, in percent."""
    xs = [100 * v for v in values if v is not None]
    if not xs:
        return None
    return {"mean": statistics.fmean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def paired_test(differences: list[float], confidence: float = 0.95) -> dict[str, Any] | None:
    """A paired t-test of per-seed differences (percentage points) against 0.

    Returns mean, sd, n, the two-sided ``confidence`` interval of the mean (Student's t with
    n - 1 degrees of freedom), t, its two-sided p-value and the verdict: ``"AND ahead"`` /
    ``"instance ahead"`` only where the interval excludes 0 (p < 1 - confidence), ``"level"``
    otherwise, ``"one seed"`` where n < 2 leaves no spread to test.
    """
    from scipy import stats

    if not differences:
        return None
    n = len(differences)
    mean = statistics.fmean(differences)
    out: dict[str, Any] = {"mean": mean, "sd": statistics.stdev(differences) if n > 1 else 0.0, "n": n,
                           "confidence": confidence}
    if n < 2:
        return {**out, "ci": None, "t": None, "p": None, "verdict": "one seed"}
    se = out["sd"] / np.sqrt(n)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    if se == 0:  # every seed gave the same difference
        t, p = (0.0, 1.0) if mean == 0 else (float(np.sign(mean)) * np.inf, 0.0)
    else:
        t = mean / se
        p = float(2 * stats.t.sf(abs(t), n - 1))
    low, high = mean - half, mean + half
    verdict = "AND ahead" if low > 0 else "instance ahead" if high < 0 else "level"
    return {**out, "ci": [low, high], "t": float(t), "p": p, "verdict": verdict}


def final_differences(per_seed: dict[str, dict[Any, list[dict[str, Any]]]], baseline: str,
                      metric: str) -> list[float]:
    """AND − ``baseline`` at the last budget, per seed both arms measured, in percentage points."""
    ours, theirs = per_seed.get("and") or {}, per_seed.get(baseline) or {}
    common = sorted(set(ours) & set(theirs), key=int)
    return [100 * (ours[s][-1][metric] - theirs[s][-1][metric]) for s in common
            if ours[s][-1][metric] is not None and theirs[s][-1][metric] is not None]


def aggregate(per_seed: dict[str, dict[int, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per arm and round: mean ± sd over seeds; plus the final AND − baseline differences.

    ``final_diff_<metric>`` is AND − instance, ``final_diff_<metric>_restarts`` AND − instance with
    restarts, each paired by seed (:func:`paired_test`).
    """
    out: dict[str, Any] = {}
    for method, seeds in per_seed.items():
        curves = list(seeds.values())
        rounds = min(len(c) for c in curves)
        out[method] = [
            {"epochs": curves[0][i]["epochs"], **{m: summarise([c[i][m] for c in curves]) for m in METRICS}}
            for i in range(rounds)
        ]
    for baseline, suffix in (("instance", ""), ("instance_restarts", "_restarts")):
        if not per_seed.get("and") or not per_seed.get(baseline):
            continue
        for metric in ("knn", "knn_bank"):
            out[f"final_diff_{metric}{suffix}"] = paired_test(final_differences(per_seed, baseline, metric))
    return out


#: What must match for ``--add-seeds`` to add runs to an existing setting (all but the seeds).
SAME_SETTING_KEYS = ("dataset", "subset", "test_subset", "split", "val_size", "epochs_per_round", "rounds", "arms",
                     "instance_from", "eval_every", "overrides")


def _check_same_setting(args: argparse.Namespace, existing: dict[str, Any], path: Path) -> None:
    """Refuses ``--add-seeds`` into a file of another setting, or a seed it already holds."""
    theirs = parse_args(shlex.split(_quoted_command(existing))[2:])
    for key in SAME_SETTING_KEYS:
        if getattr(theirs, key) != getattr(args, key):
            raise SystemExit(f"--add-seeds: {path} holds another setting ({key} is {getattr(theirs, key)!r} there, "
                             f"{getattr(args, key)!r} here)")
    held = sorted(set(args.seeds) & {int(s) for s in existing["seeds"]})
    if held:
        raise SystemExit(f"--add-seeds: {path} already holds seeds {held}")


def _write_merged(path: Path, result: dict[str, Any]) -> None:
    """Writes ``result`` merged with the seeds another piece of the same setting wrote meanwhile.

    Several processes may each run some seeds of one setting (``--add-seeds``); an exclusive lock
    around read-merge-write keeps every piece's seeds.
    """
    import fcntl
    import os

    folder = os.open(path.parent, os.O_RDONLY)  # the lock: the results folder itself, no lock file left behind
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        if path.exists():
            other = json.loads(path.read_text())
            for arm, runs in other["per_seed"].items():
                for seed, points in runs.items():
                    result["per_seed"].setdefault(arm, {}).setdefault(seed, points)
            for arm, runs in other.get("seconds_per_seed", {}).items():
                for seed, t in runs.items():
                    result["seconds_per_seed"].setdefault(arm, {}).setdefault(seed, t)
            result["pieces"] = list(dict.fromkeys(other.get("pieces", [other["command"]]) + [result["command"]]))
            result["command"] = other["command"]  # the first piece's; the pieces differ in --seeds only
        per_seed = {arm: {int(s): c for s, c in runs.items()} for arm, runs in result["per_seed"].items()}
        result["per_seed"] = {arm: dict(sorted(runs.items(), key=lambda kv: int(kv[0])))
                              for arm, runs in result["per_seed"].items()}
        result["seeds"] = sorted(per_seed["and"] if "and" in per_seed else per_seed["instance"])
        result["summary"] = aggregate({arm: dict(sorted(v.items())) for arm, v in per_seed.items() if v})
        result["seconds_per_run"] = {arm: statistics.fmean(v.values())
                                     for arm, v in result["seconds_per_seed"].items() if v}
        path.write_text(json.dumps(result, indent=1) + "\n")
    finally:
        os.close(folder)  # closing releases the lock


def cmd_run(args: argparse.Namespace) -> Path:
    torch.set_num_threads(args.threads)
    results = Path(args.results)
    study_dir = results / args.study
    study_dir.mkdir(parents=True, exist_ok=True)
    out_path = study_dir / f"{args.setting}.json"
    # method.round0=random would skip round 0: E epochs fewer for AND than for the instance arm.
    budget_keys = {"optim.round0_epochs", "optim.epochs_per_round", "method.rounds", "method.instance_only",
                   "method.round0", "run.seed"}
    fixed = sorted({_key(o) for o in args.overrides} & budget_keys)
    if fixed:  # both arms' budgets and kNN points are derived from --epochs-per-round and --rounds
        raise SystemExit(f"overrides: {fixed} are set by the harness (--epochs-per-round, --rounds, --seeds); "
                         "round 0 lasts E epochs so that every AND round has an instance point")
    instance_alone = args.arms == ["instance"]
    if "and" not in args.arms and not instance_alone:
        raise SystemExit(f"--arms must include 'and' (or be 'instance' alone), got {args.arms}")
    if args.eval_every is not None and not instance_alone:
        raise SystemExit("--eval-every: only with --arms instance (a long instance run that other settings "
                         "take their instance arm from, --instance-from)")
    if args.instance_from and "instance" in args.arms:
        raise SystemExit("--instance-from: leave 'instance' out of --arms (its runs are taken from there)")
    if args.instance_from:
        source = results / f"{args.instance_from}.json"
        _wait_until(source.exists, args.instance_wait)  # its first seed may still be training
        _instance_source(args, results)  # refuse a mismatched setting before training anything
    scratch = Path(args.scratch) / args.study / args.setting
    per_seed: dict[str, dict[int, list[dict[str, Any]]]] = {arm: {} for arm in ARMS if arm in args.arms}
    if args.instance_from:
        per_seed["instance"] = {}
    sizes: dict[str, Any] = {}
    seconds: dict[str, dict[int, float]] = {arm: {} for arm in ARMS if arm in args.arms}
    command = "python benchmarks/accuracy.py " + shlex.join(sys.argv[1:] if args.argv is None else args.argv)
    if args.add_seeds and out_path.exists():
        _check_same_setting(args, json.loads(out_path.read_text()), out_path)
    for seed in args.seeds:
        configs = configs_for(args, seed, scratch)
        for method, config in configs.items():
            config.run.threads = args.threads
            points, info = run_one(config, args.split, args.subset, args.val_size)
            per_seed[method][seed] = points
            seconds[method][seed] = info["seconds"]
            sizes = {"train": info["train"], "eval": info["eval"]}
            last = points[-1]
            print(f"[{args.study}/{args.setting}] seed {seed} {method:17s} kNN {100 * last['knn']:.1f} % "
                  f"({info['seconds']:.0f} s)", flush=True)
            if args.instance_from and method == args.arms[-1]:  # taken after training, so it may be in progress
                per_seed["instance"][seed] = reusable_instance(args, results, seed, args.instance_wait)
            first = configs.get("and") or configs["instance"]
            result = {
                "study": args.study,
                "setting": args.setting,
                "dataset": args.dataset,
                "split": args.split,
                "sizes": sizes,
                "epochs_per_round": args.epochs_per_round,
                "rounds": args.rounds,
                "overrides": list(args.overrides),
                # AND's resolved config; the instance run adds method.instance_only, optim.round0_epochs
                # = (R + 1) * E and eval.every_epochs = E; instance_restarts adds method.selection=none.
                "resolved": {k: first.to_dict()[k] for k in ("model", "data", "method", "optim", "eval")},
                "arms": [arm for arm in ARMS if arm in per_seed],
                "instance_from": args.instance_from,
                "eval_every": args.eval_every,
                "seeds": sorted(per_seed["and"] if "and" in per_seed else per_seed["instance"]),
                "per_seed": {m: {str(s): c for s, c in v.items()} for m, v in per_seed.items()},
                "summary": aggregate({m: v for m, v in per_seed.items() if v}),
                "seconds_per_run": {m: statistics.fmean(v.values()) for m, v in seconds.items() if v},
                "seconds_per_seed": {m: {str(s): t for s, t in v.items()} for m, v in seconds.items()},
                "note": args.note,
                "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                            "torch": torch.__version__},
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                "command": command,
            }
            if args.add_seeds:
                _write_merged(out_path, result)
            else:
                out_path.write_text(json.dumps(result, indent=1) + "\n")  # after every run: partial results survive
    plot(out_path)
    write_index(results)
    write_length_curves(results)
    return out_path


# ------------------------------------------------------------------------------------ report


def plot(path: Path, out: Path | None = None, fontsize: int = 9) -> Path | None:
    """Draws kNN per round (recomputed and bank), mean ± sd band, for every arm of one setting.

    Args:
        path: The setting's results file.
        out: Where to save; ``<setting>.png`` beside the JSON by default (an ``.svg`` name gives a
            vector figure without a date, as the docs draw it).
        fontsize: Titles' size; the legend's is one less.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return None
    result = json.loads(path.read_text())
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    styles = (("instance", "tab:grey", "instance"), ("instance_restarts", "tab:orange", "instance, restarts"),
              ("and", "tab:blue", "AND"))
    for method, colour, label in styles:
        rows = result["summary"].get(method) or []
        for ax, metric in zip(axes, ("knn", "knn_bank")):
            points = [(r["epochs"], r[metric]) for r in rows if r.get(metric)]
            if not points:
                continue
            xs = [p[0] for p in points]
            mean = np.array([p[1]["mean"] for p in points])
            sd = np.array([p[1]["sd"] for p in points])
            ax.plot(xs, mean, "o-", color=colour, label=label)
            ax.fill_between(xs, mean - sd, mean + sd, color=colour, alpha=0.2)
    for ax, title in zip(axes, ("kNN top-1, recomputed features (%)", "kNN top-1, memory bank (%)")):
        ax.set_title(title, fontsize=fontsize)
        ax.set_xlabel("epochs")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=fontsize - 1)
    seeds = len(result["seeds"])
    fig.suptitle(f"{result['study']} / {result['setting']} ({result['split']} split, {seeds} seeds, mean ± sd)",
                 fontsize=fontsize)
    fig.tight_layout()
    out = out or path.with_suffix(".png")
    if out.suffix == ".svg":
        fig.savefig(out, format="svg", metadata={"Date": None})
    else:
        fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def write_index(results: Path = RESULTS) -> Path:
    """``index.json``: every setting's final numbers, one row each (what the docs tabulate)."""
    rows = []
    for path in sorted(results.glob("*/*.json")):
        result = json.loads(path.read_text())
        summary = result["summary"]
        final = {m: (summary.get(m) or [{}])[-1] for m in ARMS}
        rows.append({
            "study": result["study"], "setting": result["setting"], "split": result["split"],
            "dataset": result["dataset"], "train": result["sizes"].get("train"),
            "epochs_per_round": result["epochs_per_round"], "rounds": result["rounds"],
            "overrides": result["overrides"], "seeds": result["seeds"],
            "and_knn": final["and"].get("knn"), "instance_knn": final["instance"].get("knn"),
            "and_knn_bank": final["and"].get("knn_bank"), "instance_knn_bank": final["instance"].get("knn_bank"),
            # Recomputed from the per-seed runs, so every file is judged by today's test.
            "diff_knn": paired_test(final_differences(result["per_seed"], "instance", "knn")),
            "diff_knn_bank": paired_test(final_differences(result["per_seed"], "instance", "knn_bank")),
            "instance_restarts_knn": final["instance_restarts"].get("knn"),
            "diff_knn_restarts": paired_test(final_differences(result["per_seed"], "instance_restarts", "knn")),
            "arms": result.get("arms", ["and", "instance"]),
            "instance_from": result.get("instance_from"),
            "consistency": final["and"].get("consistency"), "note": result.get("note", ""),
            "file": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
        })
    index = results / "index.json"
    index.write_text(json.dumps(rows, indent=1) + "\n")
    return index


def _reads_labels(overrides: list[str]) -> bool:
    return any(_key(o) == "method.curriculum" and o.split("=", 1)[1].strip() == "label_filtered" for o in overrides)


def length_point(result: dict[str, Any]) -> dict[str, Any]:
    """One round length of a length study: final kNN, paired differences, per-round consistency."""
    per_seed, summary = result["per_seed"], result["summary"]
    final = {arm: (summary.get(arm) or [{}])[-1] for arm in ARMS}
    rounds = summary.get("and") or []
    return {
        "setting": result["setting"], "epochs_per_round": result["epochs_per_round"], "seeds": result["seeds"],
        "and_knn": final["and"].get("knn"), "instance_knn": final["instance"].get("knn"),
        "instance_restarts_knn": final["instance_restarts"].get("knn"),
        "diff": paired_test(final_differences(per_seed, "instance", "knn")),
        "diff_restarts": paired_test(final_differences(per_seed, "instance_restarts", "knn")),
        # rounds 1..R (round 0 has no anchors)
        "consistency": [r.get("consistency") for r in rounds[1:]],
        "label_filtered": _reads_labels(result["overrides"]),
    }


def instance_checks(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Settings that trained their own instance arm, against the long instance run of their study.

    One row per such setting and long run: the seeds compared and whether every kNN point of the
    setting's own runs equals the long run's point at the same epoch count (it must, at a
    constant lr, for the long run to stand in for every round length).
    """
    longs = [r for r in files if r.get("arms") == ["instance"]]
    rows = []
    for own in (r for r in files if "instance" in r.get("arms", []) and "and" in r["arms"] and not r.get("instance_from")):
        for long_run in longs:
            seeds = sorted(set(own["per_seed"]["instance"]) & set(long_run["per_seed"]["instance"]), key=int)
            if not seeds:
                continue
            equal = all(points_at(long_run["per_seed"]["instance"][s], [p["epochs"] for p in own["per_seed"]["instance"][s]])
                        == own["per_seed"]["instance"][s] for s in seeds)
            rows.append({"setting": own["setting"], "long_run": long_run["setting"], "seeds": [int(s) for s in seeds],
                         "points": sum(len(own["per_seed"]["instance"][s]) for s in seeds), "equal": equal})
    return rows


def write_length_curves(results: Path = RESULTS) -> Path | None:
    """``length-curve.json`` and ``length-curve.svg``: AND − instance against epochs per round.

    A *length study* is a results folder whose name ends in ``-length``: settings that differ only
    in ``--epochs-per-round`` (the instance arm typically from one long run, ``--instance-from``).
    Settings that read labels (the label-filtered diagnostic) are kept apart as diagnostics.
    """
    studies = []
    for folder in sorted(p for p in results.glob("*-length") if p.is_dir()):
        files = [json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))]
        points = [length_point(r) for r in files if "and" in r.get("arms", ["and"])]
        if not points:
            continue
        points.sort(key=lambda p: (p["label_filtered"], p["epochs_per_round"]))
        first = next(r for r in files if "and" in r.get("arms", ["and"]))
        studies.append({
            "instance_checks": instance_checks(files),
            "study": folder.name, "dataset": first["dataset"], "split": first["split"],
            "train": first["sizes"]["train"], "eval": first["sizes"]["eval"], "rounds": first["rounds"],
            "overrides": first["overrides"],
            "points": [p for p in points if not p["label_filtered"]],
            "diagnostics": [p for p in points if p["label_filtered"]],
        })
    out = results / "length-curve.json"
    if not studies:
        return None
    out.write_text(json.dumps({"studies": studies}, indent=1) + "\n")
    plot_length_curves(studies, results / "length-curve.svg")
    return out


def plot_length_curves(studies: list[dict[str, Any]], out: Path) -> Path | None:
    """Left: AND − instance (filled) and AND − (instance + restarts) (open) with 95 % intervals,
    one line per study; right: AN consistency of rounds 1..R against epochs per round."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, study in enumerate(studies):
        colour = colours[i % len(colours)]
        for key, marker, fill, label, shift in (("diff", "o", colour, "AND − instance", 0.0),
                                                ("diff_restarts", "s", "white", "AND − (instance + restarts)", 0.06)):
            pts = [p for p in study["points"] if p[key] and p[key]["ci"]]
            if not pts:
                continue
            xs = np.array([p["epochs_per_round"] for p in pts]) * (1 + shift)
            mean = np.array([p[key]["mean"] for p in pts])
            low = mean - np.array([p[key]["ci"][0] for p in pts])
            high = np.array([p[key]["ci"][1] for p in pts]) - mean
            left.errorbar(xs, mean, yerr=[low, high], fmt=marker + ("-" if key == "diff" else ""), color=colour,
                          mfc=fill, capsize=3, label=f"{study['dataset']}: {label}")
        for r in range(study["rounds"]):
            pts = [p for p in study["points"] if len(p["consistency"]) > r and p["consistency"][r]]
            if pts:
                right.plot([p["epochs_per_round"] for p in pts], [p["consistency"][r]["mean"] for p in pts],
                           "o-", color=colour, alpha=0.4 + 0.6 * (r + 1) / study["rounds"],
                           label=f"{study['dataset']}: round {r + 1}")
    left.axhline(0, color="black", lw=0.8)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("epochs per round")
        ax.grid(alpha=0.3)
    left.set_title("final kNN difference (points), 95 % paired-t interval", fontsize=9)
    right.set_title("AN consistency (%), mean over seeds", fontsize=9)
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def cmd_report(args: argparse.Namespace) -> None:
    results = Path(args.results)
    for path in sorted(results.glob("*/*.json")):
        plot(path)
    print(write_index(results))
    print(write_length_curves(results))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="measure one setting over seeds")
    run.add_argument("--study", required=True, help="results folder name under benchmarks/results/accuracy")
    run.add_argument("--setting", required=True, help="name of this setting's JSON/PNG")
    run.add_argument("--dataset", default="digits")
    run.add_argument("--subset", type=int, default=None, help="training images (class-balanced)")
    run.add_argument("--test-subset", type=int, default=None)
    run.add_argument("--split", choices=("val", "test"), default="val",
                     help="val: evaluate on held-out training images (choosing); test: the test split (reporting)")
    run.add_argument("--val-size", type=int, default=2000)
    run.add_argument("--epochs-per-round", type=int, default=4)
    run.add_argument("--rounds", type=int, default=4)
    run.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    run.add_argument("--threads", type=int, default=1)
    run.add_argument("--scratch", default=str(ROOT / "runs" / "accuracy"), help="checkpoints and metrics")
    run.add_argument("--note", default="", help="one line shown with the setting on the results page")
    run.add_argument("--results", default=str(RESULTS), help="results folder (default benchmarks/results/accuracy)")
    run.add_argument("--arms", nargs="+", choices=ARMS, default=["and", "instance"],
                     help="what to train: and, instance, instance_restarts (instance learning with AND's "
                          "rounds and schedule restarts, method.selection=none)")
    run.add_argument("--instance-from", default=None, metavar="STUDY/SETTING",
                     help="take the instance arm from this earlier setting (checked to share the instance "
                          "config); for ablations of keys only AND reads")
    run.add_argument("--eval-every", type=int, default=None, metavar="EPOCHS",
                     help="with --arms instance alone: kNN every EPOCHS epochs of the (R + 1) * E epoch instance "
                          "run, so that one long run serves settings of shorter rounds (constant lr)")
    run.add_argument("--add-seeds", action="store_true",
                     help="add this command's seeds to the setting's existing results file instead of replacing it "
                          "(a setting run in pieces, side by side or one after another)")
    run.add_argument("--instance-wait", type=float, default=0.0, metavar="SECONDS",
                     help="with --instance-from: wait up to SECONDS for a run in progress to write a seed")
    run.add_argument("overrides", nargs="*", help="key=value config overrides for every arm")
    report = sub.add_parser("report", help="redraw every PNG and rewrite index.json from the JSON files")
    report.add_argument("--results", default=str(RESULTS), help="results folder (default benchmarks/results/accuracy)")
    args = parser.parse_args(argv)
    args.argv = None if argv is None else list(argv)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    {"run": cmd_run, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    main()
