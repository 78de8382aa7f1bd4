"""Launch training onto SLURM with submitit: data-parallel, one memory bank, safe to requeue.

One module per concern:

- :mod:`~and_plugin.launcher.profile`: :func:`load_profile` reads a cluster profile
  (``slurm/profiles/*.yaml``) into a validated :class:`SlurmProfile` (``key=value`` overrides
  such as ``nodes=4`` applied first; the sbatch options are checked by submitit itself).
- :mod:`~and_plugin.launcher.job`: :class:`TrainingJob`, what runs inside the job once per task
  (process): ``torch.distributed`` from the SLURM environment, the device, then
  :func:`and_plugin.run.run_training`; a requeued job (preemption, time limit, node failure)
  continues from ``<output_dir>/checkpoint.pt``.
- :mod:`~and_plugin.launcher.submission`: :func:`submit` checks the config, the data directory
  and the run directory locally, then submits one job with ``nodes x tasks_per_node`` processes
  and prints where to follow it.
- :mod:`~and_plugin.launcher.failures`: :func:`wait_for` / :func:`job_result`; a failed job
  raises :class:`JobFailedError` with its reason and the end of its stderr.

Preemption and time limits: SLURM (or submitit, 90 s before the time limit) sends ``USR2``;
submitit calls :meth:`TrainingJob.checkpoint` on rank 0, which hands back the same job resuming,
and requeues it (robustly to the SIGTERM the requeue itself sends, see
:func:`~and_plugin.launcher.job.harden_requeue`). The trainer writes an atomic checkpoint after
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
from .job import DIST_TIMEOUT_MIN, TrainingJob, harden_requeue
from .profile import PROFILE_FIELDS, PROFILES_DIR, ProfileError, SlurmProfile, load_profile, resolve_profile_path
from .submission import FILELESS_DATASETS, check_before_submit, submit

__all__ = [
    "DIST_TIMEOUT_MIN",
    "FILELESS_DATASETS",
    "PROFILES_DIR",
    "PROFILE_FIELDS",
    "JobFailedError",
    "ProfileError",
    "SlurmProfile",
    "TrainingJob",
    "check_before_submit",
    "error_text",
    "harden_requeue",
    "job_result",
    "load_profile",
    "resolve_profile_path",
    "submit",
    "wait_for",
]
