"""Sphinx glue for the book's HTML: keep every page self-contained and free of JavaScript errors.

Jupyter Book 1.x always loads sphinx-thebe, which puts an inline script declaring ``const
THEBE_JS_URL`` (an address on unpkg.com) into the page, twice on most pages, so the second copy throws
"Identifier has already been declared". The book offers no live kernel on its pages (readers run the
notebooks in JupyterLab), so this extension removes sphinx-thebe's scripts from every page.
"""

from __future__ import annotations

from typing import Any


def _is_thebe(script: Any) -> bool:
    filename = getattr(script, "filename", None) or ""
    body = (getattr(script, "attributes", None) or {}).get("body", "")
    return "sphinx-thebe" in filename or "THEBE_JS_URL" in body


def drop_thebe(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if scripts:
        context["script_files"] = [s for s in scripts if not _is_thebe(s)]


def setup(app):
    app.connect("html-page-context", drop_thebe)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
