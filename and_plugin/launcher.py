"""Launch training onto SLURM with submitit: data-parallel, one memory bank, safe to requeue.

Three pieces:

- :func:`load_profile` reads a cluster profile (``slurm/profiles/*.yaml``) into a validated
  :class:`SlurmProfile`; ``key=value`` overrides (``nodes=4``) are applied first.
- :class:`TrainingJob` is what runs inside the job, once per task (process). It sets up
  ``torch.distributed`` from the SLURM environment when there is more than one task (NCCL on
  GPUs, gloo on CPUs), picks the device (``cuda:<local rank>`` or ``cpu``) and runs
  :func:`and_plugin.run.run_training` with ``run.resume`` forced on, so a job that is requeued
  (preemption, time limit, node failure) continues from ``<output_dir>/checkpoint.pt``.
- :func:`submit` checks the config and the data directory locally, then submits one job with
  ``nodes x tasks_per_node`` processes and prints where to follow it.

Preemption and time limits: SLURM (or submitit, 90 s before the time limit) sends ``USR2``;
submitit calls :meth:`TrainingJob.checkpoint` on rank 0, which hands back the same job with
``run.resume=true``, and requeues it. The trainer writes an atomic checkpoint after every epoch,
so the requeued job continues from the last finished epoch; the interrupted epoch is redone
identically (the shuffling and augmentation of an epoch depend on (seed, round, epoch, rank) only).

Example:
    >>> from and_plugin.launcher import load_profile
    >>> profile = load_profile("local", ["cpus_per_task=2"])  # slurm/profiles/local.yaml
    >>> profile.partition, profile.cpus_per_task, profile.world_size
    ('debug', 2, 1)
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import functools
import os
import re
import shlex
import shutil
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit
import yaml

from .config import Config, ConfigError, _coerce, config_from_dict, merge, parse_override

#: Where the bundled profiles live (``local``, ``example_gpu_cluster``).
PROFILES_DIR = Path(__file__).resolve().parents[1] / "slurm" / "profiles"
#: Data sets that need no files (generated or shipped with a package).
FILELESS_DATASETS = frozenset({"digits", "synthetic"})
#: Minutes torch.distributed waits in a collective before giving up (rank 0 evaluating, ...).
DIST_TIMEOUT_MIN = int(os.environ.get("AND_DIST_TIMEOUT_MIN", "60"))


class ProfileError(ConfigError):
    """A cluster profile has a wrong key, type or value; the message names key, value and what is allowed."""


class JobFailedError(RuntimeError):
    """A submitted job failed; the message carries the job's error text (the end of its stderr)."""


# --------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------


