"""A user's own backbone, data set and preset, in one file of theirs, through every entry point.

The file is the one the custom-components how-to shows (its first python block), written to a
temporary folder as ``my_components.py``. It is imported by name (``--import my_components`` with its
folder on ``PYTHONPATH``) or by path, by the recipe command line, by ``python -m and_plugin``,
by :func:`~and_plugin.build.build_run` through ``run.imports``, and inside a SLURM job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from and_plugin import ConfigError, build_run, load_config
from and_plugin.cli import recipe_config
from and_plugin.plugins import import_modules, resolve_imports
from and_plugin.registry import BACKBONES, DATASETS, PRESETS

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "cifar10_alexnet.py"
CPU = ["run.threads=1", "run.progress=false", "run.device=cpu"]
#: What the user's module is asked to run with: all three components by name.
MINE = ["model.backbone=my_net", "data.dataset=my_digits", "data.transform=my_grey", "eval.probe_layers=[block1,fc]"]

HOWTO = REPO / "docs" / "howto" / "custom-components.md"


def howto_file() -> str:
    """The how-to's ``my_components.py``: its first python block."""
    text = HOWTO.read_text()
    return text.split("```python\n", 1)[1].split("\n```", 1)[0] + "\n"


USER_MODULE = howto_file()


@pytest.fixture
def user_module(tmp_path: Path):
    """``my_components.py`` in a folder of its own; unregistered again afterwards."""
    folder = tmp_path / "mine"
    folder.mkdir()
    path = folder / "my_components.py"
    path.write_text(USER_MODULE)
    yield path
    sys.modules.pop("my_components", None)
    for registry, name in ((BACKBONES, "my_net"), (DATASETS, "my_digits"), (PRESETS, "my_grey")):
        registry._entries.pop(name, None)
        registry._info.pop(name, None)


def user_env(folder: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(REPO)]), "OMP_NUM_THREADS": "1"}


def test_imported_by_path_all_three_components_are_built(user_module: Path, tmp_path: Path) -> None:
    config = load_config(None, [f"run.imports=[{user_module}]", "model.embedding_dim=8", *MINE[:2],
                                f"run.output_dir={tmp_path / 'run'}"])
    assert "my_net" not in BACKBONES  # nothing is imported until something is built
    parts = build_run(config)
    assert list(parts.model.stages) == ["block1", "block2", "fc"]
    assert parts.model.stages["block1"][0].in_channels == 1  # from my_digits' DatasetInfo(channels=1)
    image, target, index = parts.train_set[4]
    assert image.shape == (1, 20, 20) and index == 4  # my_grey's size and channels
    assert (len(parts.eval_train_set), len(parts.test_set)) == (1347, 450) and parts.test_set.num_classes == 10
    raw = parts.test_set.base[0][0]
    assert raw.size == (20, 20) and raw.mode == "L"
    # my_grey's test pipeline at the stored size: pixel v → (v / 255 - 0.1) / 0.25
    pixels = torch.tensor(np.asarray(raw), dtype=torch.float32)
    assert torch.allclose(parts.test_set[0][0][0], (pixels / 255 - 0.1) / 0.25, atol=1e-5)


def test_unknown_module_error_names_it_and_the_search_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"run.imports: cannot import 'no_such_plugins'.*sys.path.*PYTHONPATH"):
        import_modules(["no_such_plugins"])
    with pytest.raises(ConfigError, match=r"run.imports: the file 'nowhere/mine.py' does not exist"):
        import_modules(["nowhere/mine.py"])
    broken = tmp_path / "broken.py"
    broken.write_text("import a_dependency_that_is_missing\n")
    with pytest.raises(ModuleNotFoundError, match="a_dependency_that_is_missing"):  # the module's own error
        import_modules([str(broken)])
    assert resolve_imports(["pkg.mod", "x.py", "pkg.mod"]) == ["pkg.mod", str(Path("x.py").resolve())]


def test_a_file_named_like_an_imported_module_is_refused(tmp_path: Path) -> None:
    import json

    shadow = tmp_path / "json.py"
    shadow.write_text("raise AssertionError('must not run')\n")
    with pytest.raises(ConfigError, match=r"named like the already imported module 'json' .*rename the file"):
        import_modules([str(shadow)])
    assert sys.modules["json"] is json


def test_recipe_cli_appends_import_to_run_imports(user_module: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(user_module.parent))
    config = recipe_config(RECIPE.with_name("configs") / "cifar10_alexnet.yaml",
                           ["--smoke", "--import", "my_components", *MINE])
    assert config.run.imports == ["my_components"]
    # --smoke keeps the data set named on the command line, cut to the smoke sizes
    assert (config.data.dataset, config.data.subset, config.data.test_subset) == ("my_digits", 16, 8)
    assert config.data.kwargs == {} and config.data.transform == "my_grey"
    plain = recipe_config(RECIPE.with_name("configs") / "cifar10_alexnet.yaml", ["--smoke"])
    assert plain.data.dataset == "synthetic" and plain.run.imports == []


@pytest.mark.timeout(600)
def test_recipe_smoke_runs_the_users_backbone_dataset_and_preset(user_module: Path, tmp_path: Path) -> None:
    """``python recipes/cifar10_alexnet.py --smoke --import my_components ...`` in a fresh process."""
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, str(RECIPE), "--smoke", "--import", "my_components", "--output-dir", str(run), *CPU, *MINE],
        env=user_env(user_module.parent), cwd=tmp_path, capture_output=True, text=True, timeout=540,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["model"]["backbone"], config["data"]["dataset"], config["data"]["transform"]) == (
        "my_net", "my_digits", "my_grey")
    assert config["run"]["imports"] == ["my_components"]
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [line for line in lines if line["kind"] == "epoch"]
    assert [e["round"] for e in epochs] == [0, 1, 2] and all(0.0 <= e["knn"] <= 1.0 for e in epochs)
    probes = [line for line in lines if line["kind"] == "linear_probe"]
    assert len(probes) == 1 and set(probes[0]["layers"]) == {"block1", "fc"}


def test_python_m_and_plugin_passes_import_on(user_module: Path, tmp_path: Path) -> None:
    """``python -m and_plugin --recipe NAME --import MODULE``; a missing module is one line, exit 2."""
    env = user_env(user_module.parent)
    missing = subprocess.run(
        [sys.executable, "-m", "and_plugin", "--recipe", "cifar10_alexnet", "--smoke", "--import", "not_my_module"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: run.imports: cannot import 'not_my_module'") and "Traceback" not in missing.stderr


@pytest.mark.slurm
@pytest.mark.timeout(420)
def test_slurm_job_imports_the_users_module(cluster, user_module: Path, tmp_path: Path) -> None:
    """``--smoke --slurm --wait --import <path>``: the job finds all three components by name."""
    from and_plugin.cli import run_recipe

    run = tmp_path / "run"
    job = run_recipe(RECIPE.with_name("configs") / "cifar10_alexnet.yaml", [
        "--smoke", "--slurm", "--wait", "--import", str(user_module), "--output-dir", str(run),
        "--slurm-profile", "slurm/profiles/local.yaml", "--slurm-set", "timeout_min=7", *CPU, *MINE,
    ])
    result = job.result()
    assert result["output_dir"] == str(run) and result["rounds"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["run"]["imports"] == [str(user_module)]
    assert (config["model"]["backbone"], config["data"]["dataset"], config["data"]["transform"]) == (
        "my_net", "my_digits", "my_grey")
    assert set(result["linear_probe"]) == {"block1", "fc"}
