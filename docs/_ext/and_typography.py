"""Sphinx extension: a measured number and its spread stay on one line.

``94.8 ± 0.6`` in a narrow table column used to wrap into three lines (``94.8`` / ``±`` /
``0.6``). Every `` ± `` in the running text of a page (not in code) gets no-break spaces, so a
line can break before or after the whole ``mean ± sd``, never inside it.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms import SphinxTransform

NBSP = "\u00a0"


class KeepSpreadTogether(SphinxTransform):
    default_priority = 800

    def apply(self, **kwargs: Any) -> None:
        for text in list(self.document.findall(nodes.Text)):
            if " ± " not in text or isinstance(text.parent, (nodes.literal, nodes.literal_block, nodes.raw)):
                continue
            text.parent.replace(text, nodes.Text(text.replace(" ± ", f"{NBSP}±{NBSP}")))


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_transform(KeepSpreadTogether)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
