"""``python -m and_plugin --recipe NAME [recipe options]``: run a recipe of this checkout by name.

``python -m and_plugin --list`` lists the recipes (``recipes/configs/*.yaml`` of a checkout; an
installed wheel carries the same files as ``and_plugin/recipes/``), ``--version`` prints the
version. Every other
argument goes to the recipe's command line (see :mod:`and_plugin.cli`), e.g.
``python -m and_plugin --recipe cifar10_alexnet --smoke``, or with components of your own
``python -m and_plugin --recipe cifar10_alexnet --smoke --import my_components model.backbone=my_net``
(``--import`` is the recipes' option: see :mod:`and_plugin.plugins`).
Under torchrun, ``python -m torch.distributed.run --nproc_per_node=W -m and_plugin --recipe NAME ...``
trains with W processes on this machine (see :mod:`and_plugin.cli`).

Errors take the recipes' path (:func:`and_plugin.cli.exit_on_error`): a user error prints one
line and exits 2; ``--debug`` (or ``AND_DEBUG=1``) shows the traceback.
"""

from __future__ import annotations

import argparse
import sys

from pathlib import Path

from ._version import __version__
from .cli import REPO_ROOT, main

#: The recipes' YAML files: in a checkout ``recipes/configs``, in an installed wheel the copy
#: packaged as ``and_plugin/recipes`` (see setup.py).
RECIPE_CONFIGS = next(
    (d for d in (Path(__file__).resolve().parent / "recipes", REPO_ROOT / "recipes" / "configs") if d.is_dir()),
    REPO_ROOT / "recipes" / "configs",
)


def _entry(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m and_plugin", add_help=False)
    parser.add_argument("--recipe")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--version", action="version", version=f"and_plugin {__version__}")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    known = sorted(p.stem for p in RECIPE_CONFIGS.glob("*.yaml")) if RECIPE_CONFIGS.is_dir() else []
    if args.list or not args.recipe:
        print("recipes: " + (", ".join(known) or f"(none found in {RECIPE_CONFIGS})"))
        print("usage: python -m and_plugin --recipe NAME [--smoke] [--slurm] [--import MODULE] [key=value ...]"
              "  (NAME --help for more)")
        raise SystemExit(0 if args.list else 2)
    if args.recipe not in known:
        print(f"error: --recipe: got {args.recipe!r}; allowed: {known}", file=sys.stderr)
        raise SystemExit(2)
    main(RECIPE_CONFIGS / f"{args.recipe}.yaml", rest)


if __name__ == "__main__":
    _entry()
