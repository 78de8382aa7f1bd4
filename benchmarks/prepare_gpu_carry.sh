#!/usr/bin/env bash
# Prepares what benchmarks/gpu_check.sh needs on the GPU machine, in two git-ignored folders:
#   .whl/  wheels (Python 3.12, manylinux x86-64) of the packages the GPU image lacks
#   .data/ CIFAR-10 as JPEG, copied from ../shared/data/
# Run it here (PyPI reachable), then call the device tool with carry [".whl", ".data"].
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3}"
[ -x .venv/bin/python ] && PY=.venv/bin/python
# The versions this checkout's .venv uses; what the GPU image already has is not carried
# (pytorch_lightning, tqdm, numpy, scikit-learn, cloudpickle, typing_extensions, markdown-it-py, pygments).
PACKAGES=(
  "lightly==1.6.0" "hydra-core==1.3.8" "omegaconf==2.3.1" "antlr4-python3-runtime==4.9.3"
  "pytorch-metric-learning==2.9.0" "submitit==1.5.4" "rich==15.0.0"
)
mkdir -p .whl .data
for package in "${PACKAGES[@]}"; do
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$package" 2>/dev/null \
    || $PY -m pip wheel -q --no-deps -w .whl "$package" \
    || echo "prepare_gpu_carry: could not download or build $package" >&2  # antlr4 4.9.3 ships as sdist only
done
cp -n ../shared/data/cifar10-jpeg.tar.gz .data/ 2>/dev/null || [ -f .data/cifar10-jpeg.tar.gz ] \
  || echo "prepare_gpu_carry: ../shared/data/cifar10-jpeg.tar.gz not found; put CIFAR-10 JPEG there" >&2
du -sh .whl .data
ls .whl
