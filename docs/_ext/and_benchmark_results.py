"""Sphinx extension: the measured benchmark results, read from ``benchmarks/results/*.md``.

A page containing the line ``<!-- and-benchmark-results -->`` gets, in its place, every results
file the benchmark harness wrote (newest first), headings moved three levels down, each under its
file name — so the docs show exactly what was measured and nothing else, and a new results file
appears at the next build without editing the page.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx

MARKER = "<!-- and-benchmark-results -->"
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def results_markdown(results: Path = RESULTS) -> str:
    files = sorted(results.glob("*.md"), key=lambda p: p.name, reverse=True) if results.is_dir() else []
    if not files:
        return "*No benchmark results have been recorded yet* (`benchmarks/results/` is empty).\n"
    parts = []
    for path in files:
        text = re.sub(r"^(#{1,3}) ", lambda m: "#" * (len(m.group(1)) + 3) + " ", path.read_text(), flags=re.MULTILINE)
        parts.append(f"### `benchmarks/results/{path.name}`\n\n{text.strip()}\n")
    return "\n".join(parts)


def _source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    if MARKER not in source[0]:
        return
    if RESULTS.is_dir():
        for path in RESULTS.glob("*.md"):
            app.env.note_dependency(str(path))
    source[0] = source[0].replace(MARKER, results_markdown())


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("source-read", _source_read)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
