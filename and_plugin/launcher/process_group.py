"""The ``torch.distributed`` process group of a run, as both launchers start it.

A SLURM job (:mod:`~and_plugin.launcher.job`) and a ``torchrun`` launch
(:func:`and_plugin.cli.run_recipe`) set up their processes the same way: one process per GPU
with NCCL on ``cuda:<local rank>``, or gloo on CPUs; the rendezvous comes from the environment
(``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``); a collective waits at most
:data:`DIST_TIMEOUT_MIN` minutes; the group is destroyed when the run ends.

Example:
    >>> from and_plugin.launcher.process_group import TorchrunEnvironment, local_threads
    >>> env = TorchrunEnvironment.from_environ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1",
    ...                                         "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"})
    >>> env.rank, env.world_size, env.local_rank, env.local_world_size
    (1, 2, 1, 2)
    >>> TorchrunEnvironment.from_environ({"PATH": "/usr/bin"}) is None
    True
    >>> local_threads(local_world_size=4, cores=16), local_threads(local_world_size=4, cores=2)
    (4, 1)
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from ..config import ConfigError

__all__ = ["DIST_TIMEOUT_MIN", "TorchrunEnvironment", "job_device", "local_threads", "process_group"]

#: Minutes torch.distributed waits in a collective before giving up (rank 0 evaluating, ...).
DIST_TIMEOUT_MIN = int(os.environ.get("AND_DIST_TIMEOUT_MIN", "60"))

#: What torchrun (``torch.distributed.run``) sets in every process it starts.
_TORCHRUN_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")


@dataclass(frozen=True)
class TorchrunEnvironment:
    """The rank layout torchrun gave this process.

    Attributes:
        rank: Global rank (``RANK``).
        world_size: Number of processes over all machines (``WORLD_SIZE``).
        local_rank: Rank on this machine (``LOCAL_RANK``): the GPU index.
        local_world_size: Processes on this machine (``LOCAL_WORLD_SIZE``; ``WORLD_SIZE`` when unset).
    """

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> TorchrunEnvironment | None:
        """The torchrun layout of ``environ`` (``os.environ`` by default), None outside torchrun.

        A process counts as started by torchrun when ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
        ``MASTER_ADDR`` are set and either ``WORLD_SIZE > 1`` or ``TORCHELASTIC_RUN_ID`` is set
        (torchrun with one process).
        """
        env = os.environ if environ is None else environ
        if not all(env.get(key) for key in _TORCHRUN_KEYS):
            return None
        try:
            world = int(env["WORLD_SIZE"])
            layout = cls(int(env["RANK"]), world, int(env["LOCAL_RANK"]), int(env.get("LOCAL_WORLD_SIZE") or world))
        except ValueError:
            raise ValueError("torchrun environment: RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be "
                             f"integers, got {({k: env.get(k) for k in (*_TORCHRUN_KEYS, 'LOCAL_WORLD_SIZE')})!r}"
                             ) from None
        if world <= 1 and not env.get("TORCHELASTIC_RUN_ID"):
            return None
        return layout

    def device(self, requested: str) -> str:
        """This process's device: ``cuda:<local_rank>`` or ``cpu`` (see :func:`job_device`).

        Raises:
            ConfigError: A GPU was asked for (``run.device`` ``cuda``, or ``auto`` on a machine
                with GPUs) and there are fewer GPUs than processes on this machine: torchrun
                does not bind one GPU to each process, so two would share one.
        """
        import torch

        device = job_device(requested, self.local_rank)
        visible = torch.cuda.device_count() if device.startswith("cuda") else 0
        if device.startswith("cuda") and self.local_world_size > visible:
            raise ConfigError(
                f"--nproc_per_node: got {self.local_world_size} processes on this machine, which has {visible} "
                f"visible GPU(s) (run.device={requested!r}); allowed: at most {visible} (one process per GPU), "
                "or run.device=cpu"
            )
        return device


def local_threads(local_world_size: int, cores: int | None = None) -> int:
    """torch CPU threads per process when ``local_world_size`` processes share this machine.

    Args:
        local_world_size: Processes on this machine.
        cores: Cores to share; default the ones this process may run on (its CPU affinity,
            ``os.cpu_count()`` where affinity is unknown).

    Returns:
        ``cores // local_world_size``, at least 1.
    """
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, local_world_size))


def job_device(requested: str, local_rank: int) -> str:
    """``cpu``, or ``cuda:<local rank>`` (modulo the visible GPUs, for one-GPU-per-task binding).

    Args:
        requested: ``run.device``: ``auto``, ``cpu`` or ``cuda[:i]`` (any CUDA request means one
            GPU per process, chosen by the local rank).
        local_rank: This process's rank on its machine.

    Raises:
        ConfigError: A CUDA device was asked for and none is visible.
    """
    import torch

    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return "cpu"
    if not torch.cuda.is_available():
        raise ConfigError(f"run.device: got {requested!r}, but this job sees no CUDA device "
                           f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
                           "ask for GPUs (the profile's gpus_per_node, or a machine with GPUs) or use run.device=cpu")
    return f"cuda:{local_rank % torch.cuda.device_count()}"


@contextlib.contextmanager
def process_group(device: str, world_size: int) -> Iterator[bool]:
    """Joins the process group from the environment (``env://``) unless it is up already.

    NCCL when ``device`` is a GPU (made this process's current device first), gloo on CPUs;
    collectives time out after :data:`DIST_TIMEOUT_MIN` minutes. A group started here is
    destroyed on exit, also after an error.

    Args:
        device: This process's device, ``cpu`` or ``cuda:<i>`` (see :func:`job_device`).
        world_size: Number of processes; with 1 nothing is started.

    Yields:
        True when the group was started here.
    """
    import torch
    import torch.distributed as dist

    started = False
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group(backend, init_method="env://", timeout=datetime.timedelta(minutes=DIST_TIMEOUT_MIN))
        started = True
    try:
        yield started
    finally:
        if started and dist.is_initialized():
            dist.destroy_process_group()
