#!/usr/bin/env bash
# Downloads wheels of and_plugin's dependencies that a GPU machine with torch and torchvision
# usually lacks, for installing there without a package index:
#
#   bash benchmarks/download_wheels.sh                      # into .whl/, for this Python version
#   bash benchmarks/download_wheels.sh --dest DIR --python-version 3.12
#   # then, on the GPU machine:  bash benchmarks/gpu_check.sh --wheels DIR ...
#
# Versions are those installed in the environment running this script where a package is
# installed, else the newest. torch and torchvision are not downloaded (use the GPU machine's
# CUDA build); nor are numpy, scipy, scikit-learn, matplotlib, which such machines usually have.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.whl
PYVER=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dest) DEST="$2"; shift 2 ;;
    --python-version) PYVER="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "download_wheels.sh: unknown argument '$1' (allowed: --dest DIR, --python-version X.Y)" >&2; exit 2 ;;
  esac
done
PY="${PY:-python3}"
[ -x .venv/bin/python ] && PY=.venv/bin/python
PYVER="${PYVER:-$($PY -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}"
# and_plugin's own dependencies, and lightly's small ones.
NAMES=(lightly pytorch-metric-learning submitit pyyaml rich hydra-core omegaconf antlr4-python3-runtime
       markdown-it-py mdurl pygments cloudpickle typing_extensions)
mapfile -t PACKAGES < <($PY - "${NAMES[@]}" <<'PYEOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for name in sys.argv[1:]:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(name)
PYEOF
)
mkdir -p "$DEST"
for package in "${PACKAGES[@]}"; do
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" "$package" 2>/dev/null \
    || $PY -m pip wheel -q --no-deps -w "$DEST" "$package" \
    || echo "download_wheels.sh: could not download or build $package" >&2  # e.g. antlr4 4.9.3 ships as an sdist only
done
du -sh "$DEST"
ls "$DEST"
