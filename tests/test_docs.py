"""The docs are tested like code.

1. Every ```` ```python ```` block of every page under ``docs/`` runs, each page's blocks in
   order in one namespace, in a temporary working directory. A block is skipped only when the
   line before it is ``<!-- no-test: <reason> -->``; that set is kept tiny (checked below).
   A page whose first line is ``<!-- docs-test: slurm -->`` needs the SLURM cluster: its test
   is marked ``slurm`` and skips when ``sinfo`` finds no usable node. A page with a
   ``<!-- expected-output -->`` ```` ```text ```` block runs with one torch thread and must print
   that block (numbers within 1.5 points for percentages, 2 % otherwise: other CPUs round
   differently). The block is written by a run, never by hand:
   ``AND_UPDATE_EXPECTED=1 python -m pytest tests/test_docs.py -k <page>`` rewrites it with
   what the page printed.
2. Every parameter table announced by ``<!-- params: dotted.path -->`` lists exactly the
   parameters of that callable, with their real defaults, so the pages cannot drift.
3. (marker ``docs``) The site builds with warnings as errors, the main pages exist, search and
   code highlighting are there, and no internal link or anchor is broken.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import html.parser
import importlib
import inspect
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.relative_to(DOCS).parts)
NO_TEST = re.compile(r"^<!--\s*no-test:\s*(?P<reason>\S.*?)\s*-->$")
PAGE_MARK = re.compile(r"^<!--\s*docs-test:\s*(?P<marks>[\w ,]+?)\s*-->$")
PARAMS = re.compile(r"^<!--\s*params:\s*(?P<target>[\w.]+)\s*-->$")
MAX_SKIPPED_BLOCKS = 3
EXPECTED = re.compile(r"(<!-- expected-output -->\n```text\n)(.*?)(```)", re.S)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(%?)")


@dataclasses.dataclass
class Block:
    page: Path
    line: int  # 1-based line of the first code line
    code: str
    skip_reason: str | None


def python_blocks(page: Path) -> list[Block]:
    """The ```python fenced blocks of a Markdown page, with their no-test reasons."""
    lines = page.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = re.match(r"^(`{3,})python\s*$", lines[i])
        if not opening:
            i += 1
            continue
        fence = opening.group(1)
        previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = NO_TEST.match(previous)
        start = i + 1
        end = start
        while end < len(lines) and not re.match(rf"^{fence}\s*$", lines[end]):
            end += 1
        if end == len(lines):
            raise AssertionError(f"{page}:{i + 1}: unclosed ```python block")
        blocks.append(Block(page, start + 1, "\n".join(lines[start:end]) + "\n", marker and marker.group("reason")))
        i = end + 1
    return blocks


def page_marks(page: Path) -> list[str]:
    first = page.read_text().splitlines()[:1]
    match = PAGE_MARK.match(first[0].strip()) if first else None
    return re.split(r"[ ,]+", match.group("marks")) if match else []


def _page_param(page: Path):
    marks = [getattr(pytest.mark, name) for name in page_marks(page)]
    return pytest.param(page, id=str(page.relative_to(DOCS)), marks=marks)


RUNNABLE = [p for p in PAGES if any(b.skip_reason is None for b in python_blocks(p))]


@functools.cache
def _slurm_unavailable_reason() -> str | None:
    if shutil.which("sinfo") is None:
        return "sinfo not on PATH; start the local cluster: bash slurm/local_cluster.sh install && ... start"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], check=False, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"sinfo failed: {error}"
    if out.returncode != 0 or not set(out.stdout.split()) & {"idle", "mix", "alloc"}:
        return f"no usable SLURM node (sinfo: {out.stdout.strip() or out.stderr.strip()})"
    return None


def test_pages_exist_and_blocks_parse():
    assert PAGES, f"no Markdown pages under {DOCS}"
    for page in PAGES:
        for block in python_blocks(page):
            compile("\n" * (block.line - 1) + block.code, str(block.page), "exec")


