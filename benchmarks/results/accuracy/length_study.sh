#!/usr/bin/env bash
# The round-length study behind the results page's "Where AND's gain appears" (not run in CI):
# AND against instance learning at 4, 8, 16 and 32 epochs per round (R = 4, k = 1, small_cnn,
# constant lr, the settings the validation splits chose), 2,000 Fashion-MNIST training images,
# evaluated on the test split. At a constant lr an instance run does not depend on its length,
# so one 160-epoch instance run per seed, evaluated every 4 epochs, is the instance arm of every
# round length (--instance-from); L4 also trains its own instance arm, which must equal the long
# run's points (tests/test_accuracy_harness.py checks the same on a tiny run). Instance learning
# with AND's per-round restarts at 8 and 16 epochs per round; the label-filtered diagnostic at the
# longest. The longest settings are run in pieces of seeds (--add-seeds) shared by the workers.
#
#   bash benchmarks/results/accuracy/length_study.sh a   # worker a: the long instance run, L32
#   bash benchmarks/results/accuracy/length_study.sh b   # worker b: L4, L8, L16, L32 label-filtered
# One thread per run; the two workers run side by side.
set -euo pipefail
cd "$(dirname "$0")/../../.."
PY=${PY:-python}
STUDY=fashion-length
DATA=(--dataset fashion_mnist --subset 2000 --split test --rounds 4 --seeds 0 1 2)
WAIT=(--instance-from $STUDY/instance-long --instance-wait 14400)
FILTERED=(--note 'diagnostic: class-inconsistent neighbourhoods dropped using the labels' --
          optim.lr_schedule=constant method.curriculum=label_filtered)
acc() { OMP_NUM_THREADS=1 $PY benchmarks/accuracy.py run --study $STUDY "$@"; }

case "${1:-}" in
a)
  acc --setting instance-long "${DATA[@]}" --epochs-per-round 32 --arms instance --eval-every 4 \
    --note 'instance arm of every round length: one 160-epoch run per seed, kNN every 4 epochs' \
    -- optim.lr_schedule=constant
  acc --setting L32 "${DATA[@]}" --seeds 0 1 --add-seeds --epochs-per-round 32 --arms and "${WAIT[@]}" \
    -- optim.lr_schedule=constant
  acc --setting L32-label-filtered "${DATA[@]}" --seeds 0 --add-seeds --epochs-per-round 32 --arms and \
    "${WAIT[@]}" "${FILTERED[@]}"
  acc --setting L32-label-filtered "${DATA[@]}" --seeds 2 --add-seeds --epochs-per-round 32 --arms and \
    "${WAIT[@]}" "${FILTERED[@]}"
  ;;
b)
  acc --setting L4 "${DATA[@]}" --epochs-per-round 4 -- optim.lr_schedule=constant
  acc --setting L8 "${DATA[@]}" --epochs-per-round 8 --arms and instance_restarts "${WAIT[@]}" \
    -- optim.lr_schedule=constant
  acc --setting L16 "${DATA[@]}" --epochs-per-round 16 --arms and instance_restarts "${WAIT[@]}" \
    -- optim.lr_schedule=constant
  acc --setting L32 "${DATA[@]}" --seeds 2 --add-seeds --epochs-per-round 32 --arms and "${WAIT[@]}" \
    -- optim.lr_schedule=constant
  acc --setting L32-label-filtered "${DATA[@]}" --seeds 1 --add-seeds --epochs-per-round 32 --arms and \
    "${WAIT[@]}" "${FILTERED[@]}"
  ;;
*) echo "usage: $0 a|b" >&2; exit 2 ;;
esac
