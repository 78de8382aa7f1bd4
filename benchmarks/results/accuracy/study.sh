#!/usr/bin/env bash
# The CPU-scale study behind docs/results.md (not run in CI), exactly as recorded: each JSON file
# also stores its own command. Stage 1 chooses the lr schedule on a validation split of the
# training set (AND's final mean kNN); stage 2 measures the chosen schedule on the test split.
# One thread per run unless --threads says otherwise; a run of 5 x 8 digits epochs takes about a
# minute on an idle core.
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

# Stage 3: CIFAR-10 subsets (the JPEG tree extracted into .data/cifar10: mkdir -p .data/cifar10 &&
# tar xzf cifar10-jpeg.tar.gz -C .data/cifar10), the restart control, the label-filtered
# diagnostic, ablations on the Fashion-MNIST validation split (k, one-off selection, no
# augmentation, epochs per round) and, for the two the validation split favoured (k = 4,
# one-off), one measurement on the test split; then 10,000 Fashion-MNIST training images.
acc --study cifar10-test --setting small-cnn-constant --dataset cifar10 --subset 5000 --split test \
  --epochs-per-round 4 --rounds 4 --seeds 0 1 2 --note \
  'schedule chosen on digits-val and fashion-val' -- data.root=.data/cifar10 \
  optim.lr_schedule=constant
acc --study fashion-val --setting cosine-restarts --dataset fashion_mnist --subset 2000 --split \
  val --val-size 1000 --epochs-per-round 4 --rounds 4 --seeds 0 1 2 --arms and instance \
  instance_restarts -- optim.lr_schedule=cosine
acc --study fashion-val --setting constant-label-filtered --dataset fashion_mnist --subset 2000 \
  --split val --val-size 1000 --epochs-per-round 4 --rounds 4 --seeds 0 1 2 --arms and \
  --instance-from fashion-val/constant --note \
  'diagnostic: class-inconsistent neighbourhoods dropped using the labels' -- \
  optim.lr_schedule=constant method.curriculum=label_filtered
acc --study cifar10-test --setting small-cnn-label-filtered --dataset cifar10 --subset 5000 \
  --split test --epochs-per-round 4 --rounds 4 --seeds 0 1 2 --arms and --instance-from \
  cifar10-test/small-cnn-constant --note \
  'diagnostic: class-inconsistent neighbourhoods dropped using the labels' -- \
  data.root=.data/cifar10 optim.lr_schedule=constant method.curriculum=label_filtered
acc --study fashion-val --setting constant-k4 --dataset fashion_mnist --subset 2000 --split val \
  --val-size 1000 --epochs-per-round 4 --rounds 4 --seeds 0 1 2 --arms and --instance-from \
  fashion-val/constant -- optim.lr_schedule=constant method.neighbours=4
acc --study fashion-val --setting constant-one-off --dataset fashion_mnist --subset 2000 --split \
  val --val-size 1000 --epochs-per-round 4 --rounds 4 --seeds 0 1 2 --arms and --instance-from \
  fashion-val/constant -- optim.lr_schedule=constant method.selection=one_off
acc --study fashion-test --setting constant-k4 --dataset fashion_mnist --subset 2000 --split test \
  --epochs-per-round 4 --rounds 4 --seeds 0 1 2 --arms and --instance-from fashion-test/constant \
  --note 'k = 4, chosen on fashion-val' -- optim.lr_schedule=constant method.neighbours=4
acc --study fashion-test --setting constant-one-off --dataset fashion_mnist --subset 2000 --split \
  test --epochs-per-round 4 --rounds 4 --seeds 0 1 2 --arms and --instance-from \
  fashion-test/constant --note 'one-off selection, chosen on fashion-val' -- \
  optim.lr_schedule=constant method.selection=one_off
acc --study fashion-val --setting constant-no-aug --dataset fashion_mnist --subset 2000 --split \
  val --val-size 1000 --epochs-per-round 4 --rounds 4 --seeds 0 1 2 -- optim.lr_schedule=constant \
  'run.imports=[benchmarks/ablation_presets.py]' data.transform=fashion_mnist_no_aug \
  data.gpu_resident=false data.num_workers=0
acc --study cifar10-test --setting alexnet-constant --dataset cifar10 --subset 1000 --test-subset \
  2000 --split test --epochs-per-round 3 --rounds 2 --seeds 0 1 --note \
  'AlexNet-CIFAR, 1,000 training images; schedule chosen on digits-val and fashion-val' -- \
  data.root=.data/cifar10 model.backbone=alexnet_cifar data.batch_size=64 \
  optim.lr_schedule=constant
acc --study fashion-val --setting constant-8ep --dataset fashion_mnist --subset 2000 --split val \
  --val-size 1000 --epochs-per-round 8 --rounds 4 --seeds 0 1 2 --threads 2 -- \
  optim.lr_schedule=constant
acc --study fashion-test --setting constant-10k --dataset fashion_mnist --subset 10000 --split \
  test --epochs-per-round 4 --rounds 4 --seeds 0 1 --threads 2 --note \
  '10,000 training images; schedule chosen on digits-val and fashion-val' -- \
  optim.lr_schedule=constant
acc --study fashion-test --setting constant-10k-k4 --dataset fashion_mnist --subset 10000 --split \
  test --epochs-per-round 4 --rounds 4 --seeds 0 1 --threads 2 --arms and --instance-from \
  fashion-test/constant-10k --note 'k = 4, chosen on fashion-val; 10,000 training images' -- \
  optim.lr_schedule=constant method.neighbours=4

$PY benchmarks/accuracy.py report
