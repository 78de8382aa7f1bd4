"""The SLURM launcher: profiles, fail-fast checks, and real jobs on the local cluster.

The ``slurm`` tests submit real jobs through ``and_plugin.launcher.submit`` to the local cluster
(``bash slurm/local_cluster.sh start``) and skip, with the reason, when it is not up. They cover
a smoke run and its sbatch script, a failure inside a job reaching the user's terminal, a
preemption that requeues the job and ends with exactly the weights and memory bank of an
uninterrupted run, and a 2-process data-parallel job equal to a single process; a preemption
with 8 DataLoader workers and two USR2 in a row (one requeue, reported as a success), an
administrator's ``scontrol requeue`` of an ``--overwrite`` job (it resumes), and jobs sbatch
refuses (one line, exit 2, nothing left behind).
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from slurm_utils import wait_done

from and_plugin import ConfigError, load_config
from and_plugin.checkpoint import load_checkpoint
from and_plugin.launcher import (
    PROFILE_FIELDS,
    JobFailedError,
    ProfileError,
    SlurmProfile,
    SubmissionError,
    TrainingJob,
    check_before_submit,
    job_result,
    load_profile,
    submit,
    wait_for,
)
from and_plugin.launcher.joblog import start_line

REPO = Path(__file__).resolve().parents[1]
LOCAL = REPO / "slurm" / "profiles" / "local.yaml"
GPU_EXAMPLE = REPO / "slurm" / "profiles" / "example_gpu_cluster.yaml"
JOB_COMPONENTS = str(Path(__file__).with_name("job_components.py"))


def digits_config(output_dir, *extra, width: int | None = 8):
    """scikit-learn's digits (no files) with a small CNN: a few seconds per epoch on one core."""
    return load_config(None, [
        f"run.output_dir={output_dir}", "run.device=cpu", "run.progress=false", "run.threads=1",
        "data.dataset=digits", "data.batch_size=64", "model.embedding_dim=16", "eval.knn_k=20",
        "optim.round0_epochs=1", "optim.epochs_per_round=1", "method.rounds=1",
        *([f"model.kwargs={{width: {width}}}"] if width is not None else []), *extra,
    ])


def position(output_dir: Path) -> tuple[int, int]:
    """(round index, epoch) of the next epoch in output_dir's checkpoint; (0, 0) before the first."""
    path = output_dir / "checkpoint.pt"
    return tuple(load_checkpoint(path)["position"]) if path.exists() else (0, 0)


def metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def wait_for_position(job, output_dir: Path, at_least: tuple[int, int], timeout: float = 300) -> None:
    """Waits until ``output_dir``'s checkpoint is at ``at_least`` (the deadline includes queueing)."""
    deadline = time.monotonic() + timeout
    while position(output_dir) < at_least:
        assert not job.done(), f"job {job.job_id} ended before it could be interrupted: {job.state}"
        assert time.monotonic() < deadline, f"job {job.job_id} did not reach {at_least} in {timeout} s ({job.state})"
        time.sleep(0.2)


def job_logs(job) -> tuple[str, str]:
    """The job's stdout and stderr (every attempt appends to the same two files)."""
    return tuple(Path(p).read_text() if Path(p).exists() else "" for p in (job.paths.stdout, job.paths.stderr))


