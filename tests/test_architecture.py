"""The import rule of docs/architecture.md: a module imports only from its own layer or below.

The layer table is read from the page itself, so the page and the code cannot drift apart:
every module of the package must be in the table, and every import between and_plugin modules
(top-level, function-local and type-checking ones alike) must point down or sideways.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "and_plugin"
PAGE = REPO / "docs" / "architecture.md"


#: A module in the table: ``name`` (private modules) or a link to its API page,
#: ``{py:mod}`name <and_plugin.name>``` (``__init__`` links to ``and_plugin`` itself).
TABLE_MODULE = re.compile(r"(?:\{py:mod\})?`(?P<name>[\w.]+)(?: <(?P<target>[\w.]+)>)?`")


def table_entries() -> list[tuple[int, str, str, str | None]]:
    """(layer number, layer name, module name, link target or None) for every module in the
    page's table, in the page's order."""
    lines = PAGE.read_text().splitlines()
    start = lines.index("<!-- layers -->")
    entries = []
    for line in lines[start + 3 :]:
        if not line.startswith("|"):
            break
        layer, modules = [cell.strip() for cell in line.strip("|").split("|")][:2]
        number = int(re.match(r"(\d+)\.", layer).group(1))
        for match in TABLE_MODULE.finditer(modules):
            entries.append((number, layer, match["name"], match["target"]))
    return entries


def layer_table() -> dict[str, tuple[int, str]]:
    """{module name relative to and_plugin: (layer number, layer name)} from the page's table."""
    return {name: (number, layer) for number, layer, name, _ in table_entries()}


def api_modules() -> set[str]:
    """The modules the API pages document (``.. automodule::``), full names."""
    return {name for page in (REPO / "docs" / "api").glob("*.md")
            for name in re.findall(r"^\.\. automodule:: ([\w.]+)", page.read_text(), re.MULTILINE)}


def module_name(path: Path) -> str:
    """``and_plugin/kernels/gather.py`` -> ``kernels.gather``; ``and_plugin/__init__.py`` -> ``__init__``."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(name: str, table: dict[str, tuple[int, str]]) -> tuple[int, str] | None:
    """The layer of a module: its own row, else the row of the nearest enclosing package."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in table:
            return table[".".join(parts[:end])]
    return None