def test_skipped_blocks_are_few_and_explained():
    skipped = [f"{b.page.relative_to(DOCS)}:{b.line} ({b.skip_reason})"
               for p in PAGES for b in python_blocks(p) if b.skip_reason is not None]
    assert len(skipped) <= MAX_SKIPPED_BLOCKS, f"too many <!-- no-test --> blocks: {skipped}"


def assert_prints(printed: list[str], shown: list[str]) -> None:
    """``printed`` is ``shown`` up to the numbers, and every number is within its tolerance."""
    assert len(printed) == len(shown), f"printed {len(printed)} lines, the page shows {len(shown)}: {printed}"
    for got, want in zip(printed, shown):
        assert NUMBER.sub("#", got) == NUMBER.sub("#", want), (got, want)
        for g, w in zip(NUMBER.finditer(got), NUMBER.finditer(want)):
            a, b = float(g.group().rstrip("%")), float(w.group().rstrip("%"))
            tolerance = 1.5 if w.group(1) else 0.02 * abs(b)
            assert abs(a - b) <= tolerance, (got, want)


def test_assert_prints_can_fail():
    assert_prints(["kNN 81.2% at 3.70"], ["kNN 81.9% at 3.73"])
    for printed in (["kNN 78.0% at 3.73"], ["kNN 81.9% at 4.73"], ["knn 81.9% at 3.73"], []):
        with pytest.raises(AssertionError):
            assert_prints(printed, ["kNN 81.9% at 3.73"])


@pytest.mark.parametrize("page", [_page_param(p) for p in RUNNABLE])
def test_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture[str]) -> None:
    """Runs a page's python blocks in order, in one namespace, in an empty working directory;
    checks the page's expected output where it shows one."""
    if "slurm" in page_marks(page):
        reason = _slurm_unavailable_reason()
        if reason:
            pytest.skip(reason)
    from and_plugin import registry

    for table in vars(registry).values():  # pages register their own: every registry is restored afterwards
        if isinstance(table, registry.Registry):
            for attribute in ("_entries", "_info"):
                if hasattr(table, attribute):
                    monkeypatch.setattr(table, attribute, dict(getattr(table, attribute)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict[str, object] = {"__name__": "__docs__"}
    expected = EXPECTED.search(page.read_text())
    import torch

    threads = torch.get_num_threads()
    if expected:
        torch.set_num_threads(1)  # the shown output was printed with one thread (summation order)
        capsys.readouterr()
    try:
        for block in python_blocks(page):
            if block.skip_reason is not None:
                continue
            # Leading newlines make traceback line numbers those of the .md file.
            code = compile("\n" * (block.line - 1) + block.code, str(block.page), "exec")
            exec(code, namespace)  # noqa: S102 - running the documentation is the point
    finally:
        torch.set_num_threads(threads)
    if expected:
        printed = capsys.readouterr().out
        if os.environ.get("AND_UPDATE_EXPECTED") == "1":
            text = page.read_text()
            page.write_text(EXPECTED.sub(lambda m: m.group(1) + printed + m.group(3), text, count=1))
        assert_prints(printed.splitlines(), expected.group(2).splitlines())


def test_recipes_page_names_every_recipe_and_only_real_ones():
    """docs/recipes.md and recipes/*.py stay in step: no stale command, no missing recipe."""
    text = (DOCS / "recipes.md").read_text()
    mentioned = set(re.findall(r"recipes/(\w+)\.py", text))
    scripts = {p.stem for p in (REPO / "recipes").glob("*.py")}
    assert mentioned <= scripts, f"recipes.md names recipes that do not exist: {sorted(mentioned - scripts)}"
    assert scripts <= mentioned, f"recipes missing from recipes.md: {sorted(scripts - mentioned)}"


# ----------------------------------------------------------------------------- parameter tables


def _resolve(target: str):
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(target)


def _documented_parameters(page: Path) -> list[tuple[str, int, dict[str, str]]]:
    """(target, line, {parameter: default cell}) for every announced table of a page."""
    lines = page.read_text().splitlines()
    tables = []
    for i, line in enumerate(lines):
        match = PARAMS.match(line.strip())
        if not match:
            continue
        rows: dict[str, str] = {}
        j = i + 1
        while j < len(lines) and not lines[j].startswith("|"):
            j += 1
        for row in lines[j + 2 :]:  # skip the header and the |---| line
            if not row.startswith("|"):
                break
            cells = [c.strip() for c in row.strip().strip("|").split("|")]
            rows[cells[0].strip("`")] = cells[1]
        tables.append((match.group("target"), i + 1, rows))
    return tables


REQUIRED = inspect.Parameter.empty


def _expected_parameters(obj) -> dict[str, object]:
    """``{name: default or REQUIRED}``; ``*args``/``**kwargs`` keep their stars."""
    signature = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj)
    out: dict[str, object] = {}
    for name, param in signature.parameters.items():
        if name == "self":
            continue
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            out[f"**{name}"] = "—"
        elif param.kind is inspect.Parameter.VAR_POSITIONAL:
            out[f"*{name}"] = "—"
        else:
            out[name] = param.default
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj):  # <factory> defaults: the value they make
        for field in dataclasses.fields(obj):
            if field.default_factory is not dataclasses.MISSING and field.name in out:
                out[field.name] = field.default_factory()
    return out


