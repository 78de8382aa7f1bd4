"""Your own components, imported by every entry point: ``run.imports`` / ``--import MODULE``.

A module of your own registers components with the registries (``@BACKBONES.register``,
``@register_dataset`` / ``@DATASETS.register``, ``@PRESETS.register``, ...). Name it in the
config's ``run.imports`` (or with the recipes' ``--import``, which appends to it) and it is
imported before anything is built: by the recipes' command line, by
:func:`~and_plugin.build.build_run` (so by :func:`~and_plugin.run.run_training` and the Python
API), and in every process of a SLURM job, because the list travels inside the config.

An entry is a dotted module name found on ``sys.path`` (``my_pkg.plugins``; add its folder to
``PYTHONPATH``) or the path of a ``.py`` file (``plugins/my_components.py``), which
:func:`resolve_imports` makes absolute so that jobs started elsewhere find it.

Example:
    >>> from and_plugin.plugins import import_modules
    >>> [m.__name__ for m in import_modules(["json"])]
    ['json']
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from .config import ConfigError

__all__ = ["import_modules", "resolve_imports"]


def resolve_imports(names: Iterable[str]) -> list[str]:
    """The entries of ``run.imports`` with ``.py`` paths made absolute (module names unchanged).

    Duplicates are dropped, the first occurrence kept.
    """
    resolved: list[str] = []
    for name in names:
        entry = str(Path(name).expanduser().resolve()) if str(name).endswith(".py") else str(name)
        if entry not in resolved:
            resolved.append(entry)
    return resolved


def import_modules(names: Iterable[str]) -> list[ModuleType]:
    """Imports each module (dotted name or ``.py`` path) once, in order.

    A ``.py`` file is imported under its file stem (``my_components``), so that pickled objects
    defined in it can be found again; importing the same file twice does nothing.

    Args:
        names: Entries of ``run.imports``.

    Returns:
        The imported modules, in order.

    Raises:
        ConfigError: When a module cannot be found: names it, with ``sys.path`` and what to do.
            An error raised *inside* your module propagates unchanged, with its traceback.
    """
    modules = []
    for name in names:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"run.imports: got {name!r}; expected module names or paths of .py files")
        modules.append(_import_file(name) if name.endswith(".py") else _import_name(name))
    return modules


def _import_name(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is None or not (name == err.name or name.startswith(err.name + ".")):
            raise  # a module that yours imports is missing: its own error says which
        searched = ", ".join(p or "." for p in sys.path[:6]) + (", ..." if len(sys.path) > 6 else "")
        raise ConfigError(
            f"run.imports: cannot import {name!r}: no module {err.name!r} on sys.path ({searched}); "
            "add the folder that holds it to PYTHONPATH, or give the path of the .py file "
            "(e.g. --import ./my_components.py)"
        ) from None


def _import_file(name: str) -> ModuleType:
    path = Path(name).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"run.imports: the file {name!r} does not exist (looked at {str(path)!r})")
    loaded = sys.modules.get(path.stem)
    if loaded is not None:
        if getattr(loaded, "__file__", None) and Path(loaded.__file__).resolve() == path:
            return loaded  # already imported, e.g. by the script that submits the job
        origin = getattr(loaded, "__file__", None) or "built in"
        raise ConfigError(
            f"run.imports: the file {name!r} is named like the already imported module {path.stem!r} "
            f"({origin}); importing it would replace that module: rename the file"
        )
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"run.imports: cannot import {name!r} (not a Python source file)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[path.stem]
        raise
    return module
