"""What runs inside a SLURM job: :class:`TrainingJob`, once per task (process).

It sets up ``torch.distributed`` from the SLURM environment when there is more than one task
(NCCL on GPUs, gloo on CPUs), picks the device (``cuda:<local rank>`` or ``cpu``) and runs
:func:`and_plugin.run.run_training`.

Run directory: the first attempt of a job with ``run.resume=false`` runs with
``run.resume="auto"`` (new if the directory is empty, which :func:`~and_plugin.launcher.submit`
checked), and a requeued attempt always with ``"auto"``, so it continues from
``<output_dir>/checkpoint.pt``; ``run.resume=true`` stays an error without a checkpoint.

Preemption and time limits: SLURM (or submitit, 90 s before the time limit) sends ``USR2``;
submitit's handler calls :meth:`TrainingJob.checkpoint` on rank 0, which hands back the same
job resuming, and runs ``scontrol requeue``. Requeueing makes SLURM end the job's processes
with SIGTERM; ``scontrol`` itself is one of them, and when the TERM reached it before it had
exited the handler failed (``CalledProcessError ... died with SIGTERM``), the job wrote a
failure result and was reported lost although it was requeued. :func:`harden_requeue` runs
``scontrol requeue`` with SIGTERM ignored and lets a second USR2 during the requeue be logged
instead of starting another one.
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import submitit

from ..config import config_from_dict, merge

__all__ = ["DIST_TIMEOUT_MIN", "TrainingJob", "harden_requeue", "import_user_modules"]

#: Minutes torch.distributed waits in a collective before giving up (rank 0 evaluating, ...).
DIST_TIMEOUT_MIN = int(os.environ.get("AND_DIST_TIMEOUT_MIN", "60"))


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
        import torch
        import torch.distributed as dist

        from ..run import run_training

        harden_requeue()
        import_user_modules(self.imports)
        config = config_from_dict(_first_attempt(config_dict))
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
            resumed_from = _checkpoint_position(Path(config.run.output_dir)) if config.run.resume else None
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
        return submitit.helpers.DelayedSubmission(self, _requeued(config_dict), *args, **kwargs)


def _ignore_sigterm() -> None:  # runs in the child between fork and exec; SIG_IGN survives exec
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def harden_requeue() -> bool:
    """Makes submitit's preemption handler of this process robust to the signals of a requeue.

    Two races lost a requeued job: (1) ``scontrol requeue`` makes SLURM SIGTERM every process
    of the job, the ``scontrol`` child included, which then died before reporting success;
    (2) the preempting SIGTERM/USR2 pair arrives in either order, and a second USR2 while the
    handler is still requeueing started another ``scontrol requeue`` of a job already leaving.
    Here ``scontrol`` runs with SIGTERM ignored (it exits by itself once the request is made),
    and the handler runs once per process: later USR2s are logged and ignored.

    Returns:
        True if submitit's handler was found and hardened (inside a submitit SLURM job).
    """
    from submitit.core.job_environment import SignalHandler

    usr_sig = signal.SIGUSR2
    handler = signal.getsignal(usr_sig)
    owner = getattr(handler, "__self__", None)
    if not isinstance(owner, SignalHandler) or getattr(owner, "_and_hardened", False):
        return False
    env = owner.env

    def requeue(countdown: int) -> None:
        subprocess.check_call(["scontrol", "requeue", str(env.job_id)], timeout=60, preexec_fn=_ignore_sigterm)
        owner._logger.info(f"Requeued job {env.job_id} ({countdown} remaining timeouts)")

    def once(signum: int, frame: Any) -> None:
        signal.signal(signum, owner.bypass)  # a second USR2 during the requeue is only logged
        owner.checkpoint_and_try_requeue(signum, frame)

    env._requeue = requeue  # the instance of this process only
    owner._and_hardened = True
    signal.signal(usr_sig, once)
    return True


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
