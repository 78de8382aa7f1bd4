#!/usr/bin/env python
"""The cost model of AND at scale: formulas, the rates measured here, projections (not a test).

Reads the scale benchmarks' results (``benchmarks/results/scale/``):

- ``sharded-bank.json`` (``benchmarks/bench_scale.py``): bank and peak memory per rank, step time
  of both layouts;
- ``discovery-ranks.json`` (``benchmarks/bench_discovery_ranks.py``): exact discovery on 1 and W
  ranks;
- ``faiss-*.json`` (``benchmarks/bench_faiss.py``): approximate discovery's time and agreement;

fits the rates of the formulas below to them, checks the formulas against the measurements they
did not fit, and projects time and memory per rank at N = 10M and 100M on 8 and 64 GPUs. The
projections use the **assumed** GPU rates of :data:`ASSUMED` (nothing here ran on a GPU); the memory
rows are exact byte counts. Writes ``benchmarks/results/scale/cost-model.json`` and ``.md`` (the
docs page includes the ``.md``).

Formulas (N images, d feature size, W ranks, B global batch, k neighbours, b bytes per bank entry):

- bank per rank: N·d·b (replicated), N·d·b/W (sharded); round state per rank: N·(8k + 5) bytes;
- loss per step and rank: 4·B·N·d/W FLOPs in both layouts (replicated: B/W queries against N
  rows; sharded: B queries against N/W rows), forward and backward;
- sharded loss communication per step and rank: the batch's features gathered (B·d·4 bytes),
  one all-reduce of B·2·8 bytes, the upstream gradients gathered (B·4) and one reduce-scatter of
  B·d·4: ≈ 2·B·d·4 bytes;
- exact discovery per rank: 2·N·(N/W)·d FLOPs and N·N/W exponentials; a single process uses the
  symmetry of the similarity matrix: N²·d FLOPs; the sharded layout passes N·d·b bytes around
  the ring per rank and round.

Usage::

    python benchmarks/cost_model.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "scale"

#: Assumptions of the GPU projections (not measured): sustained rates of one H100/H200-class GPU.
ASSUMED = {
    "gpu_flops": 100e12,  # FP32/TF32 matmul FLOP/s sustained (≈ 20 % of the TF32 dense peak)
    "gpu_exp_per_s": 4e12,  # exponentials per second (special-function units)
    "link_bytes_per_s": 25e9,  # per GPU between nodes (one 200 Gb/s InfiniBand port)
    "batch_per_gpu": 256,
    "dim": 128,
    "k": 1,
    "bank_bytes": 2,  # float16 bank
}
PROJECT_SIZES = (10_000_000, 100_000_000)
PROJECT_WORLDS = (8, 64)


def loss_flops(size: int, dim: int, batch: int, world: int) -> float:
    """FLOPs of one step's Eq 7 (forward and backward) on one rank, either layout."""
    return 4.0 * batch * size * dim / world


def discovery_flops(size: int, dim: int, world: int, symmetric: bool = False) -> float:
    """FLOPs of exact discovery on one rank (a single process halves them by symmetry)."""
    return size * size * dim if symmetric else 2.0 * size * (size / world) * dim


