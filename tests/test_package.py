"""The package as users install it: the wheel's contents and metadata, one version everywhere.

The full check — the wheel installed into a fresh venv, then ``python -m and_plugin --recipe
cifar10_alexnet --smoke`` from there — is part of CI (``.ci/run``, ``.ci/wheel_smoke.py``).
"""

from __future__ import annotations

import email
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import torch

import and_plugin
from and_plugin.checkpoint import load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir", str(out), str(REPO)],
        check=False, capture_output=True, text=True, env=env, timeout=300,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    warnings = [line for line in log.splitlines() if "warning" in line.lower()]
    assert not warnings, f"python -m build warned: {warnings}"
    (path,) = out.glob("and_plugin-*.whl")
    return path


def test_wheel_has_the_recipes_py_typed_and_no_stray_files(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    recipes = {Path(n).stem for n in names if n.startswith("and_plugin/recipes/")}
    assert recipes == {p.stem for p in (REPO / "recipes" / "configs").glob("*.yaml")}
    assert "and_plugin/py.typed" in names
    assert {"and_plugin/_version.py", "and_plugin/launcher/__init__.py"} <= set(names)
    assert not [n for n in names if n.split("/")[0] not in ("and_plugin", wheel.name.split("-")[0] + "-"
                                                             + and_plugin.__version__ + ".dist-info")]


def test_wheel_metadata_licence_links_and_version(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    (meta,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
    metadata = email.message_from_bytes(archive.read(meta))
    assert metadata["Version"] == and_plugin.__version__
    assert metadata["License-Expression"] == "MIT"
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL"))
    assert {"Source", "Issues", "Paper"} <= set(urls), urls
    assert all(u.startswith("https://") for u in urls.values())


def test_the_version_has_one_source() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    for args in (["-m", "and_plugin", "--version"], [str(REPO / "recipes" / "cifar10_alexnet.py"), "--version"]):
        out = subprocess.run([sys.executable, *args], check=True, capture_output=True, text=True, timeout=120)
        assert out.stdout.strip() == f"and_plugin {and_plugin.__version__}"


def test_checkpoints_record_the_version(tmp_path: Path) -> None:
    save_checkpoint({"epoch": torch.tensor(3)}, tmp_path / "c.pt")
    assert load_checkpoint(tmp_path / "c.pt")["and_plugin_version"] == and_plugin.__version__
