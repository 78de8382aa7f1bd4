"""Sphinx extension: the measured AND-vs-instance results, generated from the results files.

Markers a page may contain, each replaced at build time by Markdown built from JSON that a
command wrote (so no accuracy on these pages is typed by hand):

- ``<!-- and-accuracy-table -->``: one row per setting of ``benchmarks/results/accuracy/index.json``
  (written by ``python benchmarks/accuracy.py``): AND and instance kNN, mean ± sd over seeds, the
  paired AND − instance difference and its verdict.
- ``<!-- and-accuracy-restarts -->``: the settings measured with the restart control (instance
  learning with AND's per-round schedule restarts) next to AND and plain instance learning.
- ``<!-- and-accuracy-measured-table -->``: every setting measured on a test split, AND and
  instance kNN (the recipes page's CPU-scale rows).
- ``<!-- and-accuracy-details -->``: per setting, the per-round table and the PNG of the curves.
- ``<!-- and-quickstart-results -->``: the recorded quick start
  (``benchmarks/results/accuracy/quickstart.json``, ``python recipes/quickstart.py --record``).
- ``<!-- and-accuracy-measured:<study>/<setting> -->``: the final "AND kNN mean ± sd (n seeds)" of one
  setting, inline (the recipes page's measured column).
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx

from and_plugin.config import parse_override

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "accuracy"
QUICKSTART = RESULTS / "quickstart.json"
MARKERS = ("<!-- and-accuracy-table -->", "<!-- and-accuracy-details -->", "<!-- and-quickstart-results -->",
           "<!-- and-accuracy-restarts -->", "<!-- and-accuracy-measured-table -->")
INLINE = re.compile(r"<!-- and-accuracy-measured:([\w.-]+)/([\w.-]+) -->")


def pm(stat: dict[str, float] | None, signed: bool = False) -> str:
    """``"72.8 ± 0.4"`` from ``{"mean", "sd", "n"}`` (percent); the mean alone for one seed."""
    if not stat:
        return "—"
    sign = "+" if signed and stat["mean"] >= 0 else ""
    if stat["n"] < 2:  # one seed: no spread to show
        return f"{sign}{stat['mean']:.1f}"
    return f"{sign}{stat['mean']:.1f} ± {stat['sd']:.1f}"


def verdict(diff: dict[str, float] | None) -> str:
    """AND ahead / behind when the paired mean difference is more than two standard errors from 0."""
    if not diff or diff["n"] < 2:
        return "one seed: no verdict"
    se = diff["sd"] / math.sqrt(diff["n"])
    if diff["mean"] - 2 * se > 0:
        return "**AND ahead**"
    if diff["mean"] + 2 * se < 0:
        return "**instance ahead**"
    return "level (within seed noise)"


def _settings_text(row: dict[str, Any]) -> str:
    extra = ", ".join(f"`{o}`" for o in row["overrides"])
    train = f"{row['train']:,}" if row.get("train") else "?"
    return f"{row['dataset']} {train} train, {row['rounds'] + 1} x {row['epochs_per_round']} epochs" + (
        f", {extra}" if extra else "")


def _index_rows(results: Path, keep: Any = lambda row: True) -> list[dict[str, Any]]:
    index = results / "index.json"
    return [r for r in json.loads(index.read_text()) if keep(r)] if index.exists() else []


def _markdown_table(head: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells]) + "\n"


def _reads_labels(row: dict[str, Any]) -> bool:
    """Whether the setting trains with the label-filtered diagnostic curriculum."""
    return any(parse_override(o) == {"method": {"curriculum": "label_filtered"}} for o in row["overrides"])


def _name(row: dict[str, Any]) -> str:
    return f"`{row['study']}/{row['setting']}`"


def accuracy_table(results: Path = RESULTS) -> str:
    rows = _index_rows(results)
    if not rows:
        return "*No accuracy study has been recorded yet* (`python benchmarks/accuracy.py run ...`).\n"
    head = ["study / setting", "split", "settings", "seeds", "AND kNN", "instance kNN", "AND − instance",
            "verdict", "AND − instance (bank kNN)", "AN consistency (last round)"]
    return _markdown_table(head, [[
        _name(row), row["split"], _settings_text(row), str(len(row["seeds"])),
        pm(row["and_knn"]), pm(row["instance_knn"]), pm(row["diff_knn"], signed=True), verdict(row["diff_knn"]),
        pm(row["diff_knn_bank"], signed=True), pm(row["consistency"]),
    ] for row in rows])


def measured_table(results: Path = RESULTS) -> str:
    """The recipes page's CPU-scale rows: every setting measured on a test split, AND next to instance
    (diagnostics that read labels, ``method.curriculum=label_filtered``, are left to the results page)."""
    rows = _index_rows(results, lambda r: r["split"] == "test" and not _reads_labels(r))
    if not rows:
        return "*No CPU-scale setting has been measured on a test split yet.*\n"
    head = ["setting", "seeds", "AND kNN (*measured*, CPU scale)", "instance kNN (*measured*, CPU scale)",
            "AND − instance"]
    return _markdown_table(head, [[
        f"{_name(row)}: {_settings_text(row)}", str(len(row["seeds"])), pm(row["and_knn"]), pm(row["instance_knn"]),
        f"{pm(row['diff_knn'], signed=True)} ({verdict(row['diff_knn'])})",
    ] for row in rows])


def restarts_table(results: Path = RESULTS) -> str:
    """Settings measured with the restart control: AND against instance learning with and without
    AND's per-round schedule restarts."""
    rows = _index_rows(results, lambda r: r.get("instance_restarts_knn"))
    if not rows:
        return "*No setting has been measured with the restart control yet* (`--arms and instance instance_restarts`).\n"
    head = ["study / setting", "split", "settings", "seeds", "AND kNN", "instance kNN", "instance + restarts kNN",
            "AND − instance", "AND − (instance + restarts)", "verdict against restarts"]
    return _markdown_table(head, [[
        _name(row), row["split"], _settings_text(row), str(len(row["seeds"])),
        pm(row["and_knn"]), pm(row["instance_knn"]), pm(row["instance_restarts_knn"]),
        pm(row["diff_knn"], signed=True), pm(row["diff_knn_restarts"], signed=True), verdict(row["diff_knn_restarts"]),
    ] for row in rows])