def sharded_step_bytes(batch: int, dim: int) -> float:
    """Bytes one rank sends per step for the sharded loss (gathers, all-reduce, reduce-scatter)."""
    return batch * dim * 4 + batch * 16 + batch * 4 + batch * dim * 4


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def measured_rates() -> dict[str, Any]:
    """Rates fitted to the measurements, and the checks of the formulas against the others."""
    rates: dict[str, Any] = {"sources": []}
    bank = _load("sharded-bank.json")
    if bank is not None:
        rates["sources"].append("sharded-bank.json")
        cases = {(c["name"], c["layout"]): c for c in bank["cases"]}
        step = cases.get(("step", "replicated")), cases.get(("step", "sharded"))
        if all(step):
            replicated, sharded = step
            flops = loss_flops(replicated["size"], replicated["dim"], replicated["batch"], replicated["world"])
            rates["cpu_loss_flops_per_rank"] = flops / replicated["step_s_max"]
            rates["step"] = {"size": sharded["size"], "world": sharded["world"], "batch": sharded["batch"],
                             "replicated_s": replicated["step_s_max"], "sharded_s": sharded["step_s_max"],
                             "ratio": sharded["step_s_max"] / replicated["step_s_max"], "formula_ratio": 1.0}
        memory = cases.get(("memory", "replicated")), cases.get(("memory", "sharded"))
        if all(memory):
            replicated, sharded = memory
            rates["memory"] = {
                "size": sharded["size"], "dtype": sharded["dtype"], "world": sharded["world"],
                "bank_mib": {"replicated": replicated["bank_mib_max"], "sharded": sharded["bank_mib_max"]},
                "peak_mib": {"replicated": replicated["peak_mib_max"], "sharded": sharded["peak_mib_max"]},
                "bank_ratio": sharded["bank_mib_max"] / replicated["bank_mib_max"],
                "peak_ratio": sharded["peak_mib_max"] / replicated["peak_mib_max"],
                "formula_bank_ratio": 1.0 / sharded["world"],
            }
    discovery = _load("discovery-ranks.json")
    if discovery is not None:
        rates["sources"].append("discovery-ranks.json")
        size, dim = discovery["size"], discovery["dim"]
        runs = {run["world"]: run for run in discovery["runs"]}
        single = discovery.get("single_process")
        one = runs.get(1)
        if one is not None:
            rates["cpu_discovery_flops_per_rank"] = discovery_flops(size, dim, 1) / one["cpu_s_max_rank"]
        rates["discovery"] = {
            "size": size, "dim": dim,
            "single_process_cpu_s": None if single is None else single["cpu_s"],
            "runs": [{"world": w, "cpu_s_max_rank": r["cpu_s_max_rank"], "wall_s": r["wall_s"],
                      "formula_cpu_s": None if one is None else one["cpu_s_max_rank"] / w,
                      "identical": r.get("neighbours_identical_to_baseline")} for w, r in sorted(runs.items())],
        }
    faiss_files = sorted(RESULTS.glob("faiss-*.json"))
    if faiss_files:
        rates["sources"] += [path.name for path in faiss_files]
        rates["faiss"] = [json.loads(path.read_text()) | {"file": path.name} for path in faiss_files]
    return rates


