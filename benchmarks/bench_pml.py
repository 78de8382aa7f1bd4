#!/usr/bin/env python
"""Cost of one loss step with ANDMiner + an unmodified PML loss against a large bank (not a test).

One step = (mining +) loss forward + backward for a batch of B unit features against an
N-entry memory bank with half the samples anchors (k = 1), then ``MemoryBank.update``. The
baseline, measured in the same run and interleaved with every other variant so machine load
hits them alike (the order rotating every repeat), is :class:`~and_plugin.loss.NeighbourhoodLoss` (Eq 7 over the bank, fused).
Variants: :class:`~and_plugin.pml_loss.ANDLoss` (the same objective as a PML loss) and five PML
losses fed by ``ANDMiner`` with ``negatives="sampled"`` and ``"hardest"`` (``num_negatives``
per query). ``negatives="all"`` (B x N pairs) is measured only with ``--all-negatives-n``, at a
smaller N of your choice.

Reported per variant: median milliseconds per step, the peak extra memory of the measured steps
(CPU: VmHWM above VmRSS, reset before; CUDA: max_memory_allocated), the number of pairs mined,
and both ratios to the baseline.

Usage::

    python benchmarks/bench_pml.py --threads 1                  # N = 50,000, B = 128, CPU
    python benchmarks/bench_pml.py --quick --no-save            # a smoke run
    python benchmarks/bench_pml.py --all-negatives-n 5000       # adds negatives="all" at N = 5,000

Results: ``benchmarks/results/pml-<device>-<machine>-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from pytorch_metric_learning import losses as pml_losses  # noqa: E402

from and_plugin import ANDLoss, ANDMiner, MemoryBank, NeighbourhoodLoss  # noqa: E402
from bench import PeakMemory, machine_info, machine_slug, random_round_state, sync  # noqa: E402

PML_LOSSES: dict[str, Callable[[float], Any]] = {
    "NTXentLoss": lambda tau: pml_losses.NTXentLoss(temperature=tau),
    "SupConLoss": lambda tau: pml_losses.SupConLoss(temperature=tau),
    "ContrastiveLoss": lambda tau: pml_losses.ContrastiveLoss(),
    "TripletMarginLoss": lambda tau: pml_losses.TripletMarginLoss(margin=0.2),
    "MultiSimilarityLoss": lambda tau: pml_losses.MultiSimilarityLoss(),
}


def make_variants(size: int, batch: int, num_negatives: int, device: torch.device, negatives_modes: list[str],
                  tau: float = 0.1) -> tuple[dict[str, Callable[[], dict[str, int]]], MemoryBank]:
    """name -> step function (returns the pairs it mined); the first one is the baseline."""
    bank = MemoryBank(size, 128, seed=0).to(device)
    state = random_round_state(size, device)
    generator = torch.Generator().manual_seed(1)
    features = F.normalize(torch.randn(batch, 128, generator=generator), dim=1).to(device).requires_grad_()
    indices = torch.randperm(size, generator=generator)[:batch].to(device)
    everything = torch.arange(size, device=device)
    baseline = NeighbourhoodLoss(tau)
    and_loss = ANDLoss(tau, round_state=state)

    def finish(loss: torch.Tensor) -> None:
        loss.backward()
        features.grad = None
        bank.update(indices, features)

    def neighbourhood() -> dict[str, int]:
        finish(baseline(features, indices, bank, state))
        return {}

    def and_pml() -> dict[str, int]:
        finish(and_loss(features, indices, ref_emb=bank.bank, ref_labels=everything))
        return {}

    variants: dict[str, Callable[[], dict[str, int]]] = {"NeighbourhoodLoss": neighbourhood, "ANDLoss": and_pml}
    for mode in negatives_modes:
        miner = ANDMiner(round_state=state, negatives=mode, num_negatives=num_negatives)
        for name, factory in PML_LOSSES.items():
            loss_fn = factory(tau)

            def step(loss_fn: Any = loss_fn, miner: ANDMiner = miner) -> dict[str, int]:
                pairs = miner(features, indices, bank.bank, everything)
                finish(loss_fn(features, indices, pairs, ref_emb=bank.bank, ref_labels=everything))
                return {"positive_pairs": len(pairs[0]), "negative_pairs": len(pairs[2])}

            variants[f"ANDMiner({mode}) + {name}"] = step
    return variants, bank


def measure(variants: dict[str, Callable[[], dict[str, int]]], device: torch.device, repeats: int) -> list[dict[str, Any]]:
    """Median time of every variant (calls interleaved, order rotated every repeat), then each
    variant's peak extra memory."""
    import time

    pairs = {name: fn() for name, fn in variants.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for repeat in range(repeats):
        shift = repeat % len(names)  # rotate the order: no variant always runs first or after the same one
        for name in names[shift:] + names[:shift]:
            fn = variants[name]
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    rows = []
    for name, fn in variants.items():
        with PeakMemory(device) as memory:
            fn()
        median = sorted(times[name])[len(times[name]) // 2]
        rows.append({"variant": name, "ms": median * 1e3, "peak_extra_mb": memory.extra_mb,
                     "memory_method": memory.method, **pairs[name]})
    base = rows[0]
    for row in rows:
        row["time_ratio"] = row["ms"] / base["ms"]
        row["memory_ratio"] = row["peak_extra_mb"] / base["peak_extra_mb"] if base["peak_extra_mb"] > 0 else None
    return rows


def _load(machine: dict[str, Any]) -> str:
    load = machine.get("load_average")
    return "n/a" if not load else " / ".join(f"{v:.1f}" for v in load)


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"# ANDMiner + PML losses vs NeighbourhoodLoss — {result['date']}",
        "",
        f"- machine: CPU {m['cpu']} ({m['cpu_cores']} cores, torch threads {m['torch_threads']}), "
        f"device {m['device']}, torch {m['torch']}; load average at start {_load(m)}",
        f"- command: `{result['command']}`",
        "- one step = (mining +) loss forward + backward + `MemoryBank.update`; half the samples anchors, k = 1; "
        "median of the interleaved repeats; ratios against `NeighbourhoodLoss` measured in the same run",
        "",
    ]
    for part in result["parts"]:
        lines += [
            f"## N = {part['n']:,}, B = {part['batch']}, num_negatives = {part['num_negatives']}",
            "",
            "| variant | ms / step | x baseline time | peak extra MiB | x baseline memory | positive pairs | negative pairs |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in part["rows"]:
            memory_ratio = "—" if row["memory_ratio"] is None else f"{row['memory_ratio']:.2f}"
            lines.append(
                f"| {row['variant']} | {row['ms']:.1f} | {row['time_ratio']:.2f} | {row['peak_extra_mb']:.1f} | "
                f"{memory_ratio} | {row.get('positive_pairs', '—')} | {row.get('negative_pairs', '—')} |"
            )
        lines.append("")
    lines.append(f"Peak memory: {result['parts'][0]['rows'][0]['memory_method']}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=50_000, help="bank size N")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--num-negatives", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--all-negatives-n", type=int, default=None, help="also time negatives='all' at this N")
    parser.add_argument("--quick", action="store_true", help="N = 5,000, 2 repeats")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.n, args.repeats = 5_000, 2
    device = torch.device(args.device)
    info = machine_info(device)
    info.pop("hostname", None)
    result: dict[str, Any] = {
        "date": _dt.date.today().isoformat(),
        "command": "python benchmarks/bench_pml.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": info,
        "parts": [],
    }
    plans = [(args.n, ["sampled", "hardest"])]
    if args.all_negatives_n:
        plans.append((args.all_negatives_n, ["sampled", "all"]))
    for size, modes in plans:
        torch.manual_seed(0)
        variants, _ = make_variants(size, args.batch, args.num_negatives, device, modes)
        rows = measure(variants, device, args.repeats)
        result["parts"].append({"n": size, "batch": args.batch, "num_negatives": args.num_negatives, "rows": rows})
        for row in rows:
            print(f"N={size:>7,} {row['variant']:<42} {row['ms']:9.1f} ms  x{row['time_ratio']:6.2f}  "
                  f"{row['peak_extra_mb']:8.1f} MiB  pairs +{row.get('positive_pairs', '-')}/-{row.get('negative_pairs', '-')}")
    if not args.no_save:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"pml-{device.type}-{machine_slug(info)}-{result['date']}"
        stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        stem.with_suffix(".md").write_text(markdown(result))
        print(f"wrote {stem}.md and .json")
    return result


if __name__ == "__main__":
    main()
