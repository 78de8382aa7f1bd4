"""Exact neighbourhood discovery on 1 rank vs W gloo ranks: wall time, per-rank CPU time, ratios.

Each rank runs :func:`and_plugin.sharded.distributed_entropy_and_neighbours` on its own rows
of one seeded bank (N x d, float32 unit vectors) with one torch thread. Every rank's wall time
and CPU time (``time.process_time``) are recorded: where the W processes share fewer than W
cores, the wall time measures the machine, and the CPU seconds per rank (≈ 1/W of one rank's
alone, plus the ring's overhead) measure the split of the work. The W = 1 and W > 1 neighbours
are also compared (they must be identical). Today's one-process discovery (the symmetric tiled
kernel, which computes each pair once for both of its rows: N²·d, half the ranks' total) runs first
on the same bank as the reference of what the ranks split.

    python benchmarks/bench_discovery_ranks.py                       # N = 200,000, d = 128, W = 1 and 4
    python benchmarks/bench_discovery_ranks.py --size 50000 --worlds 1 2 4 --layout replicated

Writes ``benchmarks/results/scale/discovery-ranks.json`` (``--out``) and prints the ratios.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from and_plugin.sharded import RowPartition, distributed_entropy_and_neighbours

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "scale" / "discovery-ranks.json"


def seeded_rows(size: int, dim: int, start: int, stop: int, seed: int = 0, block: int = 4096) -> torch.Tensor:
    """Rows [start, stop) of one seeded bank, the same whatever the split (one generator per block)."""
    parts = []
    for b0 in range(start // block * block, stop, block):
        b1 = min(b0 + block, size)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + b0)
        rows = F.normalize(torch.randn(b1 - b0, dim, generator=generator), dim=1)
        parts.append(rows[max(start, b0) - b0 : min(stop, b1) - b0])
    return torch.cat(parts) if parts else torch.empty(0, dim)


def run_rank(rank: int, world: int, port: int, args: argparse.Namespace, out_dir: str) -> None:
    """One rank: its rows, one timed discovery, its timings and neighbours saved to ``out_dir``."""
    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        part = RowPartition(args.size, world, rank)
        full = seeded_rows(args.size, args.dim, 0, args.size) if args.layout == "replicated" else None
        rows = full[part.start : part.stop] if full is not None else seeded_rows(args.size, args.dim, part.start, part.stop)
        if world > 1:
            dist.barrier()
        wall, cpu = time.perf_counter(), time.process_time()
        entropy, nearest = distributed_entropy_and_neighbours(rows, part, args.temperature, args.k, full_bank=full, threads=1)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if world > 1:
            dist.barrier()
        torch.save({"wall_s": wall, "cpu_s": cpu, "rows": part.count, "nearest": nearest, "entropy": entropy},
                   os.path.join(out_dir, f"w{world}-r{rank}.pt"))
    finally:
        if world > 1:
            dist.destroy_process_group()


def measure_single_process(args: argparse.Namespace) -> dict[str, Any]:
    """Today's one-process discovery (the symmetric tiled kernel, one thread) on the same bank."""
    from and_plugin.curriculum import entropy_and_neighbours

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        bank = seeded_rows(args.size, args.dim, 0, args.size)
        wall, cpu = time.perf_counter(), time.process_time()
        _, nearest = entropy_and_neighbours(bank, args.temperature, args.k, threads=1)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        torch.set_num_threads(previous)
    return {"wall_s": wall, "cpu_s": cpu, "nearest": nearest}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(world: int, args: argparse.Namespace, out_dir: str) -> dict[str, Any]:
    """Runs W ranks (W = 1: in this process, no process group); their timings and results."""
    if world == 1:
        run_rank(0, 1, 0, args, out_dir)
    else:
        mp.spawn(run_rank, args=(world, free_port(), args, out_dir), nprocs=world, join=True)
    ranks = [torch.load(os.path.join(out_dir, f"w{world}-r{r}.pt")) for r in range(world)]
    return {
        "world": world,
        "wall_s": max(r["wall_s"] for r in ranks),
        "per_rank": [{"rank": i, "rows": r["rows"], "wall_s": r["wall_s"], "cpu_s": r["cpu_s"]} for i, r in enumerate(ranks)],
        "cpu_s_total": sum(r["cpu_s"] for r in ranks),
        "cpu_s_max_rank": max(r["cpu_s"] for r in ranks),
        "nearest": torch.cat([r["nearest"] for r in ranks]),
        "entropy": torch.cat([r["entropy"] for r in ranks]),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=200_000, help="N, rows of the bank")
    parser.add_argument("--dim", type=int, default=128, help="d")
    parser.add_argument("--k", type=int, default=1, help="neighbours per row")
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--worlds", type=int, nargs="+", default=[1, 4], help="rank counts; the first is the baseline")
    parser.add_argument("--layout", choices=["sharded", "replicated"], default="sharded")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    single = measure_single_process(args)
    print(f"one process (symmetric kernel): wall {single['wall_s']:.2f} s, CPU {single['cpu_s']:.2f} s", flush=True)
    runs = []
    with tempfile.TemporaryDirectory() as out_dir:
        for world in args.worlds:
            runs.append(measure(world, args, out_dir))
            print(f"W={world}: wall {runs[-1]['wall_s']:.2f} s, CPU per rank "
                  f"{[round(r['cpu_s'], 2) for r in runs[-1]['per_rank']]} s", flush=True)
    base = runs[0]
    base_nearest, base_entropy = base["nearest"], base["entropy"]
    single["neighbours_identical_to_baseline"] = bool(torch.equal(single.pop("nearest"), base_nearest))
    for run in runs:
        run["neighbours_identical_to_baseline"] = bool(torch.equal(run.pop("nearest"), base_nearest))
        entropy = run.pop("entropy")
        run["entropy_max_rel_diff"] = float(((entropy - base_entropy).abs() / base_entropy.abs()).max())
        run["ratios"] = {
            "wall_speedup": base["wall_s"] / run["wall_s"],
            "cpu_total_over_baseline": run["cpu_s_total"] / base["cpu_s_total"],
            "cpu_max_rank_over_baseline": run["cpu_s_max_rank"] / base["cpu_s_total"],
            "cpu_max_rank_over_single_process": run["cpu_s_max_rank"] / single["cpu_s"],
        }
    result = {
        "date": datetime.date.today().isoformat(),
        "command": "python benchmarks/bench_discovery_ranks.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpu_cores": os.cpu_count(),
            "torch_threads_per_rank": 1,
            "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "load_average": os.getloadavg(),
        },
        "size": args.size, "dim": args.dim, "k": args.k, "layout": args.layout,
        "flops_per_rank": f"2·n_r·N·d ≈ {2 * args.size * args.size * args.dim:.3g}/W",
        "single_process": single,
        "runs": runs,
    }
    for run in runs[1:]:
        r = run["ratios"]
        print(f"W={run['world']} vs W={base['world']}: wall x{r['wall_speedup']:.2f}, "
              f"CPU total x{r['cpu_total_over_baseline']:.2f}, busiest rank's CPU x{r['cpu_max_rank_over_baseline']:.2f}, "
              f"neighbours identical: {run['neighbours_identical_to_baseline']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