def sacct_states(job) -> list[str]:
    """Every state the job went through (``sacct -D``: one line per attempt)."""
    out = subprocess.run(["sacct", "-j", str(job.job_id), "-D", "-X", "-n", "-P", "-o", "State"],
                         capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


# --------------------------------------------------------------------------------- profiles


def test_bundled_profiles_load_and_map_to_submitit_parameters():
    local = load_profile(LOCAL)
    assert (local.partition, local.nodes, local.gpus_per_node, local.tasks_per_node) == ("debug", 1, 0, 1)
    assert load_profile("local") == local  # a bundled profile by name
    gpu = load_profile(GPU_EXAMPLE, ["nodes=4"])
    assert gpu.world_size == 4 * 8
    params = gpu.executor_parameters()
    assert params["nodes"] == 4 and params["gpus_per_node"] == 8 and params["tasks_per_node"] == 8
    assert params["slurm_partition"] == "gpu" and params["slurm_account"] == "my_project"
    assert params["slurm_constraint"] == "a100" and params["slurm_exclude"] == "gpu-node-[013,042]"
    assert params["slurm_additional_parameters"]["exclusive"] is True
    assert params["slurm_setup"][1] == "module load cuda/12.1"
    assert params["mem_gb"] == 480 and params["timeout_min"] == 4320 and params["cpus_per_task"] == 10
    assert "slurm_account" not in local.executor_parameters()  # null: the cluster's default


def test_overrides_and_defaults(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("partition: short\n")
    profile = load_profile(path, ["timeout_min=600", "additional_parameters.exclusive=true", "setup=[ml cuda]"])
    assert profile == SlurmProfile(partition="short", timeout_min=600, additional_parameters={"exclusive": True},
                                   setup=["ml cuda"])
    assert set(PROFILE_FIELDS) == {"partition", "nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task", "mem_gb",
                                   "timeout_min", "account", "qos", "constraint", "exclude",
                                   "additional_parameters", "setup"}


@pytest.mark.parametrize(("override", "message"), [
    ("partitoin=gpu", r"partitoin: unknown key \(did you mean 'partition'\?\); allowed keys: \['partition'"),
    ("nodes=0", r"nodes must be an integer >= 1, got 0"),
    ("nodes=two", r"nodes must be int, got 'two' \(str\)"),
    ("nodes=1.5", r"nodes must be int, got 1.5 \(float\)"),
    ("gpus_per_node=-1", r"gpus_per_node must be an integer >= 0 \(0 = CPU job\), got -1"),
    ("cpus_per_task=0", r"cpus_per_task must be an integer >= 1, got 0"),
    ("mem_gb=0", r"mem_gb must be null or a number of GB > 0, got 0.0"),
    ("mem_gb=.inf", r"mem_gb must be a finite number, got inf"),
    ("timeout_min=0", r"timeout_min must be an integer number of minutes >= 1, got 0"),
    ("partition=''", r"partition must be null or a non-empty string, got ''"),
    ("setup=module load x", r"setup must be list\[str\], got 'module load x' \(str\)"),
    ("additional_parameters=[a]", r"additional_parameters must be dict\[str, Any\], got \['a'\] \(list\)"),
    ("additional_parameters.time=10", r"additional_parameters.time: got 10; this option is set by timeout_min"),
    ("additional_parameters.partition=x", r"additional_parameters.partition: got 'x'; this option is set by partition"),
    ("additional_parameters.output=x", r"additional_parameters.output: got 'x'; this option is set by submitit"),
    ("additional_parameters.mail_type=null", r"additional_parameters.mail_type must be a string, a number or true, got None"),
    ("gpus_per_node=4", r"tasks_per_node must be equal to gpus_per_node=4 \(the launcher runs one process per GPU\), got 1"),
    ("nodes", r"override 'nodes': expected key=value, e.g. nodes=4"),
    ("nodes=[1", r"override 'nodes=\[1': line 1, column 3: not valid YAML"),
])
def test_profile_errors_name_the_key_the_value_and_what_is_allowed(override, message):
    with pytest.raises(ProfileError, match=message) as error:
        load_profile(LOCAL, [override])
    assert "local.yaml" in str(error.value)  # and the file


def test_profile_file_errors(tmp_path):
    with pytest.raises(ProfileError, match=r"'nope' does not exist; .*bundled profiles \['example_gpu_cluster', 'local', 'multinode_8x8'\]"):
        load_profile("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ProfileError, match="expected a mapping of profile keys at the top level, got list"):
        load_profile(bad)
    bad.write_text("nodes: [1\n")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(bad)


def test_module_doctest():
    import doctest

    from and_plugin import launcher

    result = doctest.testmod(launcher)
    assert result.attempted >= 1 and result.failed == 0


# ------------------------------------------------------------------- fail fast, locally


def test_missing_data_directory_fails_before_anything_is_submitted(tmp_path):
    config = digits_config(tmp_path / "out", "data.dataset=cifar10", f"data.root={tmp_path / 'no_such_dir'}")
    with pytest.raises(FileNotFoundError, match=r"data.root: the data directory '.*no_such_dir' of data set 'cifar10' "
                                                r"does not exist; nothing was submitted"):
        submit(config, LOCAL)
    assert not (tmp_path / "out").exists()  # no job folder: sbatch never ran


def test_other_problems_found_before_submission(tmp_path):
    profile = load_profile(LOCAL)
    config = digits_config(tmp_path, "data.batch_size=64")
    with pytest.raises(ConfigError, match=r"data.batch_size must be a multiple of the number of processes 3 .*, got 64"):
        check_before_submit(config, load_profile(LOCAL, ["tasks_per_node=3"]))
    config.optim.lr = -1.0  # a config edited after loading is validated again
    with pytest.raises(ConfigError, match=r"optim.lr must be a number > 0, got -1.0"):
        submit(config, LOCAL)
    with pytest.raises(Exception, match="no_such_net"):
        check_before_submit(digits_config(tmp_path, "model.backbone=no_such_net"), profile)
    with pytest.raises(ConfigError, match=r"run.device must be 'cpu' or 'auto' when the profile asks for no GPUs \(gpus_per_node=0\), got 'cuda'"):
        check_before_submit(digits_config(tmp_path, "run.device=cuda"), profile)
    with pytest.raises(ConfigError, match=r"run.resume: .* holds no checkpoint \(checkpoint.pt\) to continue"):
        check_before_submit(digits_config(tmp_path, "run.resume=true"), profile)
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"already holds a run \(checkpoint.pt\); nothing was changed. Pass --resume"):
        check_before_submit(digits_config(tmp_path), profile)
    check_before_submit(digits_config(tmp_path, "run.resume=true"), profile)
    check_before_submit(digits_config(tmp_path, "run.overwrite=true"), profile)


def test_checks_against_the_data_run_before_submission(tmp_path):
    """Batch > N and neighbours >= N need only the config and the data: refused here, not in the job."""
    profile = load_profile(LOCAL)
    with pytest.raises(ConfigError, match=r"^data.batch_size must be <= the number of training images N = 100 "
                                          r"\(data set 'digits', data.subset=100\), got 128; nothing was submitted$"):
        check_before_submit(digits_config(tmp_path, "data.subset=100", "data.batch_size=128"), profile)
    with pytest.raises(ConfigError, match=r"^method.neighbours must be < the number of training images N = 100 "
                                          r"\(data set 'digits', data.subset=100\), got 100; nothing was submitted$"):
        check_before_submit(digits_config(tmp_path, "data.subset=100", "method.neighbours=100"), profile)
    with pytest.raises(ConfigError, match=r"data.batch_size must be <= .*N = 1400 \(data set 'digits'\), got 2048"):
        submit(digits_config(tmp_path / "out", "data.batch_size=2048"), LOCAL)
    assert not (tmp_path / "out").exists()  # nothing was submitted
    check_before_submit(digits_config(tmp_path, "data.subset=100", "data.batch_size=100", "method.neighbours=99"),
                        profile)


def test_start_line_names_the_last_finished_epoch():
    plan = [(0, 3), (1, 2), (2, 2)]
    assert start_line(plan, None, "/r", 0) == "starting round 0, epoch 1/3 (no checkpoint in /r; first attempt)"
    assert start_line(plan, (0, 2), "/r", 1) == "resumed from round 0, epoch 2/3 (checkpoint.pt in /r; SLURM restart 1)"
    assert start_line(plan, [1, 0], "/r", 2).startswith("resumed from round 0, epoch 3/3 (")
    assert start_line(plan, (3, 0), "/r", 1).endswith("the run is finished, nothing is left to train")


def test_training_job_runs_in_process_without_slurm(tmp_path):
    """The callable itself, outside any job: one process, resume forced on."""
    config = digits_config(tmp_path, "data.subset=200", "data.test_subset=100")
    result = TrainingJob()(config.to_dict())
    assert result["world_size"] == 1 and result["device"] == "cpu" and result["resumed_from"] is None
    assert [r["round"] for r in result["rounds"]] == [0, 1]
    again = TrainingJob()(config.to_dict())  # a "requeued" call finds the finished checkpoint
    assert again["resumed_from"] == [2, 0] and again["rounds"] == result["rounds"]


# ------------------------------------------------------------------ real jobs on SLURM


@pytest.mark.slurm
@pytest.mark.timeout(400)
def test_recipe_smoke_run_with_slurm_and_its_sbatch_script(cluster, tmp_path, capsys):
    """python recipes/cifar10_alexnet.py --smoke --slurm --wait ..., through the recipes' CLI."""
    from and_plugin.cli import run_recipe

    run = tmp_path / "run"
    job = run_recipe(REPO / "recipes" / "configs" / "cifar10_alexnet.yaml", [
        "--smoke", "--slurm", "--wait", "--output-dir", str(run), "--slurm-profile", "slurm/profiles/local.yaml",
        "--slurm-set", "timeout_min=7", "--slurm-set", "mem_gb=2", "--slurm-set", "additional_parameters.comment=and_smoke",
        "run.threads=1", "run.progress=false", "run.device=cpu", "eval.linear_probe=false",
    ])
    result = job_result(job)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert result["job_id"] == str(job.job_id) and result["world_size"] == 1 and result["restarts"] == 0
    assert result["output_dir"] == str(run) and result["device"] == "cpu"
    epochs = [m for m in metrics(run) if m["kind"] == "epoch"]
    assert [r["round"] for r in result["rounds"]] == sorted({m["round"] for m in epochs})
    assert all(0.0 <= r["knn"] <= 1.0 for r in result["rounds"])
    assert {"checkpoint.pt", "config.yaml", "metrics.jsonl"} <= {p.name for p in run.iterdir()}

    submission = Path(job.paths.submission_file)
    assert submission.parent == run / "slurm" / str(job.job_id)
    script = submission.read_text().splitlines()
    for line in ("#SBATCH --partition=debug", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --cpus-per-task=1", "#SBATCH --mem=2GB", "#SBATCH --time=7", "#SBATCH --comment=and_smoke",
                 f"#SBATCH --job-name={config['name']}", "#SBATCH --signal=USR2@90"):
        assert line in script, line
    assert any(line.startswith("srun ") and "--kill-on-bad-exit=1" in line for line in script)

    printed = capsys.readouterr().err
    assert f"Submitted job {job.job_id}" in printed
    assert f"stdout:  {job.paths.stdout}" in printed and f"stderr:  {job.paths.stderr}" in printed
    assert f"tail -f {job.paths.stdout} {job.paths.stderr}" in printed
    assert f"metrics: {run / 'metrics.jsonl'}" in printed
    assert f"squeue -j {job.job_id}" in printed
    assert f"job {job.job_id} finished" in printed
    states = re.findall(rf"^job {job.job_id}: (\w+)$", printed, re.MULTILINE)
    assert states and states[0] == "PENDING" and "UNKNOWN" not in states, printed

    stdout, _ = job_logs(job)  # the log the submit message says to follow: where it starts, a line per epoch
    assert f"starting round 0, epoch 1/1 (no checkpoint in {run}; first attempt)" in stdout
    for m in epochs:
        line = re.search(rf"^round {m['round']} epoch {m['epoch'] + 1}/1: loss ([\d.]+), lr (\S+), (\d+) img/s, ",
                         stdout, re.MULTILINE)
        assert line, stdout
        assert float(line.group(1)) == pytest.approx(m["loss"], abs=1e-4)
        assert float(line.group(2)) == pytest.approx(m["lr"], rel=1e-3)
    assert re.search(r"^round 1 done: kNN top-1 [\d.]+", stdout, re.MULTILINE), stdout


@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_failure_inside_the_job_reaches_the_user(cluster, tmp_path, capsys):
    config = digits_config(tmp_path / "run", width=0)  # the backbone raises in the job
    with pytest.raises(JobFailedError, match=r"SLURM job \d+ failed: ValueError: width must be an integer >= 1, got 0"):
        submit(config, LOCAL, wait=True)
    printed = capsys.readouterr().err
    assert "failed" in printed and "width must be" in printed  # the job's error text, in this terminal


@pytest.mark.slurm
@pytest.mark.timeout(720)
def test_preempted_job_is_requeued_and_ends_exactly_like_an_uninterrupted_run(cluster, tmp_path):
    # 3 + 2 + 2 epochs, a few seconds each, deterministic
    extra = ("run.deterministic=true", "optim.round0_epochs=3", "optim.epochs_per_round=2", "method.rounds=2")
    preempted = tmp_path / "preempted"
    job = submit(digits_config(preempted, *extra), LOCAL)

    # interrupt once two epochs are checkpointed: mid-run, five epochs still to go
    # (the deadline includes queueing behind other jobs on the shared test node)
    deadline = time.monotonic() + 300
    while position(preempted) < (0, 2):
        assert not job.done(), f"job {job.job_id} ended before it could be interrupted: {job.state}"
        assert time.monotonic() < deadline, f"job {job.job_id} did not train 2 epochs in 300 s ({job.state})"
        time.sleep(0.2)
    job._interrupt()  # what SLURM does on preemption: SIGTERM, then USR2 to the job's processes
    interrupted_at = position(preempted)

    # meanwhile, the same run without interruption, in this process
    straight = tmp_path / "straight"
    try:
        TrainingJob()(digits_config(straight, *extra).to_dict())
    except BaseException:
        subprocess.run(["scancel", str(job.job_id)], check=False)
        raise

    wait_done(job, timeout=300)  # the requeued job waits ~10 s (cred_expire) before it restarts
    result = job_result(job)
    log = job.paths.stdout.read_text() + job.paths.stderr.read_text()
    assert result["restarts"] >= 1, f"the job was not requeued; its log:\n{log[-3000:]}"
    assert result["resumed_from"] is not None, "the requeued job did not start from the checkpoint"
    # it continued from the checkpoint written when (or just after) the signal came, not from the end
    assert interrupted_at <= tuple(result["resumed_from"]) < (3, 0), (interrupted_at, result["resumed_from"])
    assert "requeu" in log.lower()

    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(preempted / "checkpoint.pt")
    assert a["position"] == b["position"] == (3, 0)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert torch.equal(a["memory_bank"]["bank"], b["memory_bank"]["bank"])
    for key in ("anchor_mask", "neighbours", "entropy"):
        assert torch.equal(a["curriculum"]["state"][key], b["curriculum"]["state"][key]), key
    for slot, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][slot]["momentum_buffer"]), slot
    assert [r["knn"] for r in a["round_records"]] == [r["knn"] for r in result["rounds"]]
    # every epoch logged; an epoch interrupted before its checkpoint was logged again, identically
    by_epoch = {(m["round"], m["epoch"]): m["loss"] for m in metrics(preempted)}
    assert by_epoch == {(m["round"], m["epoch"]): m["loss"] for m in metrics(straight)}