def _same_default(cell: str, default: object) -> bool:
    text = cell.strip().strip("`")
    if default is None and text == "None":
        return True
    try:
        return ast.literal_eval(text) == default and type(ast.literal_eval(text)) is type(default)
    except (ValueError, SyntaxError):
        return text == str(default)


PARAM_TABLES = [(p, t) for p in PAGES for t in _documented_parameters(p)]


def test_parameter_tables_are_announced():
    assert PARAM_TABLES, "no <!-- params: ... --> tables found"


@pytest.mark.parametrize(
    ("page", "table"), PARAM_TABLES, ids=[f"{p.relative_to(DOCS)}:{t[0]}" for p, t in PARAM_TABLES]
)
def test_parameter_table_matches_signature(page: Path, table) -> None:
    target, line, rows = table
    expected = _expected_parameters(_resolve(target))
    where = f"{page.relative_to(REPO)}:{line} ({target})"
    assert list(rows) == list(expected), f"{where}: parameters documented {list(rows)}, signature has {list(expected)}"
    for name, default in expected.items():
        cell = rows[name]
        if name.startswith("*"):
            continue
        if default is REQUIRED and cell == "required":
            continue
        if default is REQUIRED:
            pytest.fail(f"{where}: {name} is required, the table says {cell!r}")
        assert cell != "required", f"{where}: {name} has default {default!r}, the table says required"
        assert _same_default(cell, default), f"{where}: {name} defaults to {default!r}, the table says {cell}"


# ------------------------------------------------------------------------------- the built site

BUILD = DOCS / "_build" / "html"
MAIN_PAGES = [
    "index.html",
    "overview.html",
    "getting-started.html",
    "components/memory-bank.html",
    "components/loss.html",
    "components/miner.html",
    "components/curriculum.html",
    "components/evaluation.html",
    "components/backbones.html",
    "components/datasets.html",
    "components/trainer.html",
    "components/launcher.html",
    "recipes.html",
    "performance.html",
    "howto/pml-miner.html",
    "howto/lightning.html",
    "howto/custom-components.html",
    "results.html",
    "architecture.html",
    "failure-modes.html",
    "howto/slurm.html",
    "configuration.html",
    "api/index.html",
    "changelog.html",
    "search.html",
    "genindex.html",
]


