"""Sphinx extension: cross-references to re-exported names resolve to where they are documented.

``and_plugin`` re-exports its public API at the top level (``and_plugin.MemoryBank`` is
``and_plugin.memory_bank.MemoryBank``), and docstrings naturally write the short form. Every
object is documented once, under the module that defines it, so the short form would be an
unresolved reference. This handler imports the target, finds its defining module and qualified
name, and resolves the reference there. Targets outside ``and_plugin`` are left alone.
"""

from __future__ import annotations

import importlib
from typing import Any

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment


def canonical_name(target: str) -> str | None:
    """``and_plugin.MemoryBank`` → ``and_plugin.memory_bank.MemoryBank``; None if not importable."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            return None
        module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        if isinstance(module, str) and isinstance(qualname, str):
            return f"{module}.{qualname}"
        return None
    return None


def _missing_reference(app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.Element) -> Any:
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if not target.startswith("and_plugin."):
        return None
    canonical = canonical_name(target)
    if canonical is None or canonical == target:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], canonical, node, contnode)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("missing-reference", _missing_reference)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
