#!/usr/bin/env bash
# The CPU-scale study behind docs/results.md (not run in CI), exactly as recorded: each JSON file
# also stores its own command. Stage 1 chooses the lr schedule on a validation split of the
# training set (AND's final mean kNN); stage 2 measures the chosen schedule on the test split.
# One thread per run; a run of 5 x 8 digits epochs takes a few minutes on an idle core.
set -euo pipefail
cd "$(dirname "$0")/../../.."
PY=${PY:-python}
acc() { OMP_NUM_THREADS=1 $PY benchmarks/accuracy.py run "$@"; }

# Stage 1 (validation split: 400 held-out digits training images; 2,000 Fashion-MNIST
# training images evaluated on 1,000 other training images).
acc --study digits-val --setting constant --dataset digits --split val --val-size 400 \
  --epochs-per-round 8 --rounds 4 --seeds 0 1 2 -- optim.lr_schedule=constant
acc --study digits-val --setting cosine --dataset digits --split val --val-size 400 \
  --epochs-per-round 8 --rounds 4 --seeds 0 -- optim.lr_schedule=cosine
# (asked for seeds 0 1, stopped after seed 0; its JSON records the seeds measured)
acc --study digits-val --setting step --dataset digits --split val --val-size 400 \
  --epochs-per-round 8 --rounds 4 --seeds 0 -- optim.lr_schedule=step
acc --study fashion-val --setting constant --dataset fashion_mnist --subset 2000 --split val --val-size 1000 \
  --epochs-per-round 4 --rounds 4 --seeds 0 1 2 -- optim.lr_schedule=constant

# Stage 2 (test split) with the schedule stage 1 chose.
acc --study digits-test --setting constant --dataset digits --split test --epochs-per-round 8 --rounds 4 \
  --seeds 0 1 2 --note "schedule chosen on digits-val" -- optim.lr_schedule=constant
acc --study fashion-test --setting constant --dataset fashion_mnist --subset 2000 --split test \
  --epochs-per-round 4 --rounds 4 --seeds 0 1 2 --note "schedule chosen on digits-val and fashion-val" \
  -- optim.lr_schedule=constant

$PY benchmarks/accuracy.py report
