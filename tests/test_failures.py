"""Failure modes: bad input gives one clear line and changes nothing; faults lose nothing.

- A battery of bad inputs through every entry point (the recipe command line in-process and as
  a real process, ``python -m and_plugin``, the config, data, checkpoints, the launcher's
  profile and the Python API): each asserts the message names the problem (file, key, value,
  what is allowed), exit status 2 without a traceback for the command line, and that no file
  under the test's directory changed.
- Faults: ``kill -9`` mid-epoch and mid-checkpoint-write, then resume: the result equals an
  uninterrupted run and no temporary file is left.
- Divergence: a non-finite step stops the run naming round, epoch and step; the last good
  checkpoint is kept and the bad state saved beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from and_plugin import Trainer, load_config
from and_plugin.checkpoint import CheckpointError, load_checkpoint, remove_stale_temporaries, save_checkpoint
from and_plugin.cli import main
from and_plugin.config import ConfigError
from and_plugin.divergence import DivergenceError, DivergenceMonitor
from and_plugin.rundir import RunDirError
from conftest import tiny_backbone, tiny_dataset
from fixtures_data import write_class_folders

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
ENV = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "AND_DEBUG": ""}
#: A recipe small enough to train in about a second on one core.
RECIPE = """\
# tiny: synthetic 3x16x16 images, small CNN
name: tiny
model: {backbone: small_cnn, embedding_dim: 8, kwargs: {width: 4}}
data:
  dataset: synthetic
  batch_size: 8
  kwargs: {image_size: 16, channels: 3, num_classes: 4, train_size: 16, test_size: 8}
