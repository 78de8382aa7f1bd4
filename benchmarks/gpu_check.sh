#!/usr/bin/env bash
# GPU check of the fast path: the gpu-marked tests, the speed harness and the short-schedule
# accuracy check, with a table of everything printed last. Run it on a machine with a CUDA GPU:
#
#   bash benchmarks/gpu_check.sh --data ~/data/cifar10                 # everything (about 10 min on an H100/H200)
#   bash benchmarks/gpu_check.sh --data ~/data/cifar10 --time-limit 600  # every step cut to fit 10 minutes
#   bash benchmarks/gpu_check.sh --quick                                # no accuracy runs without --data; small harness
#   bash benchmarks/gpu_check.sh --device cpu --quick --data ~/data/cifar10-jpeg.tar.gz  # every step, on the CPU
#
# Options:
#   --data PATH        CIFAR-10: a folder (the python pickle batches, or JPEG train/ and test/
#                      trees) or a .tar.gz of one, extracted to a temporary folder. Without it
#                      the accuracy runs are skipped.
#   --quick            a smaller harness, and the accuracy runs as a bug check (512 images, 1 round)
#   --time-limit SEC   give each step a share of SEC seconds (a step that runs over is stopped
#                      and marked "timed out"); default: no limit
#   --device cuda|cpu  default cuda; cpu runs the same steps as a check that each one works
#   --out DIR          results folder (default: benchmarks/results/gpu-check-<date>)
#   --wheels DIR       first install the wheels in DIR (made by benchmarks/download_wheels.sh)
#                      into a temporary folder: for a GPU machine without a package index
#   --python EXE       the Python to use (default: .venv/bin/python if present, else python3)
set -uo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
DEVICE=cuda QUICK=0 DATA="" TIME_LIMIT="" OUT="" WHEELS="" PY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --data) DATA="$2"; shift 2 ;;
    --time-limit) TIME_LIMIT="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --wheels) WHEELS="$2"; shift 2 ;;
    --python) PY="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "gpu_check.sh: --device must be cuda or cpu, got '$DEVICE'" >&2; exit 2 ;; esac
if [ -n "$TIME_LIMIT" ] && ! [[ "$TIME_LIMIT" =~ ^[0-9]+$ && "$TIME_LIMIT" -ge 60 ]]; then
  echo "gpu_check.sh: --time-limit must be a whole number of seconds >= 60, got '$TIME_LIMIT'" >&2; exit 2
fi
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT="${OUT:-benchmarks/results/gpu-check-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
START=$(date +%s)
elapsed() { echo "$(( $(date +%s) - START )) s"; }
# step PERCENT CMD...: runs CMD, with --time-limit stopped after PERCENT % of the time left
step() {
  local percent="$1"; shift
  if [ -z "$TIME_LIMIT" ]; then "$@"; return $?; fi
  local left=$(( TIME_LIMIT - ($(date +%s) - START) - 10 ))  # 10 s for the table
  local seconds=$(( left * percent / 100 ))
  timeout "$(( seconds > 10 ? seconds : 10 ))" "$@"
}
status_of() { if [ "$1" -eq 0 ]; then echo ok; elif [ "$1" -eq 124 ]; then echo "timed out"; else echo "failed ($1)"; fi; }

echo "== 1. setup ($(elapsed))"
if [ -n "$WHEELS" ]; then
  SITE="$(mktemp -d)"
  $PY -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHEELS"/*.whl \
    || { echo "gpu_check.sh: could not install the wheels in $WHEELS" >&2; exit 1; }
  export PYTHONPATH="$SITE:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
if [ -n "$DATA" ] && [ -f "$DATA" ]; then
  EXTRACTED="$(mktemp -d)"
  tar xzf "$DATA" -C "$EXTRACTED" || { echo "gpu_check.sh: could not extract $DATA" >&2; exit 1; }
  found="$(find "$EXTRACTED" -maxdepth 3 \( -type d -name train -o -name data_batch_1 \) | head -1)"
  DATA="$(dirname "${found:-$EXTRACTED/x}")"
