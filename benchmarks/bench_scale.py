#!/usr/bin/env python
"""Replicated vs sharded memory bank under torch.distributed (gloo): memory per rank and step time.

Not a test. Every case starts W processes (gloo on the CPU, one torch thread each) that build the
bank in the layout asked for and run training steps of AND: a linear layer on random inputs wrapped
in DistributedDataParallel, Eq 7 against the bank with a round state (half the samples anchors,
k = 1), SGD, the Eq 8 write. Measured per rank:

- **bank MiB**: the bank's own bytes on the rank (N·d·bytes, or that / W sharded);
- **peak MiB**: the process's peak resident set during the case above its resident set before the
  bank was built (VmHWM, reset through /proc/self/clear_refs), so the bank's start, the round state,
  the loss's temporaries and the collectives' buffers all count;
- **step s**: the median wall time of a step (forward, loss, backward, optimiser, bank write), and
  the median CPU time of the busiest rank's step (``time.process_time``: where the ranks share
  fewer cores than W, CPU time shows each rank's work, wall time the machine's load).

Cases (``--cases``): ``memory`` — N = 4M, d = 128, float16, replicated (W = 2) and sharded (W = 4),
3 steps; ``step`` — N = 1M, d = 128, float32, both layouts at W = 4, 5 steps. Replicated memory per
rank does not depend on W, so two processes measure it. Results go to
``benchmarks/results/scale/sharded-bank.json`` and ``.md`` with the ratios sharded / replicated
measured in the same run (a run of one case keeps the other case's rows of the file, each row
with its own date).

Usage::

    python benchmarks/bench_scale.py                 # both cases (about ten minutes on 2 cores)
    python benchmarks/bench_scale.py --ci            # tiny N, numbers printed, nothing written
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import socket
import statistics
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

from and_plugin import MemoryBank, NeighbourhoodLoss, RoundState
from and_plugin.sharded import ShardedMemoryBank, ShardedNeighbourhoodLoss

RESULTS = ROOT / "benchmarks" / "results" / "scale"


def _status(key: str) -> int:
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _round_state(size: int) -> RoundState:
    generator = torch.Generator().manual_seed(1)
    neighbours = torch.randint(0, size, (size, 1), generator=generator)
    return RoundState(1, torch.rand(size, generator=generator) < 0.5, neighbours, torch.zeros(size))


def _worker(rank: int, world: int, port: int, case: dict[str, Any], out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        size, dim, dtype = case["size"], case["dim"], getattr(torch, case["dtype"])
        local_batch = case["batch"] // world
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(32, dim))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.03)
        criterion = (ShardedNeighbourhoodLoss if case["layout"] == "sharded" else NeighbourhoodLoss)(temperature=0.07)
        generator = torch.Generator().manual_seed(100 + rank)
        dist.barrier()
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")  # VmHWM := VmRSS
        before = _status("VmRSS")
        if case["layout"] == "sharded":
            bank: MemoryBank | ShardedMemoryBank = ShardedMemoryBank(size, dim, dtype=dtype)
        else:
            bank = MemoryBank(size, dim, dtype=dtype)
        state = _round_state(size)
        times, cpu_times = [], []
        for _ in range(case["steps"]):
            inputs = torch.randn(local_batch, 32, generator=generator)
            indices = torch.randint(0, size, (local_batch,), generator=generator)
            dist.barrier()
            started, cpu_started = time.perf_counter(), time.process_time()
            features = F.normalize(model(inputs), dim=1)
            loss = criterion(features, indices, bank, state)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bank.update(indices, features)
            cpu_times.append(time.process_time() - cpu_started)
            dist.barrier()
            times.append(time.perf_counter() - started)
        row = {
            "rank": rank,
            "bank_mib": bank.bank.numel() * bank.bank.element_size() / 2**20,
            "peak_mib": (_status("VmHWM") - before) / 2**20,
            "step_s": statistics.median(times),
            "step_cpu_s": statistics.median(cpu_times),
            "bank_rows": bank.bank.shape[0],
        }
        Path(out, f"rank{rank}.json").write_text(json.dumps(row))
    finally:
        dist.destroy_process_group()


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_worker, args=(case["world"], _free_port(), case, out), nprocs=case["world"], join=True)
        ranks = [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(case["world"])]
    return {**case, "ranks": ranks,
            "bank_mib_max": max(r["bank_mib"] for r in ranks),
            "peak_mib_max": max(r["peak_mib"] for r in ranks),
            "step_s_max": max(r["step_s"] for r in ranks),
            "step_cpu_s_max": max(r["step_cpu_s"] for r in ranks)}


def cases(which: list[str], ci: bool) -> list[dict[str, Any]]:
    listed = []
    if "memory" in which:
        size = 4096 if ci else 4_000_000
        listed += [dict(name="memory", layout="replicated", world=2, size=size, dim=128, dtype="float16", batch=256, steps=3),
                   dict(name="memory", layout="sharded", world=4, size=size, dim=128, dtype="float16", batch=256, steps=3)]
    if "step" in which:
        size = 4096 if ci else 1_000_000
        listed += [dict(name="step", layout=layout, world=4, size=size, dim=128, dtype="float32", batch=256, steps=5)
                   for layout in ("replicated", "sharded")]
    return listed


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Sharded vs replicated memory bank ({result['date']})", "",
             f"{result['machine']['cpu']}, {result['machine']['cpu_cores']} cores, gloo, one torch thread per "
             f"process, torch {result['machine']['torch']}. Command: `{result['command']}`.", "",
             "| case | layout | W | N | dtype | bank MiB / rank | peak MiB / rank | step s (median) | step CPU s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in result["cases"]:
        cpu = f"{row['step_cpu_s_max']:.2f}" if "step_cpu_s_max" in row else ""
        lines.append(f"| {row['name']} | {row['layout']} | {row['world']} | {row['size']:,} | {row['dtype']} | "
                     f"{row['bank_mib_max']:.0f} | {row['peak_mib_max']:.0f} | {row['step_s_max']:.2f} | {cpu} |")
    lines.append("")
    for name, ratio in result["ratios"].items():
        lines.append(f"- {name}: **{ratio:.3f}**")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["memory", "step"], choices=["memory", "step"])
    parser.add_argument("--ci", action="store_true", help="tiny sizes; print, write nothing")
    args = parser.parse_args()
    rows = []
    for case in cases(args.cases, args.ci):
        row = run_case(case) | {"date": _dt.date.today().isoformat()}
        print(f"{row['name']:7s} {row['layout']:10s} W={row['world']} N={row['size']:,}: bank {row['bank_mib_max']:.0f} MiB, "
              f"peak {row['peak_mib_max']:.0f} MiB, step {row['step_s_max']:.2f} s", flush=True)
        rows.append(row)
    if not args.ci and (RESULTS / "sharded-bank.json").is_file():  # keep the cases this run did not measure
        earlier = json.loads((RESULTS / "sharded-bank.json").read_text())["cases"]
        measured = {(r["name"], r["layout"]) for r in rows}
        rows = [r for r in earlier if (r["name"], r["layout"]) not in measured] + rows
    by = {(r["name"], r["layout"]): r for r in rows}
    ratios = {}
    if ("memory", "sharded") in by and ("memory", "replicated") in by:
        s, r = by["memory", "sharded"], by["memory", "replicated"]
        ratios[f"bank bytes per rank, sharded W={s['world']} / replicated"] = s["bank_mib_max"] / r["bank_mib_max"]
        ratios[f"peak memory per rank, sharded W={s['world']} / replicated"] = s["peak_mib_max"] / r["peak_mib_max"]
    if ("step", "sharded") in by and ("step", "replicated") in by:
        s, r = by["step", "sharded"], by["step", "replicated"]
        ratios[f"step time at N={s['size']:,}, sharded / replicated (W={s['world']})"] = s["step_s_max"] / r["step_s_max"]
        ratios[f"step CPU time at N={s['size']:,}, sharded / replicated (W={s['world']})"] = (
            s["step_cpu_s_max"] / r["step_cpu_s_max"])
    for name, value in ratios.items():
        print(f"{name}: {value:.3f}")
    if args.ci:
        return
    result = {
        "date": _dt.date.today().isoformat(),
        "command": "python benchmarks/bench_scale.py " + " ".join(sys.argv[1:]),
        "machine": {"cpu": platform.processor() or platform.machine(), "cpu_cores": os.cpu_count(),
                    "torch": torch.__version__},
        "cases": rows,
        "ratios": ratios,
    }
    try:
        from bench import cpu_model  # the CPU's model name, as the main benchmark records it

        result["machine"]["cpu"] = cpu_model()
    except Exception:  # pragma: no cover - informational only
        pass
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sharded-bank.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "sharded-bank.md").write_text(markdown(result))
    print(f"wrote {RESULTS / 'sharded-bank.json'}")


if __name__ == "__main__":
    main()
