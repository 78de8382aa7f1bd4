"""Sphinx extension: the site's data figures, drawn as SVG from the results files at build time.

Vector figures stay sharp on high-density screens and cannot drift from the numbers: every
figure is drawn from the JSON a command wrote, into ``docs/_generated/`` (not tracked).

- ``_generated/accuracy/<study>-<setting>.svg``: kNN top-1 per epoch, recomputed features and
  memory bank, mean ± sd over seeds, for each method of
  ``benchmarks/results/accuracy/<study>/<setting>.json`` (the curves ``python
  benchmarks/accuracy.py report`` draws as PNG).
- ``_generated/curriculum.svg``: the recorded quick start's curriculum
  (``benchmarks/results/accuracy/quickstart.json``): the anchor fraction r/R and the
  neighbourhood consistency of every round, with AND's kNN.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "accuracy"
OUT = ROOT / "docs" / "_generated"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "and_plugin", "svg.fonttype": "none", "font.size": 10})
    return plt


def _save(draw: Any, path: Path) -> None:
    """``draw(temporary_svg_path)``, then the result moved to ``path`` only if it changed
    (unchanged files keep Sphinx's cache valid)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp.svg")
    draw(temporary)
    text = temporary.read_text()
    temporary.unlink()
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


@functools.lru_cache(maxsize=1)
def _harness() -> Any:
    """``benchmarks/accuracy.py`` (a script, not a package module), which draws the setting figures."""
    spec = importlib.util.spec_from_file_location("and_accuracy_harness", ROOT / "benchmarks" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def accuracy_figure(result_path: Path, out: Path) -> Path:
    """kNN per epoch (recomputed and bank), mean ± sd band, for every method of one setting: the
    harness's own figure (``plot``), as SVG."""
    _pyplot()
    harness = _harness()
    _save(lambda temporary: harness.plot(result_path, temporary, fontsize=10), out)
    return out


def curriculum_figure(quickstart: Path, out: Path) -> Path | None:
    """Anchor fraction and neighbourhood consistency per round of the recorded quick start."""
    if not quickstart.exists():
        return None
    plt = _pyplot()
    record = json.loads(quickstart.read_text())
    rows = [r for r in record["curves"]["and"] if r.get("anchor_fraction") is not None]
    rounds = [r["round"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 3.9))
    ax.bar(rounds, [100 * r["anchor_fraction"] for r in rows], width=0.55, color="#c8e6c9",
           edgecolor="#2e7d32", label="anchors: selected fraction r/R")
    ax.plot(rounds, [100 * r["consistency"] for r in rows], "o-", color="#1565c0",
            label="neighbourhood consistency (labels, monitoring only)")
    ax.plot(rounds, [100 * r["knn"] for r in rows], "s--", color="#ef6c00", label="AND kNN top-1")
    for x, r in zip(rounds, rows):
        ax.annotate(f"{100 * r['consistency']:.0f}", (x, 100 * r["consistency"]), textcoords="offset points",
                    xytext=(0, 7), ha="center", fontsize=9, color="#1565c0")
    ax.set_xticks(rounds)
    ax.set_xlabel("round")
    ax.set_ylabel("%")
    ax.set_ylim(0, 112)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    ax.set_title(f"The entropy curriculum on {record['dataset']} ({record['train_images']:,} images, "
                 f"{record['epochs_per_round']} epochs per round)", fontsize=10)
    fig.tight_layout()
    _save(lambda temporary: fig.savefig(temporary, format="svg", metadata={"Date": None}), out)
    plt.close(fig)
    return out


def accuracy_figure_path(study: str, setting: str) -> Path:
    return OUT / "accuracy" / f"{study}-{setting}.svg"


def write_figures(app: Sphinx | None = None) -> list[Path]:
    written = []
    for path in sorted(RESULTS.glob("*/*.json")):
        written.append(accuracy_figure(path, accuracy_figure_path(path.parent.name, path.stem)))
    curriculum = curriculum_figure(RESULTS / "quickstart.json", OUT / "curriculum.svg")
    if curriculum is not None:
        written.append(curriculum)
    return written


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", write_figures)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
