"""The command line every recipe shares: ``python recipes/<name>.py [options] [key=value ...]``.

Options (see ``--help`` of any recipe):

- ``--config EXTRA.yaml`` (repeatable): merged on top of the recipe's YAML.
- ``--import MODULE`` (repeatable): a module (dotted name or ``.py`` path) of your own
  components, imported first and appended to ``run.imports`` (so SLURM jobs import it too).
- ``--data-dir DIR`` → ``data.root``; ``--output-dir DIR`` → ``run.output_dir``.
- ``--resume``: continue from ``<output_dir>/checkpoint.pt`` (a finished run is left as it is);
  an error when there is none. Without it a run directory that already holds a run is refused
  unless ``--overwrite`` is given (see :mod:`and_plugin.rundir`).
- ``--debug`` (or ``AND_DEBUG=1``): show the full traceback of an error instead of one line.
- ``--smoke``: the same recipe on the generated ``synthetic`` data set at the recipe's image size
  and channels (16 train / 8 test images, 4 classes), batch 8, one epoch per round, 2 rounds,
  one probe epoch, fp32 — every recipe runs end to end in seconds on a CPU. Its output goes to
  ``runs/smoke/<name>`` (replaced by the next ``--smoke``) unless ``--output-dir`` is given. A data
  set named on the command line (``data.dataset=NAME``) is kept instead of ``synthetic``, cut to
  the same 16 / 8 images with ``data.subset`` / ``data.test_subset``.
- ``--slurm``: submit the run as a SLURM job (:func:`and_plugin.launcher.submit`) described by
  ``--slurm-profile PATH`` (default ``slurm/profiles/local.yaml``), changed by
  ``--slurm-set key=value`` (repeatable); ``--wait`` blocks until the job ends.
- Under ``torchrun`` (``torchrun --nproc_per_node=W recipes/<name>.py ...`` or
  ``python -m torch.distributed.run --nproc_per_node=W -m and_plugin --recipe NAME ...``): every
  process joins one process group (NCCL on ``cuda:<LOCAL_RANK>`` when ``run.device`` is ``cuda``,
  or ``auto`` with GPUs; gloo on CPUs) and trains its share of every global batch; rank 0 alone
  prints and writes the run directory. ``run.threads``, when unset, is the cores this process
  may use divided by ``LOCAL_WORLD_SIZE`` (at least 1). ``--slurm`` under torchrun is an error,
  and so are more processes on a machine than its GPUs when training on GPUs.
- ``key=value`` (any number): config overrides, applied last, e.g. ``method.neighbours=5``.

Precedence, lowest first: recipe YAML, ``--config`` files, ``--smoke``, ``--data-dir`` /
``--output-dir`` / ``--resume`` / ``--overwrite``, ``key=value``.

Errors: :func:`main` (what every recipe script and ``python -m and_plugin`` call) turns every
user error — a bad key or value, malformed YAML, a run directory conflict, a missing or damaged
checkpoint or data file, a job ``sbatch`` refuses — into one line ``error: ...`` on stderr and
exit status 2; a failed
SLURM job or a diverged run exits 1 with its reason. ``--debug`` shows tracebacks.

Example:
    >>> from and_plugin.cli import recipe_config
    >>> cfg = recipe_config({"name": "demo", "data": {"dataset": "cifar10"}},
    ...                     ["--smoke", "method.neighbours=2"])
    >>> cfg.data.dataset, cfg.data.kwargs["image_size"], cfg.data.batch_size, cfg.method.neighbours
    ('synthetic', 32, 8, 2)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .config import Config, ConfigError, load_config, merge

if TYPE_CHECKING:
    from .launcher.process_group import TorchrunEnvironment

__all__ = ["SMOKE", "USER_ERRORS", "build_parser", "exit_on_error", "main", "recipe_config", "run_recipe",
           "smoke_settings"]

#: Repository root (recipes/, slurm/ live there in a checkout).
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SLURM_PROFILE = "slurm/profiles/local.yaml"
#: Sizes of a ``--smoke`` run.
SMOKE = {"train_size": 16, "test_size": 8, "num_classes": 4, "batch_size": 8, "rounds": 2}


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of every recipe."""
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Overrides are key=value with YAML values, e.g. optim.lr=0.06 eval.probe_layers=[conv5,fc]",
    )
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="extra YAML merged on top of the recipe's config (repeatable)")
    parser.add_argument("--import", action="append", default=[], dest="imports", metavar="MODULE",
                        help="module of your own components, imported first and added to run.imports (repeatable)")
    parser.add_argument("--data-dir", help="data directory (data.root)")
    parser.add_argument("--output-dir", help="run directory (run.output_dir)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from <output_dir>/checkpoint.pt (an error when there is none)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in the output directory (run.overwrite)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks (or set AND_DEBUG=1)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny synthetic run of this recipe (seconds on a CPU): checks the pipeline")
    parser.add_argument("--slurm", action="store_true", help="submit as a SLURM job (and_plugin.launcher)")
    parser.add_argument("--slurm-profile", default=DEFAULT_SLURM_PROFILE, metavar="PATH",
                        help=f"cluster profile YAML (default {DEFAULT_SLURM_PROFILE})")
    parser.add_argument("--slurm-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a profile key, e.g. nodes=2 (repeatable)")
    parser.add_argument("--wait", action="store_true", help="with --slurm: wait for the job to end")
    parser.add_argument("--version", action="version", version=f"and_plugin {__version__}")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, applied last")
    return parser