method: {rounds: 1, neighbours: 1}
optim: {epochs_per_round: 1}
eval: {knn_k: 4}
run: {device: cpu, progress: false, threads: 1}
"""


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` → digest of its bytes (what "nothing on disk changed" compares)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, Path]:
    """(recipe YAML, run directory of one finished run of it)."""
    root = tmp_path_factory.mktemp("finished")
    recipe = root / "tiny.yaml"
    recipe.write_text(RECIPE)
    main(recipe, ["--output-dir", str(root / "run")])
    return recipe, root / "run"


@pytest.fixture
def work(tmp_path, finished_run, monkeypatch) -> Path:
    """A directory holding the recipe and a copy of the finished run, as the working directory."""
    recipe, run = finished_run
    shutil.copy(recipe, tmp_path / "tiny.yaml")
    shutil.copytree(run, tmp_path / "run")
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli_error(work: Path, argv: list[str], capsys) -> str:
    """Runs the recipe's command line; asserts exit 2, one message, no traceback, nothing changed."""
    before = tree(work)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(work / "tiny.yaml", argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    assert "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1, err
    assert tree(work) == before, "a failed command changed files"
    return err


# ---------------------------------------------------------------- battery: command line

CLI_CASES = [
    # (argv, regex the message must match)
    (["optim.lr=[0.1"], r"override 'optim.lr=\[0.1': line 1, column 5: not valid YAML"),
    (["method.neighbors=3"], r"method.neighbors: unknown key; allowed keys in method: \['temperature'"),
    (["method.temperature=.inf"], r"method.temperature must be a finite number, got inf"),
    (["optim.lr=.nan"], r"optim.lr must be a finite number, got nan"),
    (["optim.lr=-1e-3"], r"optim.lr must be a number > 0, got -0.001"),
    (["data.batch_size=eight"], r"data.batch_size must be int, got 'eight' \(str\)"),
    (["run.resume=maybe"], r"run.resume must be true, false or 'auto', got 'maybe'"),
    (["lr0.1"], r"override 'lr0.1': expected key=value, e.g. optim.lr=0.1"),
    (["optim..lr=1"], r"override 'optim..lr=1': the key must be dotted names"),
    (["model.backbone=no_such_net"], r"unknown backbone 'no_such_net'; known backbones: .*small_cnn"),
    (["data.dataset=no_such_set"], r"no_such_set"),
    (["--config", "missing.yaml"], r"config file 'missing.yaml' does not exist"),
    (["--output-dir", "run"], r"run.output_dir: 'run' already holds a run \(checkpoint.pt, metrics.jsonl\); "
                              r"nothing was changed. Pass --resume"),
    (["--output-dir", "empty", "--resume"], r"run.resume: 'empty' holds no checkpoint \(checkpoint.pt\) to continue; "
                                            r".*run.resume=auto"),
    (["--output-dir", "run", "--resume", "method.temperature=0.2"],
     r"checkpoint 'run/checkpoint.pt' was trained on something else .*method.temperature: 0.1 -> 0.2"),
    (["--output-dir", "run", "--resume", "data.kwargs.train_size=24"],
     r"N \(training images\): 16 -> 24"),
    (["--output-dir", "run", "--resume", "run.seed=3"], r"run.seed: 0 -> 3"),
    (["--output-dir", "empty", "data.batch_size=32"],
     r"data.batch_size must be <= the number of training images N = 16, got 32"),
    (["--output-dir", "empty", "method.neighbours=16"], r"method.neighbours: got 16, expected < the number of training"),
    (["--output-dir", "empty", "data.kwargs.colour=1"],
     r"^error: data.kwargs: data set 'synthetic' has no keyword 'colour'; its own keywords: image_size, channels, "
     r"num_classes, train_size, test_size, seed \(root, download and subset are data.root, data.download and "
     r"data.subset\)\n$"),
    (["--output-dir", "empty", "data.kwargs.subset=4"],
     r"data.kwargs: 'subset' is data.subset; set it there"),
    (["--slurm", "--slurm-profile", "no_such_profile"], r"slurm profile 'no_such_profile' does not exist"),
    (["--slurm", "--slurm-set", "nodes=0"], r"slurm profile '.*local.yaml': nodes must be an integer >= 1, got 0"),
    (["--slurm", "--slurm-set", "partitoin=gpu"], r"partitoin: unknown key \(did you mean 'partition'\?\)"),
    (["--slurm", "--slurm-set", "additional_parameters.time=5"],
     r"additional_parameters.time: got 5; this option is set by timeout_min"),
]


@pytest.mark.parametrize(("argv", "message"), CLI_CASES, ids=[" ".join(a) for a, _ in CLI_CASES])
def test_command_line_errors_name_the_problem_and_change_nothing(work, capsys, argv, message):
    err = cli_error(work, argv, capsys)
    assert __import__("re").search(message, err), err


def test_malformed_yaml_file_names_the_file_and_line(work, capsys):
    (work / "extra.yaml").write_text("optim:\n  lr: 0.1\n   momentum: 0.9\n")
    err = cli_error(work, ["--config", "extra.yaml"], capsys)
    assert "config file 'extra.yaml': line 3, column" in err and "not valid YAML" in err
    assert "<unicode string>" not in err


def test_corrupted_checkpoint_names_the_file_without_a_chained_traceback(work, capsys):
    data = (work / "run" / "checkpoint.pt").read_bytes()
    (work / "run" / "checkpoint.pt").write_bytes(data[: len(data) // 3])
    err = cli_error(work, ["--output-dir", "run", "--resume"], capsys)
    assert "checkpoint 'run/checkpoint.pt' is truncated or corrupted" in err and "delete it" in err
    assert "During handling" not in err and "direct cause" not in err


def test_a_foreign_file_as_checkpoint_is_refused(work, capsys):
    torch.save({"weights": torch.zeros(2)}, work / "run" / "checkpoint.pt")
    err = cli_error(work, ["--output-dir", "run", "--resume"], capsys)
    assert "checkpoint 'run/checkpoint.pt' is not an and_plugin checkpoint" in err


@pytest.mark.parametrize("damage", ["not an image", "truncated"])
def test_corrupt_image_in_an_image_folder_names_the_file(work, capsys, damage):
    write_class_folders(work / "images", ["a", "b"], per_class=4, size=(16, 16))
    bad = work / "images" / "b" / "img_2.JPEG"
    bad.write_bytes(b"this is not a JPEG" if damage == "not an image" else bad.read_bytes()[:300])
    recipe = work / "images.yaml"
    recipe.write_text(RECIPE.replace("dataset: synthetic", f"dataset: image_folder\n  root: {work / 'images'}\n"
                                     "  transform: cifar").replace("  kwargs: {image_size", "  # {image_size"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(recipe, ["--output-dir", "img_run"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "Traceback" not in err
    if damage == "not an image":
        assert f"cannot identify image file '{bad}'" in err, err
    else:  # PIL's own words vary ("image file is truncated", "Truncated File Read"); the file is named
        assert f"image file '{bad}': " in err and "truncated" in err.lower(), err
    assert not (work / "img_run" / "checkpoint.pt").exists()


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=240)


def test_entry_points_share_the_error_path_and_debug_shows_the_traceback(work):
    """The same bad override through a recipe script, python -m and_plugin, with and without --debug."""
    before = tree(work)
    script = _run([str(REPO / "recipes" / "cifar10_alexnet.py"), "--smoke", "optim.lr=[1"], work)
    module = _run(["-m", "and_plugin", "--recipe", "cifar10_alexnet", "--smoke", "optim.lr=[1"], work)
    for done in (script, module):
        assert done.returncode == 2, done.stderr
        assert "error: override 'optim.lr=[1': line 1, column 3: not valid YAML" in done.stderr
        assert "Traceback" not in done.stderr
    unknown = _run(["-m", "and_plugin", "--recipe", "no_such_recipe"], work)
    assert unknown.returncode == 2 and "--recipe: got 'no_such_recipe'; allowed: [" in unknown.stderr
    debug = _run(["-m", "and_plugin", "--recipe", "cifar10_alexnet", "--smoke", "--debug", "optim.lr=[1"], work)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr
    assert tree(work) == before


# ---------------------------------------------------------------- battery: config and API


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: load_config({"model": 3}), ConfigError, r"model must be a mapping, got 3"),
    (lambda: load_config({"optim": {"lr_milestones": [0.4, float("inf")]}}), ConfigError,
     r"optim.lr_milestones\[1\] must be a finite number, got inf"),
    (lambda: load_config({"eval": {"knn_temperature": float("nan")}}), ConfigError,
     r"eval.knn_temperature must be a finite number, got nan"),
    (lambda: load_checkpoint("no/such/checkpoint.pt"), CheckpointError, r"checkpoint 'no/such/checkpoint.pt' does not exist"),
    (lambda: Trainer(load_config(None, ["run.device=cpu", "method.neighbours=96"]), tiny_backbone(),
                     tiny_dataset()), ValueError, r"method.neighbours: got 96, expected < the number of training images N = 96"),
], ids=["section-not-mapping", "inf-in-list", "nan-knn-temperature", "missing-checkpoint", "neighbours>=N"])
def test_api_errors_name_the_problem(tmp_path, monkeypatch, call, error, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=message):
        call()
    assert tree(tmp_path) == {}


def test_yaml_file_at_top_level_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=rf"config file '{path}': expected a mapping at the top level, got list"):
        load_config(path)
    assert tree(tmp_path) == {"list.yaml": hashlib.sha256(b"- 1\n- 2\n").hexdigest()}


def test_trainer_refuses_a_batch_larger_than_the_data_set(tmp_path):
    config = load_config(None, [f"run.output_dir={tmp_path}", "run.device=cpu", "data.batch_size=128"])
    with pytest.raises(ValueError, match=r"data.batch_size must be <= the number of training images N = 96, got 128"):
        Trainer(config, tiny_backbone(), tiny_dataset())
    assert tree(tmp_path) == {}


# ---------------------------------------------------------------- divergence


def trainer_config(output_dir: Path, *extra: str):
    return load_config(None, [
        f"run.output_dir={output_dir}", "run.device=cpu", "run.progress=false", "run.threads=1",
        "run.deterministic=true", "optim.epochs_per_round=2", "method.rounds=1", "data.batch_size=32",
        "model.embedding_dim=16", *extra,
    ])


class PoisonAfter(torch.utils.data.Dataset):
    """tiny_dataset whose images turn to inf after ``clean`` fetches (the 2nd epoch onwards)."""

    def __init__(self, clean: int) -> None:
        self.inner, self.clean, self.fetched = tiny_dataset(), clean, 0
        self.targets = self.inner.targets

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):
        image, target, i = self.inner[index]
        self.fetched += 1
        return (image * float("inf") if self.fetched > self.clean else image), target, i


def test_divergence_stops_naming_round_epoch_step_and_keeps_the_last_good_checkpoint(tmp_path):
    data = PoisonAfter(clean=96)  # epoch 1 (3 steps of 32) is clean, epoch 2 step 1 is not
    trainer = Trainer(trainer_config(tmp_path, "optim.round0_epochs=3"), tiny_backbone(), data)
    with pytest.raises(DivergenceError, match=r"training diverged in round 0, epoch 2: the loss or the features "
                                              r"became non-finite \(inf/nan\) at step 1"):
        trainer.fit()
    good = load_checkpoint(tmp_path / "checkpoint.pt")
    assert good["position"] == (0, 1)  # written after epoch 1, not replaced by the diverged epoch
    assert all(torch.isfinite(v).all() for v in good["model"].values())
    bad = load_checkpoint(tmp_path / "checkpoint.diverged.pt")
    assert bad["position"] == (0, 1)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(m["round"], m["epoch"]) for m in lines] == [(0, 0)]