def imports_of(name: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported module relative to and_plugin) for every import of an and_plugin module."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if name != "__init__" else []
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "and_plugin" or alias.name.startswith("and_plugin."):
                    found.append((node.lineno, alias.name.removeprefix("and_plugin").lstrip(".") or "__init__"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_package else here[:-1]
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and (node.module == "and_plugin" or node.module.startswith("and_plugin.")):
                target = node.module.removeprefix("and_plugin").lstrip(".")
            else:
                continue
            for alias in node.names:  # `from . import loss` imports the module and_plugin.loss
                child = f"{target}.{alias.name}" if target else alias.name
                if child in MODULES:
                    found.append((node.lineno, child))
                else:
                    found.append((node.lineno, target or "__init__"))
    return found


def test_the_page_has_a_layer_table():
    table = layer_table()
    assert {"kernels", "loss", "curriculum", "memory_bank", "trainer", "config", "__init__"} <= set(table)
    assert table["kernels"][0] < table["loss"][0] < table["trainer"][0]


def test_the_table_links_each_module_to_its_own_api_page():
    """A reader clicks a module name and lands on that module: every module with an API page
    is a link, and the link goes to the module the cell names (not a neighbour's page)."""
    documented = api_modules()
    entries = table_entries()
    assert len(entries) == len({name for _, _, name, _ in entries}), "a module is in the table twice"
    wrong = []
    for _, _, name, target in entries:
        full = "and_plugin" if name == "__init__" else f"and_plugin.{name}"
        if target is not None and target != full:
            wrong.append(f"{name} links to {target}, not to {full}")
        elif target is None and full in documented:
            wrong.append(f"{name} has an API page but is plain text: write {{py:mod}}`{name} <{full}>`")
        elif target is not None and target not in documented:
            wrong.append(f"{name} links to {target}, which no API page documents")
    assert not wrong, "docs/architecture.md, the layer table:\n" + "\n".join(wrong)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_is_in_the_table(name):
    assert layer_of(name, layer_table()) is not None, (
        f"and_plugin.{name} is in no layer: add it to the table in docs/architecture.md"
    )


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down_or_sideways(name):
    table = layer_table()
    own = layer_of(name, table)
    if own is None:
        pytest.skip("not in the table (reported by test_every_module_is_in_the_table)")
    wrong = []
    for line, target in imports_of(name, MODULES[name]):
        other = layer_of(target, table)
        if other is not None and other[0] > own[0]:
            wrong.append(f"and_plugin/{MODULES[name].relative_to(PACKAGE)}:{line} imports and_plugin.{target} ({other[1]})")
    assert not wrong, f"and_plugin.{name} ({own[1]}) may import only its own layer or below:\n" + "\n".join(wrong)


def test_the_checker_sees_a_wrong_import(tmp_path):
    """The rule can fail: a core module that imported the trainer would be reported."""
    fake = tmp_path / "loss.py"
    fake.write_text("from .trainer import Trainer\n\ndef f():\n    from and_plugin.launcher import submit\n")
    targets = [target for _, target in imports_of("loss", fake)]
    assert targets == ["trainer", "launcher"]
    table = layer_table()
    assert all(layer_of(t, table)[0] > layer_of("loss", table)[0] for t in targets)


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles():
    """No two modules import each other, directly or around a loop, even lazily or for typing:
    each can be read, tested and replaced without the other."""
    graph = {name: {t for _, t in imports_of(name, path) if t in MODULES and t != name}
             for name, path in MODULES.items()}
    cycles = import_cycles(graph)
    assert not cycles, "import cycles between and_plugin modules: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_checker_sees_a_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


# ------------------------------------------------------------------------- the page's figure


def _figure_module():
    """The docs' ``and_architecture_figure`` extension, which draws the page's figure."""
    import importlib
    import sys

    sys.path.insert(0, str(REPO / "docs" / "_ext"))
    try:
        return importlib.import_module("and_architecture_figure")
    finally:
        sys.path.remove(str(REPO / "docs" / "_ext"))


def test_the_figure_shows_real_modules_in_their_layers():
    """Each box and band of the figure names a module of the table, in the table's layer."""
    figure = _figure_module()
    table = layer_table()
    drawn = [(box.module, box.layer, box.title) for box in figure.BOXES.values() if box.module]
    drawn += [(name, strip.layer, strip.name) for strip in figure.STRIPS.values() for name in strip.modules]
    wrong = [f"{title}: and_plugin.{name} is in no layer of the table" if name not in table
             else f"{title}: and_plugin.{name} is drawn in layer {layer}, the table says {table[name][0]}"
             for name, layer, title in drawn if name not in table or table[name][0] != layer]
    assert not wrong, "\n".join(wrong)
    assert {key for a, b, _ in figure.ARROWS for key in (a, b)} == set(figure.BOXES)


def _smallest_text(svg: str) -> tuple[float, float]:
    """(viewBox width, smallest font size) of one drawing, in the drawing's units."""
    width = float(re.search(r'viewBox="0 0 ([\d.]+) ', svg).group(1))
    texts = re.findall(r"<text\b.*?</text>", svg, re.DOTALL)
    sizes = [float(size) for text in texts for size in re.findall(r'font-size="([\d.]+)"', text)]
    unsized = [text for text in texts if 'font-size="' not in text]
    assert texts and not unsized, f"figure text without a font size: {unsized}"
    return width, min(sizes)


def test_the_figure_text_is_at_least_12_px_at_every_width():
    """The wide drawing is shown only in a column of at least SWITCH_PX (the CSS container
    query says the same), the narrow one in anything down to a 320 px phone column: at the
    smallest scale of each, the smallest text is still MIN_TEXT_PX on the screen."""
    figure = _figure_module()
    css = (REPO / "docs" / "_static" / "custom.css").read_text()
    switch = float(re.search(r"@container \(max-width: ([\d.]+)px\)", css).group(1))
    assert abs(switch - figure.SWITCH_PX) < 0.1, f"custom.css switches at {switch} px, the figure at {figure.SWITCH_PX}"
    narrow_max = float(re.search(r"\.and-arch-narrow \{[^}]*max-width: ([\d.]+)px", css).group(1))
    assert narrow_max == figure.NARROW_MAX_PX
    wide_width, wide_text = _smallest_text(figure.wide({}, "t"))
    narrow_width, narrow_text = _smallest_text(figure.narrow({}, "t"))
    wide_max = float(re.search(r"\.and-arch-wide \{[^}]*max-width: ([\d.]+)px", css).group(1))
    assert wide_max <= wide_width * 1.25, "the wide drawing would be blown up past its drawn size"
    on_screen = {"wide, in the narrowest column that shows it": wide_text * figure.SWITCH_PX / wide_width,
                 "narrow, on a 320 px column": narrow_text * figure.NARROWEST_COLUMN_PX / narrow_width}
    small = {k: round(v, 1) for k, v in on_screen.items() if v < figure.MIN_TEXT_PX}
    assert not small, f"figure text below {figure.MIN_TEXT_PX} px on the screen: {small}"


def test_the_text_size_check_can_fail():
    figure = _figure_module()
    assert _smallest_text(figure.wide({}, "t"))[1] == min(figure.TITLE, figure.MODULE, figure.NOTE)
    small = '<svg viewBox="0 0 720 10"><text font-size="9">x</text></svg>'
    assert _smallest_text(small) == (720.0, 9.0)
