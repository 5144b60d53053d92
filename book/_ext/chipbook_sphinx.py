"""Sphinx glue for the book's HTML: keep every page self-contained and free of JavaScript errors.

Jupyter Book 1.x always loads sphinx-thebe, which puts an inline script declaring ``const
THEBE_JS_URL`` (an address on unpkg.com) into the page, twice on most pages, so the second copy throws
"Identifier has already been declared". The book offers no live kernel on its pages (readers run the
notebooks in JupyterLab), so this extension removes sphinx-thebe's scripts from every page.

The theme loads Font Awesome twice: as a web font, from its stylesheet, and as fontawesome.js (1.5 MB,
0.5 MB compressed), a script that swaps each icon for an SVG. The web font alone draws the same
icons, so this extension drops the script from every page, and marks the pages' images
``loading="lazy"``, so that a figure far down a chapter is fetched when the reader scrolls to it:
a first visit to a chapter then stays lighter (`make bench` measures it).

The widget bundle (book/_widgets/ipywidgets/embed-amd-*.js, the html-manager's file as npm ships it)
is served lighter, without changing what it runs: its copy in the built site loses the two modules
that render ipywidgets 7 widgets (``@jupyter-widgets/base7`` and ``controls7``: the book's widgets
are ipywidgets 8, which the manager draws with ``base`` and ``controls``) and the source maps of its
stylesheets (debugging data). Together about 1.3 MB, 0.3 MB compressed, of every first visit to a
chapter; the browser tests check that every explorable still draws and moves.

A notebook downloaded from a page (the download button serves the copy under ``_sources``) runs
outside the repository, where ``from chipbook import …`` fails with a bare ModuleNotFoundError. So the
downloaded copy starts with one more cell, which says how to get the package (DOWNLOAD_HINT) and
raises that as the error when the package is missing.

It also writes the site's root ``index.html``, which sends a visitor to the first page. The redirect
that sphinx-external-toc writes is a bare ``<meta>`` tag with no icon, so the browser asks for
``/favicon.ico``, which the book does not have, and logs a 404 before it follows the redirect.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

_REDIRECT = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="icon" href="_static/{icon}">
<meta http-equiv="Refresh" content="0; url={url}">
</head>
<body><p><a href="{url}">{title}</a></p></body>
</html>
"""


#: The first line a downloaded notebook shows: where the package it imports comes from.
DOWNLOAD_HINT = ("This notebook needs the book's `chipbook` package and data: clone the book's repository "
                 "and run `make lab` there (or `pip install -e .` in the clone), then open this notebook "
                 "from the clone's notebooks/ folder.")
#: The tag that marks the cell this extension adds, so that it is added once.
HINT_TAG = "chipbook-download-hint"


def hint_cell() -> dict[str, Any]:
    """The code cell a downloaded notebook starts with: a comment with DOWNLOAD_HINT, and the same
    text as the error when the package cannot be imported."""
    source = (f"# {DOWNLOAD_HINT}\n"
              "import importlib.util\n\n"
              "if importlib.util.find_spec(\"chipbook\") is None:\n"
              f"    raise ModuleNotFoundError({DOWNLOAD_HINT!r})")
    return {"cell_type": "code", "execution_count": None, "id": HINT_TAG,
            "metadata": {"tags": [HINT_TAG, "remove-cell"]}, "outputs": [], "source": source}


def add_download_hint(path: Path) -> None:
    """Put the hint cell first in the downloadable notebook at ``path`` (once)."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    cells = notebook.get("cells", [])
    if cells and HINT_TAG in cells[0].get("metadata", {}).get("tags", []):
        return
    notebook["cells"] = [hint_cell(), *cells]
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def hint_downloads(app, exception) -> None:
    """Add the hint to every notebook the built site offers for download."""
    if exception is not None or app.builder.name != "html":
        return
    for path in sorted(Path(app.outdir, "_sources").rglob("*.ipynb")):
        add_download_hint(path)


_FONTAWESOME_JS = re.compile(r'<script[^>]*\bsrc="[^"]*/scripts/fontawesome\.js[^"]*"[^>]*></script>\n?')
_EAGER_IMG = re.compile(r"<img (?![^>]*\bloading=)")


def lighten_page(page: str) -> str:
    """The page without the theme's fontawesome.js, its images loaded lazily."""
    return _EAGER_IMG.sub('<img loading="lazy" ', _FONTAWESOME_JS.sub("", page))


