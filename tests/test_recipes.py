"""Every recipe runs end to end with --smoke; resume of a finished run is a no-op; the CLI's errors."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from and_plugin.cli import recipe_config, run_recipe
from and_plugin.config import ConfigError
from and_plugin.trainer import round_plan

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
CONFIGS = RECIPES / "configs"
EXPECTED = {
    "cifar10_alexnet", "cifar100_alexnet", "svhn_alexnet", "cifar10_resnet18", "cifar10_resnet101",
    "imagenet_alexnet", "imagenet_resnet18", "cub200_resnet18", "dogs_resnet18", "cifar10_instance",
    "ablation_neighbours", "ablation_rounds", "ablation_one_off", "ablation_random_init",
    "ablation_epochs_per_round", "folder_resnet50_sharded",
}
#: Recipes whose smoke run takes over 20 s on the shared 2-core CPU: 224x224 inputs, ResNet101, and
#: the CIFAR-100 / SVHN AlexNet recipes (25-30 s; in --smoke they differ from cifar10_alexnet, which
#: stays in the fast set, only by name and SVHN's normalisation).
SLOW = {"cifar10_resnet101", "imagenet_alexnet", "imagenet_resnet18", "cub200_resnet18", "dogs_resnet18",
        "cifar100_alexnet", "svhn_alexnet", "folder_resnet50_sharded"}
CPU = ["run.threads=1", "run.progress=false", "run.device=cpu"]
#: Settings a recipe's one-process smoke run needs: the sharded layout needs torch.distributed
#: (its two-process run is in tests/test_torchrun.py).
ONE_PROCESS = {"folder_resnet50_sharded": ["method.bank_layout=replicated"]}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_FINISHED: dict[str, tuple[Path, object]] = {}


def smoke(name: str, output_dir: Path, *extra: str):
    torch.set_num_threads(1)
    result = run_recipe(CONFIGS / f"{name}.yaml", ["--smoke", "--output-dir", str(output_dir), *CPU,
                                                   *ONE_PROCESS.get(name, []), *extra])
    _FINISHED[name] = (output_dir, result)
    return result


def test_every_recipe_has_a_script_and_a_config():
    assert {p.stem for p in CONFIGS.glob("*.yaml")} == EXPECTED
    scripts = {p.stem for p in RECIPES.glob("*.py")} - {"quickstart"}
    assert scripts == EXPECTED
    for name in EXPECTED:
        text = (RECIPES / f"{name}.py").read_text()
        assert f'"{name}.yaml"' in text and "main(" in text


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(EXPECTED)])
def test_recipe_smoke_run(name, tmp_path):
    config = recipe_config(CONFIGS / f"{name}.yaml", ["--smoke", *CPU])
    assert config.data.dataset == "synthetic" and config.data.batch_size == 8 and config.optim.epochs_per_round == 1
    result = smoke(name, tmp_path)
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "checkpoint.pt").is_file()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epochs = [line for line in lines if line["kind"] == "epoch"]
    expected_rounds = [r for r, _ in round_plan(config)]
    assert [e["round"] for e in epochs] == expected_rounds
    assert [r["round"] for r in result.rounds] == expected_rounds
    assert all(0.0 <= r["knn"] <= 1.0 for r in result.rounds)
    summary = tmp_path / "plots" / "summary.png"
    assert summary.read_bytes()[:8] == PNG_MAGIC
    with Image.open(summary) as image:
        image.verify()
    assert (tmp_path / "rounds.csv").is_file()
    if config.eval.linear_probe:
        assert list(result.linear_probe) == config.eval.probe_layers
        assert lines[-1]["kind"] == "linear_probe" and set(lines[-1]["layers"]) == set(config.eval.probe_layers)
        assert all(0.0 <= r["top1"] <= 1.0 for r in result.linear_probe.values())
    else:
        assert result.linear_probe == {}


def test_resume_of_a_finished_smoke_run_is_a_no_op(tmp_path):
    name = "cifar10_alexnet"
    output_dir, first = _FINISHED.get(name) or (tmp_path, smoke(name, tmp_path))
    before = {p.name: p.read_bytes() for p in (output_dir / "metrics.jsonl", output_dir / "linear_probe.json",
                                                output_dir / "rounds.csv")}
    checkpoint = (output_dir / "checkpoint.pt").stat().st_mtime_ns
    again = run_recipe(CONFIGS / f"{name}.yaml", ["--smoke", "--output-dir", str(output_dir), "--resume", *CPU])
    assert again.rounds == first.rounds and again.linear_probe == first.linear_probe
    for path_name, content in before.items():
        assert (output_dir / path_name).read_bytes() == content, path_name
    assert (output_dir / "checkpoint.pt").stat().st_mtime_ns == checkpoint  # nothing trained, nothing saved


@pytest.mark.parametrize("override, message", [
    ("optim.lr=-1", r"optim.lr must be a number > 0, got -1.0"),
    ("optim.lrr=0.1", r"optim.lrr: unknown key; allowed keys in optim: \['lr', "),
    ("method.selection=greedy", r"method.selection must be one of \['curriculum', 'one_off', 'none'\], got 'greedy'"),
    ("data.batch_size=eight", r"data.batch_size must be int, got 'eight' \(str\)"),
    ("lr0.1", r"override 'lr0.1': expected key=value"),
])
def test_bad_override_gives_a_clear_config_error(override, message):
    with pytest.raises(ConfigError, match=message):
        run_recipe(CONFIGS / "cifar10_alexnet.yaml", ["--smoke", override])


def test_bad_probe_layer_fails_before_training(tmp_path):
    with pytest.raises(ConfigError, match=r"eval.probe_layers: .*unknown layer 'conv9'; allowed layers of this "
                                          r"backbone: \['conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc'\]"):
        run_recipe(CONFIGS / "cifar10_alexnet.yaml", ["--smoke", "--output-dir", str(tmp_path), *CPU,
                                                      "eval.probe_layers=[conv5,conv9]"])
    assert not (tmp_path / "metrics.jsonl").exists()


def test_script_reports_config_errors_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["cifar10_alexnet.py", "--smoke", "optim.momentum=1.5"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(RECIPES / "cifar10_alexnet.py"), run_name="__main__")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: optim.momentum must be a number in [0, 1), got 1.5"


def test_help_shows_the_paper_numbers(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["ablation_one_off.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(RECIPES / "ablation_one_off.py"), run_name="__main__")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "84.2 %" in out and "--slurm-profile" in out and "--smoke" in out


def test_precedence_of_config_files_flags_and_overrides(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("optim:\n  lr: 0.06\n  epochs_per_round: 7\nmethod:\n  neighbours: 3\n")
    config = recipe_config(CONFIGS / "cifar10_resnet18.yaml", [
        "--config", str(extra), "method.neighbours=5", "--data-dir", "/data/c10", "--output-dir", "out", "--resume",
    ])
    assert (config.optim.lr, config.optim.epochs_per_round, config.method.neighbours) == (0.06, 7, 5)
    assert (config.data.root, config.run.output_dir, config.run.resume) == ("/data/c10", "out", True)
    assert config.data.dataset == "cifar10" and config.model.backbone == "resnet18_cifar"
    smoke_config = recipe_config(CONFIGS / "imagenet_alexnet.yaml", ["--smoke", "data.batch_size=4"])
    assert smoke_config.data.kwargs["image_size"] == 224 and smoke_config.data.transform == "imagenet"
    assert smoke_config.data.batch_size == 4 and smoke_config.method.temperature == 0.07
    assert smoke_config.run.output_dir == str(Path("runs") / "smoke" / "imagenet_alexnet")
    with pytest.raises(ConfigError, match="config file '/nonexistent.yaml' does not exist"):
        recipe_config(CONFIGS / "cifar10_alexnet.yaml", ["--config", "/nonexistent.yaml"])


def test_slurm_flag_calls_the_launcher(monkeypatch):
    import types

    calls = []
    fake = types.ModuleType("and_plugin.launcher")
    fake.submit = lambda config, **kwargs: calls.append((config, kwargs)) or "job-42"
    monkeypatch.setitem(sys.modules, "and_plugin.launcher", fake)
    job = run_recipe(CONFIGS / "cifar10_resnet18.yaml", ["--slurm", "--smoke", "--slurm-set", "nodes=2",
                                                         "--slurm-set", "cpus_per_task=4", "--wait", "optim.lr=0.1"])
    assert job == "job-42" and len(calls) == 1
    config, kwargs = calls[0]
    assert config.optim.lr == 0.1 and config.data.dataset == "synthetic"
    assert kwargs["profile_overrides"] == ["nodes=2", "cpus_per_task=4"] and kwargs["wait"] is True
    assert Path(kwargs["profile"]).resolve() == (ROOT / "slurm" / "profiles" / "local.yaml").resolve()


def test_python_m_and_plugin_lists_the_recipes(capsys):
    from and_plugin.__main__ import _entry

    with pytest.raises(SystemExit) as exit_info:
        _entry(["--list"])
    assert exit_info.value.code == 0
    assert "cifar10_alexnet" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        _entry(["--recipe", "nope"])
    assert exit_info.value.code == 2


@pytest.mark.slurm
@pytest.mark.timeout(600)
def test_recipe_smoke_run_as_a_slurm_job(cluster, tmp_path):
    """recipes' --slurm end to end on the local cluster (bash slurm/local_cluster.sh start)."""
    job = run_recipe(CONFIGS / "cifar10_instance.yaml", [
        "--smoke", "--slurm", "--wait", "--output-dir", str(tmp_path), "--slurm-set", "timeout_min=9",
        "--slurm-set", "mem_gb=4", *CPU,
    ])
    assert job.done()  # --wait raised JobFailedError, with the job's error text, had it failed
    assert {"config.yaml", "metrics.jsonl", "linear_probe.json", "rounds.csv"} <= {p.name for p in tmp_path.iterdir()}
    assert (tmp_path / "plots" / "summary.png").read_bytes()[:8] == PNG_MAGIC
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["kind"] == "linear_probe" and "conv5" in lines[-1]["layers"]
