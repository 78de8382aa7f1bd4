"""Sphinx extension: the architecture page's figure of the modules and the data flow.

One description (:data:`BOXES`, :data:`STRIPS`) is drawn in two layouts, both inline SVG in
the page: a wide one (four columns) and a narrow one (one column) that replaces it when the
text column is narrower than :data:`SWITCH_PX`, so the text is never below
:data:`MIN_TEXT_PX` on the screen. Every module name in the figure links to the module's API
page; a module without one fails the build, like any broken cross-reference.

Usage, in a MyST page::

    ```{and-architecture-figure}
    The caption.
    ```
"""

from __future__ import annotations

import dataclasses
from html import escape
from itertools import pairwise
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

LOGGER = logging.getLogger(__name__)

#: Below this text-column width the narrow layout is shown (a CSS container query).
SWITCH_PX = 680
#: The smallest text on the screen, in CSS pixels, at any column width.
MIN_TEXT_PX = 12
#: The narrow layout is never drawn wider than this (on a tablet it would grow past it).
NARROW_MAX_PX = 440
#: The narrowest text column the narrow layout is drawn into (a 360 px phone's column).
NARROWEST_COLUMN_PX = 320

TITLE, MODULE, NOTE = 14.5, 13, 13  # font sizes in the drawing's units
FONT = "Helvetica, Arial, sans-serif"
MONO = "'DejaVu Sans Mono', Menlo, Consolas, monospace"
INK, MUTED, LINK, ARROW, ROUND = "#263238", "#546e7a", "#1565c0", "#37474f", "#2e7d32"
LAYER_FILL = {2: "#e3f2fd", 3: "#eceff1"}
LAYER_NAME = {2: "core math (layer 2)", 3: "components (layer 3)"}


@dataclasses.dataclass(frozen=True)
class Box:
    """One component: a title, the module that defines it (relative to ``and_plugin``), a note."""

    title: str
    module: str | None
    note: str
    layer: int
    step: str = ""  # the number in the corner: the order of the data flow


@dataclasses.dataclass(frozen=True)
class Strip:
    """One layer drawn as a band: its number and name, its modules, what it does."""

    layer: int
    name: str
    modules: tuple[str, ...]
    note: str


BOXES: dict[str, Box] = {
    "data": Box("Dataset", "data", "(image, target, index)", 3, "1"),
    "backbone": Box("Backbone", "backbones", "image → x, unit (B, d)", 3, "2"),
    "loss": Box("NeighbourhoodLoss", "loss", "Eq 2, 3, 7; backward", 2, "3"),
    "update": Box("bank update", "memory_bank", "Eq 8, rows of index", 2, "4"),
    "bank": Box("MemoryBank", "memory_bank", "N × d, a row per image", 2),
    "curriculum": Box("EntropyCurriculum", "curriculum", "Eq 1, 5, 6", 2, "5"),
    "state": Box("RoundState", "curriculum", "anchors, neighbours", 2, "6"),
    "miner": Box("ANDMiner", "miner", "pairs (a1, p, a2, n)", 2),
    "pml": Box("any PML loss", "pml_loss", "or AND's own: ANDLoss", 2),
}

STRIPS: dict[str, Strip] = {
    "launch": Strip(5, "run and launch", ("run", "cli", "launcher"),
                    "one run from a YAML file, here or on SLURM"),
    "trainer": Strip(4, "method and trainer", ("trainer", "lightning"),
                     "Algorithm 1: 1–4 each step, 5–6 each round"),
    "kernels": Strip(1, "kernels", ("kernels",), "the fast Eq 1, 2, 5 that loss and curriculum call"),
    "foundations": Strip(0, "foundations", ("_validation", "registry", "distributed"),
                         "used by every layer above"),
}

#: The arrows, (from, to, label) in the order of the data flow; drawn by each layout.
ARROWS: tuple[tuple[str, str, str], ...] = (
    ("data", "backbone", ""),
    ("backbone", "loss", ""),
    ("loss", "update", ""),
    ("update", "bank", "writes"),
    ("bank", "loss", "reads all N rows"),
    ("bank", "curriculum", "each round"),
    ("curriculum", "state", "writes"),
    ("state", "loss", "read every step"),
    ("state", "miner", ""),
    ("miner", "pml", ""),
)