@pytest.fixture(scope="session")
def site() -> Path:
    """The built site in docs/_build/html, built from scratch with warnings as errors, unless
    AND_DOCS_PREBUILT=1 says the build there is current (e.g. ``make docs`` just ran)."""
    if os.environ.get("AND_DOCS_PREBUILT") == "1":
        if not (BUILD / "index.html").is_file():
            pytest.fail(f"AND_DOCS_PREBUILT=1 but {BUILD}/index.html does not exist; run `make docs`")
        return BUILD
    # From scratch: Sphinx keeps stale pages an incremental build does not rewrite (viewcode's
    # source pages, pages of deleted documents), and those would hide or fake broken links.
    shutil.rmtree(BUILD.parent, ignore_errors=True)
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(BUILD)],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=1800,
    )
    assert result.returncode == 0, f"sphinx build failed:\n{result.stdout[-5000:]}\n{result.stderr[-10000:]}"
    return BUILD


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.highlighted = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"])  # type: ignore[arg-type]
        if tag == "a" and values.get("name"):
            self.ids.add(values["name"])  # type: ignore[arg-type]
        for key in ("href", "src"):
            if values.get(key) and tag in ("a", "img", "link", "script"):
                self.links.append(values[key])  # type: ignore[arg-type]
        if tag == "span" and values.get("class") in ("k", "kn", "nn", "nf", "s2", "mi", "o", "n"):
            self.highlighted += 1


@functools.cache
def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(errors="replace"))
    return parser


@pytest.mark.docs
def test_main_pages_search_and_highlighting(site: Path) -> None:
    missing = [p for p in MAIN_PAGES if not (site / p).is_file()]
    assert not missing, f"pages missing from the built site: {missing}"
    index = (site / "searchindex.js").read_text()
    for term in ("memori", "neighbourhood", "anchor", "curriculum", "slurm", "andminer"):
        assert term in index.lower(), f"search index lacks {term!r}"
    for page in ("components/memory-bank.html", "howto/pml-miner.html"):
        assert _parse(site / page).highlighted > 10, f"{page}: no Pygments-highlighted code"
    assert "MathJax" in (site / "components/loss.html").read_text() or "mathjax" in (site / "components/loss.html").read_text()


@pytest.mark.docs
def test_no_broken_internal_links(site: Path) -> None:
    broken: list[str] = []
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= len(MAIN_PAGES)
    for page in pages:
        for link in _parse(page).links:
            parsed = urllib.parse.urlsplit(link)
            if parsed.scheme or link.startswith("//"):
                continue  # external (MathJax's CDN, GitHub): not checked offline
            target = page if not parsed.path else (page.parent / urllib.parse.unquote(parsed.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(site)} → {link} (no such file)")
                continue
            fragment = urllib.parse.unquote(parsed.fragment)
            if fragment and target.suffix == ".html" and fragment not in _parse(target).ids:
                broken.append(f"{page.relative_to(site)} → {link} (no such anchor)")
    assert not broken, f"{len(broken)} broken internal links:\n" + "\n".join(broken[:50])


def _browser() -> str | None:
    return next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)


@pytest.mark.docs
def test_search_works_in_a_headless_browser(site: Path) -> None:
    """Loads search.html in headless Chromium, lets its JavaScript run, reads the results."""
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    url = (site / "search.html").resolve().as_uri() + "?q=neighbourhood+loss"
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--virtual-time-budget=20000",
         "--dump-dom", url],
        check=False, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = re.search(r"found (\d+) pages? matching", result.stdout)
    assert found and int(found.group(1)) > 0, f"no search results in the rendered page:\n{result.stdout[-3000:]}"
    assert 'href="components/loss.html' in result.stdout
    assert 'href="components/memory-bank.html"' in result.stdout  # the navigation sidebar


@pytest.mark.docs
def test_equations_render_offline_in_a_headless_browser(site: Path) -> None:
    """The bundled MathJax turns the loss page's TeX into SVG with the network cut off."""
    script = [s for s in _parse(site / "components/loss.html").links if "tex-svg.js" in s]
    assert script and not urllib.parse.urlsplit(script[0]).scheme, f"MathJax is not the bundled copy: {script}"
    assert (site / "_static" / "mathjax" / "tex-svg.js").is_file()
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    url = (site / "components/loss.html").resolve().as_uri()
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "--no-first-run",
         "--virtual-time-budget=20000", "--dump-dom", url],
        check=False, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("<mjx-container") >= 3 and "<svg" in result.stdout, "equations were not typeset"
    assert '<g data-mml-node="merror"' not in result.stdout, "MathJax reported a TeX error"