def smoke_settings(data: dict[str, Any], keep_dataset: bool = False) -> dict[str, Any]:
    """The ``--smoke`` changes for a (merged, not yet validated) recipe config mapping.

    The recipe's data set is replaced by ``synthetic`` images of the same size and channels,
    transformed by the recipe's own preset; the schedule shrinks to one epoch per round and at
    most :data:`SMOKE` ``["rounds"]`` rounds; the model, method and evaluation stay as they are.

    Args:
        data: The recipe config as a nested mapping.
        keep_dataset: Keep the data set (one named on the command line) and cut it to the smoke
            sizes with ``data.subset`` / ``data.test_subset`` instead.

    Returns:
        A mapping to merge on top of ``data``.
    """
    method = data.get("method", {}) or {}
    name = data.get("name", "and")
    smoke_data: dict[str, Any] = {"batch_size": SMOKE["batch_size"], "num_workers": 0, "gpu_resident": False}
    if keep_dataset:
        smoke_data.update(subset=SMOKE["train_size"], test_subset=SMOKE["test_size"])
    else:
        smoke_data.update(_synthetic_data(data.get("data", {}) or {}), subset=None, test_subset=None)
    return {
        "name": f"{name}-smoke",
        "data": smoke_data,
        "method": {
            "rounds": min(int(method.get("rounds", 4)), SMOKE["rounds"]),
            "neighbours": min(int(method.get("neighbours", 1)), SMOKE["train_size"] - 1),
        },
        "optim": {"epochs_per_round": 1, "round0_epochs": None},
        "eval": {"every_epochs": 0, "probe_epochs": 1},
        "run": {"output_dir": str(Path("runs") / "smoke" / str(name)), "precision": "fp32", "compile": False,
                "channels_last": False},
    }


def _synthetic_data(section: dict[str, Any]) -> dict[str, Any]:
    """``synthetic`` images of the size and channels of the section's preset, with that preset."""
    from .data import dataset_info
    from .data.transforms import get_preset

    dataset = section.get("dataset", "digits")
    preset_name = section.get("transform")
    if preset_name is None:
        try:
            preset_name = dataset_info(dataset).preset
        except ValueError as err:
            raise ConfigError(f"data.dataset: got {dataset!r}; {err}") from None
    try:
        preset = get_preset(preset_name)
    except ValueError as err:
        raise ConfigError(f"data.transform: got {preset_name!r}; {err}") from None
    return {
        "dataset": "synthetic",
        "root": None,
        "download": False,
        "transform": preset.name,
        "kwargs": {
            "image_size": preset.input_size,
            "channels": preset.channels,
            "num_classes": SMOKE["num_classes"],
            "train_size": SMOKE["train_size"],
            "test_size": SMOKE["test_size"],
        },
    }