@pytest.mark.slurm
@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.timeout(720)
def test_preempted_two_process_job_is_requeued_and_finishes(cluster, tmp_path):
    """Rank 0 checkpoints and requeues; rank 1 (which only logs the signal) is ended with the job."""
    run = tmp_path / "run"
    extra = ("run.deterministic=true", "optim.round0_epochs=3", "optim.epochs_per_round=2", "method.rounds=2")
    job = submit(digits_config(run, *extra), LOCAL, ["tasks_per_node=2"])
    deadline = time.monotonic() + 300
    while position(run) < (0, 2):
        assert not job.done(), f"job {job.job_id} ended before it could be interrupted: {job.state}"
        assert time.monotonic() < deadline, f"job {job.job_id} did not train 2 epochs in 300 s ({job.state})"
        time.sleep(0.2)
    job._interrupt()
    interrupted_at = position(run)
    wait_done(job, timeout=400)
    result = job_result(job)
    assert result["world_size"] == 2 and result["restarts"] >= 1
    assert interrupted_at <= tuple(result["resumed_from"]) < (3, 0)
    assert position(run) == (3, 0)
    assert {(m["round"], m["epoch"]) for m in metrics(run) if m["kind"] == "epoch"} == {
        (0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0), (2, 1)}


@pytest.mark.slurm
@pytest.mark.distributed
@pytest.mark.timeout(420)
def test_two_process_slurm_job_equals_one_process(cluster, tmp_path):
    """2 tasks (gloo, set up from the SLURM environment) x batch 16 == 1 process x batch 32."""
    import job_components  # noqa: F401  (registers tiny_nobn and tiny_blobs here too)

    extra = ("data.dataset=tiny_blobs", "model.backbone=tiny_nobn", "data.batch_size=32",
             "run.deterministic=true",
             "optim.round0_epochs=2", "method.rounds=2", "eval.knn_k=10")
    job = submit(digits_config(tmp_path / "ddp", *extra, width=None), LOCAL, ["tasks_per_node=2", "cpus_per_task=1"],
                 imports=[JOB_COMPONENTS])
    try:
        single = TrainingJob()(digits_config(tmp_path / "single", *extra, width=None).to_dict())
    except BaseException:
        subprocess.run(["scancel", str(job.job_id)], check=False)
        raise
    wait_done(job, timeout=360)
    result = job_result(job)
    assert result["world_size"] == 2 and result["device"] == "cpu"
    assert "#SBATCH --ntasks-per-node=2" in Path(job.paths.submission_file).read_text()

    a, b = load_checkpoint(tmp_path / "single" / "checkpoint.pt"), load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    assert torch.allclose(a["memory_bank"]["bank"], b["memory_bank"]["bank"], atol=1e-5, rtol=0)
    for key, value in a["model"].items():
        assert torch.allclose(value, b["model"][key], atol=1e-5, rtol=0), key
    losses = [m["loss"] for m in metrics(tmp_path / "ddp")]
    assert len(losses) == 4
    assert losses == pytest.approx([m["loss"] for m in metrics(tmp_path / "single")], abs=1e-5, rel=0)
    assert [r.get("anchors") for r in result["rounds"]] == [r.get("anchors") for r in single["rounds"]] == [None, 50, 100]


