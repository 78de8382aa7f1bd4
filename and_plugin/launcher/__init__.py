"""Launch training onto SLURM with submitit: data-parallel, one memory bank, safe to requeue.

One module per concern:

- :mod:`~and_plugin.launcher.profile`: :func:`load_profile` reads a cluster profile
  (``slurm/profiles/*.yaml``) into a validated :class:`SlurmProfile` (``key=value`` overrides
  such as ``nodes=4`` applied first; the sbatch options are checked by submitit itself).
- :mod:`~and_plugin.launcher.job`: :class:`TrainingJob`, what runs inside the job once per task
  (process): ``torch.distributed`` from the SLURM environment, the device, then
  :func:`and_plugin.run.run_training`; a requeued job (preemption, time limit, node failure, an
  administrator's ``scontrol requeue``) continues from ``<output_dir>/checkpoint.pt``.
- :mod:`~and_plugin.launcher.process_group`: the ``torch.distributed`` process group from the
  environment (NCCL on ``cuda:<local rank>``, gloo on CPUs, :data:`DIST_TIMEOUT_MIN`), shared by
  the SLURM job and by ``torchrun`` launches of the recipes (:func:`and_plugin.cli.run_recipe`).
- :mod:`~and_plugin.launcher.preemption`: the ``USR2`` handler; only the job's main process acts
  on it, outside the handler (DataLoader workers ignore it), and "already requeued" is success.
- :mod:`~and_plugin.launcher.joblog`: a line per epoch, and where the attempt started, in the
  job's stdout.
- :mod:`~and_plugin.launcher.submission`: :func:`submit` checks the config, the data (its size
  against the batch and ``method.neighbours``) and the run directory locally, then submits one
  job with ``nodes x tasks_per_node`` processes and prints where to follow it; a job ``sbatch``
  refuses raises :class:`SubmissionError` and leaves no files behind.
- :mod:`~and_plugin.launcher.failures`: :func:`wait_for` / :func:`job_result`; a failed job
  raises :class:`JobFailedError` with its reason and the end of its stderr.

Preemption and time limits: SLURM (or submitit, 90 s before the time limit) sends ``USR2`` to
every process of the job. Rank 0's main process writes submitit's checkpoint (the same job,
resuming), runs ``scontrol requeue`` and ends; the trainer writes an atomic checkpoint after
every epoch, so the requeued job continues from the last finished epoch; the interrupted epoch
is redone identically (the shuffling and augmentation of an epoch depend on (seed, round,
epoch, rank) only).

Example:
    >>> from and_plugin.launcher import load_profile
    >>> profile = load_profile("local", ["cpus_per_task=2"])  # slurm/profiles/local.yaml
    >>> profile.partition, profile.cpus_per_task, profile.world_size
    ('debug', 2, 1)
"""

from __future__ import annotations

from .failures import JobFailedError, error_text, job_result, wait_for
from .job import TrainingJob, harden_requeue
from .joblog import EpochLog
from .preemption import PreemptionHandler, RequeueError, install_preemption_handler, requeue_job
from .process_group import DIST_TIMEOUT_MIN, TorchrunEnvironment, process_group
from .profile import PROFILE_FIELDS, PROFILES_DIR, ProfileError, SlurmProfile, load_profile, resolve_profile_path
from .submission import FILELESS_DATASETS, SubmissionError, check_before_submit, submit

__all__ = [
    "DIST_TIMEOUT_MIN",
    "FILELESS_DATASETS",
    "PROFILES_DIR",
    "PROFILE_FIELDS",
    "EpochLog",
    "JobFailedError",
    "PreemptionHandler",
    "ProfileError",
    "RequeueError",
    "SlurmProfile",
    "SubmissionError",
    "TorchrunEnvironment",
    "TrainingJob",
    "check_before_submit",
    "error_text",
    "harden_requeue",
    "install_preemption_handler",
    "job_result",
    "load_profile",
    "process_group",
    "requeue_job",
    "resolve_profile_path",
    "submit",
    "wait_for",
]
