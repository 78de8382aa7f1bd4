"""Submission: fail-fast checks here, then one submitit job, and where to follow it."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import submitit

from .._validation import require
from ..metrics_log import METRICS_NAME
from ..config import Config, ConfigError, config_from_dict
from .failures import wait_for
from .job import TrainingJob, import_user_modules
from .profile import ProfileError, SlurmProfile, load_profile

__all__ = ["FILELESS_DATASETS", "SubmissionError", "check_before_submit", "submit"]

#: Data sets that need no files (generated or shipped with a package).
FILELESS_DATASETS = frozenset({"digits", "synthetic"})


class SubmissionError(ProfileError):
    """``sbatch`` refused the job (an unknown partition, more memory than a node has, ...)."""


def check_before_submit(config: Config, profile: SlurmProfile) -> None:
    """Fails fast, locally, with the reason: an invalid config, a missing data directory, a
    batch that does not split over the processes, an unknown backbone or data set, a batch or
    ``method.neighbours`` too large for the training set (its N is read here, from the data),
    an output directory holding another run (without run.resume / run.overwrite), or
    ``run.resume=true`` with no checkpoint to continue.

    Raises:
        ConfigError: For config problems (:class:`~and_plugin.rundir.RunDirError` for the run directory).
        FileNotFoundError: For a missing data directory.
    """
    from .. import backbones, data  # noqa: F401  (fill the registries)
    from ..data import default_root
    from ..registry import BACKBONES, DATASETS
    from ..rundir import plan_resume

    config.validate()
    if not config.model.backbone.startswith("torchvision:"):
        BACKBONES.get(config.model.backbone)
    world = profile.world_size
    require(config.data.batch_size % world == 0, "data.batch_size", config.data.batch_size,
            f"a multiple of the number of processes {world} (nodes {profile.nodes} x tasks_per_node "
            f"{profile.tasks_per_node}; each takes an equal share)", ConfigError)
    require(profile.gpus_per_node > 0 or not config.run.device.startswith("cuda"), "run.device", config.run.device,
            "'cpu' or 'auto' when the profile asks for no GPUs (gpus_per_node=0)", ConfigError)
    name, root = config.data.dataset, config.data.root
    builder = DATASETS.get(name)
    if root is None and name not in FILELESS_DATASETS and builder.__module__ == "and_plugin.data.datasets":
        root = default_root(name)  # a built-in data set read from files; others are checked when a root is given
    if root is not None and not config.data.download and not Path(root).expanduser().is_dir():
        raise FileNotFoundError(
            f"data.root: the data directory {str(root)!r} of data set {name!r} does not exist; nothing was "
            "submitted. Pass --data-dir (data.root=...) pointing at a directory the cluster nodes see, "
            "or data.download=true where the data set can be downloaded"
        )
    if root is None or Path(root).expanduser().is_dir():  # not yet downloaded: the job checks it
        _check_against_data(config)
    plan_resume(config, Path(config.run.output_dir))  # RunDirError: another run there, or nothing to resume


def _check_against_data(config: Config) -> None:
    """The checks the trainer makes against the training set's size N, here, before the job queues."""
    from ..data import build_dataset

    data = config.data
    train = build_dataset(data.dataset, split="train", root=data.root, download=False, subset=data.subset,
                          **data.kwargs)
    n = len(train)
    of = f"the number of training images N = {n} (data set {data.dataset!r}" + (
        f", data.subset={data.subset})" if data.subset else ")")
    if data.batch_size > n:
        raise ConfigError(f"data.batch_size must be <= {of}, got {data.batch_size}; nothing was submitted")
    if config.method.neighbours >= n:
        raise ConfigError(f"method.neighbours must be < {of}, got {config.method.neighbours}; nothing was submitted")


def submit(
    config: Config,
    profile: str | os.PathLike[str],
    profile_overrides: list[str] | None = None,
    wait: bool = False,
    folder: str | os.PathLike[str] | None = None,
    imports: list[str] | None = None,
) -> submitit.Job:
    """Submits the training run ``config`` as one SLURM job described by a cluster profile.

    The config is checked and the data directory looked for here, before anything is
    submitted. The job has ``nodes x tasks_per_node`` processes; ``data.batch_size`` is the
    global batch, split evenly over them.

    Args:
        config: The run. ``run.output_dir`` is made absolute (the job's working directory may
            differ) and must be on a filesystem every node sees.
        profile: A profile YAML file or a bundled profile name (see :func:`load_profile`).
        profile_overrides: ``["nodes=4", ...]`` applied to the profile.
        wait: Block until the job ends; print its error text and raise if it failed.
        folder: submitit's folder for the job's pickles and logs; default
            ``<output_dir>/slurm/%j`` (``%j`` = the job id).
        imports: Modules the job imports first (your registered backbones / data sets), added
            to ``config.run.imports``.

    Returns:
        The ``submitit.Job`` (``job.job_id``, ``job.result()``, ``job.paths.stdout``).

    Raises:
        ConfigError / ProfileError / FileNotFoundError: Found before submission.
        SubmissionError: ``sbatch`` refused the job (what submitit wrote for it is removed).
        RuntimeError: ``sbatch`` is not available here.
        JobFailedError: With ``wait=True``, the job failed; the message holds its error text.
    """
    from rich.console import Console

    console = Console(stderr=True)
    slurm_profile = load_profile(profile, profile_overrides)
    config = config_from_dict(config.to_dict())  # a validated copy; the caller's stays untouched
    config.run.output_dir = str(Path(config.run.output_dir).expanduser().resolve())
    from ..plugins import resolve_imports

    config.run.imports = imports = resolve_imports([*config.run.imports, *(imports or [])])  # travel with the config
    import_user_modules(imports)  # here too: they must import, and they register what the checks look up
    check_before_submit(config, slurm_profile)
    if shutil.which("sbatch") is None:
        raise RuntimeError(
            "sbatch is not on PATH: submit from a SLURM login node, or start the local test cluster "
            "(bash slurm/local_cluster.sh install && bash slurm/local_cluster.sh start)"
        )
    folder = Path(folder) if folder is not None else Path(config.run.output_dir) / "slurm" / "%j"
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    try:  # submitit checks the parameters once more, now against the executor it built
        executor.update_parameters(
            name=config.name,
            slurm_srun_args=["--kill-on-bad-exit=1"],  # one failing rank ends the job instead of hanging the others
            **slurm_profile.executor_parameters(),
        )
    except ValueError as error:
        raise ProfileError(f"slurm profile {str(profile)!r}: submitit refused its parameters: {error}") from None
    job = _sbatch(executor, TrainingJob(imports), config, slurm_profile, profile)
    _print_submitted(console, job, config, slurm_profile)
    if wait:
        wait_for(job, console)
    return job


