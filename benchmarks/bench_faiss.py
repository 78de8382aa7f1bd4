#!/usr/bin/env python
"""Approximate (faiss) against exact neighbourhood discovery at scale (not a test).

Quality, at N = 200,000 real features: the 70,000 Fashion-MNIST images (train + t10k, the IDX
files of Debian's ``dataset-fashion-mnist``) plus augmented copies (horizontal flips, then
random 2-pixel shifts of random flips) up to N rows, embedded by a small_cnn trained with AND on
Fashion-MNIST (a run checkpoint, ``--checkpoint``) and L2-normalised. For each round r = 1..R
(S = r/R) it reports the anchor-set Jaccard of faiss against exact
(:func:`and_plugin.curriculum.entropy_and_neighbours`, timed in the same run), neighbour recall@k
for k = 1 and 5 and the entropy's max and median relative errors.

Timing, at N = 1M and 4M synthetic clustered unit vectors (d = 128; exact is not run there: its
time is projected from the measured exact rate × (N / N_quality)²).

Usage::

    python benchmarks/bench_faiss.py quality --checkpoint runs/.../checkpoint.pt
    python benchmarks/bench_faiss.py timing --sizes 1000000 4000000
    python benchmarks/bench_faiss.py quality --size 20000 --no-save   # a smoke run

Results: ``benchmarks/results/scale/faiss-<part>-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gzip
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from and_plugin.curriculum import entropy_and_neighbours, select_anchors  # noqa: E402
from and_plugin.discovery_faiss import faiss_entropy_and_neighbours, import_faiss  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "scale"
FASHION = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = 0.2860, 0.3530  # and_plugin.data.transforms.FASHION_MNIST_NORMALIZE


def read_idx_images(path: Path) -> np.ndarray:
    """uint8 images (n, 28, 28) from a (gzipped) IDX file."""
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    count, rows, cols = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows, cols)


def fashion_images(size: int, seed: int) -> torch.Tensor:
    """The 70k images plus flipped / shifted copies up to ``size`` rows, normalised, (size, 1, 28, 28)."""
    images = np.concatenate([read_idx_images(FASHION / f"{stem}-images-idx3-ubyte.gz") for stem in ("train", "t10k")])
    base = torch.from_numpy(images).float().div(255).sub(MEAN).div(STD).unsqueeze(1)
    generator = torch.Generator().manual_seed(seed)
    parts, total = [base], len(base)
    if total < size:
        parts.append(base.flip(-1)[: size - total])
        total += len(parts[-1])
    while total < size:
        count = min(len(base), size - total)
        pick = torch.randperm(len(base), generator=generator)[:count]
        copy = base[pick]
        flip = torch.rand(count, generator=generator) < 0.5
        copy[flip] = copy[flip].flip(-1)
        padded = F.pad(copy, (2, 2, 2, 2), value=-MEAN / STD)
        shifts = torch.randint(0, 5, (count, 2), generator=generator)
        copy = torch.stack([padded[i, :, y : y + 28, x : x + 28] for i, (y, x) in enumerate(shifts.tolist())])
        parts.append(copy)
        total += count
    return torch.cat(parts)[:size]


def real_features(checkpoint: Path, size: int, seed: int) -> torch.Tensor:
    """Unit features (size, d) of the images through the checkpoint's backbone."""
    from and_plugin.build import build_model
    from and_plugin.config import config_from_dict

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = build_model(config_from_dict(state["config"]))
    model.load_state_dict(state["model"])
    model.eval()
    images = fashion_images(size, seed)
    with torch.no_grad():
        features = torch.cat([model(images[i : i + 4096]) for i in range(0, len(images), 4096)])
    return F.normalize(features.float(), dim=1)


def synthetic_features(size: int, dim: int, clusters: int, seed: int) -> torch.Tensor:
    """Clustered unit vectors: random unit centres plus isotropic noise, normalised."""
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(clusters, dim, generator=generator), dim=1)
    out = torch.empty(size, dim)
    for start in range(0, size, 1 << 18):
        stop = min(start + (1 << 18), size)
        label = torch.randint(0, clusters, (stop - start,), generator=generator)
        out[start:stop] = F.normalize(centres[label] + 0.08 * torch.randn(stop - start, dim, generator=generator), dim=1)
    return out


def recall(approx: torch.Tensor, exact: torch.Tensor, k: int) -> float:
    """Mean fraction of the exact top-k neighbours found in the approximate top-k."""
    hits = (approx[:, :k, None] == exact[:, None, :k]).any(dim=1).float()
    return float(hits.mean())


def shown(path: Path) -> str:
    """The checkpoint's path from its ``runs/`` folder on (the part that means something elsewhere)."""
    parts = Path(path).parts
    return str(Path(*parts[parts.index("runs"):])) if "runs" in parts else Path(path).name


