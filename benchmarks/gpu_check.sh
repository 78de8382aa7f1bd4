#!/usr/bin/env bash
# The one GPU check of the fast path, sized for a 15-minute device lease (about 10 minutes of run).
#
#   bash benchmarks/gpu_check.sh                     # on the GPU machine (device cuda)
#   bash benchmarks/gpu_check.sh --device cpu --quick  # here, on the CPU: a bug check of every step
#
# Needs, in the repository root (both git-ignored; benchmarks/prepare_gpu_carry.sh makes them):
#   .whl/                      wheels of the packages the GPU image lacks (lightly, hydra-core,
#                              omegaconf, antlr4-python3-runtime, pytorch-metric-learning, submitit, rich)
#   .data/cifar10-jpeg.tar.gz  CIFAR-10 as JPEG (a copy of ../shared/data/cifar10-jpeg.tar.gz)
# and on the device tool: carry [".whl", ".data"], timeout_s 600.
#
# Steps (each under its own time limit, so one hang cannot eat the lease):
#   1. install the wheels into /tmp/site, extract CIFAR-10 to /tmp/cifar10, print the machine
#   2. the GPU tests (pytest -m gpu): on-device augmentation, fused loss and tiled refresh vs CPU
#   3. the harness: benchmarks/bench.py --device cuda --quick (steps, epochs, loss, refresh)
#   4. the short-schedule accuracy check, paper-faithful (ResNet18-CIFAR, 5 rounds x 6 epochs,
#      batch 128, fp32, DataLoader) and the fast path at the same epoch budget (gpu_resident,
#      bf16, channels_last, batch 512, lr x4)
#   5. a table of everything, printed last
# Results land in $OUT (the device tool's folder) or /tmp/and_gpu_check.
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    *) echo "gpu_check.sh: unknown argument $1 (allowed: --device cpu|cuda, --quick)" >&2; exit 2 ;;
  esac
done
OUT="${OUT:-/tmp/and_gpu_check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=python3
[ -x .venv/bin/python ] && [ "$DEVICE" = cpu ] && PY=.venv/bin/python
START=$(date +%s)
DEADLINE="${DEADLINE:-570}"  # seconds for the whole script: the device tool allows 600 per command
elapsed() { echo "$(( $(date +%s) - START )) s"; }
# budget MAX RESERVE: at most MAX seconds, leaving RESERVE seconds for the steps after this one.
budget() { local left=$(( DEADLINE - ($(date +%s) - START) - $2 )); [ "$left" -lt "$1" ] && echo $(( left > 10 ? left : 10 )) || echo "$1"; }
status_of() { if [ "$1" -eq 0 ]; then echo ok; elif [ "$1" -eq 124 ]; then echo "timed out"; else echo "failed ($1)"; fi; }

echo "== 1. setup ($(elapsed))"
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
TARBALL=.data/cifar10-jpeg.tar.gz
[ -f "$TARBALL" ] || TARBALL=../shared/data/cifar10-jpeg.tar.gz
DATA=/tmp/cifar10
if [ ! -d "$DATA/train" ]; then
  mkdir -p "$DATA" && tar xzf "$TARBALL" -C "$DATA" || { echo "no CIFAR-10 tarball at .data/ or ../shared/data/"; exit 1; }