def modules_in_figure() -> set[str]:
    """Every module the figure names (relative to ``and_plugin``)."""
    return ({b.module for b in BOXES.values() if b.module}
            | {m for s in STRIPS.values() for m in s.modules})


# ----------------------------------------------------------------------------------- drawing


class _Canvas:
    def __init__(self, width: int, height: int, hrefs: dict[str, str], label: str) -> None:
        self.width, self.height, self.hrefs, self.label = width, height, hrefs, label
        self.parts: list[str] = []

    def text(self, x: float, y: float, content: str, size: float, *, anchor: str = "start",
             weight: str = "normal", fill: str = INK, family: str = FONT, rotate: bool = False) -> None:
        turn = f' transform="rotate(-90 {x} {y})"' if rotate else ""
        self.parts.append(
            f'<text x="{x}" y="{y}" font-size="{size}" text-anchor="{anchor}" font-weight="{weight}" '
            f'fill="{fill}" font-family="{family}"{turn}>{escape(content)}</text>')

    def module(self, x: float, y: float, name: str, *, anchor: str = "start") -> None:
        """A module name in monospace, linked to its API page (private modules stay plain)."""
        href = self.hrefs.get(name)
        label = f'<tspan font-family="{MONO}" font-size="{MODULE}">{escape(name)}</tspan>'
        if href is None:
            self.parts.append(f'<text x="{x}" y="{y}" text-anchor="{anchor}" fill="{MUTED}">{label}</text>')
        else:
            self.parts.append(
                f'<a href="{escape(href)}"><text x="{x}" y="{y}" text-anchor="{anchor}" fill="{LINK}" '
                f'text-decoration="underline">{label}</text></a>')

    def modules(self, x: float, y: float, names: tuple[str, ...]) -> float:
        """Module names left to right, separated by middle dots; returns the x after them."""
        for i, name in enumerate(names):
            if i:
                self.text(x + 4, y, "·", MODULE, fill=MUTED)
                x += 14
            self.module(x, y, name)
            x += 7.9 * len(name)  # DejaVu Sans Mono advances 0.6 em
        return x

    def box(self, key: str, x: float, y: float, w: float, h: float) -> None:
        box = BOXES[key]
        self.parts.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="8" '
                          f'fill="{LAYER_FILL[box.layer]}" stroke="#90a4ae"/>')
        middle = x + w / 2
        self.text(middle, y + 21, box.title, TITLE, anchor="middle", weight="bold")
        if box.module:
            self.module(middle, y + 39, box.module, anchor="middle")
        self.text(middle, y + 57, box.note, NOTE, anchor="middle", fill=MUTED)
        if box.step:
            self.parts.append(f'<circle cx="{x + 2}" cy="{y + 2}" r="10" fill="{ARROW}"/>')
            self.text(x + 2, y + 6.5, box.step, NOTE, anchor="middle", weight="bold", fill="#ffffff")

    def strip(self, key: str, x: float, y: float, w: float, h: float, *, two_lines: bool) -> None:
        strip = STRIPS[key]
        self.parts.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="8" fill="#fafafa" '
                          f'stroke="#b0bec5"/>')
        self.text(x + 12, y + 20, f"{strip.layer} · {strip.name}:", NOTE, weight="bold", fill=MUTED)
        if two_lines:
            self.modules(x + 12, y + 39, strip.modules)
            self.text(x + 12, y + 57, strip.note, NOTE, fill=MUTED)
        else:  # the module lists of all strips start in one column
            after = self.modules(x + 172, y + 20, strip.modules)
            self.text(after + 10, y + 20, f"— {strip.note}", NOTE, fill=MUTED)

    def arrow(self, points: list[tuple[float, float]], colour: str = ARROW) -> None:
        path = " ".join(f"{x},{y}" for x, y in points)
        marker = "r" if colour == ROUND else "a"
        self.parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2" '
                          f'marker-end="url(#{self.label}-{marker})"/>')

    def legend(self, x: float, y: float) -> None:
        for i, layer in enumerate((2, 3)):
            self.parts.append(f'<rect x="{x}" y="{y + 22 * i}" width="18" height="14" rx="3" '
                              f'fill="{LAYER_FILL[layer]}" stroke="#90a4ae"/>')
            self.text(x + 26, y + 12 + 22 * i, LAYER_NAME[layer], NOTE, fill=MUTED)
        self.parts.append(f'<line x1="{x}" y1="{y + 52}" x2="{x + 18}" y2="{y + 52}" stroke="{ARROW}" '
                          f'stroke-width="2"/>')
        self.text(x + 26, y + 56, "every step", NOTE, fill=MUTED)
        self.parts.append(f'<line x1="{x}" y1="{y + 74}" x2="{x + 18}" y2="{y + 74}" stroke="{ROUND}" '
                          f'stroke-width="2"/>')
        self.text(x + 26, y + 78, "made each round", NOTE, fill=MUTED)

    def svg(self, title: str, css_class: str) -> str:
        markers = "".join(
            f'<marker id="{self.label}-{name}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            f'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
            for name, colour in (("a", ARROW), ("r", ROUND)))
        return (f'<svg class="{css_class}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {self.width} '
                f'{self.height}" role="img" aria-labelledby="{self.label}-title">'
                f'<title id="{self.label}-title">{escape(title)}</title><defs>{markers}</defs>'
                f'<rect width="{self.width}" height="{self.height}" rx="10" fill="#ffffff"/>'
                + "".join(self.parts) + "</svg>")


