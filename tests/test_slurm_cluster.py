"""End-to-end checks against a real SLURM cluster (the local one).

These tests never start the cluster themselves. Start it first with::

    bash slurm/local_cluster.sh install && bash slurm/local_cluster.sh start

They are marked ``slurm`` and skip (with the reason) when ``sinfo`` is not on
PATH or no node of the ``debug`` partition is usable (see ``slurm_utils.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_utils import PARTITION, wait_done

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "slurm" / "profiles"
PROFILE_FIELDS = {
    "partition",
    "nodes",
    "gpus_per_node",
    "tasks_per_node",
    "cpus_per_task",
    "mem_gb",
    "timeout_min",
    "account",
    "qos",
    "constraint",
    "exclude",
    "additional_parameters",
    "setup",
}


def _executor(folder: Path):
    submitit = pytest.importorskip("submitit")
    executor = submitit.AutoExecutor(folder=str(folder / "%j"))
    assert executor.cluster == "slurm", "submitit did not detect SLURM (is sbatch on PATH?)"
    executor.update_parameters(
        slurm_partition=PARTITION, timeout_min=5, cpus_per_task=1, mem_gb=1, name="and_plugin_test"
    )
    return executor


# --- functions run inside the jobs ----------------------------------------
# This module is not importable from the job, so its functions and classes
# are pickled by value (see _by_value below).


def _answer() -> dict:
    import and_plugin

    return {
        "job_id": os.environ["SLURM_JOB_ID"],
        "value": 6 * 7,
        "python": sys.executable,
        "and_plugin": and_plugin.__file__,
    }


def _fails_then_requeued() -> dict:
    """Attempt 0 requeues its own job and then fails (as an attempt whose loader workers the
    requeue ended does); attempt 1 succeeds."""
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    if restarts == 0:
        subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], check=False)
        raise RuntimeError("attempt 0 ended by its requeue")
    return {"restarts": restarts}


try:  # submitit may be missing; the tests that need it skip then
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover
    _Checkpointable = object


class _SlowCounter(_Checkpointable):
    """Counts to `steps`, one step every `step_s`, logging each step.

    On preemption submitit pickles this object (with its current `count`),
    requeues the job, and the requeued job continues from that count.
    """

    def __init__(self, progress_file: str, steps: int, step_s: float) -> None:
        self.progress_file = progress_file
        self.steps = steps
        self.step_s = step_s
        self.count = 0

    def __call__(self) -> dict:
        from and_plugin.launcher.job import harden_requeue

        harden_requeue()  # scontrol requeue must survive the SIGTERM the requeue itself sends
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        resumed_from = self.count
        while self.count < self.steps:
            time.sleep(self.step_s)
            self.count += 1
            with open(self.progress_file, "a") as fh:
                fh.write(f"{restarts} {self.count}\n")
        return {
            "count": self.count,
            "restarts": restarts,
            "resumed_from": resumed_from,
            "job_id": os.environ["SLURM_JOB_ID"],
        }


@pytest.fixture
def _by_value():
    cloudpickle = pytest.importorskip("cloudpickle")
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        cloudpickle.unregister_pickle_by_value(module)


# --- tests -----------------------------------------------------------------


def test_profiles_have_the_documented_fields():
    yaml = pytest.importorskip("yaml")
    for name in ("local.yaml", "example_gpu_cluster.yaml", "multinode_8x8.yaml"):
        profile = yaml.safe_load((PROFILES / name).read_text())
        assert set(profile) == PROFILE_FIELDS, name
        assert isinstance(profile["additional_parameters"], dict), name
        assert isinstance(profile["setup"], list), name
    local = yaml.safe_load((PROFILES / "local.yaml").read_text())
    assert local["partition"] == "debug" and local["gpus_per_node"] == 0 and local["nodes"] == 1


@pytest.mark.slurm
def test_srun_and_sbatch(cluster, tmp_path):
    subprocess.run(["srun", "-p", PARTITION, "-n1", "-t", "1", "true"], check=True, timeout=30)
    out = tmp_path / "hostname.out"
    job_id = (
        subprocess.run(
            ["sbatch", "--parsable", "-p", PARTITION, "-t", "1", "-o", str(out), "--wrap", "hostname -s"],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        .stdout.strip()
        .split(";")[0]
    )
    deadline = time.monotonic() + 30
    while subprocess.run(["squeue", "-h", "-j", job_id], check=False, capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, f"sbatch job {job_id} still queued/running after 30 s"
        time.sleep(0.5)
    assert out.read_text().strip(), "batch job wrote no output"


@pytest.mark.slurm
def test_submitit_returns_value_computed_in_job(cluster, tmp_path, _by_value):
    job = _executor(tmp_path).submit(_answer)
    wait_done(job, timeout=45)
    result = job.result()
    assert result["value"] == 42
    assert result["job_id"] == str(job.job_id)
    assert result["python"] == sys.executable
    # the job imports the package the tests test (sbatch exports PYTHONPATH and the environment)
    import and_plugin

    assert result["and_plugin"] == and_plugin.__file__


@pytest.mark.slurm
def test_submitit_checkpoint_and_requeue_on_preemption(cluster, tmp_path, _by_value):
    progress = tmp_path / "progress.txt"
    steps = 24
    job = _executor(tmp_path).submit(_SlowCounter(str(progress), steps=steps, step_s=0.25))

    # Wait until the job is really running and counting (it may queue behind other jobs first):
    # the signal must find submitit's handler installed and the first count written.
    deadline = time.monotonic() + 240
    while not (progress.exists() and len(progress.read_text().split("\n")) > 3):
        assert not job.done(), f"job {job.job_id} ended before it could be interrupted: {job.state}"
        assert time.monotonic() < deadline, f"job {job.job_id} did not start counting in 240 s ({job.state})"
        time.sleep(0.2)

    # What a preemption looks like: SIGTERM then USR2 to the job steps.
    # submitit's handler checkpoints the callable and runs `scontrol requeue`.
    job._interrupt()

    # Requeued jobs wait AuthInfo=cred_expire (10 s on the local cluster), then queue again.
    wait_done(job, timeout=240)
    result = job.result()

    lines = [tuple(map(int, ln.split())) for ln in progress.read_text().split("\n") if ln]
    assert result["count"] == steps
    assert result["restarts"] >= 1, f"job was not requeued: {lines}"
    assert result["resumed_from"] > 0, "the requeued job did not start from the checkpoint"
    first_run = [c for r, c in lines if r == 0]
    second_run = [c for r, c in lines if r == result["restarts"]]
    assert first_run and second_run
    assert second_run[0] == result["resumed_from"] + 1
    assert second_run[-1] == steps
    assert max(first_run) < steps, "the first run finished before it was preempted"
    stdout = job.paths.stdout.read_text() if job.paths.stdout.exists() else ""
    stderr = job.paths.stderr.read_text() if job.paths.stderr.exists() else ""
    assert "requeue" in (stdout + stderr).lower()


def test_install_waits_for_another_apt_process_to_release_its_lock(tmp_path):
    """`local_cluster.sh install` used to fail at once when another apt process held the lock."""
    import fcntl
    import shutil

    if shutil.which("apt-get") is None:
        pytest.skip("no apt-get here (not Debian/Ubuntu)")
    lists = tmp_path / "lists"
    (lists / "partial").mkdir(parents=True)
    (tmp_path / "parts").mkdir()
    # apt-get update against an empty source list and its own lists directory: it takes that
    # directory's lock exactly as a real update does, and needs no network.
    options = (f"-o Dir::State::Lists={lists} -o Dir::Etc::SourceList=/dev/null "
               f"-o Dir::Etc::SourceParts={tmp_path / 'parts'}")
    lock = open(lists / "lock", "w")
    fcntl.lockf(lock, fcntl.LOCK_EX)  # what a running apt holds (an fcntl write lock)
    script = REPO / "slurm" / "local_cluster.sh"
    started = time.monotonic()
    shell = subprocess.Popen(["bash", "-c", f'source "{script}" && apt_get {options} update'],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "AND_SLURM_APT_LOCK_POLL": "0.5", "AND_SLURM_APT_LOCK_TIMEOUT": "60"})
    try:
        time.sleep(3)
        assert shell.poll() is None, f"apt_get gave up while the lock was held: {shell.communicate()}"
    finally:
        lock.close()  # the other apt process ends
    out, err = shell.communicate(timeout=60)
    assert shell.returncode == 0, err
    assert time.monotonic() - started >= 3
    assert "waiting for another apt/dpkg process to finish: E: Could not get lock" in err


def test_install_still_fails_at_once_on_other_apt_errors(tmp_path):
    import shutil

    if shutil.which("apt-get") is None:
        pytest.skip("no apt-get here (not Debian/Ubuntu)")
    script = REPO / "slurm" / "local_cluster.sh"
    started = time.monotonic()
    done = subprocess.run(["bash", "-c", f'source "{script}" && apt_get install -y and-plugin-no-such-package'],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "apt-get install failed" in done.stderr
    assert time.monotonic() - started < 60


@pytest.mark.slurm
def test_wait_for_ignores_the_result_of_an_attempt_that_was_requeued(cluster, tmp_path, _by_value):
    """The failed result of an interrupted attempt is not the job's: --wait follows the requeued one."""
    from and_plugin.launcher import wait_for

    job = _executor(tmp_path).submit(_fails_then_requeued)
    result = wait_for(job, poll_s=0.5)
    assert result == {"restarts": 1}