def quality(args: argparse.Namespace) -> dict[str, Any]:
    bank = real_features(args.checkpoint, args.size, args.seed)
    k = 5
    started = time.perf_counter()
    exact_h, exact_n = entropy_and_neighbours(bank, args.temperature, k)
    exact_s = time.perf_counter() - started
    started = time.perf_counter()
    approx_h, approx_n = faiss_entropy_and_neighbours(bank, args.temperature, k, **args.kwargs)
    faiss_s = time.perf_counter() - started
    relative = (approx_h.double() - exact_h.double()).abs() / exact_h.double().abs().clamp(min=1e-12)
    rounds = []
    for r in range(1, args.rounds + 1):
        fraction = r / args.rounds
        a, b = select_anchors(exact_h, fraction), select_anchors(approx_h, fraction)
        union = int((a | b).sum())
        jaccard = int((a & b).sum()) / union if union else 1.0
        rounds.append({"round": r, "S": fraction, "anchors": int(a.sum()), "jaccard": jaccard,
                       "recall@1_anchors": recall(approx_n[a], exact_n[a], 1),
                       "recall@5_anchors": recall(approx_n[a], exact_n[a], 5)})
    return {
        "part": "quality", "N": args.size, "d": bank.shape[1], "temperature": args.temperature,
        "features": f"Fashion-MNIST 70k + augmented copies through {shown(args.checkpoint)}",
        "exact_threads": "entropy_and_neighbours default (worker threads = half the CPU count)",
        "faiss_kwargs": args.kwargs, "exact_s": exact_s, "faiss_s": faiss_s, "speedup": exact_s / faiss_s,
        "recall@1": recall(approx_n, exact_n, 1), "recall@5": recall(approx_n, exact_n, 5),
        "entropy_max_rel_err": float(relative.max()), "entropy_median_rel_err": float(relative.median()),
        "rounds": rounds,
    }


def timing(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for size in args.sizes:
        bank = synthetic_features(size, args.dim, args.clusters, args.seed)
        started = time.perf_counter()
        faiss_entropy_and_neighbours(bank, args.temperature, 5, **args.kwargs)
        seconds = time.perf_counter() - started
        projected = args.exact_rate_s * (size / args.exact_rate_n) ** 2 if args.exact_rate_s else None
        rows.append({"N": size, "faiss_s": seconds, "exact_projected_s": projected,
                     "projected_speedup": projected / seconds if projected else None})
        print(json.dumps(rows[-1]), flush=True)
        del bank
    top = rows[0] if len(rows) == 1 else {}  # one size per run: its numbers at the top (cost_model.py reads them)
    return {"part": "timing", **top, "d": args.dim, "clusters": args.clusters, "temperature": args.temperature,
            "features": "synthetic clustered unit vectors (timing only)", "faiss_kwargs": args.kwargs,
            "exact_rate": {"N": args.exact_rate_n, "seconds": args.exact_rate_s}, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    head = f"# faiss discovery: {result['part']} ({result['date']}, {result['threads']} threads, {result['machine']})\n\n"
    head += f"Features: {result['features']}. faiss kwargs: `{result['faiss_kwargs'] or 'defaults'}`.\n\n"
    if result["part"] == "quality":
        lines = [f"N = {result['N']:,}, d = {result['d']}, τ = {result['temperature']}: exact {result['exact_s']:.1f} s, "
                 f"faiss {result['faiss_s']:.1f} s (×{result['speedup']:.1f}); recall@1 {result['recall@1']:.4f}, "
                 f"recall@5 {result['recall@5']:.4f} (all rows); entropy relative error max "
                 f"{result['entropy_max_rel_err']:.2e}, median {result['entropy_median_rel_err']:.2e}.\n",
                 "| round | S | anchors | Jaccard vs exact | recall@1 (anchors) | recall@5 (anchors) |",
                 "|---|---|---|---|---|---|"]
        lines += [f"| {r['round']} | {r['S']:.2f} | {r['anchors']:,} | {r['jaccard']:.4f} | {r['recall@1_anchors']:.4f} "
                  f"| {r['recall@5_anchors']:.4f} |" for r in result["rounds"]]
    else:
        lines = ["| N | faiss (s) | exact, projected (s) | projected speed-up |", "|---|---|---|---|"]
        lines += [f"| {r['N']:,} | {r['faiss_s']:.1f} | {r['exact_projected_s'] or float('nan'):.0f} "
                  f"| {r['projected_speedup'] or float('nan'):.0f} |" for r in result["rows"]]
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=("quality", "timing"))
    parser.add_argument("--checkpoint", type=Path,
                        default=ROOT / "runs" / "accuracy" / "fashion-length" / "L4" / "and-seed0" / "checkpoint.pt")
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--kwargs", type=json.loads, default={}, help="discovery_kwargs as JSON")
    parser.add_argument("--exact-rate-n", type=int, default=200_000)
    parser.add_argument("--exact-rate-s", type=float, default=None, help="measured exact seconds at --exact-rate-n")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    import_faiss()
    torch.set_num_threads(args.threads)
    args.kwargs.setdefault("threads", args.threads)
    result = quality(args) if args.part == "quality" else timing(args)
    result.update(date=_dt.date.today().isoformat(), threads=args.threads, torch=torch.__version__,
                  faiss=import_faiss().__version__, machine=f"{platform.machine()} {os.cpu_count()} CPUs")
    text = markdown(result)
    print(text)
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        sizes = [args.size] if args.part == "quality" else args.sizes
        stem = RESULTS / f"faiss-{args.part}-{'-'.join(f'{n // 1000}k' for n in sizes)}-{result['date']}"
        stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        stem.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
