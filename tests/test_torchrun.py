"""torchrun drives the recipes and ``python -m and_plugin``: real torchrun, 2 gloo processes on CPU.

Both entry points train one run together: rank 0 alone prints and writes the run directory, and
the checkpoint's history is the one of a two-process run started by hand (``mp.spawn`` + gloo) on
the same config. ``--slurm`` under torchrun, or a GPU asked for where there is none, is one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from conftest import free_port

from and_plugin.checkpoint import load_checkpoint
from and_plugin.cli import recipe_config
from and_plugin.launcher.process_group import TorchrunEnvironment, local_threads
from and_plugin.trainer import round_plan

REPO = Path(__file__).resolve().parents[1]
RECIPE = "cifar10_alexnet"
CONFIG = REPO / "recipes" / "configs" / f"{RECIPE}.yaml"
#: A smoke run, small and exactly repeatable: the recipe on 16 synthetic images with a small CNN.
SMOKE = ["--smoke", "model.backbone=small_cnn", "eval.linear_probe=false", "run.deterministic=true",
         "run.progress=false", "run.device=cpu"]
#: The sharded layout is built beside this; its case runs once the package has it.
SHARDED_AVAILABLE = True
LAYOUTS = ["replicated", pytest.param("sharded", marks=pytest.mark.skipif(
    not SHARDED_AVAILABLE, reason="sharded layout not available"))]


def _torchrun(*args: str, module: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc_per_node=2 ...`` (or ``python -m torch.distributed.run``) from the repository."""
    launcher = [sys.executable, "-m", "torch.distributed.run"] if module else [
        str(Path(sys.executable).with_name("torchrun"))]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    command = [*launcher, "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={free_port()}", *args]
    return subprocess.run(command, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _reference_worker(rank: int, world: int, port: int, argv: list[str]) -> None:
    from and_plugin.run import run_training

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        run_training(recipe_config(CONFIG, argv), report=False)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_history(tmp_path_factory) -> list[dict]:
    """The epoch history of the same smoke run in two gloo processes started by hand."""
    output_dir = tmp_path_factory.mktemp("reference")
    argv = [*SMOKE, "--output-dir", str(output_dir), f"run.threads={local_threads(2)}"]
    mp.spawn(_reference_worker, args=(2, free_port(), argv), nprocs=2, join=True)
    return load_checkpoint(output_dir / "checkpoint.pt")["history"]


def _check_one_run_of_two_ranks(result: subprocess.CompletedProcess[str], output_dir: Path,
                                reference: list[dict], layout: str) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    # rank 0 alone prints (the start line and the summary table) and writes the run directory
    assert result.stdout.count("torchrun: world size 2 (2 process(es) on this machine), gloo") == 1, result.stdout
    assert result.stdout.count("AND per round") == 1, result.stdout
    config = recipe_config(CONFIG, [*SMOKE, "--output-dir", str(output_dir)])
    lines = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["round"] for line in lines if line["kind"] == "epoch"] == [r for r, _ in round_plan(config)]
    saved = yaml.safe_load((output_dir / "config.yaml").read_text())
    assert saved["run"]["threads"] == local_threads(2) and saved["run"]["device"] == "cpu"
    history = load_checkpoint(output_dir / "checkpoint.pt")["history"]
    assert [h["loss"] for h in history] == pytest.approx([h["loss"] for h in reference], rel=1e-5)
    assert [h.get("knn") for h in history] == [h.get("knn") for h in reference]
    # a sharded bank: each rank wrote its own rows beside checkpoint.pt
    assert bool(list(output_dir.glob("shards-*"))) == (layout == "sharded")


@pytest.mark.distributed
@pytest.mark.parametrize("layout", LAYOUTS)
def test_torchrun_runs_a_recipe_script_as_one_two_process_run(layout, tmp_path, two_process_history):
    result = _torchrun(f"recipes/{RECIPE}.py", *SMOKE, "--output-dir", str(tmp_path), f"method.bank_layout={layout}")
    _check_one_run_of_two_ranks(result, tmp_path, two_process_history, layout)


@pytest.mark.distributed
@pytest.mark.parametrize("layout", LAYOUTS)
def test_torch_distributed_run_drives_python_m_and_plugin(layout, tmp_path, two_process_history):
    result = _torchrun("-m", "and_plugin", "--recipe", RECIPE, *SMOKE, "--output-dir", str(tmp_path),
                       f"method.bank_layout={layout}", module=True)
    _check_one_run_of_two_ranks(result, tmp_path, two_process_history, layout)


@pytest.mark.distributed
@pytest.mark.parametrize("bad, message", [
    (["--slurm"], ("error: --slurm: got it in a process torchrun started (WORLD_SIZE=2); allowed: --slurm from "
                   "one plain python process")),
    (["run.device=cuda"], "error: run.device: got 'cuda', but this job sees no CUDA device"),
])
def test_a_bad_combination_under_torchrun_is_one_line(bad, message, tmp_path):
    if bad == ["run.device=cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = _torchrun(f"recipes/{RECIPE}.py", "--smoke", "--output-dir", str(tmp_path), *bad, timeout=60)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors and len(set(errors)) == 1, result.stderr  # each rank says the same one line
    assert errors[0].startswith(message), errors[0]
    assert "and_plugin/" not in result.stderr, result.stderr  # no traceback of ours
    assert not (tmp_path / "checkpoint.pt").exists()


def test_a_torchrun_process_is_recognised_by_its_environment():
    base = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    assert TorchrunEnvironment.from_environ(base) == TorchrunEnvironment(0, 2, 0, 2)
    assert TorchrunEnvironment.from_environ({**base, "LOCAL_WORLD_SIZE": "1", "RANK": "1"}) == \
        TorchrunEnvironment(1, 2, 0, 1)  # two machines, one process each
    single = {**base, "WORLD_SIZE": "1"}
    assert TorchrunEnvironment.from_environ(single) is None  # a lone process with leftovers in its env
    assert TorchrunEnvironment.from_environ({**single, "TORCHELASTIC_RUN_ID": "x"}) == TorchrunEnvironment(0, 1, 0, 1)
    assert TorchrunEnvironment.from_environ({k: v for k, v in base.items() if k != "MASTER_ADDR"}) is None
    with pytest.raises(ValueError, match=r"torchrun environment: RANK, WORLD_SIZE.*'WORLD_SIZE': 'two'"):
        TorchrunEnvironment.from_environ({**base, "WORLD_SIZE": "two"})
    assert [local_threads(w, cores=8) for w in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]


def test_a_torchrun_process_picks_its_device():
    env = TorchrunEnvironment(rank=1, world_size=2, local_rank=1, local_world_size=2)
    assert env.device("cpu") == "cpu"
    if not torch.cuda.is_available():
        assert env.device("auto") == "cpu"
        with pytest.raises(ValueError, match=r"run.device: got 'cuda', but this job sees no CUDA device"):
            env.device("cuda")


@pytest.mark.gpu
def test_more_torchrun_processes_than_gpus_is_one_line():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    gpus = torch.cuda.device_count()
    assert TorchrunEnvironment(0, gpus, 0, gpus).device("auto") == "cuda:0"
    assert TorchrunEnvironment(gpus - 1, gpus, gpus - 1, gpus).device("cuda:0") == f"cuda:{gpus - 1}"
    with pytest.raises(ValueError, match=rf"--nproc_per_node: got {gpus + 1} processes on this machine, which has "
                                         rf"{gpus} visible GPU\(s\) \(run.device='auto'\); allowed: at most {gpus}"):
        TorchrunEnvironment(0, gpus + 1, 0, gpus + 1).device("auto")