@pytest.mark.slurm
@pytest.mark.distributed
@pytest.mark.timeout(300)
def test_a_failure_on_one_rank_ends_the_whole_job_with_its_reason(cluster, tmp_path):
    """Rank 0 would otherwise wait for rank 1 in a collective until the distributed timeout."""
    config = digits_config(tmp_path / "run", "data.dataset=tiny_blobs", "model.backbone=fails_on_rank1",
                           "data.batch_size=32", width=None)
    started = time.monotonic()
    with pytest.raises(JobFailedError, match=r"failed: RuntimeError: rank 1 cannot build its backbone") as error:
        submit(config, LOCAL, ["tasks_per_node=2"], wait=True, imports=[JOB_COMPONENTS])
    assert "--- task 1:" in str(error.value)
    assert time.monotonic() - started < 240


# ------------------------------------------- preemption, requeue and rejections on SLURM

#: 3 short epochs on 300 digits (the signal lands in the second), loader workers forked every epoch.
PREEMPT = ("data.subset=300", "data.test_subset=100", "data.batch_size=50", "optim.round0_epochs=2",
           "optim.epochs_per_round=1", "method.rounds=1", "eval.knn_k=10")


def check_one_requeue_and_success(job, run: Path, interrupted_at: tuple[int, int], capsys) -> dict:
    """What --wait reports and what the job went through after a preemption."""
    result = wait_for(job, poll_s=1.0)  # the user's --wait: raises JobFailedError if the job is reported failed
    stdout, stderr = job_logs(job)
    assert f"job {job.job_id} finished" in capsys.readouterr().err
    assert result["restarts"] == 1, f"requeued {result['restarts']} times; stderr:\n{stderr[-3000:]}"
    assert result["resumed_from"] is not None and interrupted_at <= tuple(result["resumed_from"]) < (2, 0)
    assert position(run) == (2, 0)  # the plan [(round 0, 2 epochs), (round 1, 1 epoch)] done
    assert [(m["round"], m["epoch"]) for m in metrics(run) if m["kind"] == "epoch"] == [(0, 0), (0, 1), (1, 0)]
    log = stdout + stderr  # submitit logs INFO to stdout, warnings and errors to stderr
    assert len(re.findall(r"Requeued job", log)) == 1, log[-3000:]  # one process requeued, once
    for symptom in ("CalledProcessError", "No file was saved", "exited unexpectedly", "Traceback"):
        assert symptom not in log, f"{symptom!r} in the job's log:\n{log[-3000:]}"
    assert "FAILED" not in sacct_states(job), sacct_states(job)
    assert re.search(r"^resumed from round \d+, epoch \d+/\d+ \(checkpoint.pt in .*; SLURM restart 1\)$",
                     stdout, re.MULTILINE), stdout
    return result


