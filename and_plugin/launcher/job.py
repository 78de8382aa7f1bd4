"""What runs inside a SLURM job: :class:`TrainingJob`, once per task (process).

It sets up ``torch.distributed`` from the SLURM environment when there is more than one task
(NCCL on GPUs, gloo on CPUs; :mod:`~and_plugin.launcher.process_group`, shared with torchrun
launches), picks the device (``cuda:<local rank>`` or ``cpu``) and runs
:func:`and_plugin.run.run_training`, printing a line per epoch to the job's stdout
(:mod:`~and_plugin.launcher.joblog`).

Run directory: the first attempt of a job with ``run.resume=false`` runs with
``run.resume="auto"`` (new if the directory is empty, which :func:`~and_plugin.launcher.submit`
checked). Every requeued attempt (``SLURM_RESTART_COUNT > 0``) runs with ``run.resume="auto"``
and ``run.overwrite=false``, whoever requeued it: submitit's checkpoint hands back the resuming
config, but ``scontrol requeue`` by an administrator, or SLURM after a node failure, re-runs
the original pickle, whose ``run.overwrite=true`` (``--overwrite``, ``--smoke``) would otherwise
wipe the run and start again from epoch 0. ``run.resume=true`` stays an error without a checkpoint.

Preemption and time limits: see :mod:`~and_plugin.launcher.preemption` (only the job's main
process acts on ``USR2``, outside the signal handler; DataLoader workers ignore it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import submitit

from ..config import config_from_dict, merge
from .joblog import EpochLog, start_line
from .preemption import install_preemption_handler
from .process_group import DIST_TIMEOUT_MIN, job_device, process_group

__all__ = ["DIST_TIMEOUT_MIN", "TrainingJob", "harden_requeue", "import_user_modules", "install_preemption_handler"]


def _first_attempt(config_dict: dict[str, Any]) -> dict[str, Any]:
    run = config_dict.get("run", {}) or {}
    if run.get("resume", False) is False and not run.get("overwrite", False):
        return merge(config_dict, {"run": {"resume": "auto"}})
    return config_dict


def _requeued(config_dict: dict[str, Any]) -> dict[str, Any]:
    return merge(config_dict, {"run": {"resume": "auto", "overwrite": False}})


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
        import torch.distributed as dist

        from ..run import run_training

        install_preemption_handler()  # before any DataLoader worker is forked
        import_user_modules(self.imports)
        restarts = _restart_count()
        config = config_from_dict(_requeued(config_dict) if restarts > 0 else _first_attempt(config_dict))
        env = _job_environment()
        world = env.num_tasks if env is not None else 1
        local_rank = env.local_rank if env is not None else 0
        if config.run.threads is None and os.environ.get("SLURM_CPUS_PER_TASK"):
            # Without cgroups torch would use every core of the node in every process.
            config.run.threads = int(os.environ["SLURM_CPUS_PER_TASK"])
        device = job_device(config.run.device, local_rank)
        config.run.device = device
        if world > 1 and not dist.is_initialized():
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        with process_group(device, world):
            resumed_from = _checkpoint_position(Path(config.run.output_dir)) if config.run.resume else None
            if env is not None and env.global_rank == 0:  # the job's stdout, the log users follow
                from ..trainer import round_plan

                print(start_line(round_plan(config), resumed_from, config.run.output_dir, restarts), flush=True)
            # build_run draws the initial weights from run.seed
            result = run_training(config, callbacks=[EpochLog()] if env is not None else None)
        return {
            "output_dir": result.output_dir,
            "rounds": [dict(record) for record in result.rounds],
            "final_knn": result.final_knn,
            "job_id": os.environ.get("SLURM_JOB_ID"),
            "restarts": restarts,
            "resumed_from": resumed_from,
            "world_size": world,
            "device": device,
            "linear_probe": dict(getattr(result, "linear_probe", None) or {}),
        }

    def checkpoint(self, config_dict: dict[str, Any], *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called on rank 0 at preemption / time-out, outside the signal handler
        (:mod:`~and_plugin.launcher.preemption`): the same job, resuming.

        The state itself is the trainer's last epoch checkpoint in ``output_dir``; nothing is
        saved here (the model may be mid-step).
        """
        return submitit.helpers.DelayedSubmission(self, _requeued(config_dict), *args, **kwargs)


#: The name earlier versions used for :func:`~and_plugin.launcher.preemption.install_preemption_handler`.
harden_requeue = install_preemption_handler


def _restart_count() -> int:
    """``SLURM_RESTART_COUNT``: 0 on the first attempt, n after n requeues."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def _job_environment() -> Any:
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None  # called directly, outside a submitit job
    return submitit.JobEnvironment()


_job_device = job_device  # the name earlier versions used


def _checkpoint_position(output_dir: Path) -> list[int] | None:
    from ..checkpoint import load_checkpoint
    from ..rundir import CHECKPOINT_NAME

    path = output_dir / CHECKPOINT_NAME
    if not path.is_file():
        return None
    return list(load_checkpoint(path)["position"])


def import_user_modules(imports: list[str]) -> None:
    """Imports dotted module names or ``.py`` files (user components register themselves)."""
    from ..plugins import import_modules

    import_modules(imports)


_import_user_modules = import_user_modules  # the name earlier versions used
