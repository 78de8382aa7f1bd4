"""Smoke test of an installed wheel: run by .ci/run with the fresh venv's python, outside the
checkout, after ``python -m and_plugin --recipe cifar10_alexnet --smoke`` ran in the same
directory. Exits non-zero (an AssertionError) when the installed package is incomplete."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import and_plugin
from and_plugin import ANDMethod
from and_plugin.checkpoint import load_checkpoint
from and_plugin.config import MethodConfig

package = Path(and_plugin.__file__).resolve().parent
assert "site-packages" in package.parts, f"and_plugin imported from {package}, not the installed wheel"
assert importlib.metadata.version("and_plugin") == and_plugin.__version__
assert (package / "py.typed").is_file(), "py.typed is missing from the wheel"
recipes = sorted(p.stem for p in (package / "recipes").glob("*.yaml"))
assert "cifar10_alexnet" in recipes, f"recipes missing from the wheel: {recipes}"
shown = subprocess.run([sys.executable, "-m", "and_plugin", "--version"], capture_output=True, text=True,
                       check=True).stdout.strip()
assert shown == f"and_plugin {and_plugin.__version__}", shown

# The method object in a plain loop (one round of instance learning, one of AND).
torch.manual_seed(0)
method = ANDMethod(num_samples=32, embedding_dim=8, config=MethodConfig(rounds=1))
model = torch.nn.Linear(16, 8)
images = torch.randn(32, 16)
for r in range(2):
    method.start_round(r)
    index = torch.randperm(32)[:8]
    features = F.normalize(model(images[index]), dim=1)
    method.loss(features, index).backward()
    method.update_bank(features.detach(), index)

state = load_checkpoint(Path("runs/smoke/cifar10_alexnet/checkpoint.pt"))
assert state["and_plugin_version"] == and_plugin.__version__, state.get("and_plugin_version")
print(f"wheel smoke test passed: and_plugin {and_plugin.__version__} from {package}, "
      f"{len(recipes)} recipes")