def _frame(canvas: _Canvas, x: float, y: float, w: float, h: float) -> None:
    canvas.parts.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="12" fill="none" '
                        f'stroke="#90a4ae" stroke-dasharray="6 4"/>')


def wide(hrefs: dict[str, str], title: str) -> str:
    """Four columns: the step flow left to right, the round flow right to left below it."""
    c = _Canvas(720, 560, hrefs, "and-arch-wide")
    col = [14, 193, 372, 551]
    w, h = 155, 72
    row = [118, 240, 362]
    c.strip("launch", 8, 8, 704, 34, two_lines=False)
    _frame(c, 8, 52, 704, 396)
    c.strip("trainer", 16, 60, 688, 34, two_lines=False)
    for key, (ci, ri) in {"data": (0, 0), "backbone": (1, 0), "loss": (2, 0), "update": (3, 0),
                          "bank": (3, 1), "pml": (0, 2), "miner": (1, 2), "state": (2, 2),
                          "curriculum": (3, 2)}.items():
        c.box(key, col[ci], row[ri], w, h)
    mid = [r + h / 2 for r in row]
    for a in range(3):  # data → backbone → loss → update
        c.arrow([(col[a] + w, mid[0]), (col[a + 1] - 2, mid[0])])
    c.arrow([(col[3] + 75, row[0] + h), (col[3] + 75, row[1] - 2)])  # update writes the bank
    c.text(col[3] + 82, row[0] + h + 30, "writes", NOTE, fill=MUTED)
    c.arrow([(col[3], mid[1]), (col[2] + 105, mid[1]), (col[2] + 105, row[0] + h + 2)])  # bank → loss
    c.text(col[2] + 112, row[0] + h + 24, "reads all", NOTE, fill=MUTED)
    c.text(col[2] + 112, row[0] + h + 40, "N rows", NOTE, fill=MUTED)
    c.arrow([(col[3] + 75, row[1] + h), (col[3] + 75, row[2] - 2)], ROUND)  # round boundary
    c.text(col[3] + 82, row[1] + h + 30, "each round", NOTE, fill=ROUND)
    c.arrow([(col[3], mid[2]), (col[2] + w + 2, mid[2])], ROUND)  # curriculum writes RoundState
    c.arrow([(col[2] + 35, row[2]), (col[2] + 35, row[0] + h + 2)], ROUND)  # RoundState → loss
    c.text(col[2] + 28, row[1] + 58, "read every", NOTE, anchor="end", fill=ROUND)
    c.text(col[2] + 28, row[1] + 74, "step", NOTE, anchor="end", fill=ROUND)
    c.arrow([(col[2], mid[2]), (col[1] + w + 2, mid[2])], ROUND)  # RoundState → miner
    c.arrow([(col[1], mid[2]), (col[0] + w + 2, mid[2])])  # miner → PML loss
    c.legend(col[0] + 4, row[1] - 4)
    c.strip("kernels", 8, 458, 704, 34, two_lines=False)
    c.strip("foundations", 8, 502, 704, 34, two_lines=False)
    c.height = 544
    return c.svg(title, "and-arch-wide")