@pytest.mark.slurm
@pytest.mark.timeout(400)
def test_preemption_with_eight_loader_workers_requeues_once_and_reports_success(cluster, tmp_path, capsys):
    """scancel --signal=USR2 reaches every process of the step, the 8 forked loader workers too."""
    run = tmp_path / "run"
    job = submit(digits_config(run, *PREEMPT, "data.num_workers=8"), LOCAL, ["cpus_per_task=1"])
    wait_for_position(job, run, (0, 1))
    subprocess.run(["scancel", "--signal=USR2", str(job.job_id)], check=True)  # what the how-to does
    check_one_requeue_and_success(job, run, position(run), capsys)


@pytest.mark.slurm
@pytest.mark.timeout(400)
def test_two_usr2_in_a_row_requeue_once(cluster, tmp_path, capsys):
    run = tmp_path / "run"
    job = submit(digits_config(run, *PREEMPT, "data.num_workers=8"), LOCAL)
    wait_for_position(job, run, (0, 1))
    for _ in range(2):
        subprocess.run(["scancel", "--signal=USR2", str(job.job_id)], check=True)
    interrupted_at = position(run)
    # and more while the first is being acted on (they reach scontrol too) until the attempt ends;
    # scancel retries a job in transition ("try again later") every few seconds, which would
    # preempt the next attempt as well: each try is given up after a second
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and subprocess.run(
            ["squeue", "-h", "-j", str(job.job_id), "-o", "%T"], capture_output=True, text=True).stdout.strip() == "RUNNING":
        try:
            subprocess.run(["scancel", "--signal=USR2", str(job.job_id)], check=False, capture_output=True, timeout=1)
        except subprocess.TimeoutExpired:
            break
        time.sleep(0.1)
    check_one_requeue_and_success(job, run, interrupted_at, capsys)