fi
[ -z "$DATA" ] || [ -d "$DATA" ] || { echo "gpu_check.sh: --data $DATA is neither a folder nor a .tar.gz" >&2; exit 2; }
$PY - "$DEVICE" <<'PYEOF' || exit 1
import platform, sys
import torch
print(f"torch {torch.__version__}, python {platform.python_version()}, cuda available: {torch.cuda.is_available()}",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
if sys.argv[1] == "cuda" and not torch.cuda.is_available():
    sys.exit("gpu_check.sh: --device cuda but torch sees no CUDA GPU (use --device cpu to check the steps)")
import and_plugin  # fails here, early, if a dependency is missing
print("and_plugin", and_plugin.__file__)
PYEOF

echo "== 2. GPU tests ($(elapsed))"
step 15 $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_data.py tests/test_fast_path_gpu.py 2>&1 | tee "$OUT/tests.log" | tail -15
TESTS=$(status_of "${PIPESTATUS[0]}")

echo "== 3. speed harness ($(elapsed))"
if [ "$DEVICE" = cuda ]; then BENCH_ARGS=(--device cuda); [ "$QUICK" = 1 ] && BENCH_ARGS+=(--quick)
else BENCH_ARGS=(--device cpu --ci); fi
step 35 $PY benchmarks/bench.py "${BENCH_ARGS[@]}" --out "$OUT" 2>&1 | tee "$OUT/bench.log"
BENCH=$(status_of "${PIPESTATUS[0]}")

echo "== 4. short-schedule accuracy ($(elapsed))"
PAPER="skipped (no --data)" FAST="skipped (no --data)"
if [ -n "$DATA" ]; then
  ACC_ARGS=(--data "$DATA" --device "$DEVICE")
  [ "$QUICK" = 1 ] && ACC_ARGS+=(--quick)
  step 65 $PY benchmarks/accuracy_check.py --mode paper "${ACC_ARGS[@]}" --out "$OUT/paper.json" 2>&1 | tee "$OUT/paper.log"
  PAPER=$(status_of "${PIPESTATUS[0]}")
  step 100 $PY benchmarks/accuracy_check.py --mode fast "${ACC_ARGS[@]}" --out "$OUT/fast.json" 2>&1 | tee "$OUT/fast.log"
  FAST=$(status_of "${PIPESTATUS[0]}")
fi

echo "== 5. summary ($(elapsed))"
$PY - "$OUT" "$TESTS" "$BENCH" "$PAPER" "$FAST" <<'PYEOF'
import glob, json, os, sys
out, tests, bench, paper, fast = sys.argv[1:]
print(f"steps: GPU tests {tests}; harness {bench}; paper-faithful run {paper}; fast-path run {fast}")
harness = [r for r in sorted(glob.glob(os.path.join(out, "*.json")), key=os.path.getmtime)
           if os.path.basename(r) not in ("paper.json", "fast.json")]
if harness:
    h = json.load(open(harness[-1]))
    print(f"\nharness ({h['machine'].get('gpu') or h['machine']['cpu']}, torch {h['machine']['torch']})"
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
else:
    print("\nharness: no results file (on the CPU the harness runs with --ci, which saves none; see bench.log)")
runs = [(name, os.path.join(out, f"{name}.json")) for name in ("paper", "fast")]
if any(os.path.exists(path) for _, path in runs):
    print(f"\n{'accuracy run':12s} {'kNN % per round (recomputed)':42s} {'img/s':>8s} {'train s':>8s}")
    for name, path in runs:
        if not os.path.exists(path):
            print(f"{name:12s} (no result)")
            continue
        r = json.load(open(path))
        knn = " / ".join("-" if k is None else f"{100 * k:.1f}" for k in r["knn_per_round"])
        print(f"{name:12s} {knn:42s} {r['train_images_per_s']:8,.0f} {r['train_s']:8.0f}")
    print("(what the authors' code reaches at this schedule: docs/recipes.md, 'Reference measurements at a short schedule')")
print(f"\nresults and logs: {out}")
PYEOF
echo "done in $(elapsed)"
