#!/usr/bin/env bash
# The CPU-scale study behind docs/results.md (not run in CI). Usage: study.sh digits|fashion
# Stage 1 chooses the lr schedule on a validation split of the training set (AND's mean kNN);
# stage 2 reports on the test split with that schedule, plus ablations at it.
set -euo pipefail
cd "$(dirname "$0")/../../.."
PY=${PY:-python}
acc() { OMP_NUM_THREADS=1 $PY benchmarks/accuracy.py run "$@"; }
best() {  # the schedule whose AND run has the best final mean kNN on the validation split
  $PY - "$1" <<'PY'
import json, sys, pathlib
rows = [json.loads(p.read_text()) for p in pathlib.Path("benchmarks/results/accuracy", sys.argv[1]).glob("*.json")]
best = max(rows, key=lambda r: r["summary"]["and"][-1]["knn"]["mean"])
print(next(o.split("=", 1)[1] for o in best["overrides"] if o.startswith("optim.lr_schedule=")))
PY
}
case "$1" in
digits)
  for s in ${DIGITS_SCHEDULES:-constant cosine step}; do
    acc --study digits-val --setting "$s" --dataset digits --split val --val-size 400 \
      --epochs-per-round 8 --rounds 4 --seeds 0 1 2 -- "optim.lr_schedule=$s"
  done
  s=$(best digits-val)
  acc --study digits-test --setting "$s" --dataset digits --split test --epochs-per-round 8 --rounds 4 \
    --seeds 0 1 2 --note "schedule chosen on digits-val" -- "optim.lr_schedule=$s"
  acc --study digits-test --setting "$s-k4" --dataset digits --split test --epochs-per-round 8 --rounds 4 \
    --seeds 0 1 2 --note "k = 4 neighbours per anchor" -- "optim.lr_schedule=$s" method.neighbours=4
  acc --study digits-test --setting "$s-e16-r2" --dataset digits --split test --epochs-per-round 16 --rounds 2 \
    --seeds 0 1 2 --note "R = 2 rounds of 16 epochs (48 epochs in all)" -- "optim.lr_schedule=$s"
  ;;
fashion)
  for s in constant cosine; do
    acc --study fashion-val --setting "$s" --dataset fashion_mnist --subset 2000 --split val --val-size 1000 \
      --epochs-per-round 4 --rounds 4 --seeds 0 -- "optim.lr_schedule=$s"
  done
  s=$(best fashion-val)
  acc --study fashion-test --setting "$s" --dataset fashion_mnist --subset 2000 --split test \
    --epochs-per-round 4 --rounds 4 --seeds 0 1 --note "schedule chosen on fashion-val" -- "optim.lr_schedule=$s"
  ;;
esac