@pytest.mark.slurm
@pytest.mark.timeout(400)
def test_an_administrators_requeue_of_an_overwrite_job_resumes(cluster, tmp_path):
    """scontrol requeue re-runs the original pickle (run.overwrite=true): it must resume, not restart."""
    run = tmp_path / "run"
    job = submit(digits_config(run, *PREEMPT, "run.overwrite=true"), LOCAL)
    wait_for_position(job, run, (0, 1))
    subprocess.run(["scontrol", "requeue", str(job.job_id)], check=True)
    interrupted_at = position(run)
    # The interrupted attempt may train on until SLURM kills it (KillWait) and even finish; the
    # result that counts is the requeued attempt's, once SLURM has it completed.
    deadline = time.monotonic() + 300
    while not re.search(r"JobState=(COMPLETED|FAILED|CANCELLED|TIMEOUT)\b.*\bRestarts=1\b", subprocess.run(
            ["scontrol", "show", "job", "-o", str(job.job_id)], capture_output=True, text=True).stdout):
        assert time.monotonic() < deadline, f"the requeued attempt of job {job.job_id} did not end in 300 s"
        time.sleep(0.5)
    wait_done(job, timeout=60)
    result = job_result(job)
    stdout, _ = job_logs(job)
    assert result["restarts"] == 1
    assert result["resumed_from"] is not None, f"the requeued attempt started over; its log:\n{stdout[-2000:]}"
    assert tuple(result["resumed_from"]) >= interrupted_at
    # every epoch logged once: none of the first attempt's epochs was lost
    assert [(m["round"], m["epoch"]) for m in metrics(run) if m["kind"] == "epoch"] == [(0, 0), (0, 1), (1, 0)]
    assert re.search(r"^resumed from round \d+, epoch \d+/\d+ \(checkpoint.pt in .*; SLURM restart 1\)",
                     stdout, re.MULTILINE), stdout


