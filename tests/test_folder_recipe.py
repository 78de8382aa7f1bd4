"""The image-folder recipe with the sharded layout, and the multi-node SLURM profile it names.

The recipe's smoke path trains on a tiny on-disk folder of real PNG and JPEG files (one
process, replicated bank, a small CNN instead of the ResNet50 so that it takes seconds; the
ResNet50 smoke run is in tests/test_recipes.py, marked slow). The multi-node profile becomes the
sbatch script submitit writes: 2 nodes x 8 tasks with ``nodes=2``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from and_plugin.checkpoint import load_checkpoint
from and_plugin.cli import main, recipe_config, run_recipe
from and_plugin.config import ConfigError
from and_plugin.launcher import check_before_submit, load_profile
from and_plugin.launcher.profile import _sbatch_options

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "recipes" / "configs" / "folder_resnet50_sharded.yaml"
CPU = ["run.threads=1", "run.progress=false", "run.device=cpu"]
CLASSES = ("cat", "dog", "fox")


def image_folder(root: Path, per_class: int = 8) -> Path:
    """``root/<class>/<i>.png|jpg``: 40x48 RGB images, each class its own mean colour."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(60 + 70 * c, 40, size=(40, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_the_recipe_is_the_sharded_imagenet_like_setting():
    config = recipe_config(CONFIG, ["--data-dir", "/data/images"])
    assert (config.method.bank_layout, config.method.bank_dtype, config.data.dataset) == ("sharded", "float16",
                                                                                          "image_folder")
    assert (config.model.backbone, config.data.batch_size, config.method.temperature) == ("resnet50", 256, 0.07)
    assert config.data.root == "/data/images"


def test_smoke_run_on_an_image_folder_on_disk(tmp_path):
    folder = image_folder(tmp_path / "images")
    torch.set_num_threads(1)
    argv = ["--smoke", "data.dataset=image_folder", "--data-dir", str(folder), "--output-dir", str(tmp_path / "run"),
            "method.bank_layout=replicated", "model.backbone=small_cnn", *CPU]
    config = recipe_config(CONFIG, argv)
    assert (config.data.dataset, config.data.subset, config.data.root) == ("image_folder", 16, str(folder))
    result = run_recipe(CONFIG, argv)
    assert [r["round"] for r in result.rounds] == [0, 1, 2]
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["round"] for line in lines if line["kind"] == "epoch"] == [0, 1, 2]
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["provenance"]["num_samples"] == 16 and state["provenance"]["dataset"] == "image_folder"
    assert all(0.0 <= r["knn"] <= 1.0 for r in result.rounds)


def test_the_recipe_without_a_data_directory_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(CONFIG, [*CPU])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data.root must be the folder of images (root/<class>/<image> or "
                          "root/<split>/<class>/<image>) when data.dataset='image_folder', e.g. --data-dir "), err
    assert err.rstrip().endswith("got None") and err.count("\n") == 1


def test_the_multinode_profile_asks_for_nodes_times_one_task_per_gpu(tmp_path):
    from submitit.slurm.slurm import _make_sbatch_string

    full = load_profile("multinode_8x8")
    assert (full.nodes, full.tasks_per_node, full.gpus_per_node, full.world_size) == (8, 8, 8, 64)
    two = load_profile("multinode_8x8", ["nodes=2"])
    script = _make_sbatch_string(command="python -u job.py", folder=str(tmp_path), **_sbatch_options(two))
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --cpus-per-task=10", "#SBATCH --exclusive", "#SBATCH --requeue"):
        assert line in script.splitlines(), script
    # the launcher's checks before submission: the recipe on a folder, its batch over 16 processes
    folder = image_folder(tmp_path / "images")
    config = recipe_config(CONFIG, ["--data-dir", str(folder), "--output-dir", str(tmp_path / "run"),
                                    "data.batch_size=16", "data.num_workers=0", "run.device=auto"])
    check_before_submit(config, two)
    config.data.batch_size = 24
    with pytest.raises(ConfigError, match=r"data.batch_size must be a multiple of the number of processes 16 "
                                          r"\(nodes 2 x tasks_per_node 8; each takes an equal share\), got 24"):
        check_before_submit(config, two)
