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
- ``<!-- and-length-curve -->``: the round-length studies (``length-curve.json``, written by the
  harness for every results folder ending in ``-length``): AND − instance against epochs per round.
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
           "<!-- and-accuracy-restarts -->", "<!-- and-accuracy-measured-table -->", "<!-- and-length-curve -->")
INLINE = re.compile(r"<!-- and-accuracy-measured:([\w.-]+)/([\w.-]+) -->")


def pm(stat: dict[str, float] | None, signed: bool = False) -> str:
    """``"72.8 ± 0.4"`` from ``{"mean", "sd", "n"}`` (percent); the mean alone for one seed."""
    if not stat:
        return "—"
    sign = "+" if signed and stat["mean"] >= 0 else ""
    if stat["n"] < 2:  # one seed: no spread to show
        return f"{sign}{stat['mean']:.1f}"
    return f"{sign}{stat['mean']:.1f} ± {stat['sd']:.1f}"


def verdict(diff: dict[str, Any] | None) -> str:
    """The paired t-test's verdict (computed by the harness): ahead only where the 95 % interval
    of the paired mean difference excludes zero."""
    if not diff or diff["n"] < 2:
        return "one seed: no verdict"
    return {"AND ahead": "**AND ahead**", "instance ahead": "**instance ahead**"}.get(
        diff["verdict"], "level (interval holds 0)")


def interval(diff: dict[str, Any] | None) -> str:
    """``"+0.7 [−0.1, +1.5]"``: a paired mean difference and its 95 % interval (points)."""
    if not diff:
        return "—"
    if not diff.get("ci"):
        return f"{diff['mean']:+.1f}"
    low, high = diff["ci"]
    return f"{diff['mean']:+.1f} [{low:+.1f}, {high:+.1f}]"


def _settings_text(row: dict[str, Any]) -> str:
    extra = ", ".join(f"`{o}`" for o in row["overrides"])
    train = f"{row['train']:,}" if row.get("train") else "?"
    return f"{row['dataset']} {train} train, {row['rounds'] + 1} x {row['epochs_per_round']} epochs" + (
        f", {extra}" if extra else "")


def _index_rows(results: Path, keep: Any = lambda row: True) -> list[dict[str, Any]]:
    """The index's settings that trained AND (a long instance-only run serves others) and pass ``keep``."""
    index = results / "index.json"
    rows = json.loads(index.read_text()) if index.exists() else []
    return [r for r in rows if "and" in r.get("arms", ["and"]) and keep(r)]


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
    head = ["study / setting", "split", "settings", "seeds", "AND kNN", "instance kNN",
            "AND − instance [95 % CI]", "verdict", "AND − instance, bank kNN [95 % CI]", "AN consistency (last round)"]
    return _markdown_table(head, [[
        _name(row), row["split"], _settings_text(row), str(len(row["seeds"])),
        pm(row["and_knn"]), pm(row["instance_knn"]), interval(row["diff_knn"]), verdict(row["diff_knn"]),
        interval(row["diff_knn_bank"]), pm(row["consistency"]),
    ] for row in rows])


def measured_table(results: Path = RESULTS) -> str:
    """The recipes page's CPU-scale rows: every setting measured on a test split, AND next to instance
    (diagnostics that read labels, ``method.curriculum=label_filtered``, are left to the results page)."""
    rows = _index_rows(results, lambda r: r["split"] == "test" and not _reads_labels(r))
    if not rows:
        return "*No CPU-scale setting has been measured on a test split yet.*\n"
    head = ["setting", "seeds", "AND kNN (*measured*, CPU scale)", "instance kNN (*measured*, CPU scale)",
            "AND − instance [95 % CI]"]
    return _markdown_table(head, [[
        f"{_name(row)}: {_settings_text(row)}", str(len(row["seeds"])), pm(row["and_knn"]), pm(row["instance_knn"]),
        f"{interval(row['diff_knn'])} ({verdict(row['diff_knn'])})",
    ] for row in rows])


def restarts_table(results: Path = RESULTS) -> str:
    """Settings measured with the restart control: AND against instance learning with and without
    AND's per-round schedule restarts."""
    rows = _index_rows(results, lambda r: r.get("instance_restarts_knn"))
    if not rows:
        return "*No setting has been measured with the restart control yet* (`--arms and instance instance_restarts`).\n"
    head = ["study / setting", "split", "settings", "seeds", "AND kNN", "instance kNN", "instance + restarts kNN",
            "AND − instance [95 % CI]", "AND − (instance + restarts) [95 % CI]", "verdict against restarts"]
    return _markdown_table(head, [[
        _name(row), row["split"], _settings_text(row), str(len(row["seeds"])),
        pm(row["and_knn"]), pm(row["instance_knn"]), pm(row["instance_restarts_knn"]),
        interval(row["diff_knn"]), interval(row["diff_knn_restarts"]), verdict(row["diff_knn_restarts"]),
    ] for row in rows])