# ------------------------------------------------------------------------------- layout and API

#: Shown code wider than this is clipped at 1280 px (ruff format's 88 columns).
MAX_CODE_COLUMNS = 88
FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def long_code_lines(page: Path) -> list[str]:
    """``page:line (n columns)`` for every line of a fenced code block (any language, and the
    notebooks' code cells) wider than :data:`MAX_CODE_COLUMNS`; directives such as
    ```` ```{note} ```` or ```` ```{toctree} ```` hold prose, not code, and are skipped."""
    long, fence, is_code = [], None, False
    for number, line in enumerate(page.read_text().splitlines(), 1):
        match = FENCE.match(line)
        if fence is None and match:
            info = match["info"].strip()
            fence, is_code = match["fence"], not info.startswith("{") or info.startswith("{code-cell")
        elif fence is not None and line.strip() == fence:
            fence = None
        elif fence is not None and is_code and len(line) > MAX_CODE_COLUMNS:
            long.append(f"{page.relative_to(DOCS)}:{number} ({len(line)} columns)")
    return long


def test_code_on_the_pages_fits_88_columns():
    long = [entry for page in PAGES for entry in long_code_lines(page)]
    assert not long, f"code lines over {MAX_CODE_COLUMNS} columns (clipped at 1280 px):\n" + "\n".join(long)


#: Scripts the pages link to and readers open next to them: formatted at the same width.
EXAMPLES = sorted((REPO / "examples").glob("*.py"))


def long_source_lines(path: Path) -> list[str]:
    """``examples/file.py:line (n columns)`` for every line wider than :data:`MAX_CODE_COLUMNS`."""
    return [f"{path.relative_to(REPO)}:{number} ({len(line)} columns)"
            for number, line in enumerate(path.read_text().splitlines(), 1) if len(line) > MAX_CODE_COLUMNS]


def test_the_examples_fit_88_columns():
    assert EXAMPLES, "no scripts under examples/"
    long = [entry for path in EXAMPLES for entry in long_source_lines(path)]
    assert not long, (f"example lines over {MAX_CODE_COLUMNS} columns (`ruff format --line-length "
                      f"{MAX_CODE_COLUMNS}`, then wrap comments and strings):\n" + "\n".join(long))


def test_the_width_check_can_fail(tmp_path: Path) -> None:
    page = DOCS / "_width_probe.md"
    try:
        page.write_text("```python\n" + "x = 1  # " + "y" * 90 + "\n```\n\n```{note}\n" + "z" * 100 + "\n```\n")
        assert long_code_lines(page) == ["_width_probe.md:2 (99 columns)"]
    finally:
        page.unlink()
    script = REPO / "examples" / "_width_probe.py"
    try:
        script.write_text("x = 1\n" + "y = " + "1 + " * 22 + "1\n")
        assert long_source_lines(script) == ["examples/_width_probe.py:2 (93 columns)"]
    finally:
        script.unlink()


def _api_extensions():
    """The docs' ``and_api_pages`` and ``and_xref_aliases`` extension modules."""
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        return importlib.import_module("and_api_pages"), importlib.import_module("and_xref_aliases")
    finally:
        sys.path.remove(str(DOCS / "_ext"))


def test_every_public_name_is_on_an_api_page():
    """Every class and function of ``and_plugin.__all__`` gets a page of its own (the module
    that defines it is on an API page); registries and other data are on their module's page."""
    import and_plugin

    api_pages, aliases = _api_extensions()
    pages = set(api_pages.api_objects())
    missing = [f"{name} ({aliases.canonical_name(f'and_plugin.{name}')})" for name in and_plugin.__all__
               if (inspect.isclass(getattr(and_plugin, name)) or inspect.isfunction(getattr(and_plugin, name)))
               and aliases.canonical_name(f"and_plugin.{name}") not in pages]
    assert not missing, f"public names without an API page: {missing}"


