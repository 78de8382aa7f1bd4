#!/usr/bin/env python
"""Speed of AND against the bare backbone, the loss step and the curriculum refresh (not a test).

One process, one run, in this order:

1. **Train steps** on random images already on the device: the bare backbone (forward, backward,
   SGD step; no AND) and the full AND step (backbone + NeighbourhoodLoss against an N-entry
   memory bank with the round's anchors + MemoryBank.update; optionally an ANDMiner call), for
   each workload (backbone, batch, precision, channels_last, compile). Prints images/s and the
   ratio AND / bare.
2. **Whole epochs** through the Trainer on the registered ``synthetic`` data set (32x32 RGB),
   data loading included: the DataLoader path and the on-device path (``data.gpu_resident``),
   each in a neighbourhood round (round 1: anchors and the AN loss active). Images/s and the ratio
   to the bare step of the same backbone, batch and precision.
3. **Loss step** (forward + backward of NeighbourhoodLoss, B = 256, + bank update) at N = 50,000,
   200,000, 1,281,167 with a float32 and a bfloat16 bank: time and peak extra memory.
4. **Curriculum refresh** (entropy_and_neighbours + select_anchors) at the same N: time and peak
   extra memory.

Peak extra memory: on CUDA ``torch.cuda.max_memory_allocated`` above what was allocated before;
on the CPU the process's peak resident set (VmHWM, reset through ``/proc/self/clear_refs`` before
each measurement) above its resident set before — tracemalloc does not see torch's allocations.

Results go to ``benchmarks/results/<machine>-<date>.json`` and ``.md``, the machine named (CPU
model, cores, torch threads, GPU, torch version). See benchmarks/README.md.

Usage::

    python benchmarks/bench.py                       # CPU or the visible GPU, default sizes
    python benchmarks/bench.py --device cuda --sizes full
    python benchmarks/bench.py --quick               # fewer steps, smaller epochs
    python benchmarks/bench.py --ci                  # everything tiny (< 60 s), numbers not saved
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch
import torch.nn.functional as F

from and_plugin.backbones import build_backbone
from and_plugin.config import load_config
from and_plugin.curriculum import RoundState, entropy_and_neighbours, select_anchors
from and_plugin.loss import NeighbourhoodLoss
from and_plugin.memory_bank import MemoryBank

IMAGENET_N = 1_281_167


# ----------------------------------------------------------------------------------- plans


@dataclass
class Workload:
    """One train-step configuration."""

    backbone: str
    batch: int
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    @property
    def name(self) -> str:
        extras = [self.precision] + (["channels_last"] if self.channels_last else []) + (["compile"] if self.compile else [])
        return f"{self.backbone} b{self.batch} {'+'.join(extras)}"


@dataclass
class EpochRun:
    """One whole-epoch configuration through the Trainer."""

    label: str
    backbone: str
    batch: int
    images: int
    gpu_resident: bool
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    workers: int = 0
    lr_reference_batch: int | None = None


@dataclass
class Plan:
    """What one run measures."""

    workloads: list[Workload]
    step_warmup: int
    step_repeats: int
    bank_size: int
    epochs: list[EpochRun]
    loss_sizes: list[int]
    loss_repeats: int
    refresh_sizes: list[int]
    notes: list[str] = field(default_factory=list)


def make_plan(args: argparse.Namespace, device: torch.device) -> Plan:
    """The measurements for ``--device``, ``--sizes``, ``--quick``, ``--ci``."""
    cuda = device.type == "cuda"
    notes: list[str] = []
    if args.ci:
        return Plan(
            workloads=[Workload("small_cnn", 32)],
            step_warmup=1, step_repeats=2, bank_size=5_000,
            epochs=[EpochRun("dataloader", "small_cnn", 32, 256, False), EpochRun("gpu_resident", "small_cnn", 32, 256, True)],
            loss_sizes=[50_000], loss_repeats=1, refresh_sizes=[5_000],
            notes=["--ci: tiny sizes, numbers only show that every path runs"],
        )
    full = args.sizes == "full"
    quick = args.quick
    if cuda:
        workloads = [
            Workload("resnet18_cifar", 128),
            Workload("resnet18_cifar", 512),
            Workload("resnet18_cifar", 128, "bf16", True),
            Workload("resnet18_cifar", 512, "bf16", True),
        ]
        if full and not args.no_compile:
            workloads.append(Workload("resnet18_cifar", 512, "bf16", True, True))
        images = 10_000 if quick else 50_000
        workers = min(8, os.cpu_count() or 1)
        epochs = [
            EpochRun("paper: dataloader fp32", "resnet18_cifar", 128, images, False, workers=workers),
            EpochRun("paper: gpu_resident fp32", "resnet18_cifar", 128, images, True),
            EpochRun("fast: gpu_resident bf16+cl", "resnet18_cifar", 512, images, True, "bf16", True, lr_reference_batch=128),
        ]
        if full and not args.no_compile:
            epochs.append(EpochRun("fast: gpu_resident bf16+cl+compile", "resnet18_cifar", 512, images, True, "bf16", True,
                                   True, lr_reference_batch=128))
        sizes = [50_000, 200_000, IMAGENET_N]
        return Plan(workloads, 3 if quick else 10, 10 if quick else 30, 50_000, epochs, sizes, 5 if quick else 20, sizes, notes)
    # CPU: the paper backbone is slow here (a few images/s per core), so the epoch runs use the
    # small CNN; the ratios are what matter.
    workloads = [Workload("small_cnn", 128), Workload("small_cnn", 128, "bf16")]
    if full:  # the paper backbone runs at ~10 images/s here: seconds per step, noisy on a shared machine
        workloads += [Workload("resnet18_cifar", 32), Workload("resnet18_cifar", 128), Workload("small_cnn", 128, "fp32", True)]
    images = 1_024 if quick else 4_096
    epochs = [
        EpochRun("dataloader fp32", "small_cnn", 128, images, False),
        EpochRun("gpu_resident fp32", "small_cnn", 128, images, True),
    ]
    loss_sizes = [50_000, 200_000] + ([IMAGENET_N] if full or args.imagenet_refresh else [])
    refresh_sizes = [50_000, 200_000]
    if args.imagenet_refresh:
        refresh_sizes.append(IMAGENET_N)
    else:
        notes.append(f"refresh at N = {IMAGENET_N:,} skipped on the CPU (hours on 2 cores); --imagenet-refresh runs it")
    if quick:
        refresh_sizes = [50_000]
    return Plan(workloads, 1, 2 if quick else 6, 50_000, epochs, loss_sizes, 2 if quick else 3, refresh_sizes, notes)


# ----------------------------------------------------------------------------------- helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _malloc_trim() -> None:
    """Hands glibc's freed heap pages back to the OS, so the resident set before a measurement
    holds no reusable free memory that would hide new allocations."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class PeakMemory:
    """Peak extra memory of a block: CUDA allocator peak, or the process's peak RSS on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.extra_mb: float | None = None
        self.method = ""

    @staticmethod
    def _status(key: str) -> int | None:
        try:
            with open("/proc/self/status") as file:
                for line in file:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def __enter__(self) -> PeakMemory:  # noqa: PYI034
        gc.collect()
        _malloc_trim()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated"
            return self
        self._reset = False
        try:
            with open("/proc/self/clear_refs", "w") as file:
                file.write("5")  # resets VmHWM to the current RSS
            self._reset = True
            self.method = "VmHWM - VmRSS (/proc/self, peak reset before)"
        except OSError:
            import resource

            self._maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.method = "ru_maxrss delta (only counts growth above the earlier peak)"
        self._before = self._status("VmRSS") or 0
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.extra_mb = (torch.cuda.max_memory_allocated(self.device) - self._before) / 2**20
            return
        if self._reset:
            peak = self._status("VmHWM") or 0
            self.extra_mb = max(0, peak - self._before) / 2**20
        else:
            import resource

            self.extra_mb = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self._maxrss) / 2**20


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all threads)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def timed_interleaved(fns: list[Callable[[], Any]], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Median seconds of each function, their calls interleaved (a, b, a, b, ...) so that a load
    change on a shared machine hits all of them alike and their ratio stays meaningful."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - start)
    return [sorted(t)[len(t) // 2] for t in times]


def random_round_state(size: int, device: torch.device, fraction: float = 0.5, neighbours: int = 1, seed: int = 0) -> RoundState:
    """A round with ``fraction`` anchors and random neighbours (what the loss reads, without a refresh)."""
    generator = torch.Generator().manual_seed(seed)
    anchor_mask = torch.rand(size, generator=generator) < fraction
    nearest = torch.randint(0, size, (size, neighbours), generator=generator)
    return RoundState(1, anchor_mask, nearest, torch.zeros(size)).to(device)


def unit_bank(size: int, dim: int, dtype: torch.dtype, device: torch.device, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    out = torch.empty(size, dim, dtype=dtype, device=device)
    for start in range(0, size, 262_144):  # built in blocks: no float32 copy of a 1.28M bank at once
        block = torch.randn(min(262_144, size - start), dim, generator=generator)
        out[start : start + block.shape[0]] = F.normalize(block, dim=1).to(device, dtype)
    return out


def input_size(backbone: str) -> tuple[int, int]:
    """(channels, side) of the benchmark images."""
    return (3, 224) if backbone in ("resnet18", "resnet50", "resnet101", "alexnet_imagenet") else (3, 32)


# ----------------------------------------------------------------------------------- measurements


def bench_steps(plan: Plan, device: torch.device, miner: bool) -> list[dict[str, Any]]:
    """Bare backbone step vs full AND step for every workload."""
    rows = []
    bank = MemoryBank(plan.bank_size, 128, seed=0).to(device)
    state = random_round_state(plan.bank_size, device)
    criterion = NeighbourhoodLoss(0.1)
    and_miner = None
    if miner:
        from and_plugin.miner import ANDMiner

        and_miner = ANDMiner(round_state=state, negatives="none")
    for work in plan.workloads:
        row = _measure_workload(work, plan, device, bank, state, criterion, and_miner)
        rows.append(row)
        print(f"  step  {work.name:38s} bare {row['bare_images_per_s']:9.0f} img/s   AND {row['and_images_per_s']:9.0f} img/s"
              f"   AND/bare {row['ratio']:.2f}", flush=True)
    return rows


def _measure_workload(work: Workload, plan: Plan, device: torch.device, bank: MemoryBank | None,
                      state: RoundState | None, criterion: NeighbourhoodLoss | None, and_miner: Any,
                      bare_only: bool = False) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_backbone(work.backbone, embedding_dim=128).to(device)
    if work.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, nesterov=True, weight_decay=5e-4)
    train_model = torch.compile(model) if work.compile else model
    channels, side = input_size(work.backbone)
    images = torch.randn(work.batch, channels, side, side, device=device)
    if work.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    indices = torch.randperm(plan.bank_size, device=device)[: work.batch]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if work.precision == "bf16" else nullcontext()

    def bare() -> None:
        with autocast:
            features = train_model(images)
        loss = features.float().square().sum(dim=1).mean()  # a loss of the features alone: no AND
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def and_step() -> None:
        with autocast:
            features = train_model(images)
        loss = criterion(features.float(), indices, bank, state)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bank.update(indices, features)
        if and_miner is not None:
            and_miner(features.detach().float(), indices, ref_emb=bank.bank[indices].float(), ref_labels=indices)

    warmup = plan.step_warmup + (3 if work.compile else 0)
    if bare_only:
        (t_bare,) = timed_interleaved([bare], device, warmup, plan.step_repeats)
        return {"bare_images_per_s": work.batch / t_bare}
    t_bare, t_and = timed_interleaved([bare, and_step], device, warmup, plan.step_repeats)
    return {
        "workload": work.name, **asdict(work), "bank_size": plan.bank_size,
        "bare_images_per_s": work.batch / t_bare, "and_images_per_s": work.batch / t_and,
        "ratio": t_bare / t_and, "bare_ms": t_bare * 1e3, "and_ms": t_and * 1e3,
    }


def bench_epochs(plan: Plan, device: torch.device, steps: list[dict[str, Any]], threads: int | None) -> list[dict[str, Any]]:
    """Whole epochs through the Trainer (data loading included), DataLoader and on-device paths."""
    from and_plugin import Trainer
    from and_plugin.data import build_dataset, build_transform

    rows = []
    sets: dict[int, Any] = {}
    for run in plan.epochs:
        if run.images not in sets:
            sets[run.images] = build_dataset("synthetic", split="train", image_size=32, train_size=run.images,
                                             transform=build_transform("cifar", train=True))
        train_set = sets[run.images]
        with tempfile.TemporaryDirectory() as out:
            overrides = [
                f"run.output_dir={out}", f"run.device={device}", "run.progress=false", "run.checkpoint_every=1000",
                f"run.precision={run.precision}", f"run.channels_last={str(run.channels_last).lower()}",
                f"run.compile={str(run.compile).lower()}", f"model.backbone={run.backbone}",
                "data.dataset=synthetic", "data.transform=cifar", f"data.batch_size={run.batch}",
                f"data.num_workers={run.workers}", f"data.gpu_resident={str(run.gpu_resident).lower()}",
                "optim.epochs_per_round=2", "method.rounds=4", "eval.bank_knn=false",
            ]
            if threads:
                overrides.append(f"run.threads={threads}")
            if run.lr_reference_batch:
                overrides.append(f"optim.lr_reference_batch={run.lr_reference_batch}")
            config = load_config(None, overrides)
            torch.manual_seed(0)
            model = build_backbone(run.backbone, embedding_dim=128)
            started = time.perf_counter()
            trainer = Trainer(config, model, train_set)
            setup = time.perf_counter() - started
            trainer._start_round(0)
            trainer._start_round(1)  # a neighbourhood round: anchors use the AN loss
            trainer.train_epoch(1, 0, 2)  # warm-up epoch (compile, allocator, caches)
            record = trainer.train_epoch(1, 1, 2)
        # The bare step of the same backbone, batch and precision, measured right after the epoch
        # (a shared machine's load drifts); compiled runs reuse the step table.
        work = Workload(run.backbone, run.batch, run.precision, run.channels_last, run.compile)
        if run.compile:
            bare_rate = next((s["bare_images_per_s"] for s in steps if s["workload"] == work.name), None)
        else:
            bare_rate = _measure_workload(work, replace(plan, step_repeats=max(2, plan.step_repeats // 2)), device,
                                          None, None, None, None, bare_only=True)["bare_images_per_s"]
        row = {
            "label": run.label, **asdict(run), "images_per_s": record["images_per_s"], "seconds": record["seconds"],
            "setup_s": setup, "bare_images_per_s": bare_rate,
            "ratio_to_bare": record["images_per_s"] / bare_rate if bare_rate else None,
        }
        rows.append(row)
        ratio = f"   epoch/bare {row['ratio_to_bare']:.2f}" if bare_rate else ""
        print(f"  epoch {run.label:38s} {row['images_per_s']:9.0f} img/s   ({run.images} images, setup {setup:.1f} s){ratio}",
              flush=True)
    return rows


def bench_loss(plan: Plan, device: torch.device, baseline: bool = False) -> list[dict[str, Any]]:
    """NeighbourhoodLoss forward + backward + MemoryBank.update at B = 256."""
    rows = []
    for size in plan.loss_sizes:
        if baseline and size == plan.loss_sizes[0]:
            row = _measure_loss(size, torch.float32, plan.loss_repeats, device, None, plain=True)
            rows.append(row)
            print(f"  loss  N={size:>9,} bank float32  B={row['batch']} {row['path']:16s} {row['ms']:9.2f} ms/step"
                  f"   peak extra {row['peak_extra_mb']:8.1f} MB", flush=True)
        for dtype in (torch.float32, torch.bfloat16):
            for chunk in (None, 65_536):
                row = _measure_loss(size, dtype, plan.loss_repeats, device, chunk)
                rows.append(row)
                print(f"  loss  N={size:>9,} bank {row['bank_dtype']:8s} B={row['batch']} {row['path']:16s} "
                      f"{row['ms']:9.2f} ms/step   peak extra {row['peak_extra_mb']:8.1f} MB", flush=True)
                gc.collect()
    return rows


def _measure_loss(size: int, dtype: torch.dtype, repeats: int, device: torch.device, chunk: int | None,
                  batch: int = 256, plain: bool = False) -> dict[str, Any]:
    bank = MemoryBank(size, 128, dtype=dtype, seed=0).to(device)
    state = random_round_state(size, device)
    criterion = NeighbourhoodLoss(0.07, chunk_size=chunk)
    generator = torch.Generator().manual_seed(1)
    features = F.normalize(torch.randn(batch, 128, generator=generator), dim=1).to(device).requires_grad_()
    indices = torch.randperm(size, generator=generator)[:batch].to(device)

    def step() -> None:
        loss = criterion(features, indices, bank, state)
        loss.backward()
        bank.update(indices, features)

    import and_plugin.kernels.bank_logsumexp as loss_kernels

    fused = loss_kernels.fused_attention
    if plain:  # the previous default: (B, N) logits, autograd through logsumexp
        loss_kernels.fused_attention = lambda *args: None
    try:
        step()
        with PeakMemory(device) as memory:
            seconds = timed(step, device, 0, repeats)
    finally:
        loss_kernels.fused_attention = fused
    path = "plain B x N (old)" if plain else "fused" if chunk is None else f"streamed {chunk:,}"
    return {"n": size, "bank_dtype": str(dtype).replace("torch.", ""), "batch": batch,
            "path": path, "chunk_size": chunk, "ms": seconds * 1e3,
            "peak_extra_mb": memory.extra_mb, "memory_method": memory.method}


def bench_refresh(plan: Plan, device: torch.device, baseline: bool = False) -> list[dict[str, Any]]:
    """entropy_and_neighbours + select_anchors (the round-start refresh) on a synthetic bank."""
    rows = []
    if baseline:  # the previous algorithm (now the fallback): row blocks x all N, per-row logsumexp
        from and_plugin.curriculum import reference_entropy_and_neighbours

        size = plan.refresh_sizes[0]
        bank = unit_bank(size, 128, torch.float32, device)
        budget = (2 << 30) if device.type == "cuda" else (256 << 20)
        with PeakMemory(device) as memory:
            sync(device)
            start, cpu_start = time.perf_counter(), cpu_seconds()
            entropy, _ = reference_entropy_and_neighbours(bank, 0.1, 1, budget)
            select_anchors(entropy, 0.5)
            sync(device)
            seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
        rows.append({"n": size, "bank_dtype": "float32", "seconds": seconds, "cpu_seconds": cpu, "cpu_workers": None,
                     "peak_extra_mb": memory.extra_mb, "memory_method": memory.method,
                     "bank_mb": bank.numel() * 4 / 2**20, "anchors": None, "path": "row pass (old)"})
        print(f"  refresh N={size:>9,} bank float32  row pass (old) {seconds:9.2f} s ({cpu:.1f} s CPU)   peak extra "
              f"{memory.extra_mb:8.1f} MB", flush=True)
    for size in plan.refresh_sizes:
        # On the CPU, N > 50,000 runs once, with the bfloat16 bank of the large-scale setting (the
        # float32 bank costs the same time: the refresh computes in float32 either way).
        dtypes = (torch.float32, torch.bfloat16) if size <= 50_000 or device.type == "cuda" else (torch.bfloat16,)
        for dtype in dtypes:
            bank = unit_bank(size, 128, dtype, device)
            with PeakMemory(device) as memory:
                sync(device)
                start, cpu_start = time.perf_counter(), cpu_seconds()
                entropy, _nearest = entropy_and_neighbours(bank, 0.1, 1)
                mask = select_anchors(entropy, 0.5)
                sync(device)
                seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
            row = {"n": size, "bank_dtype": str(dtype).replace("torch.", ""), "seconds": seconds, "path": "tiles",
                   "cpu_seconds": cpu,
                   "cpu_workers": max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) // 2))
                   if device.type == "cpu" else None,
                   "peak_extra_mb": memory.extra_mb, "memory_method": memory.method,
                   "bank_mb": bank.numel() * bank.element_size() / 2**20, "anchors": int(mask.sum())}
            rows.append(row)
            print(f"  refresh N={size:>9,} bank {row['bank_dtype']:8s} {seconds:9.2f} s ({cpu:.1f} s CPU)   peak extra "
                  f"{memory.extra_mb:8.1f} MB (bank itself {row['bank_mb']:.0f} MB)", flush=True)
            gc.collect()
    return rows


# ----------------------------------------------------------------------------------- machine and report


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info(device: torch.device) -> dict[str, Any]:
    info = {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": str(device),
        "hostname": platform.node(),
    }
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    return info


def machine_slug(info: dict[str, Any]) -> str:
    name = info.get("gpu") or f"{info['cpu']} {info['cpu_cores']}c"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"# AND benchmark — {result['date']}",
        "",
        (
            f"- machine: {m.get('gpu', 'no GPU')}; CPU {m['cpu']} ({m['cpu_cores']} cores, torch threads "
            f"{m['torch_threads']}, {m['cpu_capability']}); load average at start "
            f"{tuple(round(x, 1) for x in m.get('load_average', ()))}"
        ),
        f"- torch {m['torch']}, Python {m['python']}, device {m['device']}",
        f"- command: `{result['command']}`",
        *[f"- note: {n}" for n in result["notes"]],
        (
            "- timing: medians; bare and AND steps interleaved; each epoch's ratio uses a bare step measured "
            "right after that epoch (other rows may be minutes apart on a shared machine)"
        ),
        "",
        (
            "## Train step: bare backbone vs AND (random images on the device, bank N = "
            f"{result['plan']['bank_size']:,}, half the samples anchors)"
        ),
        "",
        "| workload | bare img/s | AND img/s | AND / bare |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {r['workload']} | {r['bare_images_per_s']:,.0f} | {r['and_images_per_s']:,.0f} | {r['ratio']:.2f} |"
              for r in result["steps"]]
    lines += ["", "## Whole epoch through the Trainer (synthetic 32x32 set, data loading included, round 1)", "",
              "| run | images | batch | img/s | epoch / bare step |", "|---|---:|---:|---:|---:|"]
    for r in result["epochs"]:
        ratio = f"{r['ratio_to_bare']:.2f}" if r["ratio_to_bare"] is not None else "—"
        lines.append(f"| {r['label']} ({r['backbone']}) | {r['images']:,} | {r['batch']} | {r['images_per_s']:,.0f} | {ratio} |")
    lines += ["", "## Loss step (NeighbourhoodLoss forward + backward + MemoryBank.update, B = 256, half anchors)", "",
              "fused = chunk_size None (one fused attention kernel, no B x N tensor); streamed = chunk_size 65,536.", "",
              "| N | bank dtype | path | ms / step | peak extra MB |", "|---:|---|---|---:|---:|"]
    lines += [f"| {r['n']:,} | {r['bank_dtype']} | {r['path']} | {r['ms']:.2f} | {r['peak_extra_mb']:.1f} |"
              for r in result["loss"]]
    lines += ["", "## Curriculum refresh (entropy_and_neighbours + select_anchors)", "",
              "| N | bank dtype | path | seconds | CPU seconds | peak extra MB | bank MB |",
              "|---:|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['n']:,} | {r['bank_dtype']} | {r.get('path', 'tiles')} | {r['seconds']:.2f} | "
              f"{r.get('cpu_seconds', float('nan')):.1f} | {r['peak_extra_mb']:.1f} | {r['bank_mb']:.0f} |"
              for r in result["refresh"]]
    if result["loss"] or result["refresh"]:
        lines += ["", f"Memory measured as: {(result['loss'] or result['refresh'])[0]['memory_method']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--sizes", choices=("small", "full"), default="small",
                        help="full adds workloads, torch.compile (GPU) and larger refresh sizes (CPU)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller epochs")
    parser.add_argument("--ci", action="store_true", help="everything tiny (< 60 s); prints numbers, saves nothing")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--imagenet-refresh", action="store_true", help=f"also run the N = {IMAGENET_N:,} refresh on the CPU")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile workloads")
    parser.add_argument("--miner", action="store_true", help="include an ANDMiner call in the AND step")
    parser.add_argument("--baseline", action="store_true",
                        help="also time the previous algorithms: the plain B x N loss and the row-pass refresh")
    parser.add_argument("--tag", default="", help="appended to the results file name")
    parser.add_argument("--only", default="steps,epochs,loss,refresh", help="comma list of parts to run")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    parser.add_argument("--no-save", action="store_true", help="print only")
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here; use --device cpu")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (the paper-faithful mode)
    plan = make_plan(args, device)
    parts = set(args.only.split(","))
    info = machine_info(device)
    started = time.perf_counter()
    print(f"AND benchmark on {info.get('gpu', info['cpu'])} ({device}), torch {info['torch']}, "
          f"{info['torch_threads']} threads", flush=True)
    for note in plan.notes:
        print(f"  note: {note}")
    result: dict[str, Any] = {
        "date": _dt.date.today().isoformat(),
        "command": "python benchmarks/bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": info, "plan": asdict(plan), "notes": plan.notes,
        "steps": [], "epochs": [], "loss": [], "refresh": [], "complete": False,
    }
    stem = None
    if not (args.ci or args.no_save):
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"{device.type}-{machine_slug(info)}-{result['date']}{'-' + args.tag if args.tag else ''}"

    def save() -> None:  # after every part, so a run stopped by a time limit keeps what it measured
        result["total_seconds"] = time.perf_counter() - started
        if stem is not None:
            stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
            stem.with_suffix(".md").write_text(markdown(result))

    if "steps" in parts:
        result["steps"] = bench_steps(plan, device, args.miner)
        save()
    if "epochs" in parts:
        result["epochs"] = bench_epochs(plan, device, result["steps"], args.threads)
        save()
    if "loss" in parts:
        result["loss"] = bench_loss(plan, device, args.baseline)
        save()
    if "refresh" in parts:
        result["refresh"] = bench_refresh(plan, device, args.baseline)
    result["complete"] = True
    save()
    print(f"done in {result['total_seconds']:.0f} s")
    if stem is not None:
        print(f"wrote {stem}.json and .md")
    return result


if __name__ == "__main__":
    main()