def accuracy_details(results: Path = RESULTS, docs: Path = ROOT / "docs") -> str:
    parts = []
    for path in sorted(results.glob("*/*.json")):
        result = json.loads(path.read_text())
        summary = result["summary"]
        if "and" not in result.get("arms", ["and"]):  # a long instance run, shown where it is used
            continue
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


def _consistency_text(point: dict[str, Any]) -> str:
    return " → ".join(f"{c['mean']:.0f}" for c in point["consistency"] if c) or "—"


def _length_sentence(study: dict[str, Any]) -> str:
    """What the curve says, generated: the largest gain and the lengths whose interval excludes 0."""
    points = [p for p in study["points"] if p["diff"]]
    if not points:
        return ""
    best = max(points, key=lambda p: p["diff"]["mean"])
    ahead = [p["epochs_per_round"] for p in points if p["diff"]["verdict"] == "AND ahead"]
    behind = [p["epochs_per_round"] for p in points if p["diff"]["verdict"] == "instance ahead"]
    lengths = ", ".join(str(p["epochs_per_round"]) for p in points)
    text = (f"Measured at {lengths} epochs per round. The largest AND − instance is {interval(best['diff'])} "
            f"points at {best['epochs_per_round']} epochs per round; ")
    text += (f"the 95 % interval excludes zero (AND ahead) at {', '.join(map(str, ahead))} epochs per round"
             if ahead else "no length's 95 % interval excludes zero in AND's favour")
    if behind:
        text += f"; instance learning is ahead at {', '.join(map(str, behind))}"
    return text + "."


def length_curve(results: Path = RESULTS) -> str:
    """The round-length studies (``length-curve.json``): a table per study, the figure, one sentence."""
    path = results / "length-curve.json"
    if not path.exists():
        return "*No round-length study has been recorded yet* (`benchmarks/results/accuracy/length_study.sh`).\n"
    parts = []
    for study in json.loads(path.read_text())["studies"]:
        head = ["epochs per round", "seeds", "AND kNN", "instance kNN", "AND − instance [95 % CI]", "p",
                "verdict", "AND − (instance + restarts) [95 % CI]", "AN consistency, rounds 1 → R"]
        cells = []
        for point in study["points"] + study["diagnostics"]:
            name = str(point["epochs_per_round"]) + (" (label-filtered diagnostic)" if point["label_filtered"] else "")
            diff = point["diff"]
            cells.append([name, str(len(point["seeds"])), pm(point["and_knn"]), pm(point["instance_knn"]),
                          interval(diff), f"{diff['p']:.3f}" if diff and diff.get("p") is not None else "—",
                          verdict(diff), interval(point["diff_restarts"]), _consistency_text(point)])
        extra = ", ".join(f"`{o}`" for o in study["overrides"])
        parts += [f"### `{study['study']}`: {study['dataset']}, {study['train']:,} training images, "
                  f"{study['split']} split ({study['eval']:,} images)", "",
                  f"R = {study['rounds']} rounds after round 0; overrides {extra or 'none'}. Final-round kNN "
                  "(%), mean ± sd over seeds; differences in points, paired by seed, with the 95 % "
                  "paired-t interval and its p-value.", "", _markdown_table(head, cells), _length_sentence(study), ""]
        for check in study.get("instance_checks", []):
            parts += [f"Check: `{check['setting']}` trained its own instance arm; its {check['points']} kNN points "
                      f"(seeds {', '.join(map(str, check['seeds']))}) "
                      + ("equal" if check["equal"] else "**differ from**")
                      + f" the long run `{check['long_run']}` at the same epoch counts.", ""]
    svg = results / "length-curve.svg"
    if svg.exists() and svg.is_relative_to(ROOT):
        rel = (Path("..") / svg.relative_to(ROOT)).as_posix()
        parts.append(f"![AND − instance against epochs per round, 95 % intervals; AN consistency per round]({rel})\n")
    return "\n".join(parts)


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
    for path in list(RESULTS.glob("*/*.json")) + [RESULTS / "index.json", QUICKSTART, RESULTS / "length-curve.json"]:
        if path.exists():
            app.env.note_dependency(str(path))
    text = text.replace(MARKERS[0], accuracy_table()).replace(MARKERS[1], accuracy_details())
    text = text.replace(MARKERS[2], quickstart_results()).replace(MARKERS[3], restarts_table())
    text = text.replace(MARKERS[4], measured_table()).replace(MARKERS[5], length_curve())
    source[0] = INLINE.sub(lambda m: measured_inline(m.group(1), m.group(2)), text)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("source-read", _source_read)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
