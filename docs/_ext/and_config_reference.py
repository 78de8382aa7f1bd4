"""Sphinx extension: the configuration reference, generated from ``and_plugin.config``.

A page that contains the line ``<!-- and-config-reference -->`` gets, in its place, one section
per config dataclass (``Config.model`` → ``ModelConfig`` ...) with a table of every field: the
dotted key, its type, its default and the description from the dataclass's ``Attributes:``
docstring section. It walks the dataclasses at build time, so the page cannot drift from the
code: a field without an ``Attributes:`` entry (or an entry without a field) is a build warning,
and the docs build treats warnings as errors.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from typing import Any

import yaml
from sphinx.application import Sphinx
from sphinx.util import logging

MARKER = "<!-- and-config-reference -->"
logger = logging.getLogger(__name__)


def parse_attributes(doc: str | None) -> dict[str, str]:
    """The ``Attributes:`` section of a Google-style docstring as ``{name: description}``.

    Continuation lines (indented deeper than the entry) are joined with spaces.
    """
    lines = inspect.cleandoc(doc or "").splitlines()
    out: dict[str, str] = {}
    inside, entry_indent, current = False, None, None
    for line in lines:
        if not inside:
            inside = line.strip() == "Attributes:"
            continue
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:  # the next section (or prose) ends the Attributes block
            break
        if entry_indent is None:
            entry_indent = indent
        match = re.match(r"(\w+)(?:\s*\(.*?\))?:\s*(.*)$", line.strip())
        if indent == entry_indent and match:
            current = match.group(1)
            out[current] = match.group(2).strip()
        elif current is not None:
            out[current] = f"{out[current]} {line.strip()}".strip()
    return out


def summary(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    text = inspect.cleandoc(doc or "")
    return " ".join(text.split("\n\n", 1)[0].split())


def type_name(tp: Any) -> str:
    """``int``, ``str | None``, ``list[float]``, ``dict[str, Any]`` ..."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(type_name(arg) for arg in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(type_name(arg) for arg in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is type(None):
        return "None"
    if tp is typing.Any:
        return "Any"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def default_of(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def yaml_value(value: Any) -> str:
    """A default as the user would write it in YAML (``null``, ``true``, ``[0.4, 0.6]``)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell: no column breaks, no raw HTML (``<name>``)."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def section_markdown(prefix: str, cls: type, location: str) -> list[str]:
    """The key table of one config dataclass; ``location`` (a docname) is where warnings point."""
    hints = typing.get_type_hints(cls)
    described = parse_attributes(cls.__doc__)
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    for extra in sorted(set(described) - names):
        logger.warning("config reference: %s documents attribute %r, which is not a field", cls.__name__, extra,
                       location=location)
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for f in fields:
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            continue
        if f.name not in described:
            logger.warning("config reference: field %s.%s has no entry in the Attributes: section of its docstring",
                           cls.__name__, f.name, location=location)
        key = f"{prefix}{f.name}"
        rows.append(
            f"| `{key}` | `{cell(type_name(tp))}` | `{cell(yaml_value(default_of(f)))}` "
            f"| {cell(described.get(f.name, ''))} |"
        )
    return rows


def reference_markdown(location: str) -> str:
    """The whole generated reference, as MyST Markdown."""
    from and_plugin import config as config_module

    root = config_module.Config
    hints = typing.get_type_hints(root)
    out: list[str] = []
    out += ["## Top level", "", summary(root.__doc__), ""]
    out += section_markdown("", root, location)
    for f in dataclasses.fields(root):
        tp = hints[f.name]
        if not dataclasses.is_dataclass(tp):
            continue
        out += ["", f"## `{f.name}` ({tp.__name__})", "", f"{summary(tp.__doc__)}", ""]
        out += [f"Class: {{class}}`and_plugin.config.{tp.__name__}`", ""]
        out += section_markdown(f"{f.name}.", tp, location)
    defaults = yaml.safe_dump(root().to_dict(), sort_keys=False)
    out += ["", "## Every default as YAML", "",
            "The resolved default configuration, exactly as a run writes it to `config.yaml`:", "",
            "```yaml", defaults.rstrip(), "```", ""]
    return "\n".join(out)


def _source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    if MARKER not in source[0]:
        return
    from and_plugin import config as config_module

    app.env.note_dependency(config_module.__file__)
    source[0] = source[0].replace(MARKER, reference_markdown(docname))


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("source-read", _source_read)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
