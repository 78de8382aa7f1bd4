"""Package layout for setuptools; everything else is in pyproject.toml.

The recipes' YAML files live in ``recipes/configs`` of the repository (next to the recipe
scripts) and ship inside the wheel as ``and_plugin/recipes``, so ``python -m and_plugin
--recipe NAME`` works from an installed wheel too.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["and_plugin", "and_plugin.*"]), "and_plugin.recipes"],
    package_dir={"and_plugin.recipes": "recipes/configs"},
    package_data={"and_plugin": ["py.typed"], "and_plugin.recipes": ["*.yaml"]},
)