@dataclass
class SlurmProfile:
    """Where and how a job runs on a SLURM cluster (one YAML file in ``slurm/profiles/``).

    Attributes:
        partition: Partition (queue), ``sbatch --partition``; None = the cluster's default.
        nodes: Number of nodes, ``--nodes``.
        gpus_per_node: GPUs per node, ``--gpus-per-node``; 0 = a CPU job (gloo).
        tasks_per_node: Processes per node, ``--ntasks-per-node``; one per GPU on GPU jobs.
        cpus_per_task: CPU cores per process, ``--cpus-per-task`` (data-loading workers and
            torch threads; the job sets ``torch.set_num_threads`` to it unless ``run.threads``).
        mem_gb: Memory per node in GB, ``--mem``; None = the cluster's default.
        timeout_min: Wall-clock limit in minutes, ``--time``. The job is signalled 90 s before,
            checkpoints and is requeued, so long trainings may use a short limit.
        account: Account charged, ``--account``; None = the user's default.
        qos: Quality of service, ``--qos``; None = the partition's default.
        constraint: Required node features, ``--constraint`` (e.g. ``a100``); None = any.
        exclude: Nodes never to use, ``--exclude`` (a SLURM hostlist); None = none.
        additional_parameters: Any other sbatch option as ``{name: value}`` → ``--name=value``
            (``true`` gives a bare flag such as ``--exclusive``).
        setup: Shell lines run in the batch script before the processes start (module loads,
            environment activation, exports).
    """

    partition: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int = 1
    cpus_per_task: int = 1
    mem_gb: float | None = None
    timeout_min: int = 60
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    exclude: str | None = None
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)

    @property
    def world_size(self) -> int:
        """Total number of processes: nodes x tasks_per_node."""
        return self.nodes * self.tasks_per_node

    def validate(self, where: str = "slurm profile") -> SlurmProfile:
        """Checks every value; returns self. Raises :class:`ProfileError`."""

        def require(ok: bool, key: str, allowed: str) -> None:
            if not ok:
                raise ProfileError(f"{where}: {key}: got {getattr(self, key)!r}, expected {allowed}")

        require(self.nodes >= 1, "nodes", "an integer >= 1")
        require(self.gpus_per_node >= 0, "gpus_per_node", "an integer >= 0 (0 = CPU job)")
        require(self.tasks_per_node >= 1, "tasks_per_node", "an integer >= 1")
        require(self.cpus_per_task >= 1, "cpus_per_task", "an integer >= 1")
        require(self.mem_gb is None or self.mem_gb > 0, "mem_gb", "null or a number of GB > 0")
        require(self.timeout_min >= 1, "timeout_min", "an integer number of minutes >= 1")
        for key in ("partition", "account", "qos", "constraint", "exclude"):
            value = getattr(self, key)
            require(value is None or value.strip() != "", key, "null or a non-empty string")
        if self.gpus_per_node > 0 and self.tasks_per_node != self.gpus_per_node:
            raise ProfileError(
                f"{where}: tasks_per_node: got {self.tasks_per_node} with gpus_per_node={self.gpus_per_node}, "
                f"expected {self.gpus_per_node} (the launcher runs one process per GPU)"
            )
        owned = {
            "partition": "partition", "p": "partition", "nodes": "nodes", "N": "nodes",
            "ntasks_per_node": "tasks_per_node", "cpus_per_task": "cpus_per_task", "c": "cpus_per_task",
            "gpus_per_node": "gpus_per_node", "mem": "mem_gb", "time": "timeout_min", "t": "timeout_min",
            "account": "account", "A": "account", "qos": "qos", "q": "qos", "constraint": "constraint",
            "C": "constraint", "exclude": "exclude", "x": "exclude", "job_name": "the config's name",
            "J": "the config's name", "output": "submitit (logs go to <output_dir>/slurm/<job id>/)",
            "error": "submitit (logs go to <output_dir>/slurm/<job id>/)", "signal": "submitit (USR2@90)",
            "ntasks": "nodes x tasks_per_node",
        }  # fmt: skip
        for name, value in self.additional_parameters.items():
            if not isinstance(name, str) or not name:
                raise ProfileError(f"{where}: additional_parameters: got key {name!r}, expected an sbatch option name")
            normalised = name.replace("-", "_")
            if normalised in owned:
                raise ProfileError(
                    f"{where}: additional_parameters.{name}: got {value!r}; this option is set by "
                    f"{owned[normalised]}, not by additional_parameters"
                )
            if value is None or value is False or isinstance(value, (dict, list)):
                raise ProfileError(
                    f"{where}: additional_parameters.{name}: got {value!r}, expected a string, a number or true"
                )
        return self

    def executor_parameters(self) -> dict[str, Any]:
        """The keyword arguments of ``submitit.AutoExecutor.update_parameters`` for this profile."""
        params: dict[str, Any] = {
            "nodes": self.nodes,
            "tasks_per_node": self.tasks_per_node,
            "cpus_per_task": self.cpus_per_task,
            "gpus_per_node": self.gpus_per_node,
            "timeout_min": self.timeout_min,
            "slurm_additional_parameters": dict(self.additional_parameters),
            "slurm_setup": list(self.setup),
        }
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        for key in ("partition", "account", "qos", "constraint", "exclude"):
            value = getattr(self, key)
            if value is not None:
                params[f"slurm_{key}"] = value
        return params


PROFILE_FIELDS = tuple(f.name for f in dataclasses.fields(SlurmProfile))


