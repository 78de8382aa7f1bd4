"""Cluster profiles: ``slurm/profiles/*.yaml`` read into a validated :class:`SlurmProfile`.

The profile's own fields are checked here (ranges, one process per GPU); the sbatch options
they become are then checked by submitit itself (its ``_make_sbatch_string``, the function
``SlurmExecutor.update_parameters`` validates with), so an option submitit does not know, or an
``additional_parameters`` entry that collides with one the profile or submitit sets, is refused
before anything is submitted.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tempfile
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._validation import check_type, require
from ..config import ConfigError, merge, parse_override, read_yaml

__all__ = ["PROFILES_DIR", "PROFILE_FIELDS", "ProfileError", "SlurmProfile", "load_profile", "resolve_profile_path"]

#: Where the bundled profiles live (``local``, ``example_gpu_cluster``).
PROFILES_DIR = Path(__file__).resolve().parents[2] / "slurm" / "profiles"


class ProfileError(ConfigError):
    """A cluster profile has a wrong key, type or value; the message names key, value and what is allowed."""


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
        """Checks every value, then lets submitit check the sbatch options; returns self.

        Raises:
            ProfileError: Naming the file, the key, the value and what is allowed.
        """

        def check(ok: bool, key: str, allowed: str) -> None:
            require(ok, f"{where}: {key}", getattr(self, key), allowed, ProfileError)

        check(self.nodes >= 1, "nodes", "an integer >= 1")
        check(self.gpus_per_node >= 0, "gpus_per_node", "an integer >= 0 (0 = CPU job)")
        check(self.tasks_per_node >= 1, "tasks_per_node", "an integer >= 1")
        check(self.cpus_per_task >= 1, "cpus_per_task", "an integer >= 1")
        check(self.mem_gb is None or self.mem_gb > 0, "mem_gb", "null or a number of GB > 0")
        check(self.timeout_min >= 1, "timeout_min", "an integer number of minutes >= 1")
        for key in ("partition", "account", "qos", "constraint", "exclude"):
            value = getattr(self, key)
            check(value is None or value.strip() != "", key, "null or a non-empty string")
        check(self.gpus_per_node == 0 or self.tasks_per_node == self.gpus_per_node, "tasks_per_node",
              f"equal to gpus_per_node={self.gpus_per_node} (the launcher runs one process per GPU)")
        for name, value in self.additional_parameters.items():
            require(isinstance(name, str) and name != "", f"{where}: additional_parameters key", name,
                    "an sbatch option name", ProfileError)
            require(not (value is None or value is False or isinstance(value, (dict, list))),
                    f"{where}: additional_parameters.{name}", value, "a string, a number or true", ProfileError)
        _check_with_submitit(self, where)
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
#: sbatch options submitit writes itself into every batch script (not settable by a profile).
_SUBMITIT_OWNED = {"job_name": "the config's name", "output": "submitit (logs go to <output_dir>/slurm/<job id>/)",
                   "error": "submitit (logs go to <output_dir>/slurm/<job id>/)", "signal": "submitit (USR2@90)",
                   "open_mode": "submitit", "array": "submitit", "ntasks": "nodes x tasks_per_node",
                   "wckey": "submitit"}


def _sbatch_options(profile: SlurmProfile) -> dict[str, Any]:
    """The profile as submitit's SlurmExecutor parameters (``timeout_min`` → ``time``, ...)."""
    from submitit.slurm.slurm import SlurmExecutor, _convert_mem

    equivalence = SlurmExecutor._equivalence_dict()
    options: dict[str, Any] = {}
    for key, value in profile.executor_parameters().items():
        name = key[len("slurm_"):] if key.startswith("slurm_") else equivalence.get(key, key)
        options[name] = _convert_mem(value) if name == "mem" else value
    return options


def _check_with_submitit(profile: SlurmProfile, where: str) -> None:
    from submitit.slurm.slurm import SlurmExecutor, _get_default_parameters, _make_sbatch_string

    options = _sbatch_options(profile)
    profile_field = {value: key for key, value in SlurmExecutor._equivalence_dict().items()}
    set_here = {name for name, value in options.items() if value is not None and name in _get_default_parameters()}
    for name, value in profile.additional_parameters.items():
        normalised = name.replace("-", "_")
        owner = _SUBMITIT_OWNED.get(normalised)
        if owner is None and normalised in set_here:
            owner = profile_field.get(normalised, normalised)
        if owner is not None:
            raise ProfileError(f"{where}: additional_parameters.{name}: got {value!r}; this option is set by "
                               f"{owner}, not by additional_parameters")
    unknown = sorted(set(options) - set(_get_default_parameters()))
    require(not unknown, f"{where}: sbatch options", unknown, "options submitit knows", ProfileError)
    try:
        with tempfile.TemporaryDirectory() as folder:
            _make_sbatch_string(command="true", folder=folder, **options)
    except (TypeError, ValueError) as error:
        raise ProfileError(f"{where}: submitit refused the sbatch options: {error}") from None


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
    data = read_yaml(file.read_text(), where, ProfileError)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: expected a mapping of profile keys at the top level, got {type(data).__name__}")
    for text in overrides or []:
        try:
            data = merge(data, parse_override(text))
        except ConfigError as error:
            if "=" in text:
                raise ProfileError(f"{where}: {error}") from None
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
        values[key] = check_type(f"{where}: {key}", value, hints[key], ProfileError)
    return SlurmProfile(**values).validate(where)