def recipe_config(recipe: str | os.PathLike[str] | dict[str, Any], argv: list[str] | None = None) -> Config:
    """The validated config of a recipe under command-line arguments (no training).

    Args:
        recipe: The recipe's YAML path (or mapping).
        argv: Arguments as on the command line; ``sys.argv[1:]`` if None.

    Raises:
        ConfigError: A bad key, value or override; the message names key, value and what is allowed.
    """
    return _resolve(recipe, build_parser().parse_intermixed_args(argv))


def _resolve(recipe: str | os.PathLike[str] | dict[str, Any], args: argparse.Namespace) -> Config:
    from .plugins import import_modules, resolve_imports

    data = load_config(recipe).to_dict()
    for extra in args.config:
        data = load_config(extra, base=data).to_dict()
    imports = resolve_imports([*data["run"].get("imports", []), *args.imports])
    import_modules(imports)  # before anything looks a component up (the smoke preset, the checks)
    data = merge(data, {"run": {"imports": imports}})
    if args.smoke:
        named = [o.split("=", 1)[1] for o in args.overrides if o.startswith("data.dataset=")]
        smoke_view = merge(data, {"data": {"dataset": named[-1]}}) if named else data
        data = merge(data, smoke_settings(smoke_view, keep_dataset=bool(named)))
    run: dict[str, Any] = {}
    if args.smoke and not args.output_dir:
        run["overwrite"] = True  # runs/smoke/<name> is scratch space
    if args.output_dir:
        run["output_dir"] = args.output_dir
    if args.resume:
        run["resume"] = True
    if args.overwrite:
        run["overwrite"] = True
    data = merge(data, {"run": run} if run else {})
    if args.data_dir:
        data = merge(data, {"data": {"root": args.data_dir}})
    config = load_config(data, overrides=list(args.overrides))
    if config.data.dataset == "image_folder" and config.data.root is None:  # it has no default location
        raise ConfigError("data.root must be the folder of images (root/<class>/<image> or "
                          "root/<split>/<class>/<image>) when data.dataset='image_folder', e.g. --data-dir "
                          "/data/my_images, got None")
    return config


def run_recipe(config_path: str | os.PathLike[str], argv: list[str] | None = None) -> Any:
    """Runs a recipe: trains here (:func:`~and_plugin.run.run_training`) or submits to SLURM.

    Args:
        config_path: The recipe's YAML (``recipes/configs/<name>.yaml``).
        argv: Command-line arguments; ``sys.argv[1:]`` if None.

    Returns:
        The :class:`~and_plugin.trainer.FitResult`, or with ``--slurm`` the ``submitit.Job``.

    Raises:
        ConfigError: A bad key, value or override (before anything runs).
    """
    from .launcher.process_group import TorchrunEnvironment

    parser = build_parser(_recipe_description(config_path))
    args = parser.parse_intermixed_args(argv)
    torchrun = TorchrunEnvironment.from_environ()
    if torchrun is not None and args.slurm:
        raise ConfigError(
            f"--slurm: got it in a process torchrun started (WORLD_SIZE={torchrun.world_size}); allowed: "
            "--slurm from one plain python process (the SLURM job starts its own processes), or torchrun "
            "without --slurm"
        )
    config = _resolve(config_path, args)
    if args.slurm:
        from .launcher import submit

        return submit(config, profile=_profile_path(args.slurm_profile), profile_overrides=list(args.slurm_set),
                      wait=args.wait)
    if torchrun is not None:
        return _train_under_torchrun(config, torchrun)
    from .run import run_training

    return run_training(config)