@pytest.mark.slurm
def test_an_already_requeued_job_counts_as_requeued(cluster, tmp_path):
    from and_plugin.launcher.preemption import RequeueError, requeue_job

    job_id = subprocess.run(["sbatch", "--parsable", "-p", "debug", "-t", "2", "-o", str(tmp_path / "out"),
                             "--wrap", "sleep 60"], capture_output=True, text=True, check=True).stdout.strip()
    try:
        deadline = time.monotonic() + 60
        while "RUNNING" not in subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True,
                                              text=True).stdout:
            assert time.monotonic() < deadline, "the sleep job did not start"
            time.sleep(0.3)
        assert requeue_job(job_id, restarts=0) == "requeued"
        assert requeue_job(job_id, restarts=0).startswith("already requeued (restart count 1")
        with pytest.raises(RequeueError, match=rf"scontrol requeue {job_id} failed"):
            requeue_job(job_id, restarts=1)  # an attempt that was itself the requeued one: not requeued again
    finally:
        subprocess.run(["scancel", job_id], check=False)


@pytest.mark.slurm
@pytest.mark.timeout(120)
@pytest.mark.parametrize("setting", ["partition=gpu_nosuch", "mem_gb=MORE"])
def test_a_job_sbatch_refuses_is_one_line_exit_2_and_leaves_nothing(cluster, tmp_path, setting, capsys):
    from and_plugin.cli import main

    if setting == "mem_gb=MORE":  # more than the node has
        node_mb = subprocess.run(["sinfo", "-h", "-p", "debug", "-o", "%m"], capture_output=True, text=True,
                                 check=True).stdout.split()[0].rstrip("+")
        setting = f"mem_gb={int(node_mb) // 1024 * 2 + 2}"
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_status:
        main(REPO / "recipes" / "configs" / "cifar10_alexnet.yaml",
             ["--smoke", "--slurm", "--output-dir", str(run), "--slurm-set", setting])
    assert exit_status.value.code == 2
    printed = capsys.readouterr().err.strip().splitlines()
    assert len(printed) == 1, printed
    assert printed[0].startswith("error: sbatch refused the job, nothing was submitted: ")
    assert ("invalid partition specified: gpu_nosuch" if "partition" in setting
            else "Memory specification can not be satisfied") in printed[0]
    assert not run.exists(), sorted(p.name for p in run.rglob("*"))  # no .submission_file_*.sh, no *.pkl
    with pytest.raises(SubmissionError):
        submit(digits_config(run), LOCAL, [setting])