def test_non_finite_buffer_is_found_at_the_end_of_the_epoch():
    """Finite features with inf BatchNorm statistics (an absurd lr): named, the step is not."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    monitor = DivergenceMonitor("cpu")
    monitor.start_epoch(2, 4)
    for _ in range(3):
        monitor.observe(torch.tensor(1.0), torch.ones(2, 4))
    monitor.check(model)  # all finite: no error
    model[1].running_var[1] = float("inf")
    with pytest.raises(DivergenceError, match=r"round 2, epoch 5: the model state became non-finite by the end of "
                                              r"the epoch \(3 steps\); non-finite: buffer 1.running_var"):
        monitor.check(model)


def test_monitor_names_the_first_bad_step_only():
    monitor = DivergenceMonitor("cpu")
    monitor.start_epoch(0, 0)
    for step in range(6):
        loss = torch.tensor(float("nan") if step in (3, 5) else 0.5)
        monitor.observe(loss, torch.ones(2, 2))
    with pytest.raises(DivergenceError, match="at step 4$|at step 4[^0-9]"):
        monitor.check(nn.Linear(2, 2))


# ---------------------------------------------------------------- faults: kill -9

CHILD = textwrap.dedent("""\
    import sys, time, torch
    sys.path.insert(0, {tests!r})
    from and_plugin import Trainer, load_config
    from conftest import tiny_backbone, tiny_dataset

    class Slow(torch.utils.data.Dataset):
        def __init__(self):
            self.inner = tiny_dataset(); self.targets = self.inner.targets
        def __len__(self):
            return len(self.inner)
        def __getitem__(self, i):
            time.sleep(0.004)
            return self.inner[i]

    config = load_config(None, {overrides!r})
    Trainer(config, tiny_backbone(), Slow()).fit()
