"""Sphinx extension: one API page per public class and function, like lightly's and PML's.

On the API pages (``docs/api/*.md``) every ``.. automodule:: NAME`` written without options
becomes the module's docstring followed by an autosummary table of its public classes and
functions, each linked to a page of its own (``api/generated/<module>.<name>``); the module's
public data (registries, constants) stay on the module's page. A ``.. autofunction::`` /
``.. autoclass::`` line on those pages likewise becomes a table row with a page of its own.

Public means the module's ``__all__``, or else the names it defines without a leading
underscore. The generated pages are written at ``builder-inited`` into
``docs/api/generated/`` (not tracked; rewritten by every build), so a new public name gets its
page without editing the docs.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer

HERE = Path(__file__).resolve().parent
API = HERE.parent / "api"
GENERATED = API / "generated"
AUTOMODULE = re.compile(r"^\.\. automodule:: (?P<name>[\w.]+)[ \t]*\n(?![ \t]+:)", re.M)
AUTOOBJECT = re.compile(r"^\.\. auto(?:function|class):: (?P<name>[\w.]+)[ \t]*\n(?![ \t]+:)", re.M)


def public_members(module_name: str) -> tuple[list[str], list[str]]:
    """(classes and functions, documented data) that ``module_name`` makes public, in source order.

    Data (constants, registries) count only with a ``#:`` doc comment: without one autodoc would
    show the docstring of the value's type.
    """
    module = importlib.import_module(module_name)
    try:
        documented = {name for (scope, name) in ModuleAnalyzer.for_module(module_name).find_attr_docs()
                      if scope == ""}
    except PycodeError:
        documented = set()
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items() if not n.startswith("_")
                 and ((getattr(v, "__module__", None) == module_name
                       and (inspect.isclass(v) or inspect.isfunction(v))) or n in documented)]
    objects, data = [], []
    for name in names:
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            if getattr(value, "__module__", module_name) == module_name:  # re-exports: their own module
                objects.append(name)
        elif not inspect.ismodule(value) and name in documented:
            data.append(name)
    return objects, data


def _documented(page_text: str) -> tuple[list[str], list[str]]:
    """(modules expanded by AUTOMODULE, objects expanded by AUTOOBJECT) of one API page."""
    return AUTOMODULE.findall(page_text), AUTOOBJECT.findall(page_text)


def api_objects() -> list[str]:
    """The full names of every class and function that gets a page."""
    out: list[str] = []
    for page in sorted(API.glob("*.md")):
        modules, objects = _documented(page.read_text())
        for module in modules:
            out += [f"{module}.{name}" for name in public_members(module)[0]]
        out += objects
    return list(dict.fromkeys(out))


def _stub(full_name: str) -> str:
    module_name, name = full_name.rsplit(".", 1)
    value = getattr(importlib.import_module(module_name), name)
    lines = [name, "=" * len(name), "", f"``{full_name}``", "", f".. currentmodule:: {module_name}", ""]
    if inspect.isclass(value):
        lines += [f".. autoclass:: {name}", "   :members:", "   :show-inheritance:", ""]
    else:
        lines += [f".. autofunction:: {name}", ""]
    return "\n".join(lines)


def write_pages(app: Sphinx | None = None) -> list[str]:
    """Writes ``api/generated/<full name>.rst`` for every API object; removes stale ones."""
    GENERATED.mkdir(exist_ok=True)
    names = api_objects()
    wanted = {f"{n}.rst" for n in names}
    for old in GENERATED.glob("*.rst"):
        if old.name not in wanted:
            old.unlink()
    for name in names:
        path = GENERATED / f"{name}.rst"
        text = _stub(name)
        if not path.exists() or path.read_text() != text:  # unchanged files keep Sphinx's cache valid
            path.write_text(text)
    return names


def _table(full_names: list[str]) -> str:
    if not full_names:
        return ""
    module = full_names[0].rsplit(".", 1)[0]  # autosummary wants names relative to the module
    rows = "\n".join(f"   {n.rsplit('.', 1)[1]}" for n in full_names)
    toc = "\n".join(f"   generated/{n}" for n in full_names)
    return (f"\n.. currentmodule:: {module}\n\n.. autosummary::\n   :nosignatures:\n\n{rows}\n\n"
            f".. toctree::\n   :hidden:\n\n{toc}\n\n")


def _expand_module(match: re.Match[str], page_text: str) -> str:
    module = match["name"]
    objects, data = public_members(module)
    out = f".. automodule:: {module}\n   :no-members:\n" + _table([f"{module}.{n}" for n in objects])
    for name in data:
        if f"autodata:: {module}.{name}" not in page_text:
            out += f".. autodata:: {module}.{name}\n   :no-value:\n\n"
    return out


INDEX_TABLE = "<!-- api-index-table -->"


def index_table() -> str:
    """The API index: every name of ``and_plugin.__all__``, linked to its page, with its module."""
    import and_plugin

    rows = ["| import from `and_plugin` | what (and the module that defines it) |", "|---|---|"]
    for name in sorted(and_plugin.__all__, key=str.lower):
        value = getattr(and_plugin, name)
        module = getattr(value, "__module__", None) if (inspect.isclass(value) or inspect.isfunction(value)) else None
        if module is None:  # registries and other data: documented on their module's page
            kind, module = "registry" if type(value).__name__ == "Registry" else "data", "and_plugin.registry"
            rows.append(f"| {{py:data}}`{name} <{module}.{name}>` | {kind} (`{module}`) |")
            continue
        kind = "class" if inspect.isclass(value) else "function"
        summary = (inspect.getdoc(value) or "").split("\n\n")[0].replace("\n", " ").replace("|", "\\|")
        rows.append(f"| {{py:obj}}`{name} <{module}.{value.__qualname__}>` | {kind}: {summary} (`{module}`) |")
    return "\n".join(rows) + "\n"


def _source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    if not docname.startswith("api/") or docname.startswith("api/generated/"):
        return
    text = source[0].replace(INDEX_TABLE, index_table()) if INDEX_TABLE in source[0] else source[0]
    text = AUTOMODULE.sub(lambda m: _expand_module(m, source[0]), text)
    source[0] = AUTOOBJECT.sub(lambda m: _table([m["name"]]), text)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", write_pages)
    app.connect("source-read", _source_read)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
