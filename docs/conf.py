"""Sphinx configuration of the and_plugin docs (furo + MyST Markdown + autodoc).

Build: ``make docs`` = ``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
Nothing here needs the network, at build time or when a page is viewed: MathJax 3 (its single-file
``tex-svg.js`` build, Apache-2.0, licence next to it) is bundled in ``_static/mathjax/``, and the
tutorials (``docs/tutorials/*.md``, MyST notebooks) are executed by myst-nb during the build, on
the CPU with one thread, from data that ships with the installed packages.
"""

from __future__ import annotations

import os
import sys
import tomllib
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))

import and_plugin

# The notebooks' kernels inherit this: one thread, as the recorded numbers elsewhere on the site.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # plots shown inline
# rich prints notebook output 115 columns wide by default; the page shows 88 (as the code).
os.environ.setdefault("JUPYTER_COLUMNS", "88")
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(HERE.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
)

# sphinx-autodoc-typehints 3.6 calls an API Sphinx 10 will remove; the Python warning it raises
# for every docstring is noise in the build log (Sphinx's own warnings still fail the build).
warnings.filterwarnings("ignore", message=r".*_RstSnippetParser\.set_application.*")

project = "and_plugin"
author = "and_plugin developers"
copyright = "2026, and_plugin developers"
release = and_plugin.__version__
version = release
#: The project's links: the package metadata's Project-URLs (pyproject.toml), in one place.
PROJECT_LINKS = tomllib.loads((HERE.parent / "pyproject.toml").read_text())["project"]["urls"]
REPOSITORY = PROJECT_LINKS["Source"]

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_autodoc_typehints",
    "sphinx_copybutton",
    "myst_nb",
    "and_config_reference",
    "and_xref_aliases",
    "and_benchmark_results",
    "and_accuracy_results",
    "and_api_pages",
    "and_figures",
    "and_architecture_figure",
    "and_typography",
]

source_suffix = {".md": "myst-nb", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "README.md", "jupyter_execute"]
templates_path: list[str] = []

# -- MyST ---------------------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist", "fieldlist", "attrs_inline",
                          "substitution"]
# {{ version }} and the project links on any page.
myst_substitutions = {"version": release, **{k.lower().replace("'", "").replace(" ", "_"): v
                                             for k, v in PROJECT_LINKS.items()}}
myst_heading_anchors = 3
myst_dmath_double_inline = True

# -- notebooks (myst-nb) -------------------------------------------------------------------------
# Executed at build time (cached between builds in _build/.jupyter_cache; CI builds from scratch).
nb_execution_mode = "cache"
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
nb_output_stderr = "remove"  # library log lines and warnings are not the tutorial's output
nb_execution_in_temp = True  # runs/ and checkpoints go to a temporary directory, not into docs/

# -- autodoc / napoleon / typehints ------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True, "exclude-members": "extra_repr"}
autosummary_generate = False  # the pages are written by the and_api_pages extension
autodoc_typehints = "description"  # sphinx-autodoc-typehints puts the types into the parameter list
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True
typehints_defaults = "comma"
always_document_param_types = False
typehints_use_signature = False
typehints_use_signature_return = False
# Every cross-reference into and_plugin must resolve (a renamed or moved object fails the build).
# Names outside it (torch, typing, numpy, ...) would need intersphinx, i.e. the network at build
# time, so they stay plain text.
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"(?!and_plugin\.).*")]

# -- HTML ---------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"and_plugin {release}"
html_theme_options = {
    "source_repository": f"{REPOSITORY}/",
    "source_branch": "main",
    "source_directory": "docs/",
    "footer_icons": [
        {"name": "Source", "url": REPOSITORY, "html": "source code", "class": ""},
        {"name": "Issues", "url": f"{REPOSITORY}/issues", "html": "issues", "class": ""},
        {"name": "Paper", "url": PROJECT_LINKS["Paper"], "html": "paper (arXiv)", "class": ""},
    ],
}
html_context = {"project_links": PROJECT_LINKS}
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_js_files = ["and-scroll-cue.js"]
# Equations render offline (clusters often have no internet): the bundled MathJax, SVG output
# (no web fonts to fetch).
mathjax_path = "mathjax/tex-svg.js"
html_last_updated_fmt = None
# Curly quotes and ellipses, but "--flag" stays two hyphens outside code spans too.
smartquotes_action = "qe"
pygments_style = "friendly"
pygments_dark_style = "monokai"
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
copybutton_exclude = ".linenos, .gp, .go"

# Reproducible builds: no timestamps that change every build.
os.environ.setdefault("SOURCE_DATE_EPOCH", "0")