""")


def _position(path: Path):
    return tuple(load_checkpoint(path)["position"]) if path.exists() else (0, 0)


def _same_state(a: dict, b: dict) -> None:
    assert a["position"] == b["position"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert torch.equal(a["memory_bank"]["bank"], b["memory_bank"]["bank"])
    for slot, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][slot]["momentum_buffer"]), slot


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.timeout(300)
def test_kill_9_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path):
    overrides = ["optim.round0_epochs=4", "optim.epochs_per_round=2"]
    killed = tmp_path / "killed"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(REPO / "tests"),
                                   overrides=[o.replace("{dir}", str(killed)) for o in
                                              [f"run.output_dir={killed}", "run.device=cpu", "run.progress=false",
                                               "run.threads=1", "run.deterministic=true", "method.rounds=1",
                                               "data.batch_size=32", "model.embedding_dim=16", *overrides]]))
    child = subprocess.Popen([PYTHON, str(script)], env=ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 200
    while _position(killed / "checkpoint.pt") < (0, 2):
        assert child.poll() is None, child.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.15)  # into the next epoch (about 0.4 s long)
    child.send_signal(signal.SIGKILL)
    child.wait()
    stopped_at = _position(killed / "checkpoint.pt")
    assert stopped_at < (1, 0), "the run finished before it was killed"

    resumed = Trainer(trainer_config(killed, *overrides, "run.resume=true"), tiny_backbone(seed=5), tiny_dataset())
    resumed.fit()
    straight = Trainer(trainer_config(tmp_path / "straight", *overrides), tiny_backbone(), tiny_dataset())
    straight.fit()
    _same_state(load_checkpoint(tmp_path / "straight" / "checkpoint.pt"), load_checkpoint(killed / "checkpoint.pt"))
    assert _leftovers(killed) == []
    by_epoch = [json.loads(line)["loss"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert by_epoch == [json.loads(line)["loss"] for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]


WRITER = textwrap.dedent("""\
    import sys, time
    from and_plugin.checkpoint import save_checkpoint

    class Stall:  # pickled after the first bytes are written: the writer dies mid-file
        def __reduce__(self):
            print("writing", flush=True)
            time.sleep(600)
            return (int, ())

    save_checkpoint({{"payload": b"x" * 1_000_000, "stall": Stall()}}, {path!r})
