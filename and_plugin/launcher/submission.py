"""Submission: fail-fast checks here, then one submitit job, and where to follow it."""

from __future__ import annotations

import functools
import os
import shlex
import shutil
from pathlib import Path
from typing import Any

import submitit

from .._validation import require
from ..config import Config, ConfigError, config_from_dict
from .failures import wait_for
from .job import TrainingJob, import_user_modules
from .profile import ProfileError, SlurmProfile, load_profile

__all__ = ["FILELESS_DATASETS", "check_before_submit", "submit"]

#: Data sets that need no files (generated or shipped with a package).
FILELESS_DATASETS = frozenset({"digits", "synthetic"})


def check_before_submit(config: Config, profile: SlurmProfile) -> None:
    """Fails fast, locally, with the reason: an invalid config, a missing data directory, a
    batch that does not split over the processes, an unknown backbone or data set, or an output
    directory holding another run (without run.resume / run.overwrite), or ``run.resume=true``
    with no checkpoint to continue.

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
    plan_resume(config, Path(config.run.output_dir))  # RunDirError: another run there, or nothing to resume


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
    job = executor.submit(TrainingJob(imports), config.to_dict())
    _print_submitted(console, job, config, slurm_profile)
    if wait:
        wait_for(job, console)
    return job


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
    say(f"  follow:  tail -f {shlex.quote(str(job.paths.stdout))} {shlex.quote(str(job.paths.stderr))}")
    say(f"  status:  squeue -j {job.job_id}   (after it ends: sacct -j {job.job_id})")
    say(f"  cancel:  scancel {job.job_id}")