def resolve_profile_path(profile: str | os.PathLike[str]) -> Path:
    """A profile file, or the name of a bundled one (``local`` → ``slurm/profiles/local.yaml``)."""
    path = Path(profile).expanduser()
    if path.is_file():
        return path
    for candidate in (PROFILES_DIR / f"{profile}.yaml", PROFILES_DIR / str(profile)):
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml")) if PROFILES_DIR.is_dir() else []
    raise ProfileError(
        f"slurm profile {str(profile)!r} does not exist; give a YAML file"
        + (f" or one of the bundled profiles {known} ({PROFILES_DIR})" if known else "")
    )


def load_profile(path: str | os.PathLike[str], overrides: list[str] | None = None) -> SlurmProfile:
    """Reads a cluster profile and applies ``key=value`` overrides.

    Args:
        path: A YAML file, or the name of a bundled profile (``local``, ``example_gpu_cluster``).
        overrides: ``["nodes=4", "timeout_min=600", "additional_parameters.exclusive=true"]``;
            values are parsed as YAML.

    Returns:
        The validated :class:`SlurmProfile`. Keys missing from the file keep their defaults.

    Raises:
        ProfileError: A missing file, an unknown key, a value of the wrong type or out of range;
            the message names the key, the value and what is allowed.
    """
    file = resolve_profile_path(path)
    where = f"slurm profile {str(file)!r}"
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as error:
        raise ProfileError(f"{where}: not valid YAML: {error}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: expected a mapping of profile keys at the top level, got {type(data).__name__}")
    for text in overrides or []:
        try:
            data = merge(data, parse_override(text))
        except ConfigError:
            raise ProfileError(
                f"{where}: override {text!r}: expected key=value, e.g. nodes=4; allowed keys: {list(PROFILE_FIELDS)}"
            ) from None
    hints = typing.get_type_hints(SlurmProfile)
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in PROFILE_FIELDS:
            close = difflib.get_close_matches(str(key), PROFILE_FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ProfileError(f"{where}: {key}: unknown key{hint}; allowed keys: {list(PROFILE_FIELDS)}")
        if key == "additional_parameters" and value is None:
            value = {}
        if key == "setup" and value is None:
            value = []
        try:
            values[key] = _coerce(key, value, hints[key])
        except ConfigError as error:
            raise ProfileError(f"{where}: {error}") from None
    return SlurmProfile(**values).validate(where)


# --------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------


def _with_resume(config_dict: dict[str, Any]) -> dict[str, Any]:
    return merge(config_dict, {"run": {"resume": True}})


class TrainingJob(submitit.helpers.Checkpointable):
    """The callable submitted to SLURM: one call per task (process) of the job.

    Args:
        imports: Modules to import in the job before the run is built, e.g. the module that
            registers your own backbone or data set with ``@BACKBONES.register(...)``.
            Dotted module names, or paths to ``.py`` files.

    Calling it with a config mapping (``Config.to_dict()``) trains and returns, on rank 0,
    ``{"output_dir", "rounds": [{"round", "knn", "knn_bank", "anchors", ...}], "final_knn",
    "job_id", "restarts", "resumed_from", "world_size", "device"}`` (``resumed_from`` is the
    (round index, epoch) position of the checkpoint the job continued from, None when fresh).
    """

    def __init__(self, imports: list[str] | tuple[str, ...] = ()) -> None:
        self.imports = list(imports)

    def __call__(self, config_dict: dict[str, Any]) -> dict[str, Any]:
        import torch
        import torch.distributed as dist

        from .run import run_training

        _import_user_modules(self.imports)
        config = config_from_dict(_with_resume(config_dict))
        env = _job_environment()
        world = env.num_tasks if env is not None else 1
        local_rank = env.local_rank if env is not None else 0
        if config.run.threads is None and os.environ.get("SLURM_CPUS_PER_TASK"):
            # Without cgroups torch would use every core of the node in every process.
            config.run.threads = int(os.environ["SLURM_CPUS_PER_TASK"])
        device = _job_device(config.run.device, local_rank)
        config.run.device = device
        initialised_here = False
        if world > 1 and not dist.is_initialized():
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
            backend = "nccl" if device.startswith("cuda") else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(torch.device(device))
            dist.init_process_group(backend, init_method="env://",
                                    timeout=datetime.timedelta(minutes=DIST_TIMEOUT_MIN))
            initialised_here = True
        try:
            resumed_from = _checkpoint_position(Path(config.run.output_dir))
            result = run_training(config)  # build_run draws the initial weights from run.seed
        finally:
            if initialised_here and dist.is_initialized():
                dist.destroy_process_group()
        return {
            "output_dir": result.output_dir,
            "rounds": [dict(record) for record in result.rounds],
            "final_knn": result.final_knn,
            "job_id": os.environ.get("SLURM_JOB_ID"),
            "restarts": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
            "resumed_from": resumed_from,
            "world_size": world,
            "device": device,
            "linear_probe": dict(getattr(result, "linear_probe", None) or {}),
        }

    def checkpoint(self, config_dict: dict[str, Any], *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on rank 0 at preemption / time-out: the same job, resuming.

        The state itself is the trainer's last epoch checkpoint in ``output_dir``; nothing is
        saved here (a save in the signal handler could catch the model mid-step).
        """
        return submitit.helpers.DelayedSubmission(self, _with_resume(config_dict), *args, **kwargs)


def _job_environment() -> Any:
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None  # called directly, outside a submitit job
    return submitit.JobEnvironment()


def _job_device(requested: str, local_rank: int) -> str:
    """``cpu``, or ``cuda:<local rank>`` (modulo the visible GPUs, for one-GPU-per-task binding)."""
    import torch

    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return "cpu"
    if not torch.cuda.is_available():
        raise RuntimeError(f"run.device: got {requested!r}, but this job sees no CUDA device "
                           f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
                           "ask the profile for GPUs (gpus_per_node) or use run.device=cpu")
    return f"cuda:{local_rank % torch.cuda.device_count()}"


def _checkpoint_position(output_dir: Path) -> list[int] | None:
    from .checkpoint import load_checkpoint
    from .trainer import CHECKPOINT_NAME

    path = output_dir / CHECKPOINT_NAME
    if not path.is_file():
        return None
    return list(load_checkpoint(path)["position"])


def _import_user_modules(imports: list[str]) -> None:
    from .plugins import import_modules

    import_modules(imports)


# --------------------------------------------------------------------------------------------
# Submission
# --------------------------------------------------------------------------------------------


def check_before_submit(config: Config, profile: SlurmProfile) -> None:
    """Fails fast, locally, with the reason: an invalid config, a missing data directory, a
    batch that does not split over the processes, an unknown backbone or data set, or an output
    directory holding another run's checkpoint.

    Raises:
        ConfigError: For config problems.
        FileNotFoundError: For a missing data directory.
    """
    from . import backbones, data  # noqa: F401  (fill the registries)
    from .data import default_root
    from .registry import BACKBONES, DATASETS
    from .trainer import CHECKPOINT_NAME

    config.validate()
    if not config.model.backbone.startswith("torchvision:"):
        BACKBONES.get(config.model.backbone)
    world = profile.world_size
    if config.data.batch_size % world:
        raise ConfigError(
            f"data.batch_size: got {config.data.batch_size}, expected a multiple of the number of processes "
            f"{world} (nodes {profile.nodes} x tasks_per_node {profile.tasks_per_node}); each takes an equal share"
        )
    if profile.gpus_per_node == 0 and config.run.device.startswith("cuda"):
        raise ConfigError(f"run.device: got {config.run.device!r}, but the profile asks for no GPUs (gpus_per_node=0)")
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
    checkpoint = Path(config.run.output_dir) / CHECKPOINT_NAME
    if checkpoint.exists() and not config.run.resume:
        raise ConfigError(
            f"run.output_dir: {str(checkpoint.parent)!r} already holds a checkpoint ({CHECKPOINT_NAME}); the job "
            "always resumes from it, so pass run.resume=true to continue that run, or choose another run.output_dir"
        )


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
    from .plugins import resolve_imports

    config.run.imports = imports = resolve_imports([*config.run.imports, *(imports or [])])  # travel with the config
    _import_user_modules(imports)  # here too: they must import, and they register what the checks look up
    check_before_submit(config, slurm_profile)
    if shutil.which("sbatch") is None:
        raise RuntimeError(
            "sbatch is not on PATH: submit from a SLURM login node, or start the local test cluster "
            "(bash slurm/local_cluster.sh install && bash slurm/local_cluster.sh start)"
        )
    folder = Path(folder) if folder is not None else Path(config.run.output_dir) / "slurm" / "%j"
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    executor.update_parameters(
        name=config.name,
        slurm_srun_args=["--kill-on-bad-exit=1"],  # one failing rank ends the job instead of hanging the others
        **slurm_profile.executor_parameters(),
    )
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


def _stderr_tail(path: Path, lines: int) -> str:
    if not path.is_file():
        return f"(no stderr file at {path})"
    tail = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(tail) if tail else f"(stderr {path} is empty)"


def error_text(job: submitit.Job, lines: int = 40) -> str:
    """The end of the job's stderr: rank 0's, and that of every other task that raised.

    With several tasks the first failure may be on any rank (the others then only report a lost
    connection), so each task whose log holds a traceback is shown, headed by its rank.
    """
    if job.num_tasks == 1:
        return _stderr_tail(Path(job.paths.stderr), lines)
    parts = []
    for rank in range(job.num_tasks):
        path = Path(job.task(rank).paths.stderr)
        text = path.read_text(errors="replace") if path.is_file() else ""
        if rank == 0 or "Traceback" in text:
            parts.append(f"--- task {rank}: {path} ---\n{_stderr_tail(path, lines)}")
    return "\n".join(parts)


def _failure_reason(text: str, fallback: str) -> str:
    """The exception line of a traceback (``ValueError: ...``), else the last line."""
    # torch.distributed prefixes every line of a rank's traceback with "[rank<r>]:"
    lines = [re.sub(r"^\[rank\d+\]:\s*", "", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("--- task")]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head and " " not in head and (head.endswith(("Error", "Exception", "Interrupt")) or head == "Exit"):
            return line
    return lines[-1] if lines else fallback


def job_result(job: submitit.Job) -> Any:
    """The result of rank 0 of a job with one or several tasks (raises the job's error).

    Only rank 0's result is read: after a requeue the other ranks' result files may still be
    those of the interrupted attempt (which lost its connection to rank 0) until they finish.
    """
    return job.task(0).result()


def wait_for(job: submitit.Job, console: Any = None, poll_s: float = 2.0) -> Any:
    """Waits for ``job`` and returns its (rank 0) result; on failure prints its stderr tail and raises.

    Raises:
        JobFailedError: Naming the job and the error, and carrying the end of its stderr.
    """
    from rich.console import Console
    from rich.panel import Panel
    from rich.text import Text

    console = console or Console(stderr=True)
    last_state = None
    while not job.done():
        state = job.state
        if state != last_state:
            console.print(f"job {job.job_id}: {state}", markup=False)
            last_state = state
        time.sleep(poll_s)
    try:
        result = job_result(job)
    except Exception as error:  # submitit's FailedJobError / UncompletedJobError
        text = error_text(job)
        reason = _failure_reason(text, f"{type(error).__name__}: {error}")
        console.print(Panel(Text(text), title=f"job {job.job_id} failed: end of its stderr", border_style="red"))
        console.print(f"job {job.job_id} failed: {reason}", style="bold red", markup=False, soft_wrap=True)
        raise JobFailedError(f"SLURM job {job.job_id} failed: {reason}\nEnd of its stderr:\n{text}") from error
    console.print(f"job {job.job_id} finished: {_summary(result)}", style="bold green", markup=False, soft_wrap=True)
    return result


def _summary(result: Any) -> str:
    if isinstance(result, dict) and "rounds" in result:
        knn = ", ".join(
            f"round {r.get('round')}: {r['knn']:.4f}" for r in result["rounds"] if isinstance(r.get("knn"), float)
        )
        return f"kNN top-1 {knn or 'n/a'}; output in {result.get('output_dir')}"
    return repr(result)


__all__ = [
    "PROFILE_FIELDS",
    "JobFailedError",
    "ProfileError",
    "SlurmProfile",
    "TrainingJob",
    "check_before_submit",
    "error_text",
    "job_result",
    "load_profile",
    "resolve_profile_path",
    "submit",
    "wait_for",
]