def lighten_pages(app, exception) -> None:
    """Apply lighten_page to every built page."""
    if exception is not None or app.builder.name != "html":
        return
    for path in Path(app.outdir).rglob("*.html"):
        page = path.read_text(encoding="utf-8")
        lighter = lighten_page(page)
        if lighter != page:
            path.write_text(lighter, encoding="utf-8")


#: An AMD module of the widget bundle: its licence comment, its define(), its source-map comment.
_BUNDLE_MODULE = re.compile(r'^/\*! For license information please see (?P<file>[\w.]+)\.LICENSE\.txt \*/\n'
                            r'define\("(?P<name>[^"]+)".*?^//# sourceMappingURL=[^\n]*\n\n?',
                            re.DOTALL | re.MULTILINE)
#: The modules the book's pages never load: those that draw ipywidgets 7 state.
UNUSED_MODULES = ("@jupyter-widgets/base7", "@jupyter-widgets/controls7")
_CSS_SOURCE_MAP = "{version:3,sources:["


def _object_end(text: str, start: int) -> int:
    """The index just after the JavaScript object literal that opens at ``start`` (strings and
    nested braces skipped)."""
    depth, quote, index = 0, "", start
    while index < len(text):
        char = text[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    raise ValueError(f"unbalanced object literal at {start}")


def trim_widget_bundle(source: str) -> str:
    """The widget bundle without UNUSED_MODULES and with each stylesheet's source map replaced by
    null (css-loader then inserts the stylesheet alone)."""
    kept = _BUNDLE_MODULE.sub(lambda m: "" if m["name"] in UNUSED_MODULES else m.group(0), source)
    parts, position = [], 0
    while (start := kept.find(_CSS_SOURCE_MAP, position)) >= 0:
        parts += [kept[position:start], "null"]
        position = _object_end(kept, start)
    return "".join([*parts, kept[position:]])


def lighten_widget_bundle(app, exception) -> None:
    """Serve the trimmed widget bundle (trim_widget_bundle) in the built site."""
    if exception is not None or app.builder.name != "html":
        return
    for path in Path(app.outdir, "_static", "ipywidgets").glob("embed-amd-*.js"):
        path.write_text(trim_widget_bundle(path.read_text(encoding="utf-8")), encoding="utf-8")


def _is_thebe(script: Any) -> bool:
    filename = getattr(script, "filename", None) or ""
    body = (getattr(script, "attributes", None) or {}).get("body", "")
    return "sphinx-thebe" in filename or "THEBE_JS_URL" in body


def drop_thebe(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if scripts:
        context["script_files"] = [s for s in scripts if not _is_thebe(s)]


def write_index(app, exception) -> None:
    """Write ``index.html``: a redirect to the root page that names the book's icon."""
    if exception is not None or app.builder.name != "html":
        return
    url = f"{app.config.root_doc}.html"
    icon = Path(app.config.html_favicon).name
    page = _REDIRECT.format(title=html.escape(app.config.html_title), icon=icon, url=url)
    Path(app.outdir, "index.html").write_text(page, encoding="utf-8")


def setup(app):
    app.connect("html-page-context", drop_thebe)
    # Before sphinx-external-toc (priority 500), which writes its bare redirect only if none exists.
    app.connect("build-finished", write_index, priority=400)
    app.connect("build-finished", hint_downloads)
    app.connect("build-finished", lighten_pages)
    app.connect("build-finished", lighten_widget_bundle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