fi
[ -d "$DATA/train" ] || DATA="$(dirname "$(find "$DATA" -maxdepth 3 -type d -name train | head -1)")"
$PY - <<'EOF'
import torch, platform
print(f"torch {torch.__version__}, python {platform.python_version()}, cuda {torch.cuda.is_available()}",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
import and_plugin  # fails here, early, if a wheel is missing
print("and_plugin imports")
EOF
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

echo "== 2. GPU tests ($(elapsed))"
if [ "$DEVICE" = cuda ]; then
  timeout "$(budget 60 480)" $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_data.py tests/test_fast_path_gpu.py 2>&1 | tail -15
  TESTS=$(status_of "${PIPESTATUS[0]}")
else
  timeout 120 $PY -m pytest -q -p no:cacheprovider tests/test_gpu_data.py tests/test_fast_path_gpu.py 2>&1 | tail -5
  TESTS=$(status_of "${PIPESTATUS[0]}")
fi

echo "== 3. harness ($(elapsed))"
if [ "$DEVICE" = cuda ]; then BENCH_ARGS=(--device cuda --quick); else BENCH_ARGS=(--device cpu --ci); fi
timeout "$(budget 150 340)" $PY benchmarks/bench.py "${BENCH_ARGS[@]}" --out "$OUT" 2>&1 | tee "$OUT/bench.log"
BENCH=$(status_of "${PIPESTATUS[0]}")

echo "== 4. short-schedule accuracy ($(elapsed))"
ACC_ARGS=(--data "$DATA" --device "$DEVICE")
[ "$QUICK" = 1 ] && ACC_ARGS+=(--quick)
timeout "$(budget 300 100)" $PY benchmarks/accuracy_check.py --mode paper "${ACC_ARGS[@]}" --out "$OUT/paper.json" 2>&1 | tee "$OUT/paper.log"
PAPER=$(status_of "${PIPESTATUS[0]}")
timeout "$(budget 150 10)" $PY benchmarks/accuracy_check.py --mode fast "${ACC_ARGS[@]}" --out "$OUT/fast.json" 2>&1 | tee "$OUT/fast.log"
FAST=$(status_of "${PIPESTATUS[0]}")

echo "== 5. summary ($(elapsed))"
$PY - "$OUT" "$TESTS" "$BENCH" "$PAPER" "$FAST" <<'EOF'
import glob, json, os, sys
out, tests, bench, paper, fast = sys.argv[1:]
print(f"steps: GPU tests {tests}; harness {bench}; paper run {paper}; fast run {fast}")
results = sorted(glob.glob(os.path.join(out, "*.json")), key=os.path.getmtime)
harness = [r for r in results if os.path.basename(r) not in ("paper.json", "fast.json")]
if harness:
    h = json.load(open(harness[-1]))
    print(f"\nharness ({h['machine'].get('gpu', h['machine']['cpu'])}, torch {h['machine']['torch']})"
          + ("" if h.get("complete", True) else " -- stopped early by its time limit: partial"))
    print(f"{'train step':44s} {'bare img/s':>11s} {'AND img/s':>10s} {'AND/bare':>9s}")
    for r in h["steps"]:
        print(f"{r['workload']:44s} {r['bare_images_per_s']:11,.0f} {r['and_images_per_s']:10,.0f} {r['ratio']:9.2f}")
    print(f"{'whole epoch (synthetic 32x32)':44s} {'img/s':>11s} {'/bare':>10s}")
    for r in h["epochs"]:
        ratio = f"{r['ratio_to_bare']:.2f}" if r["ratio_to_bare"] else "-"
        print(f"{r['label']:44s} {r['images_per_s']:11,.0f} {ratio:>10s}")
    for r in h["loss"]:
        print(f"loss N={r['n']:>9,} {r['bank_dtype']:8s} {r['path']:16s} {r['ms']:8.2f} ms   peak +{r['peak_extra_mb']:.0f} MB")
    for r in h["refresh"]:
        print(f"refresh N={r['n']:>9,} {r['bank_dtype']:8s} {r['seconds']:8.2f} s   peak +{r['peak_extra_mb']:.0f} MB")
print(f"\n{'accuracy run (5 rounds x 6 epochs)':36s} {'kNN % per round (recomputed)':42s} {'img/s':>8s} {'train s':>8s}")
print(f"{'reference AND (TARGETS.md, H200)':36s} {'28.9 / 37.3 / 44.7 / 49.7 / 52.6':42s} {'7-10.7k':>8s}")
for name in ("paper", "fast"):
    path = os.path.join(out, f"{name}.json")
    if not os.path.exists(path):
        print(f"{name:36s} (no result)")
        continue
    r = json.load(open(path))
    knn = " / ".join("-" if k is None else f"{100 * k:.1f}" for k in r["knn_per_round"])
    print(f"{name:36s} {knn:42s} {r['train_images_per_s']:8,.0f} {r['train_s']:8.0f}")
EOF
echo "done in $(elapsed)"