def projections() -> list[dict[str, Any]]:
    """Per-rank time and memory at PROJECT_SIZES x PROJECT_WORLDS with the ASSUMED GPU rates."""
    a = ASSUMED
    rows = []
    for size in PROJECT_SIZES:
        for world in PROJECT_WORLDS:
            batch = a["batch_per_gpu"] * world
            exact = discovery_flops(size, a["dim"], world) / a["gpu_flops"] + size * size / world / a["gpu_exp_per_s"]
            rank0_alone = (discovery_flops(size, a["dim"], 1, symmetric=True) / a["gpu_flops"]
                           + size * size / 2 / a["gpu_exp_per_s"])
            rows.append({
                "size": size, "world": world, "batch": batch,
                "bank_gib_replicated": size * a["dim"] * a["bank_bytes"] / 2**30,
                "bank_gib_sharded": size * a["dim"] * a["bank_bytes"] / world / 2**30,
                "round_state_gib": size * (8 * a["k"] + 5) / 2**30,
                "loss_step_s": loss_flops(size, a["dim"], batch, world) / a["gpu_flops"],
                "sharded_step_comm_s": sharded_step_bytes(batch, a["dim"]) / a["link_bytes_per_s"],
                "discovery_s_every_rank": exact,
                "discovery_ring_s": size * a["dim"] * a["bank_bytes"] / a["link_bytes_per_s"],
                "discovery_s_rank0_alone": rank0_alone,
            })
    return rows


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def markdown(result: dict[str, Any]) -> str:
    rates, a = result["measured"], result["assumed"]
    out = ["## Measured on this machine", ""]
    if "memory" in rates:
        m = rates["memory"]
        out += [f"Memory per rank, N = {m['size']:,}, d = 128, {m['dtype']} bank, sharded over W = {m['world']} "
                f"(`sharded-bank.json`):", "",
                "| | replicated | sharded | sharded / replicated | formula |", "|---|---|---|---|---|",
                f"| bank MiB | {m['bank_mib']['replicated']:.0f} | {m['bank_mib']['sharded']:.0f} | "
                f"{m['bank_ratio']:.3f} | 1/W = {m['formula_bank_ratio']:.3f} |",
                f"| peak MiB (bank, round state, loss temporaries) | {m['peak_mib']['replicated']:.0f} | "
                f"{m['peak_mib']['sharded']:.0f} | {m['peak_ratio']:.3f} | |", ""]
    if "step" in rates:
        s = rates["step"]
        out += [f"Training step, N = {s['size']:,}, W = {s['world']}, global batch {s['batch']}: replicated "
                f"{s['replicated_s']:.2f} s, sharded {s['sharded_s']:.2f} s, ratio **{s['ratio']:.2f}** (the "
                f"formula's FLOPs are equal: ratio 1 plus the sharded layout's collectives). Fitted CPU rate: "
                f"{rates['cpu_loss_flops_per_rank'] / 1e9:.1f} GFLOP/s per rank.", ""]
    if "discovery" in rates:
        d = rates["discovery"]
        out += [f"Exact discovery, N = {d['size']:,}, d = {d['dim']} (`discovery-ranks.json`), CPU seconds of the "
                "busiest rank (the ranks share the cores here, so CPU time, not wall time, shows the split):", "",
                "| ranks W | CPU s, busiest rank | formula (W = 1 time / W) | wall s | anchors and neighbours |",
                "|---|---|---|---|---|"]
        if d["single_process_cpu_s"] is not None:
            out.append(f"| one process (symmetric kernel) | {d['single_process_cpu_s']:.1f} | | | reference |")
        for run in d["runs"]:
            formula = "" if run["formula_cpu_s"] is None else f"{run['formula_cpu_s']:.1f}"
            same = {True: "identical", False: "differ", None: ""}[run["identical"]]
            out.append(f"| {run['world']} | {run['cpu_s_max_rank']:.1f} | {formula} | {run['wall_s']:.1f} | {same} |")
        out.append("")
    quality = [e for e in rates.get("faiss", []) if e.get("part") == "quality"]
    timing = [e for e in rates.get("faiss", []) if e.get("part") != "quality"]
    for entry in quality:
        worst = min(r["jaccard"] for r in entry["rounds"] if r["S"] < 1)
        out += [f"Approximate discovery against exact, N = {entry['N']:,} real features "
                f"(`{entry['file']}`, {entry['threads']} threads): exact {entry['exact_s']:.0f} s, faiss "
                f"{entry['faiss_s']:.0f} s (x{entry['speedup']:.1f}); neighbour recall@1 {entry['recall@1']:.4f}, "
                f"recall@5 {entry['recall@5']:.4f}; anchor-set Jaccard {worst:.4f} at worst over the rounds; "
                f"entropy relative error {entry['entropy_median_rel_err']:.1e} median, "
                f"{entry['entropy_max_rel_err']:.1e} max.", ""]
        rates["exact_pairs_per_s"] = entry["N"] ** 2 / entry["exact_s"]
    if timing:
        out += ["| N | faiss discovery | exact, projected from the measured rate (N² pairs) |", "|---|---|---|"]
        for entry in timing:
            projected = (entry["N"] ** 2 / rates["exact_pairs_per_s"]) if "exact_pairs_per_s" in rates else None
            out.append(f"| {entry['N']:,} | {_duration(entry['faiss_s'])} (`{entry['file']}`) | "
                       f"{'' if projected is None else _duration(projected)} |")
        out.append("")
    out += ["## Projections (assumed GPU rates, not measured)", "",
            f"Assumed per GPU: {a['gpu_flops'] / 1e12:.0f} TFLOP/s sustained for the FP32/TF32 matrix products, "
            f"{a['gpu_exp_per_s'] / 1e12:.0f}e12 exponentials/s, {a['link_bytes_per_s'] / 1e9:.0f} GB/s between "
            f"nodes; batch {a['batch_per_gpu']} per GPU, d = {a['dim']}, k = {a['k']}, float16 bank. Memory rows "
            "are exact byte counts; times are the formulas above at these rates.", "",
            "| N | GPUs | bank / GPU replicated | bank / GPU sharded | round state / GPU | loss per step | "
            "sharded step traffic | exact discovery, every rank | rank 0 alone (before) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for row in result["projections"]:
        out.append(f"| {row['size'] / 1e6:.0f}M | {row['world']} | {row['bank_gib_replicated']:.1f} GiB | "
                   f"{row['bank_gib_sharded']:.2f} GiB | {row['round_state_gib']:.2f} GiB | "
                   f"{_duration(row['loss_step_s'])} | {_duration(row['sharded_step_comm_s'])} | "
                   f"{_duration(row['discovery_s_every_rank'])} | {_duration(row['discovery_s_rank0_alone'])} |")
    return "\n".join(out) + "\n"


def main() -> None:
    result = {"measured": measured_rates(), "assumed": ASSUMED, "projections": projections(),
              "command": "python benchmarks/cost_model.py"}
    if not result["measured"]["sources"]:
        sys.exit(f"no scale results in {RESULTS}; run benchmarks/bench_scale.py and bench_discovery_ranks.py first")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cost-model.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "cost-model.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
