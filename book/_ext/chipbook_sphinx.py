"""Sphinx glue for the book's HTML: keep every page self-contained and free of JavaScript errors.

Jupyter Book 1.x always loads sphinx-thebe, which puts an inline script declaring ``const
THEBE_JS_URL`` (an address on unpkg.com) into the page, twice on most pages, so the second copy throws
"Identifier has already been declared". The book offers no live kernel on its pages (readers run the
notebooks in JupyterLab), so this extension removes sphinx-thebe's scripts from every page.

It also writes the site's root ``index.html``, which sends a visitor to the first page. The redirect
that sphinx-external-toc writes is a bare ``<meta>`` tag with no icon, so the browser asks for
``/favicon.ico``, which the book does not have, and logs a 404 before it follows the redirect.
"""

from __future__ import annotations

import html
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
    return {"parallel_read_safe": True, "parallel_write_safe": True}