def accuracy_details(results: Path = RESULTS, docs: Path = ROOT / "docs") -> str:
    parts = []
    for path in sorted(results.glob("*/*.json")):
        result = json.loads(path.read_text())
        summary = result["summary"]
        restarts = summary.get("instance_restarts") or []
        head = ["epochs", "instance kNN", *(["instance + restarts kNN"] if restarts else []), "AND kNN",
                "instance bank kNN", "AND bank kNN", "AN consistency"]
        source = (f"The instance arm is taken from `{result['instance_from']}` (the same instance config; "
                  "only keys AND alone reads differ). ") if result.get("instance_from") else ""
        lines = [f"### `{result['study']}/{result['setting']}`", "",
                 f"{result['dataset']}, {result['sizes']['train']:,} training images, evaluated on "
                 f"{result['sizes']['eval']:,} {'held-out training' if result['split'] == 'val' else 'test'} images; "
                 f"seeds {', '.join(map(str, result['seeds']))}; "
                 f"overrides {', '.join(f'`{o}`' for o in result['overrides']) or 'none'}. "
                 + (f"{result['note']}. " if result.get("note") else "") + source + "Mean ± sd over seeds (%).", "",
                 "| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
        for i, a in enumerate(summary.get("and", [])):
            inst = summary.get("instance", [])
            b = inst[i] if i < len(inst) else {}
            c = [pm((restarts[i] if i < len(restarts) else {}).get("knn"))] if restarts else []
            lines.append("| " + " | ".join([str(a["epochs"]), pm(b.get("knn")), *c, pm(a.get("knn")),
                                           pm(b.get("knn_bank")), pm(a.get("knn_bank")),
                                           pm(a.get("consistency"))]) + " |")
        # The SVG the and_figures extension draws from this JSON at build time (sharp at any zoom).
        figure = docs / "_generated" / "accuracy" / f"{path.parent.name}-{path.stem}.svg"
        lines += ["", f"![{result['study']}/{result['setting']}: kNN per round, mean ± sd]"
                  f"({Path('/') / figure.relative_to(docs)})"]
        lines += ["", f"Command: `{result['command']}`", ""]
        parts.append("\n".join(lines))
    return "\n".join(parts) if parts else ""


def quickstart_results(path: Path = QUICKSTART) -> str:
    if not path.exists():
        return "*The quick start has not been recorded yet* (`python recipes/quickstart.py --record`).\n"
    spec = importlib.util.spec_from_file_location("and_quickstart", ROOT / "recipes" / "quickstart.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.results_markdown(json.loads(path.read_text()))


def measured_inline(study: str, setting: str, results: Path = RESULTS) -> str:
    path = results / study / f"{setting}.json"
    if not path.exists():
        return "pending"
    result = json.loads(path.read_text())
    final = result["summary"]["and"][-1]["knn"]
    return f"{pm(final)} (CPU scale, {final['n']} seeds)"


def _source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    text = source[0]
    if not any(m in text for m in MARKERS) and not INLINE.search(text):
        return
    for path in list(RESULTS.glob("*/*.json")) + [RESULTS / "index.json", QUICKSTART]:
        if path.exists():
            app.env.note_dependency(str(path))
    text = text.replace(MARKERS[0], accuracy_table()).replace(MARKERS[1], accuracy_details())
    text = text.replace(MARKERS[2], quickstart_results()).replace(MARKERS[3], restarts_table())
    text = text.replace(MARKERS[4], measured_table())
    source[0] = INLINE.sub(lambda m: measured_inline(m.group(1), m.group(2)), text)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("source-read", _source_read)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