def narrow(hrefs: dict[str, str], title: str) -> str:
    """One column: the step flow top to bottom, the two reads back to the loss in side lanes."""
    c = _Canvas(340, 0, hrefs, "and-arch-narrow")
    x, w, h, gap = 62, 216, 64, 30
    c.strip("launch", 4, 4, 332, 66, two_lines=True)
    top = 172
    order = ["data", "backbone", "loss", "update", "bank", "curriculum", "state", "miner", "pml"]
    y = {key: top + i * (h + gap) for i, key in enumerate(order)}
    for key in order:
        c.box(key, x, y[key], w, h)
    labels = {("update", "bank"): "writes", ("bank", "curriculum"): "each round",
              ("curriculum", "state"): "writes"}
    for a, b in pairwise(order):
        colour = ROUND if a in ("bank", "curriculum", "state") else ARROW
        c.arrow([(x + w / 2, y[a] + h), (x + w / 2, y[b] - 2)], colour)
        if (a, b) in labels:
            c.text(x + w / 2 + 10, y[a] + h + 20, labels[a, b], NOTE,
                   fill=ROUND if colour == ROUND else MUTED)
    # The bank's read goes up the right lane, RoundState's up the left one.
    c.arrow([(x + w, y["bank"] + h / 2), (x + w + 26, y["bank"] + h / 2),
             (x + w + 26, y["loss"] + h / 2), (x + w + 2, y["loss"] + h / 2)])
    c.text(x + w + 46, (y["bank"] + y["loss"] + h) / 2, "reads all N rows", NOTE, anchor="middle",
           fill=MUTED, rotate=True)
    c.arrow([(x, y["state"] + h / 2), (x - 26, y["state"] + h / 2),
             (x - 26, y["loss"] + h / 2), (x - 2, y["loss"] + h / 2)], ROUND)
    c.text(x - 34, (y["state"] + y["loss"] + h) / 2, "read every step", NOTE, anchor="middle",
           fill=ROUND, rotate=True)
    bottom = y["pml"] + h + 20
    _frame(c, 4, 78, 332, bottom - 88)
    c.strip("trainer", 10, 84, 320, 66, two_lines=True)
    c.strip("kernels", 4, bottom, 332, 66, two_lines=True)
    c.strip("foundations", 4, bottom + 74, 332, 66, two_lines=True)
    legend = bottom + 158
    c.legend(10, legend)
    c.height = legend + 92
    return c.svg(title, "and-arch-narrow")


def figure_html(hrefs: dict[str, str], alt: str, caption_html: str) -> str:
    """The figure: both layouts (CSS shows one) and the caption."""
    return (f'<figure class="and-architecture">{wide(hrefs, alt)}{narrow(hrefs, alt)}'
            f"<figcaption>{caption_html}</figcaption></figure>")


# ------------------------------------------------------------------------------------ Sphinx


class architecture_figure(nodes.General, nodes.Element):  # docutils' node naming
    """Placeholder until the module links can be resolved (``doctree-resolved``)."""


class ArchitectureFigure(SphinxDirective):
    has_content = True
    option_spec: ClassVar[dict[str, Any]] = {"alt": directives.unchanged_required}

    def run(self) -> list[nodes.Node]:
        node = architecture_figure()
        node["alt"] = self.options.get("alt", "The modules of and_plugin and the data flow.")
        caption = nodes.paragraph()
        self.state.nested_parse(self.content, self.content_offset, caption)
        node += caption
        return [node]


def _resolve(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    modules = app.env.domains["py"].modules
    for node in list(doctree.findall(architecture_figure)):
        if app.builder.format != "html":  # other builders get the caption only
            node.replace_self(node.children)
            continue
        hrefs: dict[str, str] = {}
        for name in sorted(modules_in_figure()):
            entry = modules.get(f"and_plugin.{name}")
            if entry is None:
                if not name.startswith("_"):
                    LOGGER.warning("architecture figure: and_plugin.%s has no API page", name,
                                   location=node)
                continue
            uri = app.builder.get_relative_uri(docname, entry.docname) if entry.docname != docname else ""
            hrefs[name] = f"{uri}#{entry.node_id}"
        caption = "".join(app.builder.render_partial(child)["fragment"] for child in node.children)
        caption = caption.removeprefix("<p>").removesuffix("</p>\n").removesuffix("</p>")
        node.replace_self(nodes.raw("", figure_html(hrefs, node["alt"], caption), format="html"))


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_node(architecture_figure)
    app.add_directive("and-architecture-figure", ArchitectureFigure)
    app.connect("doctree-resolved", _resolve)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