def _sbatch(executor: submitit.AutoExecutor, function: TrainingJob, config: Config, profile: SlurmProfile,
            profile_path: str | os.PathLike[str]) -> submitit.Job:
    """``executor.submit``; when sbatch refuses the job, removes what submitit wrote and raises one line."""
    from submitit.core.utils import FailedJobError, JobPaths

    folder = JobPaths.get_first_id_independent_folder(executor.folder)
    created = [path for path in (Path(config.run.output_dir), *Path(config.run.output_dir).parents, folder,
                                 *folder.parents) if not path.exists()]
    before = set(folder.iterdir()) if folder.is_dir() else set()
    said_there = io.StringIO()  # submitit prints sbatch's stderr on failure; the error below says it once
    try:
        with contextlib.redirect_stderr(said_there):
            job = executor.submit(function, config.to_dict())
        sys.stderr.write(said_there.getvalue())
        return job
    except FailedJobError as error:
        for path in set(folder.iterdir()) - before if folder.is_dir() else ():
            if path.is_file() and (path.suffix == ".pkl" or path.name.startswith(".submission_file_")):
                path.unlink()
        for path in sorted(created, key=lambda p: len(p.parts), reverse=True):  # the folders made here, if empty
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        lines = [re.sub(r"^sbatch: error: ", "", line.strip()) for line in str(error).splitlines() if line.strip()]
        said = lines[0] + (f" ({'; '.join(lines[1:])})" if lines[1:] else "") if lines else "no message"
        raise SubmissionError(
            f"sbatch refused the job, nothing was submitted: {said}; it asked for {_request(profile)} "
            f"(slurm profile {str(profile_path)!r} and --slurm-set; `sinfo -s` lists the partitions, "
            "`scontrol show node` each node's CPUs and RealMemory)"
        ) from None


def _request(profile: SlurmProfile) -> str:
    parts = [f"partition {profile.partition or '(default)'}",
             f"{profile.nodes} node(s) x {profile.tasks_per_node} task(s) x {profile.cpus_per_task} CPU(s)"]
    if profile.gpus_per_node:
        parts.append(f"{profile.gpus_per_node} GPU(s)/node")
    parts.append(f"mem_gb {profile.mem_gb:g}/node" if profile.mem_gb is not None else "the default memory")
    parts.append(f"timeout_min {profile.timeout_min}")
    parts += [f"{key} {getattr(profile, key)}" for key in ("account", "qos", "constraint", "exclude")
              if getattr(profile, key) is not None]
    return ", ".join(parts)


def _print_submitted(console: Any, job: submitit.Job, config: Config, profile: SlurmProfile) -> None:
    from rich.markup import escape

    gpus = f", {profile.gpus_per_node} GPU(s)/node" if profile.gpus_per_node else ""
    say = functools.partial(console.print, soft_wrap=True, markup=False)  # paths stay whole and literal
    console.print(
        f"[bold green]Submitted[/] job [bold]{job.job_id}[/] ({escape(config.name)!r}): {profile.nodes} node(s) x "
        f"{profile.tasks_per_node} task(s){gpus}, partition {profile.partition or '(default)'}, "
        f"time limit {profile.timeout_min} min",
        soft_wrap=True,
    )
    say(f"  output:  {config.run.output_dir}")
    say(f"  stdout:  {job.paths.stdout}")
    say(f"  stderr:  {job.paths.stderr}")
    say(f"  follow:  tail -f {shlex.quote(str(job.paths.stdout))} {shlex.quote(str(job.paths.stderr))}"
        "   (a line per epoch)")
    say(f"  metrics: {Path(config.run.output_dir) / METRICS_NAME}   (one JSON line per epoch)")
    say(f"  status:  squeue -j {job.job_id}   (after it ends: sacct -j {job.job_id})")
    say(f"  cancel:  scancel {job.job_id}")