def _train_under_torchrun(config: Config, env: TorchrunEnvironment) -> Any:
    """Trains as one of the processes torchrun started: joins their process group, then trains.

    The device is ``cuda:<LOCAL_RANK>`` (NCCL) when ``run.device`` is ``cuda`` or ``auto`` with
    GPUs, else ``cpu`` (gloo); an unset ``run.threads`` shares the cores among the processes of
    this machine (``cores // LOCAL_WORLD_SIZE``, at least 1). Rank 0 alone prints and writes files.

    Args:
        config: The validated run.
        env: The :class:`~and_plugin.launcher.process_group.TorchrunEnvironment` of this process.
    """
    from .launcher.process_group import local_threads, process_group
    from .run import run_training

    config.run.device = env.device(config.run.device)
    if config.run.threads is None:
        config.run.threads = local_threads(env.local_world_size)
    with process_group(config.run.device, env.world_size):
        if env.rank == 0:
            backend = "nccl" if config.run.device.startswith("cuda") else "gloo"
            print(f"torchrun: world size {env.world_size} ({env.local_world_size} process(es) on this machine), "
                  f"{backend}; rank 0 on {config.run.device} with {config.run.threads} thread(s) writes "
                  f"{config.run.output_dir}", flush=True)
        return run_training(config)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input (exit 2), not a bug: they carry a message naming the input."""
    from PIL import UnidentifiedImageError

    from .checkpoint import CheckpointError

    return (ValueError, CheckpointError, FileNotFoundError, NotADirectoryError, UnidentifiedImageError)


#: Errors printed as one line with exit status 2 (see :func:`exit_on_error`).
USER_ERRORS = ("ConfigError (bad key/value/YAML, run directory conflict, profile, a job sbatch refused)",
               "ValueError (a bad argument: the package's checks name parameter, value and what is allowed)",
               "CheckpointError", "FileNotFoundError", "NotADirectoryError",
               "PIL.UnidentifiedImageError (corrupt image)", "KeyError 'unknown <kind> ...' (unknown registered name)")


def _debug_requested(argv: list[str] | None) -> bool:
    return os.environ.get("AND_DEBUG", "") not in ("", "0") or "--debug" in (sys.argv[1:] if argv is None else argv)


def exit_on_error(function: Any, *args: Any, debug: bool = False, **kwargs: Any) -> Any:
    """Calls ``function``; a user error prints ``error: <message>`` and exits 2, a failed job or a
    diverged run prints its reason and exits 1. With ``debug`` every error keeps its traceback.

    This is the one error path of the recipes, ``python -m and_plugin`` and the launcher.
    """
    from .divergence import DivergenceError
    from .launcher.failures import JobFailedError

    if debug:
        return function(*args, **kwargs)
    try:
        return function(*args, **kwargs)
    except KeyError as err:
        message = str(err.args[0]) if err.args else ""
        if not message.startswith("unknown "):
            raise  # not a registry lookup: a bug, keep the traceback
        _user_error(message)
    except _user_errors() as err:
        _user_error(str(err))
    except (JobFailedError, DivergenceError) as err:
        print(f"error: {err}", file=sys.stderr)  # the job's own error text is in the message
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        raise SystemExit(130) from None


def _user_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)  # one line; --debug / AND_DEBUG=1 show the traceback
    raise SystemExit(2) from None


def main(config_path: str | os.PathLike[str], argv: list[str] | None = None) -> Any:
    """:func:`run_recipe` for scripts, through :func:`exit_on_error` (user errors exit 2)."""
    return exit_on_error(run_recipe, config_path, argv, debug=_debug_requested(argv))


def _profile_path(profile: str) -> str:
    """A relative profile path that is not there is looked up from the repository root."""
    path = Path(profile).expanduser()
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).is_file():
        return str(REPO_ROOT / path)
    return str(path)


def _recipe_description(config_path: str | os.PathLike[str]) -> str:
    """The comment block at the top of the recipe's YAML, shown by --help."""
    try:
        lines = Path(config_path).read_text().splitlines()
    except OSError:
        return ""
    head = []
    for line in lines:
        if not line.startswith("#"):
            break
        head.append(line[1:].strip())
    return "\n".join(head)