""")


@pytest.mark.timeout(300)
def test_kill_9_mid_write_keeps_the_checkpoint_and_the_next_start_removes_the_temporary(tmp_path):
    run = tmp_path / "run"
    Trainer(trainer_config(run), tiny_backbone(), tiny_dataset()).fit(stop_after_epochs=1)
    before = (run / "checkpoint.pt").read_bytes()
    writer = subprocess.Popen([PYTHON, "-c", WRITER.format(path=str(run / "checkpoint.pt"))], env=ENV,
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    left = _leftovers(run)
    assert len(left) == 1 and f".{writer.pid}." in left[0]
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert _leftovers(run) == left and (run / "checkpoint.pt").read_bytes() == before  # the live file intact
    # a temporary of a live writer and one of another host are not ours to remove
    live = run / f".checkpoint.pt.otherhost.{os.getpid()}.abc.tmp"
    live.write_bytes(b"another host's write in progress")
    mine = run / f".checkpoint.pt.{os.uname().nodename}.{os.getpid()}.abc.tmp"
    mine.write_bytes(b"this process, still writing")
    resumed = Trainer(trainer_config(run, "run.resume=true"), tiny_backbone(seed=9), tiny_dataset())
    resumed.fit()
    assert _leftovers(run) == sorted([live.name, mine.name])
    straight = Trainer(trainer_config(tmp_path / "straight"), tiny_backbone(), tiny_dataset())
    straight.fit()
    _same_state(load_checkpoint(tmp_path / "straight" / "checkpoint.pt"), load_checkpoint(run / "checkpoint.pt"))


def test_stale_temporaries_only_ours_and_only_of_dead_writers(tmp_path):
    target = tmp_path / "checkpoint.pt"
    save_checkpoint({"a": 1}, target)
    dead = subprocess.Popen([PYTHON, "-c", "pass"])
    dead.wait()
    host = __import__("and_plugin.checkpoint", fromlist=["_host"])._host()
    stale = tmp_path / f".checkpoint.pt.{host}.{dead.pid}.x1.tmp"
    alive = tmp_path / f".checkpoint.pt.{host}.{os.getpid()}.x2.tmp"
    other_name = tmp_path / f".metrics.jsonl.{host}.{dead.pid}.x3.tmp"
    old_foreign = tmp_path / ".checkpoint.pt.farhost.1.x4.tmp"
    for path in (stale, alive, other_name, old_foreign):
        path.write_bytes(b"partial")
    os.utime(old_foreign, (time.time() - 3 * 86400,) * 2)
    removed = remove_stale_temporaries(target)
    assert sorted(removed) == sorted([stale, old_foreign])
    assert alive.exists() and other_name.exists() and target.exists()
    assert load_checkpoint(target)["a"] == 1


def test_resume_auto_starts_fresh_or_continues(tmp_path):
    config = trainer_config(tmp_path, "run.resume=auto")
    first = Trainer(config, tiny_backbone(), tiny_dataset())
    assert first.maybe_resume() is False
    first.fit(stop_after_epochs=1)
    again = Trainer(config, tiny_backbone(), tiny_dataset())
    assert again.maybe_resume() is True and again.position == (0, 1)


def test_overwrite_replaces_the_old_run(tmp_path):
    Trainer(trainer_config(tmp_path), tiny_backbone(), tiny_dataset()).fit(stop_after_epochs=1)
    with pytest.raises(RunDirError, match="already holds a run"):
        Trainer(trainer_config(tmp_path), tiny_backbone(), tiny_dataset()).fit()
    Trainer(trainer_config(tmp_path, "run.overwrite=true"), tiny_backbone(), tiny_dataset()).fit(stop_after_epochs=1)
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (sync debug mode)")
def test_monitor_adds_no_host_sync_per_step():
    monitor = DivergenceMonitor("cuda")
    monitor.start_epoch(0, 0)
    features, loss = torch.randn(64, 16, device="cuda"), torch.tensor(1.0, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            monitor.observe(loss, features)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    monitor.check(nn.Linear(2, 2).cuda())