@pytest.mark.docs
def test_every_api_name_has_its_page_and_the_index_links_them(site: Path) -> None:
    import and_plugin

    api_pages, aliases = _api_extensions()
    names = api_pages.api_objects()
    missing = [n for n in names if not (site / "api" / "generated" / f"{n}.html").is_file()]
    assert not missing, f"API names without a page: {missing}"
    linked = {urllib.parse.urlsplit(link).path.rsplit("/", 1)[-1].removesuffix(".html")
              for link in _parse(site / "api" / "index.html").links}
    unlinked = [n for n in and_plugin.__all__ if aliases.canonical_name(f"and_plugin.{n}") in names
                and aliases.canonical_name(f"and_plugin.{n}") not in linked]
    assert not unlinked, f"names in the API index table without a link to their page: {unlinked}"
    page = (site / "api" / "generated" / "and_plugin.memory_bank.MemoryBank.html").read_text()
    assert "extra_repr" not in page, "extra_repr is rendered on the MemoryBank page"


@pytest.mark.docs
def test_the_architecture_figure_links_each_module_to_its_api_page(site: Path) -> None:
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        figure = importlib.import_module("and_architecture_figure")
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    page = (site / "architecture.html").read_text()
    assert 'class="and-arch-wide"' in page and 'class="and-arch-narrow"' in page, "no architecture figure"
    hrefs = set(re.findall(r'<a href="([^"]+)"><text', page))
    unlinked = [name for name in sorted(figure.modules_in_figure()) if not name.startswith("_")
                and not any(href.endswith(f"#module-and_plugin.{name}") for href in hrefs)]
    assert not unlinked, f"modules in the architecture figure without a link to their API page: {unlinked}"


def long_output_lines(page_html: str) -> list[str]:
    """The lines of a notebook page's cell outputs (text and rich's HTML) wider than
    :data:`MAX_CODE_COLUMNS`: the page shows them cut off."""
    import html as html_lib

    outputs = re.findall(r'<div class="output[^"]*">\s*<pre[^>]*>(.*?)</pre>', page_html, re.DOTALL)
    lines = [line for block in outputs for line in html_lib.unescape(re.sub(r"<[^>]+>", "", block)).splitlines()]
    return [line for line in lines if len(line.rstrip()) > MAX_CODE_COLUMNS]


def test_the_output_width_check_can_fail() -> None:
    wide = "Baselines: raw pixels 94.5 %, untrained network 83.6 %. " + "x" * 60
    page = f'<div class="output text_html"><pre><span style="x">{wide}</span>\nok</pre></div>'
    assert long_output_lines(page) == [wide]


@pytest.mark.docs
def test_notebook_output_fits_88_columns(site: Path) -> None:
    long = {name: long_output_lines((site / "tutorials" / f"{name}.html").read_text())
            for name in ("quickstart", "pml-miner", "lightning")}
    long = {name: lines for name, lines in long.items() if lines}
    assert not long, f"notebook output wider than {MAX_CODE_COLUMNS} columns (cut off on the page): {long}"


@pytest.mark.docs
def test_a_number_and_its_spread_stay_on_one_line(site: Path) -> None:
    """``94.8 ± 0.6`` never wraps inside: the spaces around ± are no-break spaces."""
    page = (site / "results.html").read_text()
    prose = re.sub(r"<[^>]+>", "", re.sub(r"<(code|pre|script)\b.*?</\1>", "", page, flags=re.DOTALL))
    assert "\u00a0±\u00a0" in prose or "&#160;±&#160;" in prose
    assert " ± " not in prose, "a breakable space next to ± on the results page"


@pytest.mark.docs
def test_notebooks_were_executed(site: Path) -> None:
    for name in ("quickstart", "pml-miner", "lightning"):
        text = (site / "tutorials" / f"{name}.html").read_text()
        assert "cell_output" in text, f"tutorials/{name}: no executed output"
        assert re.search(r'<img[^>]+src="[^"]+\.png"', text), f"tutorials/{name}: no plot"
